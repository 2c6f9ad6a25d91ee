package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mitolab/mito/tasks"
)

// CreateUser creates the user and their personal group, where they are
// admin, in one transaction.
func (s *Store) CreateUser(ctx context.Context, u tasks.User) error {
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now()
	}
	return s.write(ctx, "create user", func(tx wtx) error {
		if err := nameFree(ctx, tx, u.Name); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO users (name, admin, disabled, password_hash, created_at) VALUES (?, ?, ?, ?, ?)`,
			u.Name, u.Admin, u.Disabled, u.PasswordHash, micros(u.CreatedAt))
		if isUnique(err) {
			return tasks.Errorf(tasks.EConflict, "a user named %q exists", u.Name)
		}
		if err != nil {
			return err
		}
		return insertGroup(ctx, tx, u.Name, u.Name, u.CreatedAt)
	})
}

// nameFree returns EConflict when a user or group is called name: the two
// share one namespace, since every user has a group of their own name.
func nameFree(ctx context.Context, tx wtx, name string) error {
	var users, groups int
	err := tx.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM users WHERE name = ?1),
		(SELECT count(*) FROM user_groups WHERE name = ?1)`, name).Scan(&users, &groups)
	switch {
	case err != nil:
		return err
	case users > 0:
		return tasks.Errorf(tasks.EConflict, "a user named %q exists", name)
	case groups > 0:
		return tasks.Errorf(tasks.EConflict, "a group named %q exists", name)
	}
	return nil
}

// insertGroup creates a group with admin as its admin.
func insertGroup(ctx context.Context, tx wtx, name, admin string, at time.Time) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO user_groups (name, created_at) VALUES (?, ?)`, name, micros(at)); err != nil {
		if isUnique(err) {
			return tasks.Errorf(tasks.EConflict, "a group named %q exists", name)
		}
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO group_members (group_name, user_name, role) VALUES (?, ?, ?)`,
		name, admin, int(tasks.RoleAdmin))
	return err
}

const userCols = `name, admin, disabled, password_hash, created_at`

func scanUser(row rowScanner) (tasks.User, error) {
	var u tasks.User
	var created int64
	if err := row.Scan(&u.Name, &u.Admin, &u.Disabled, &u.PasswordHash, &created); err != nil {
		return tasks.User{}, err
	}
	u.CreatedAt = fromMicros(created)
	return u, nil
}

// GetUser returns one user with their password hash.
func (s *Store) GetUser(ctx context.Context, name string) (tasks.User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.User{}, tasks.Errorf(tasks.ENotFound, "user %q not found", name)
	}
	if err != nil {
		return tasks.User{}, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// ListUsers returns every user, ordered by name.
func (s *Store) ListUsers(ctx context.Context) ([]tasks.User, error) {
	return queryAll(ctx, s, "list users", scanUser, `SELECT `+userCols+` FROM users ORDER BY name`)
}

// SetUserPassword sets only the password hash and deletes the user's
// tokens, in one transaction.
func (s *Store) SetUserPassword(ctx context.Context, name, hash string) error {
	return s.write(ctx, "set user password", func(tx wtx) error {
		return setUserColumn(ctx, tx, name, `UPDATE users SET password_hash = ? WHERE name = ?`, hash, true)
	})
}

// SetUserDisabled sets only the disabled flag; disabling deletes the
// user's tokens in the same transaction.
func (s *Store) SetUserDisabled(ctx context.Context, name string, disabled bool) error {
	return s.write(ctx, "set user disabled", func(tx wtx) error {
		return setUserColumn(ctx, tx, name, `UPDATE users SET disabled = ? WHERE name = ?`, disabled, disabled)
	})
}

// setUserColumn runs update, which sets one column of user name to v, and
// then deletes the user's tokens if revoke. ENotFound if there is no user.
func setUserColumn(ctx context.Context, tx wtx, name, update string, v any, revoke bool) error {
	res, err := tx.ExecContext(ctx, update, v, name)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return tasks.Errorf(tasks.ENotFound, "user %q not found", name)
	}
	if !revoke {
		return nil
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM tokens WHERE user_name = ?`, name)
	return err
}

// CountUsers returns the number of users.
func (s *Store) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// CreateToken stores a token hash for an existing user.
func (s *Store) CreateToken(ctx context.Context, t tasks.Token) error {
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	return s.write(ctx, "create token", func(tx wtx) error {
		if err := userExists(ctx, tx, t.User); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens (hash, user_name, created_at, expires) VALUES (?, ?, ?, ?)`,
			t.Hash, t.User, micros(t.CreatedAt), nullMicros(&t.Expires))
		if isUnique(err) {
			return tasks.Errorf(tasks.EConflict, "token exists")
		}
		return err
	})
}

// userExists returns ENotFound unless the user exists.
func userExists(ctx context.Context, tx wtx, name string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE name = ?`, name).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return tasks.Errorf(tasks.ENotFound, "user %q not found", name)
	}
	return nil
}

// LookupToken returns a token and its user.
func (s *Store) LookupToken(ctx context.Context, hash string) (tasks.Token, tasks.User, error) {
	var t tasks.Token
	var created int64
	var expires sql.NullInt64
	var u tasks.User
	var ucreated int64
	err := s.r.QueryRowContext(ctx, `SELECT t.hash, t.user_name, t.created_at, t.expires,
		u.name, u.admin, u.disabled, u.password_hash, u.created_at
		FROM tokens t JOIN users u ON u.name = t.user_name WHERE t.hash = ?`, hash).
		Scan(&t.Hash, &t.User, &created, &expires, &u.Name, &u.Admin, &u.Disabled, &u.PasswordHash, &ucreated)
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.Token{}, tasks.User{}, tasks.Errorf(tasks.ENotFound, "token not found")
	}
	if err != nil {
		return tasks.Token{}, tasks.User{}, fmt.Errorf("look up token: %w", err)
	}
	t.CreatedAt = fromMicros(created)
	if expires.Valid {
		t.Expires = fromMicros(expires.Int64)
	}
	u.CreatedAt = fromMicros(ucreated)
	return t, u, nil
}

// DeleteToken removes one token, if it exists.
func (s *Store) DeleteToken(ctx context.Context, hash string) error {
	return s.write(ctx, "delete token", func(tx wtx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE hash = ?`, hash)
		return err
	})
}

