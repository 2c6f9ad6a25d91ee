package sqlite

import (
	"context"

	"github.com/mitolab/mito/coordinator/store"
)

// ClusterID returns the store's cluster id, making it on first use.
func (s *Store) ClusterID(ctx context.Context) (string, error) {
	var id string
	err := s.write(ctx, "read cluster id", func(tx wtx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('cluster_id', ?) ON CONFLICT (key) DO NOTHING`, store.NewClusterID()); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'cluster_id'`).Scan(&id)
	})
	return id, err
}
