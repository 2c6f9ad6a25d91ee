package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// chargeSQL adds $2 bytes to group $1's usage only where
// store.ChargeAllowed holds. Testing and charging in one statement is what
// keeps concurrent uploads within the quota: a second UPDATE of the row
// waits for the first to commit and then tests the new usage. A credit
// never takes usage below zero, whatever drift came before.
const chargeSQL = `UPDATE user_groups SET used_bytes = greatest(0, used_bytes + $2::bigint)
	WHERE name = $1 AND (quota_bytes = 0 OR $2::bigint <= 0 OR used_bytes + $2::bigint <= quota_bytes)`

// chargeTries bounds how often charge tests again after a refusal that a
// concurrent credit made wrong by committing in between.
const chargeTries = 3

// charge adds delta bytes to group's usage for an upload of size bytes
// described by what, or returns store.QuotaError if that would take the
// group over its quota. A group that does not exist is not charged and is
// no error: tasks, and so their artifacts, outlive groups.
func charge(ctx context.Context, tx pgx.Tx, group string, delta int64, what string, size int64) error {
	if delta == 0 {
		return nil
	}
	var quota, used int64
	for range chargeTries {
		tag, err := tx.Exec(ctx, chargeSQL, group, delta)
		if err != nil {
			return err
		}
		if tag.RowsAffected() > 0 {
			return nil
		}
		err = tx.QueryRow(ctx, `SELECT quota_bytes, used_bytes FROM user_groups WHERE name = $1`, group).Scan(&quota, &used)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if !store.ChargeAllowed(quota, used, delta) {
			break
		}
	}
	return store.QuotaError(group, what, size, used, delta, quota)
}

// lockGroup locks a group's row, or returns ENotFound. Every attachment
// write takes it first, so that two puts of one new key cannot both charge
// for it, and so that locks are always taken group row first, then
// attachment row, and cannot deadlock.
func lockGroup(ctx context.Context, tx pgx.Tx, name string) error {
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM user_groups WHERE name = $1 FOR NO KEY UPDATE) g`, name).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return tasks.Errorf(tasks.ENotFound, "group %q not found", name)
	}
	return nil
}

// SetGroupQuota sets a group's quota, leaving its usage as it is.
func (s *Store) SetGroupQuota(ctx context.Context, group string, bytes int64) error {
	if bytes < 0 {
		return tasks.Invalid("quota_bytes", "must not be negative, got %d", bytes)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE user_groups SET quota_bytes = $1 WHERE name = $2`, bytes, group)
	if err != nil {
		return fmt.Errorf("set group quota: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return tasks.Errorf(tasks.ENotFound, "group %q not found", group)
	}
	return nil
}

// checkAttachment returns PutAttachment's EInvalid error for a, or nil.
func checkAttachment(a tasks.Attachment) error {
	switch {
	case a.Group == "":
		return tasks.Invalid("group", "is empty")
	case a.Key == "":
		return tasks.Invalid("key", "is empty")
	case a.Object == "":
		return tasks.Invalid("object", "is empty")
	case a.Size < 0:
		return tasks.Invalid("size", "must not be negative, got %d", a.Size)
	}
	return nil
}