// DeleteUserTokens removes every token of a user.
func (s *Store) DeleteUserTokens(ctx context.Context, user string) error {
	return s.write(ctx, "delete user tokens", func(tx wtx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE user_name = ?`, user)
		return err
	})
}

// CreateGroup creates a group with creator as admin.
func (s *Store) CreateGroup(ctx context.Context, name, creator string) (tasks.Group, error) {
	g := tasks.Group{Name: name, CreatedAt: now(), Members: []tasks.Member{{User: creator, Role: tasks.RoleAdmin}}}
	err := s.write(ctx, "create group", func(tx wtx) error {
		if err := nameFree(ctx, tx, name); err != nil {
			return err
		}
		if err := userExists(ctx, tx, creator); err != nil {
			return err
		}
		return insertGroup(ctx, tx, name, creator, g.CreatedAt)
	})
	if err != nil {
		return tasks.Group{}, err
	}
	return g, nil
}

// GetGroup returns a group, with its quota and usage, and its members,
// ordered by user name.
func (s *Store) GetGroup(ctx context.Context, name string) (tasks.Group, error) {
	g := tasks.Group{Name: name}
	var created int64
	err := s.r.QueryRowContext(ctx, `SELECT created_at, quota_bytes, used_bytes FROM user_groups WHERE name = ?`, name).
		Scan(&created, &g.QuotaBytes, &g.UsedBytes)
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.Group{}, tasks.Errorf(tasks.ENotFound, "group %q not found", name)
	}
	if err != nil {
		return tasks.Group{}, fmt.Errorf("get group: %w", err)
	}
	g.CreatedAt = fromMicros(created)
	rows, err := s.r.QueryContext(ctx, `SELECT user_name, role FROM group_members WHERE group_name = ? ORDER BY user_name`, name)
	if err != nil {
		return tasks.Group{}, fmt.Errorf("get group: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m tasks.Member
		if err := rows.Scan(&m.User, &m.Role); err != nil {
			return tasks.Group{}, fmt.Errorf("get group: %w", err)
		}
		g.Members = append(g.Members, m)
	}
	if err := rows.Err(); err != nil {
		return tasks.Group{}, fmt.Errorf("get group: %w", err)
	}
	return g, nil
}

// ListUserGroups returns the groups user belongs to, with their role,
// quota and usage.
func (s *Store) ListUserGroups(ctx context.Context, user string) ([]tasks.Group, error) {
	return queryAll(ctx, s, "list user groups", func(row rowScanner) (tasks.Group, error) {
		var g tasks.Group
		var created int64
		err := row.Scan(&g.Name, &created, &g.QuotaBytes, &g.UsedBytes, &g.Role)
		g.CreatedAt = fromMicros(created)
		return g, err
	}, `SELECT g.name, g.created_at, g.quota_bytes, g.used_bytes, m.role
		FROM group_members m JOIN user_groups g ON g.name = m.group_name
		WHERE m.user_name = ? ORDER BY g.name`, user)
}

// SetMember adds a member to a group or changes their role.
func (s *Store) SetMember(ctx context.Context, group, user string, role tasks.Role) error {
	if role <= tasks.RoleNone || role > tasks.RoleAdmin {
		return tasks.Invalid("role", "%d is not read, write or admin", int(role))
	}
	return s.write(ctx, "set member", func(tx wtx) error {
		if err := groupExists(ctx, tx, group); err != nil {
			return err
		}
		if err := userExists(ctx, tx, user); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO group_members (group_name, user_name, role) VALUES (?, ?, ?)
			ON CONFLICT (group_name, user_name) DO UPDATE SET role = excluded.role`, group, user, int(role))
		return err
	})
}

// groupExists returns ENotFound unless the group exists.
func groupExists(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, name string) error {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM user_groups WHERE name = ?`, name).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return tasks.Errorf(tasks.ENotFound, "group %q not found", name)
	}
	return nil
}

// RemoveMember removes a member from a group.
func (s *Store) RemoveMember(ctx context.Context, group, user string) error {
	return s.write(ctx, "remove member", func(tx wtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE group_name = ? AND user_name = ?`, group, user)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return tasks.Errorf(tasks.ENotFound, "user %q is not a member of group %q", user, group)
		}
		return nil
	})
}

// Role returns the user's role in the group, RoleNone for a non-member.
func (s *Store) Role(ctx context.Context, user, group string) (tasks.Role, error) {
	var role sql.NullInt64
	var groups int
	err := s.r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM user_groups WHERE name = ?1),
		(SELECT role FROM group_members WHERE group_name = ?1 AND user_name = ?2)`, group, user).Scan(&groups, &role)
	if err != nil {
		return tasks.RoleNone, fmt.Errorf("get role: %w", err)
	}
	if groups == 0 {
		return tasks.RoleNone, tasks.Errorf(tasks.ENotFound, "group %q not found", group)
	}
	return tasks.Role(role.Int64), nil
}
