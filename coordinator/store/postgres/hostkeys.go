package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/coordinator/store"
)

// PinnedHostKey returns the key pinned for hostport, if any.
func (s *Store) PinnedHostKey(ctx context.Context, hostport string) (string, bool, error) {
	if err := store.CheckHostPort(hostport); err != nil {
		return "", false, err
	}
	var key string
	err := s.pool.QueryRow(ctx, `SELECT key FROM host_keys WHERE hostport = $1`, hostport).Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("get pinned host key: %w", err)
	}
	return key, true, nil
}

// PinHostKey pins key for hostport unless a key is pinned already. A
// concurrent insert of the same hostport makes ON CONFLICT wait for it to
// commit, and then do nothing; the SELECT that follows is a new statement,
// so under READ COMMITTED it sees the winner's row. Pins are never
// deleted or changed, so the row cannot vanish in between.
func (s *Store) PinHostKey(ctx context.Context, hostport, key string) error {
	if err := store.CheckHostPort(hostport); err != nil {
		return err
	}
	key, err := store.NormalizeHostKey(key)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO host_keys (hostport, key) VALUES ($1, $2)
		ON CONFLICT (hostport) DO NOTHING`, hostport, key)
	if err != nil {
		return fmt.Errorf("pin host key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var pinned string
	if err := s.pool.QueryRow(ctx, `SELECT key FROM host_keys WHERE hostport = $1`, hostport).Scan(&pinned); err != nil {
		return fmt.Errorf("pin host key: %w", err)
	}
	if pinned != key {
		return store.HostKeyConflict(hostport, pinned, key)
	}
	return nil
}
