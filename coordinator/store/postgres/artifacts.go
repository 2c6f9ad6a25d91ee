package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// deleteArtifactsSQL removes the artifacts of task $1 of attempt $2 (0:
// every attempt) named in $3 (empty: every name) and returns them in
// ListArtifacts' order, which DELETE … RETURNING alone does not promise.
const deleteArtifactsSQL = `WITH gone AS (
		DELETE FROM task_artifacts
		WHERE task_id = $1 AND ($2::integer = 0 OR attempt = $2::integer)
		  AND (cardinality($3::text[]) = 0 OR name = ANY($3::text[]))
		RETURNING task_id, attempt, name, size, sha256, created_at
	)
	SELECT task_id, attempt, name, size, sha256, created_at FROM gone ORDER BY attempt, name`

// DeleteArtifacts removes the selected artifact records of a task and
// credits their sizes to its group, in one transaction. FOR NO KEY UPDATE
// holds the task row to commit, as AddArtifact does, so that no claim can
// make the task running, and no upload record an artifact, between the
// state check and the delete; locks are taken task row first, then group
// row, in the same order as AddArtifact's, and cannot deadlock.
func (s *Store) DeleteArtifacts(ctx context.Context, id tasks.ID, attempt int, names []string) ([]tasks.Artifact, error) {
	if err := store.CheckArtifactSelection(attempt); err != nil {
		return nil, err
	}
	var out []tasks.Artifact
	err := s.tx(ctx, "delete artifacts", func(tx pgx.Tx) error {
		var st, group string
		err := tx.QueryRow(ctx, `SELECT state, group_name FROM tasks WHERE id = $1 FOR NO KEY UPDATE`, int64(id)).Scan(&st, &group)
		if errors.Is(err, pgx.ErrNoRows) {
			return tasks.Errorf(tasks.ENotFound, "task %d not found", id)
		}
		if err != nil {
			return err
		}
		if tasks.State(st) == tasks.Running {
			return store.ArtifactsInUse(id)
		}
		rows, err := tx.Query(ctx, deleteArtifactsSQL, int64(id), attempt, list(names))
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Artifact, error) {
			var a tasks.Artifact
			var id int64
			err := r.Scan(&id, &a.Attempt, &a.Name, &a.Size, &a.SHA256, &a.CreatedAt)
			a.Task, a.CreatedAt = tasks.ID(id), a.CreatedAt.UTC()
			return a, err
		})
		if err != nil {
			return err
		}
		var freed int64
		for _, a := range out {
			freed += a.Size
		}
		return charge(ctx, tx, group, -freed, "", 0)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
