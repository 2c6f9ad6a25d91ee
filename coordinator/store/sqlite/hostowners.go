package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/mitolab/mito/coordinator/store"
)

// AcquireHost takes or renews a host's ownership lease in one upsert
// under the write transaction: the insert covers a host nobody ever held;
// on conflict, the update's WHERE lets only the holder or a taker of an
// expired lease through.
func (s *Store) AcquireHost(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error) {
	if err := store.CheckHostLease(name, owner, ttl); err != nil {
		return false, err
	}
	var won bool
	err := s.write(ctx, "acquire host "+name, func(tx wtx) error {
		var got string
		err := tx.QueryRowContext(ctx, `INSERT INTO host_owners (name, owner, expires) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
			WHERE host_owners.owner = excluded.owner OR host_owners.expires < ?
			RETURNING owner`, name, owner, micros(now.Add(ttl)), micros(now)).Scan(&got)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		won = err == nil && got == owner
		return err
	})
	return won, err
}

// ReleaseHost deletes owner's lease of a host, if owner holds it.
func (s *Store) ReleaseHost(ctx context.Context, name, owner string) error {
	return s.write(ctx, "release host "+name, func(tx wtx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM host_owners WHERE name = ? AND owner = ?`, name, owner)
		return err
	})
}
