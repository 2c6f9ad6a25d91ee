package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/mitolab/mito/coordinator/store"
)

// PinnedHostKey returns the key pinned for hostport, if any.
func (s *Store) PinnedHostKey(ctx context.Context, hostport string) (string, bool, error) {
	if err := store.CheckHostPort(hostport); err != nil {
		return "", false, err
	}
	var key string
	err := s.r.QueryRowContext(ctx, `SELECT key FROM host_keys WHERE hostport = ?`, hostport).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("get pinned host key: %w", err)
	}
	return key, true, nil
}

// PinHostKey pins key for hostport unless a key is pinned already. The
// insert and the read of the key that beat it run in one write
// transaction, and writes are serialized, so of concurrent pins the first
// wins and the others see its key.
func (s *Store) PinHostKey(ctx context.Context, hostport, key string) error {
	if err := store.CheckHostPort(hostport); err != nil {
		return err
	}
	key, err := store.NormalizeHostKey(key)
	if err != nil {
		return err
	}
	return s.write(ctx, "pin host key", func(tx wtx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO host_keys (hostport, key, pinned_at) VALUES (?, ?, ?)
			ON CONFLICT (hostport) DO NOTHING`, hostport, key, micros(now()))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var pinned string
		if err := tx.QueryRowContext(ctx, `SELECT key FROM host_keys WHERE hostport = ?`, hostport).Scan(&pinned); err != nil {
			return err
		}
		if pinned != key {
			return store.HostKeyConflict(hostport, pinned, key)
		}
		return nil
	})
}
