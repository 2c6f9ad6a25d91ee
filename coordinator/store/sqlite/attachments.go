package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// chargeSQL adds ?2 bytes to group ?1's usage only where store.ChargeAllowed
// holds, testing and charging in one statement, as the postgres store does.
// A credit never takes usage below zero, whatever drift came before.
const chargeSQL = `UPDATE user_groups SET used_bytes = max(0, used_bytes + ?2)
	WHERE name = ?1 AND (quota_bytes = 0 OR ?2 <= 0 OR used_bytes + ?2 <= quota_bytes)`

// charge adds delta bytes to group's usage for an upload of size bytes
// described by what, or returns store.QuotaError if that would take the
// group over its quota. A group that does not exist is not charged and is
// no error: tasks, and so their artifacts, outlive groups.
func charge(ctx context.Context, tx wtx, group string, delta int64, what string, size int64) error {
	if delta == 0 {
		return nil
	}
	res, err := tx.ExecContext(ctx, chargeSQL, group, delta)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil || n > 0 {
		return err
	}
	var quota, used int64
	err = tx.QueryRowContext(ctx, `SELECT quota_bytes, used_bytes FROM user_groups WHERE name = ?`, group).Scan(&quota, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return store.QuotaError(group, what, size, used, delta, quota)
}

// SetGroupQuota sets a group's quota, leaving its usage as it is.
func (s *Store) SetGroupQuota(ctx context.Context, group string, bytes int64) error {
	if bytes < 0 {
		return tasks.Invalid("quota_bytes", "must not be negative, got %d", bytes)
	}
	return s.write(ctx, "set group quota", func(tx wtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE user_groups SET quota_bytes = ? WHERE name = ?`, bytes, group)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return tasks.Errorf(tasks.ENotFound, "group %q not found", group)
		}
		return nil
	})
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
	err := s.write(ctx, "put attachment", func(tx wtx) error {
		if err := groupExists(ctx, tx, a.Group); err != nil {
			return err
		}
		var oldSize int64
		err := tx.QueryRowContext(ctx, `SELECT object, size FROM group_attachments WHERE group_name = ? AND key = ?`,
			a.Group, a.Key).Scan(&replaced, &oldSize)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := charge(ctx, tx, a.Group, a.Size-oldSize, "attachment "+strconv.Quote(a.Key), a.Size); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO group_attachments (group_name, key, object, size, sha256, creator, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (group_name, key) DO UPDATE SET
				object = excluded.object, size = excluded.size, sha256 = excluded.sha256,
				creator = excluded.creator, created_at = excluded.created_at`,
			a.Group, a.Key, a.Object, a.Size, a.SHA256, a.Creator, micros(a.CreatedAt))
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

func scanAttachment(row rowScanner) (tasks.Attachment, error) {
	var a tasks.Attachment
	var created int64
	if err := row.Scan(&a.Group, &a.Key, &a.Object, &a.Size, &a.SHA256, &a.Creator, &created); err != nil {
		return tasks.Attachment{}, err
	}
	a.CreatedAt = fromMicros(created)
	return a, nil
}

// GetAttachment returns one attachment with its object key.
func (s *Store) GetAttachment(ctx context.Context, group, key string) (tasks.Attachment, error) {
	a, err := scanAttachment(s.r.QueryRowContext(ctx, `SELECT `+attachmentCols+` FROM group_attachments
		WHERE group_name = ? AND key = ?`, group, key))
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.Attachment{}, tasks.Errorf(tasks.ENotFound, "attachment %q not found in group %q", key, group)
	}
	if err != nil {
		return tasks.Attachment{}, fmt.Errorf("get attachment: %w", err)
	}
	return a, nil
}

// ListAttachments returns the page of a group's attachments that aq
// selects, ordered by key. The prefix is a range of the primary key, not a
// LIKE pattern, so that '%' and '_' in it match only themselves (and
// SQLite's LIKE would ignore case besides). SQLite compares text bytewise,
// NUL and invalid UTF-8 included, so any prefix and cursor work as given.
func (s *Store) ListAttachments(ctx context.Context, group string, aq store.AttachmentQuery) ([]tasks.Attachment, error) {
	q := `SELECT ` + attachmentCols + ` FROM group_attachments WHERE group_name = ? AND key >= ?`
	args := []any{group, aq.Prefix}
	if end, ok := prefixEnd(aq.Prefix); ok {
		q += ` AND key < ?`
		args = append(args, end)
	}
	if aq.After != "" {
		q += ` AND key > ?`
		args = append(args, aq.After)
	}
	q += ` ORDER BY key`
	if aq.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, aq.Limit)
	}
	return queryAll(ctx, s, "list attachments", scanAttachment, q, args...)
}

// prefixEnd returns the least string, in bytewise order, above every
// string that starts with prefix; ok is false when no string is (prefix
// empty or all 0xff bytes), and the range has no upper end.
func prefixEnd(prefix string) (end string, ok bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// DeleteAttachment removes an attachment and credits its size to the
// group, in one transaction.
func (s *Store) DeleteAttachment(ctx context.Context, group, key string) (tasks.Attachment, error) {
	var a tasks.Attachment
	err := s.write(ctx, "delete attachment", func(tx wtx) error {
		var err error
		a, err = scanAttachment(tx.QueryRowContext(ctx, `DELETE FROM group_attachments
			WHERE group_name = ? AND key = ? RETURNING `+attachmentCols, group, key))
		if errors.Is(err, sql.ErrNoRows) {
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
