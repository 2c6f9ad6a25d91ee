package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/coordinator/store"
)

// referencedObjectsSQL returns the keys of $1 that an attachment's object
// is, and the keys of the rows of ($2 key, $3 task, $4 attempt, $5 name)
// whose artifact is recorded or whose task is running that attempt. Each
// EXISTS is one probe of an index (group_attachments_object, the primary
// keys), whatever the tables hold.
const referencedObjectsSQL = `SELECT k FROM unnest($1::text[]) AS k
	WHERE EXISTS (SELECT 1 FROM group_attachments WHERE object = k)
	UNION ALL
	SELECT a.k FROM unnest($2::text[], $3::bigint[], $4::integer[], $5::text[]) AS a (k, task, attempt, name)
	WHERE EXISTS (SELECT 1 FROM task_artifacts t
			WHERE t.task_id = a.task AND t.attempt = a.attempt AND t.name = a.name)
	   OR EXISTS (SELECT 1 FROM tasks t
			WHERE t.id = a.task AND t.state = 'running' AND t.attempt = a.attempt)`

// ReferencedObjects returns which of keys a record needs, in one query.
func (s *Store) ReferencedObjects(ctx context.Context, keys []string) (map[string]bool, error) {
	atts, arts, out, err := store.SortObjectKeys(keys)
	if err != nil {
		return nil, err
	}
	if len(atts) == 0 && len(arts) == 0 {
		return out, nil
	}
	artKeys := make([]string, len(arts))
	ids := make([]int64, len(arts))
	attempts := make([]int32, len(arts))
	names := make([]string, len(arts))
	for i, a := range arts {
		artKeys[i], ids[i], attempts[i], names[i] = a.Key, int64(a.Task), int32(a.Attempt), a.Name
	}
	rows, err := s.pool.Query(ctx, referencedObjectsSQL, list(atts), artKeys, ids, attempts, names)
	if err != nil {
		return nil, fmt.Errorf("look up objects: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up objects: %w", err)
	}
	for _, k := range found {
		out[k] = true
	}
	return out, nil
}
