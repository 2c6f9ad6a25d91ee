package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// taskCols lists a task's columns in the order scanTask reads them.
const taskCols = `id, group_name, creator, command, shell, env, timeout_ns, priority, tags, labels,
	max_attempts, state, attempt, host, retry_of, created_at, started_at, finished_at, lease_expires,
	exit_code, signal, error, stdout_truncated, stderr_truncated, inputs`

// scanTask reads one row of taskCols, then extra columns into extra.
func scanTask(row interface{ Scan(...any) error }, extra ...any) (tasks.Task, error) {
	var t tasks.Task
	var command, env, tags, labels, inputs string
	var timeout, created int64
	var started, finished, expires, exit sql.NullInt64
	dest := append([]any{&t.ID, &t.Group, &t.Creator, &command, &t.Shell, &env, &timeout, &t.Priority,
		&tags, &labels, &t.MaxAttempts, &t.State, &t.Attempt, &t.Host, &t.RetryOf, &created,
		&started, &finished, &expires, &exit, &t.Signal, &t.Error, &t.StdoutTruncated, &t.StderrTruncated,
		&inputs}, extra...)
	if err := row.Scan(dest...); err != nil {
		return tasks.Task{}, err
	}
	if err := json.Unmarshal([]byte(command), &t.Command); err != nil {
		return tasks.Task{}, fmt.Errorf("decode command of task %d: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(env), &t.Env); err != nil {
		return tasks.Task{}, fmt.Errorf("decode env of task %d: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(inputs), &t.Inputs); err != nil {
		return tasks.Task{}, fmt.Errorf("decode inputs of task %d: %w", t.ID, err)
	}
	var err error
	if t.Tags, err = decList(tags); err != nil {
		return tasks.Task{}, fmt.Errorf("decode tags of task %d: %w", t.ID, err)
	}
	if t.Labels, err = decList(labels); err != nil {
		return tasks.Task{}, fmt.Errorf("decode labels of task %d: %w", t.ID, err)
	}
	t.Timeout = tasks.Duration(timeout)
	t.CreatedAt = fromMicros(created)
	t.StartedAt = ptrMicros(started)
	t.FinishedAt = ptrMicros(finished)
	t.LeaseExpires = ptrMicros(expires)
	if exit.Valid {
		c := int(exit.Int64)
		t.ExitCode = &c
	}
	return t, nil
}

// encList stores a list as a JSON array, never null, so that json_each
// always sees an array.
func encList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(l) // a []string always marshals
	return string(b)
}

// decList reads a stored list; an empty one is nil, as it was given.
func decList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, err
	}
	if len(l) == 0 {
		return nil, nil
	}
	return l, nil
}

// CreateTasks stores specs as queued tasks in one transaction. Each spec
// is normalized again (a no-op for a normalized one) so that the claim can
// rely on sorted tags and a positive MaxAttempts whoever the caller is.
func (s *Store) CreateTasks(ctx context.Context, creator string, specs []tasks.Spec, retryOf tasks.ID) ([]tasks.Task, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	created := now()
	out := make([]tasks.Task, 0, len(specs))
	err := s.write(ctx, "create tasks", func(tx wtx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO tasks (group_name, creator, command, shell, env, timeout_ns,
			priority, tags, labels, max_attempts, state, retry_of, created_at, inputs, waits_on)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+taskCols)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, sp := range specs {
			if err := sp.Normalize(); err != nil {
				return store.SpecError(err, i, len(specs))
			}
			command, err := json.Marshal(sp.Command)
			if err != nil {
				return err
			}
			env, err := json.Marshal(sp.Env)
			if err != nil {
				return err
			}
			inputs, err := json.Marshal(sp.Inputs)
			if err != nil {
				return err
			}
			waits := "[]" // never null, so that json_each always sees an array
			if ids := store.WaitsOn(sp.Inputs); len(ids) > 0 {
				b, _ := json.Marshal(ids) // IDs always marshal
				waits = string(b)
			}
			t, err := scanTask(stmt.QueryRowContext(ctx, sp.Group, creator, string(command), sp.Shell, string(env),
				int64(sp.Timeout), sp.Priority, encList(sp.Tags), encList(sp.Labels), sp.MaxAttempts,
				string(tasks.Queued), int64(retryOf), micros(created), string(inputs), waits))
			if err != nil {
				return err
			}
			out = append(out, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetTask returns one task.
func (s *Store) GetTask(ctx context.Context, id tasks.ID) (tasks.Task, error) {
	t, err := scanTask(s.r.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, int64(id)))
	if errors.Is(err, sql.ErrNoRows) {
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
	add := func(cond string, a ...any) {
		where = append(where, cond)
		args = append(args, a...)
	}
	if len(f.Groups) > 0 {
		add(`group_name IN (SELECT value FROM json_each(?))`, encList(f.Groups))
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		add(`state IN (SELECT value FROM json_each(?))`, encList(states))
	}
	if len(f.Tags) > 0 {
		add(`NOT EXISTS (SELECT 1 FROM json_each(?) w WHERE w.value NOT IN (SELECT value FROM json_each(tasks.tags)))`, encList(f.Tags))
	}
	if len(f.Labels) > 0 {
		add(`NOT EXISTS (SELECT 1 FROM json_each(?) w WHERE w.value NOT IN (SELECT value FROM json_each(tasks.labels)))`, encList(f.Labels))
	}
	if f.Creator != "" {
		add(`creator = ?`, f.Creator)
	}
	if f.Host != "" {
		add(`host = ?`, f.Host)
	}
	if !f.Since.IsZero() {
		add(`created_at >= ?`, micros(f.Since))
	}
	if !f.Until.IsZero() {
		add(`created_at < ?`, micros(f.Until))
	}
	if f.Before > 0 {
		add(`id < ?`, int64(f.Before))
	}
	q := `SELECT ` + taskCols + ` FROM tasks`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, store.ListLimit(f.Limit))
	return s.queryTasks(ctx, "list tasks", q, args...)
}

// queryTasks runs a query of taskCols on the read pool.
func (s *Store) queryTasks(ctx context.Context, what, q string, args ...any) ([]tasks.Task, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out, err := collectTasks(rows)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// collectTasks reads and closes rows of taskCols.
func collectTasks(rows *sql.Rows) ([]tasks.Task, error) {
	defer rows.Close()
	var out []tasks.Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// CancelTask moves a queued or running task to cancelled.
func (s *Store) CancelTask(ctx context.Context, id tasks.ID, at time.Time) (tasks.Task, error) {
	var t tasks.Task
	err := s.write(ctx, "cancel task", func(tx wtx) error {
		var err error
		t, err = scanTask(tx.QueryRowContext(ctx, `UPDATE tasks SET state = 'cancelled', finished_at = ?, error = 'cancelled',
			lease_token = NULL, lease_expires = NULL
			WHERE id = ? AND state IN ('queued', 'running') RETURNING `+taskCols, micros(at), int64(id)))
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var st tasks.State
		err = tx.QueryRowContext(ctx, `SELECT state FROM tasks WHERE id = ?`, int64(id)).Scan(&st)
		if errors.Is(err, sql.ErrNoRows) {
			return tasks.Errorf(tasks.ENotFound, "task %d not found", id)
		}
		if err != nil {
			return err
		}
		return tasks.Errorf(tasks.EConflict, "task %d is already %s", id, st)
	})
	if err != nil {
		return tasks.Task{}, err
	}
	return t, nil
}
