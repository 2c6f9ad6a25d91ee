package postgres

import (
	"context"
	"fmt"

	"github.com/mitolab/mito/coordinator/store"
)

// ClusterID returns the store's cluster id, making it on first use. The
// insert and the read are two statements: a concurrent first caller's
// insert makes this one's wait for it to commit and then do nothing, and
// the read that follows sees the winner's id.
func (s *Store) ClusterID(ctx context.Context) (string, error) {
	if _, err := s.pool.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('cluster_id', $1) ON CONFLICT (key) DO NOTHING`, store.NewClusterID()); err != nil {
		return "", fmt.Errorf("make cluster id: %w", err)
	}
	var id string
	if err := s.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'cluster_id'`).Scan(&id); err != nil {
		return "", fmt.Errorf("read cluster id: %w", err)
	}
	return id, nil
}
