package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// taskCols lists a task's columns in the order scanTask reads them, each
// prefixed with p (a table alias and '.', or "").
func taskCols(p string) string {
	cols := []string{"id", "group_name", "creator", "command", "shell", "env", "timeout_ns", "priority", "tags", "labels",
		"max_attempts", "state", "attempt", "host", "retry_of", "created_at", "started_at", "finished_at", "lease_expires",
		"exit_code", "signal", "error", "stdout_truncated", "stderr_truncated", "inputs"}
	return p + strings.Join(cols, ", "+p)
}

var cols = taskCols("")

// scanTask reads one row of taskCols, then extra columns into extra.
func scanTask(row pgx.Row, extra ...any) (tasks.Task, error) {
	var t tasks.Task
	var id, retryOf, timeout int64
	var state string
	var started, finished, expires *time.Time
	dest := append([]any{&id, &t.Group, &t.Creator, &t.Command, &t.Shell, &t.Env, &timeout, &t.Priority,
		&t.Tags, &t.Labels, &t.MaxAttempts, &state, &t.Attempt, &t.Host, &retryOf, &t.CreatedAt,
		&started, &finished, &expires, &t.ExitCode, &t.Signal, &t.Error, &t.StdoutTruncated, &t.StderrTruncated,
		&t.Inputs}, extra...)
	if err := row.Scan(dest...); err != nil {
		return tasks.Task{}, err
	}
	t.ID, t.RetryOf, t.Timeout, t.State = tasks.ID(id), tasks.ID(retryOf), tasks.Duration(timeout), tasks.State(state)
	t.Tags, t.Labels = nilIfEmpty(t.Tags), nilIfEmpty(t.Labels)
	t.CreatedAt = t.CreatedAt.UTC()
	t.StartedAt, t.FinishedAt, t.LeaseExpires = utcPtr(started), utcPtr(finished), utcPtr(expires)
	return t, nil
}

// collectTasks reads and closes rows of taskCols.
func collectTasks(rows pgx.Rows) ([]tasks.Task, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Task, error) { return scanTask(r) })
}

// CreateTasks stores specs as queued tasks in one transaction and one
// round trip. Each spec is normalized again (a no-op for a normalized one)
// so that the claim can rely on sorted tags and a positive MaxAttempts
// whoever the caller is.
func (s *Store) CreateTasks(ctx context.Context, creator string, specs []tasks.Spec, retryOf tasks.ID) ([]tasks.Task, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	created := now()
	batch := &pgx.Batch{}
	for i, sp := range specs {
		if err := sp.Normalize(); err != nil {
			return nil, store.SpecError(err, i, len(specs))
		}
		// A string parameter is sent to jsonb as is; a nil slice or map
		// would be sent as NULL, and "null" keeps nil apart from empty.
		command, err := json.Marshal(sp.Command)
		if err != nil {
			return nil, fmt.Errorf("create tasks: %w", err)
		}
		env, err := json.Marshal(sp.Env)
		if err != nil {
			return nil, fmt.Errorf("create tasks: %w", err)
		}
		inputs, err := json.Marshal(sp.Inputs)
		if err != nil {
			return nil, fmt.Errorf("create tasks: %w", err)
		}
		waits := []int64{} // not nil: a nil slice is sent as NULL
		for _, id := range store.WaitsOn(sp.Inputs) {
			waits = append(waits, int64(id))
		}
		batch.Queue(`INSERT INTO tasks (group_name, creator, command, shell, env, timeout_ns,
			priority, tags, labels, max_attempts, state, retry_of, created_at, inputs, waits_on)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING `+cols,
			sp.Group, creator, string(command), sp.Shell, string(env), int64(sp.Timeout), sp.Priority,
			list(sp.Tags), list(sp.Labels), sp.MaxAttempts, string(tasks.Queued), int64(retryOf), created, string(inputs), waits)
	}
	out := make([]tasks.Task, 0, len(specs))
	err := s.tx(ctx, "create tasks", func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, batch)
		for range specs {
			t, err := scanTask(br.QueryRow())
			if err != nil {
				br.Close()
				return err
			}
			out = append(out, t)
		}
		return br.Close()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetTask returns one task.
func (s *Store) GetTask(ctx context.Context, id tasks.ID) (tasks.Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+cols+` FROM tasks WHERE id = $1`, int64(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Task{}, tasks.Errorf(tasks.ENotFound, "task %d not found", id)
	}
	if err != nil {
		return tasks.Task{}, fmt.Errorf("get task: %w", err)
	}
	return t, nil
}

// ListTasks returns the tasks that match f, newest first.
func (s *Store) ListTasks(ctx context.Context, f tasks.Filter) ([]tasks.Task, error) {
	var where []string
	var args []any
	add := func(cond string, a any) {
		args = append(args, a)
		where = append(where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if len(f.Groups) > 0 {
		add(`group_name = ANY($?)`, f.Groups)
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		add(`state = ANY($?)`, states)
	}
	if len(f.Tags) > 0 {
		add(`tags @> $?`, f.Tags)
	}
	if len(f.Labels) > 0 {
		add(`labels @> $?`, f.Labels)
	}
	if f.Creator != "" {
		add(`creator = $?`, f.Creator)
	}
	if f.Host != "" {
		add(`host = $?`, f.Host)
	}
	if !f.Since.IsZero() {
		add(`created_at >= $?`, f.Since)
	}
	if !f.Until.IsZero() {
		add(`created_at < $?`, f.Until)
	}
	if f.Before > 0 {
		add(`id < $?`, int64(f.Before))
	}
	q := `SELECT ` + cols + ` FROM tasks`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	args = append(args, store.ListLimit(f.Limit))
	q += ` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	out, err := collectTasks(rows)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// CancelTask moves a queued or running task to cancelled.
func (s *Store) CancelTask(ctx context.Context, id tasks.ID, at time.Time) (tasks.Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `UPDATE tasks SET state = 'cancelled', finished_at = $1, error = 'cancelled',
		lease_token = NULL, lease_expires = NULL
		WHERE id = $2 AND state IN ('queued', 'running') RETURNING `+cols, at, int64(id)))
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return tasks.Task{}, fmt.Errorf("cancel task: %w", err)
	}
	// A final state never changes, so this second look cannot contradict
	// the update's.
	var st string
	err = s.pool.QueryRow(ctx, `SELECT state FROM tasks WHERE id = $1`, int64(id)).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Task{}, tasks.Errorf(tasks.ENotFound, "task %d not found", id)
	}
	if err != nil {
		return tasks.Task{}, fmt.Errorf("cancel task: %w", err)
	}
	return tasks.Task{}, tasks.Errorf(tasks.EConflict, "task %d is already %s", id, st)
}
