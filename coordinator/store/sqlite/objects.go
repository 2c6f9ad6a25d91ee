package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mitolab/mito/coordinator/store"
)

// referencedObjectsSQL returns the keys of the JSON array ?1 that an
// attachment's object is, and the first elements of the [key, task,
// attempt, name] arrays of ?2 whose artifact is recorded or whose task is
// running that attempt. Each EXISTS is one probe of an index
// (group_attachments_object, the primary keys), whatever the tables hold.
const referencedObjectsSQL = `SELECT k.value FROM json_each(?1) k
	WHERE EXISTS (SELECT 1 FROM group_attachments WHERE object = k.value)
	UNION ALL
	SELECT json_extract(a.value, '$[0]') FROM json_each(?2) a
	WHERE EXISTS (SELECT 1 FROM task_artifacts
			WHERE task_id = json_extract(a.value, '$[1]') AND attempt = json_extract(a.value, '$[2]') AND name = json_extract(a.value, '$[3]'))
	   OR EXISTS (SELECT 1 FROM tasks
			WHERE id = json_extract(a.value, '$[1]') AND state = 'running' AND attempt = json_extract(a.value, '$[2]'))`

// ReferencedObjects returns which of keys a record needs, in one query.
func (s *Store) ReferencedObjects(ctx context.Context, keys []string) (map[string]bool, error) {
	atts, arts, out, err := store.SortObjectKeys(keys)
	if err != nil {
		return nil, err
	}
	if len(atts) == 0 && len(arts) == 0 {
		return out, nil
	}
	rows4 := make([][4]any, len(arts))
	for i, a := range arts {
		rows4[i] = [4]any{a.Key, int64(a.Task), a.Attempt, a.Name}
	}
	attJSON, err := json.Marshal(atts)
	if err != nil {
		return nil, fmt.Errorf("look up objects: %w", err)
	}
	artJSON, err := json.Marshal(rows4)
	if err != nil {
		return nil, fmt.Errorf("look up objects: %w", err)
	}
	rows, err := s.r.QueryContext(ctx, referencedObjectsSQL, nullList(attJSON), nullList(artJSON))
	if err != nil {
		return nil, fmt.Errorf("look up objects: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("look up objects: %w", err)
		}
		out[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up objects: %w", err)
	}
	return out, nil
}

// nullList turns a marshalled nil slice ("null") into an empty JSON array,
// which json_each reads as no rows.
func nullList(b []byte) string {
	if string(b) == "null" {
		return "[]"
	}
	return string(b)
}
