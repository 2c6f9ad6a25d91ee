package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mitolab/mito/tasks"
)

// CreateUser creates the user and their personal group, where they are
// admin, in one transaction.
func (s *Store) CreateUser(ctx context.Context, u tasks.User) error {
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now()
	}
	return s.tx(ctx, "create user", func(tx pgx.Tx) error {
		if err := nameFree(ctx, tx, u.Name); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO users (name, admin, disabled, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)`,
			u.Name, u.Admin, u.Disabled, u.PasswordHash, u.CreatedAt)
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
// share one namespace, since every user has a group of their own name. A
// concurrent creation that passes this check too loses on the unique
// index of user_groups, which every creation inserts into.
func nameFree(ctx context.Context, tx pgx.Tx, name string) error {
	var user, group bool
	err := tx.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM users WHERE name = $1),
		EXISTS (SELECT 1 FROM user_groups WHERE name = $1)`, name).Scan(&user, &group)
	switch {
	case err != nil:
		return err
	case user:
		return tasks.Errorf(tasks.EConflict, "a user named %q exists", name)
	case group:
		return tasks.Errorf(tasks.EConflict, "a group named %q exists", name)
	}
	return nil
}

// insertGroup creates a group with admin as its admin.
func insertGroup(ctx context.Context, tx pgx.Tx, name, admin string, at time.Time) error {
	if _, err := tx.Exec(ctx, `INSERT INTO user_groups (name, created_at) VALUES ($1, $2)`, name, at); err != nil {
		if isUnique(err) {
			return tasks.Errorf(tasks.EConflict, "a group named %q exists", name)
		}
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO group_members (group_name, user_name, role) VALUES ($1, $2, $3)`,
		name, admin, int(tasks.RoleAdmin))
	return err
}

const userCols = `name, admin, disabled, password_hash, created_at`

func scanUser(row pgx.Row) (tasks.User, error) {
	var u tasks.User
	if err := row.Scan(&u.Name, &u.Admin, &u.Disabled, &u.PasswordHash, &u.CreatedAt); err != nil {
		return tasks.User{}, err
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// GetUser returns one user with their password hash.
func (s *Store) GetUser(ctx context.Context, name string) (tasks.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.User{}, tasks.Errorf(tasks.ENotFound, "user %q not found", name)
	}
	if err != nil {
		return tasks.User{}, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// ListUsers returns every user, ordered by name.
func (s *Store) ListUsers(ctx context.Context) ([]tasks.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.User, error) { return scanUser(r) })
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// SetUserPassword sets only the password hash and deletes the user's
// tokens, in one statement.
func (s *Store) SetUserPassword(ctx context.Context, name, hash string) error {
	return s.setUserColumn(ctx, "set user password", `password_hash = $2`, name, hash, true)
}

// SetUserDisabled sets only the disabled flag; disabling deletes the
// user's tokens in the same statement.
func (s *Store) SetUserDisabled(ctx context.Context, name string, disabled bool) error {
	return s.setUserColumn(ctx, "set user disabled", `disabled = $2`, name, disabled, disabled)
}

// setUserColumn sets one column of user $1 to $2 (set is the SET clause),
// and deletes the user's tokens if revoke, in one statement and so one
// transaction. ENotFound if there is no user.
func (s *Store) setUserColumn(ctx context.Context, what, set, name string, v any, revoke bool) error {
	var n int
	err := s.pool.QueryRow(ctx, `WITH u AS (
		UPDATE users SET `+set+` WHERE name = $1 RETURNING name
	), revoked AS (
		DELETE FROM tokens WHERE $3 AND user_name IN (SELECT name FROM u)
	)
	SELECT count(*) FROM u`, name, v, revoke).Scan(&n)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return tasks.Errorf(tasks.ENotFound, "user %q not found", name)
	}
	return nil
}

// CountUsers returns the number of users.
func (s *Store) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// CreateToken stores a token hash for an existing user.
func (s *Store) CreateToken(ctx context.Context, t tasks.Token) error {
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO tokens (hash, user_name, created_at, expires) VALUES ($1, $2, $3, $4)`,
		t.Hash, t.User, t.CreatedAt, nullTime(t.Expires))
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case isUnique(err):
		return tasks.Errorf(tasks.EConflict, "token exists")
	case errors.As(err, &pe) && pe.Code == "23503": // foreign key: no such user
		return tasks.Errorf(tasks.ENotFound, "user %q not found", t.User)
	}
	return fmt.Errorf("create token: %w", err)
}

// LookupToken returns a token and its user.
func (s *Store) LookupToken(ctx context.Context, hash string) (tasks.Token, tasks.User, error) {
	var t tasks.Token
	var expires *time.Time
	var u tasks.User
	err := s.pool.QueryRow(ctx, `SELECT t.hash, t.user_name, t.created_at, t.expires,
		u.name, u.admin, u.disabled, u.password_hash, u.created_at
		FROM tokens t JOIN users u ON u.name = t.user_name WHERE t.hash = $1`, hash).
		Scan(&t.Hash, &t.User, &t.CreatedAt, &expires, &u.Name, &u.Admin, &u.Disabled, &u.PasswordHash, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Token{}, tasks.User{}, tasks.Errorf(tasks.ENotFound, "token not found")
	}
	if err != nil {
		return tasks.Token{}, tasks.User{}, fmt.Errorf("look up token: %w", err)
	}
	t.CreatedAt = t.CreatedAt.UTC()
	if expires != nil {
		t.Expires = expires.UTC()
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return t, u, nil
}

// DeleteToken removes one token, if it exists.
func (s *Store) DeleteToken(ctx context.Context, hash string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM tokens WHERE hash = $1`, hash); err != nil {
		return fmt.Errorf("delete token: %w", err)
	}
	return nil
}

// DeleteUserTokens removes every token of a user.
func (s *Store) DeleteUserTokens(ctx context.Context, user string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM tokens WHERE user_name = $1`, user); err != nil {
		return fmt.Errorf("delete user tokens: %w", err)
	}
	return nil
}