// PutAttachment records an attachment, replacing one of the same key, and
// charges the group the difference in size.
func (s *Store) PutAttachment(ctx context.Context, a tasks.Attachment) (string, error) {
	if err := checkAttachment(a); err != nil {
		return "", err
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = now()
	}
	var replaced string
	err := s.tx(ctx, "put attachment", func(tx pgx.Tx) error {
		if err := lockGroup(ctx, tx, a.Group); err != nil {
			return err
		}
		var oldSize int64
		err := tx.QueryRow(ctx, `SELECT object, size FROM group_attachments WHERE group_name = $1 AND key = $2`,
			a.Group, a.Key).Scan(&replaced, &oldSize)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if err := charge(ctx, tx, a.Group, a.Size-oldSize, "attachment "+strconv.Quote(a.Key), a.Size); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO group_attachments (group_name, key, object, size, sha256, creator, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (group_name, key) DO UPDATE SET
				object = excluded.object, size = excluded.size, sha256 = excluded.sha256,
				creator = excluded.creator, created_at = excluded.created_at`,
			a.Group, a.Key, a.Object, a.Size, a.SHA256, a.Creator, a.CreatedAt)
		return err
	})
	if err != nil {
		return "", err
	}
	if replaced == a.Object {
		// The same object recorded again: the caller must not delete it.
		replaced = ""
	}
	return replaced, nil
}

const attachmentCols = `group_name, key, object, size, sha256, creator, created_at`

func scanAttachment(row pgx.Row) (tasks.Attachment, error) {
	var a tasks.Attachment
	if err := row.Scan(&a.Group, &a.Key, &a.Object, &a.Size, &a.SHA256, &a.Creator, &a.CreatedAt); err != nil {
		return tasks.Attachment{}, err
	}
	a.CreatedAt = a.CreatedAt.UTC()
	return a, nil
}

// GetAttachment returns one attachment with its object key.
func (s *Store) GetAttachment(ctx context.Context, group, key string) (tasks.Attachment, error) {
	a, err := scanAttachment(s.pool.QueryRow(ctx, `SELECT `+attachmentCols+` FROM group_attachments
		WHERE group_name = $1 AND key = $2`, group, key))
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Attachment{}, tasks.Errorf(tasks.ENotFound, "attachment %q not found in group %q", key, group)
	}
	if err != nil {
		return tasks.Attachment{}, fmt.Errorf("get attachment: %w", err)
	}
	return a, nil
}

// ListAttachments returns the page of a group's attachments that aq
// selects, ordered by key (bytewise: the column collates "C").
// PostgreSQL text holds neither NUL nor invalid UTF-8, and refuses them as
// parameters (SQLSTATE 22021); a prefix or cursor with them is compared as
// bytes with the keys' UTF-8 encoding instead, which selects what SQLite
// selects, though without the index.
func (s *Store) ListAttachments(ctx context.Context, group string, aq store.AttachmentQuery) ([]tasks.Attachment, error) {
	q := `SELECT ` + attachmentCols + ` FROM group_attachments WHERE group_name = $1`
	args := []any{group}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	switch {
	case aq.Prefix == "":
	case textSafe(aq.Prefix):
		q += ` AND key LIKE ` + arg(likePrefix(aq.Prefix)) + ` ESCAPE '\'`
	default:
		p := arg([]byte(aq.Prefix))
		q += ` AND substr(convert_to(key, 'UTF8'), 1, length(` + p + `::bytea)) = ` + p + `::bytea`
	}
	switch {
	case aq.After == "":
	case textSafe(aq.After):
		q += ` AND key > ` + arg(aq.After)
	default:
		q += ` AND convert_to(key, 'UTF8') > ` + arg([]byte(aq.After)) + `::bytea`
	}
	q += ` ORDER BY key`
	if aq.Limit > 0 {
		q += ` LIMIT ` + arg(aq.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Attachment, error) { return scanAttachment(r) })
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	return out, nil
}

// textSafe reports whether s can be a PostgreSQL text parameter: valid
// UTF-8 without NUL.
func textSafe(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// likeEscaper escapes LIKE's metacharacters, and its escape character.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// likePrefix returns the LIKE pattern (escape '\') that matches the
// strings starting with prefix, '%' and '_' in it matching only
// themselves.
func likePrefix(prefix string) string { return likeEscaper.Replace(prefix) + "%" }

// DeleteAttachment removes an attachment and credits its size to the
// group, in one transaction.
func (s *Store) DeleteAttachment(ctx context.Context, group, key string) (tasks.Attachment, error) {
	var a tasks.Attachment
	err := s.tx(ctx, "delete attachment", func(tx pgx.Tx) error {
		err := lockGroup(ctx, tx, group)
		if tasks.ErrorCode(err) == tasks.ENotFound {
			return tasks.Errorf(tasks.ENotFound, "attachment %q not found in group %q", key, group)
		}
		if err != nil {
			return err
		}
		a, err = scanAttachment(tx.QueryRow(ctx, `DELETE FROM group_attachments
			WHERE group_name = $1 AND key = $2 RETURNING `+attachmentCols, group, key))
		if errors.Is(err, pgx.ErrNoRows) {
			return tasks.Errorf(tasks.ENotFound, "attachment %q not found in group %q", key, group)
		}
		if err != nil {
			return err
		}
		return charge(ctx, tx, group, -a.Size, "", 0)
	})
	if err != nil {
		return tasks.Attachment{}, err
	}
	return a, nil
}
