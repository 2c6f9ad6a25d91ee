package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// deleteArtifactsSQL removes the artifacts of task ?1 of attempt ?2 (0:
// every attempt) named in the JSON array ?3 (empty: every name).
const deleteArtifactsSQL = `DELETE FROM task_artifacts
	WHERE task_id = ?1 AND (?2 = 0 OR attempt = ?2)
	  AND (?3 = '[]' OR name IN (SELECT value FROM json_each(?3)))
	RETURNING task_id, attempt, name, size, sha256, created_at`

// DeleteArtifacts removes the selected artifact records of a task and
// credits their sizes to its group, in one transaction. Write
// transactions are serialized, so no AddArtifact or Claim can come
// between the state check and the delete.
func (s *Store) DeleteArtifacts(ctx context.Context, id tasks.ID, attempt int, names []string) ([]tasks.Artifact, error) {
	if err := store.CheckArtifactSelection(attempt); err != nil {
		return nil, err
	}
	var out []tasks.Artifact
	err := s.write(ctx, "delete artifacts", func(tx wtx) error {
		out = nil
		var st tasks.State
		var group string
		err := tx.QueryRowContext(ctx, `SELECT state, group_name FROM tasks WHERE id = ?`, int64(id)).Scan(&st, &group)
		if errors.Is(err, sql.ErrNoRows) {
			return tasks.Errorf(tasks.ENotFound, "task %d not found", id)
		}
		if err != nil {
			return err
		}
		if st == tasks.Running {
			return store.ArtifactsInUse(id)
		}
		rows, err := tx.QueryContext(ctx, deleteArtifactsSQL, int64(id), attempt, encList(names))
		if err != nil {
			return err
		}
		defer rows.Close()
		var freed int64
		for rows.Next() {
			var a tasks.Artifact
			var created int64
			if err := rows.Scan(&a.Task, &a.Attempt, &a.Name, &a.Size, &a.SHA256, &created); err != nil {
				return err
			}
			a.CreatedAt = fromMicros(created)
			out = append(out, a)
			freed += a.Size
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if err := rows.Close(); err != nil {
			return err
		}
		return charge(ctx, tx, group, -freed, "", 0)
	})
	if err != nil {
		return nil, err
	}
	// RETURNING gives rows in no promised order; BINARY collation, which
	// ListArtifacts orders by, compares bytes as Go does.
	slices.SortFunc(out, func(a, b tasks.Artifact) int {
		return cmp.Or(cmp.Compare(a.Attempt, b.Attempt), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}