// CreateGroup creates a group with creator as admin.
func (s *Store) CreateGroup(ctx context.Context, name, creator string) (tasks.Group, error) {
	g := tasks.Group{Name: name, CreatedAt: now(), Members: []tasks.Member{{User: creator, Role: tasks.RoleAdmin}}}
	err := s.tx(ctx, "create group", func(tx pgx.Tx) error {
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

// userExists returns ENotFound unless the user exists. FOR KEY SHARE keeps
// the user from being deleted before the caller's transaction commits.
func userExists(ctx context.Context, tx pgx.Tx, name string) error {
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE) u`, name).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return tasks.Errorf(tasks.ENotFound, "user %q not found", name)
	}
	return nil
}

// groupExists returns ENotFound unless the group exists.
func groupExists(ctx context.Context, tx pgx.Tx, name string) error {
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM user_groups WHERE name = $1 FOR KEY SHARE) g`, name).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return tasks.Errorf(tasks.ENotFound, "group %q not found", name)
	}
	return nil
}

// GetGroup returns a group, with its quota and usage, and its members,
// ordered by user name.
func (s *Store) GetGroup(ctx context.Context, name string) (tasks.Group, error) {
	g := tasks.Group{Name: name}
	err := s.pool.QueryRow(ctx, `SELECT created_at, quota_bytes, used_bytes FROM user_groups WHERE name = $1`, name).
		Scan(&g.CreatedAt, &g.QuotaBytes, &g.UsedBytes)
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Group{}, tasks.Errorf(tasks.ENotFound, "group %q not found", name)
	}
	if err != nil {
		return tasks.Group{}, fmt.Errorf("get group: %w", err)
	}
	g.CreatedAt = g.CreatedAt.UTC()
	rows, err := s.pool.Query(ctx, `SELECT user_name, role FROM group_members WHERE group_name = $1 ORDER BY user_name`, name)
	if err != nil {
		return tasks.Group{}, fmt.Errorf("get group: %w", err)
	}
	g.Members, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Member, error) {
		var m tasks.Member
		var role int
		err := r.Scan(&m.User, &role)
		m.Role = tasks.Role(role)
		return m, err
	})
	if err != nil {
		return tasks.Group{}, fmt.Errorf("get group: %w", err)
	}
	return g, nil
}

// ListUserGroups returns the groups user belongs to, with their role,
// quota and usage.
func (s *Store) ListUserGroups(ctx context.Context, user string) ([]tasks.Group, error) {
	rows, err := s.pool.Query(ctx, `SELECT g.name, g.created_at, g.quota_bytes, g.used_bytes, m.role
		FROM group_members m JOIN user_groups g ON g.name = m.group_name
		WHERE m.user_name = $1 ORDER BY g.name`, user)
	if err != nil {
		return nil, fmt.Errorf("list user groups: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Group, error) {
		var g tasks.Group
		var role int
		err := r.Scan(&g.Name, &g.CreatedAt, &g.QuotaBytes, &g.UsedBytes, &role)
		g.CreatedAt, g.Role = g.CreatedAt.UTC(), tasks.Role(role)
		return g, err
	})
	if err != nil {
		return nil, fmt.Errorf("list user groups: %w", err)
	}
	return out, nil
}

// SetMember adds a member to a group or changes their role.
func (s *Store) SetMember(ctx context.Context, group, user string, role tasks.Role) error {
	if role <= tasks.RoleNone || role > tasks.RoleAdmin {
		return tasks.Invalid("role", "%d is not read, write or admin", int(role))
	}
	return s.tx(ctx, "set member", func(tx pgx.Tx) error {
		if err := groupExists(ctx, tx, group); err != nil {
			return err
		}
		if err := userExists(ctx, tx, user); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO group_members (group_name, user_name, role) VALUES ($1, $2, $3)
			ON CONFLICT (group_name, user_name) DO UPDATE SET role = excluded.role`, group, user, int(role))
		return err
	})
}

// RemoveMember removes a member from a group.
func (s *Store) RemoveMember(ctx context.Context, group, user string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM group_members WHERE group_name = $1 AND user_name = $2`, group, user)
	if err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return tasks.Errorf(tasks.ENotFound, "user %q is not a member of group %q", user, group)
	}
	return nil
}

// Role returns the user's role in the group, RoleNone for a non-member.
func (s *Store) Role(ctx context.Context, user, group string) (tasks.Role, error) {
	var exists bool
	var role *int
	err := s.pool.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM user_groups WHERE name = $1),
		(SELECT role FROM group_members WHERE group_name = $1 AND user_name = $2)`, group, user).Scan(&exists, &role)
	if err != nil {
		return tasks.RoleNone, fmt.Errorf("get role: %w", err)
	}
	if !exists {
		return tasks.RoleNone, tasks.Errorf(tasks.ENotFound, "group %q not found", group)
	}
	if role == nil {
		return tasks.RoleNone, nil
	}
	return tasks.Role(*role), nil
}
