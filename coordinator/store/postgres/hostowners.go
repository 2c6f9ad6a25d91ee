package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/coordinator/store"
)

// AcquireHost takes or renews a host's ownership lease in one upsert: the
// insert covers a host nobody ever held; on conflict, the update's WHERE
// lets only the holder or a taker of an expired lease through. PostgreSQL
// locks the conflicting row and re-checks the WHERE against its latest
// version, so of concurrent callers exactly one gets a row back.
func (s *Store) AcquireHost(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error) {
	if err := store.CheckHostLease(name, owner, ttl); err != nil {
		return false, err
	}
	now = now.UTC().Truncate(time.Microsecond)
	var got string
	err := s.pool.QueryRow(ctx, `INSERT INTO host_owners (name, owner, expires) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
		WHERE host_owners.owner = excluded.owner OR host_owners.expires < $4
		RETURNING owner`, name, owner, now.Add(ttl), now).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acquire host %s: %w", name, err)
	}
	return got == owner, nil
}

// ReleaseHost deletes owner's lease of a host, if owner holds it.
func (s *Store) ReleaseHost(ctx context.Context, name, owner string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM host_owners WHERE name = $1 AND owner = $2`, name, owner); err != nil {
		return fmt.Errorf("release host %s: %w", name, err)
	}
	return nil
}
