package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// claimSQL claims in one statement. The inner SELECT walks the queue index
// best first and stops at the limit (INDEXED BY: left to itself, the
// planner prefers the group index and sorts the group's whole history); row_number pairs each picked task with
// one of the tokens made in Go (?4, a JSON array), so every task gets its
// own crypto/rand token. A task may run on the host when none of its tags
// is missing from the host's (?2); an untagged task runs anywhere. A task
// that takes another's artifact waits while any source in waits_on is
// queued or running; the empty list of most tasks is tested first, so that
// they pay nothing for it. With ?8 set (ClaimParams.NoInputs) only tasks
// without inputs are picked: CreateTasks writes 'null' for none, which
// the text test catches, and json_array_length takes '[]' and any other
// spelling of an empty list.
const claimSQL = `WITH picked AS (
	SELECT id, row_number() OVER (ORDER BY priority DESC, id) - 1 AS n
	FROM (
		SELECT id, priority FROM tasks INDEXED BY tasks_queue
		WHERE state = 'queued'
		  AND group_name IN (SELECT value FROM json_each(?1))
		  AND NOT EXISTS (SELECT 1 FROM json_each(tasks.tags) need
		                  WHERE need.value NOT IN (SELECT value FROM json_each(?2)))
		  AND (tasks.waits_on = '[]' OR NOT EXISTS (
		        SELECT 1 FROM json_each(tasks.waits_on) w JOIN tasks src ON src.id = w.value
		        WHERE src.state IN ('queued', 'running')))
		  AND (?8 = 0 OR tasks.inputs = 'null' OR json_array_length(tasks.inputs) = 0)
		ORDER BY priority DESC, id
		LIMIT ?3
	)
)
UPDATE tasks SET
	state = 'running',
	attempt = attempt + 1,
	host = ?5,
	lease_token = (SELECT value FROM json_each(?4) WHERE key = picked.n),
	lease_expires = ?6,
	started_at = ?7,
	finished_at = NULL,
	exit_code = NULL,
	signal = '',
	error = '',
	stdout_truncated = 0,
	stderr_truncated = 0
FROM picked
WHERE tasks.id = picked.id
RETURNING ` + taskCols + `, lease_token`

// Claim leases up to p.Max queued tasks the host may run, best first.
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) ([]tasks.Assignment, error) {
	if p.Max <= 0 || len(p.Groups) == 0 {
		return nil, nil
	}
	n := min(p.Max, store.MaxClaim)
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = store.NewLeaseToken()
	}
	toks, _ := json.Marshal(tokens) // a []string always marshals
	expires := p.Now.Add(p.TTL)
	var out []tasks.Assignment
	err := s.write(ctx, "claim tasks", func(tx wtx) error {
		rows, err := tx.QueryContext(ctx, claimSQL, encList(p.Groups), encList(p.Tags), n, string(toks),
			p.Host, micros(expires), micros(p.Now), p.NoInputs)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a tasks.Assignment
			if a.Task, err = scanTask(rows, &a.Lease.Token); err != nil {
				return err
			}
			a.Lease.Task, a.Lease.Attempt, a.Lease.Expires = a.Task.ID, a.Task.Attempt, *a.Task.LeaseExpires
			out = append(out, a)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	store.SortAssignments(out)
	return out, nil
}

// currentSQL is the fence every lease-bound write checks.
const currentSQL = `id = ? AND state = 'running' AND attempt = ? AND lease_token = ?`

const (
	renewSQL = `UPDATE tasks SET lease_expires = ? WHERE ` + currentSQL

	finishSQL = `UPDATE tasks SET state = ?, exit_code = ?, signal = ?, error = ?,
	stdout_truncated = ?, stderr_truncated = ?, finished_at = ?, lease_token = NULL, lease_expires = NULL
	WHERE ` + currentSQL + ` RETURNING ` + taskCols

	fenceSQL = `SELECT state, attempt, lease_token FROM tasks WHERE id = ?`

	// requeueSQL ends the attempts whose leases ran out.
	requeueSQL = `UPDATE tasks SET ` + lostSet + ` WHERE state = 'running' AND lease_expires < ?1
	RETURNING ` + taskCols

	// releaseSQL ends one attempt that its host reports dead.
	releaseSQL = `UPDATE tasks SET ` + lostSet + `
	WHERE id = ?3 AND state = 'running' AND attempt = ?4 AND lease_token = ?5 AND host = ?6
	RETURNING ` + taskCols
)

// lostSet ends an attempt its host lost: the task is queued again, and
// the next claim counts the new attempt, or it fails when it has used
// all its attempts, saying why (?2, "lease expired") and when (?1).
const lostSet = `state = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
	error = CASE WHEN attempt < max_attempts THEN '' ELSE 'host lost: ' || ?2 || ' on attempt ' || attempt END,
	finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE ?1 END,
	lease_token = NULL,
	lease_expires = NULL`

// Renew extends the current leases among refs and returns the others.
func (s *Store) Renew(ctx context.Context, refs []tasks.LeaseRef, at time.Time, ttl time.Duration) ([]tasks.LeaseRef, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	var stale []tasks.LeaseRef
	err := s.write(ctx, "renew leases", func(tx wtx) error {
		for _, ref := range refs {
			res, err := tx.ExecContext(ctx, renewSQL, micros(at.Add(ttl)), int64(ref.Task), ref.Attempt, ref.Token)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if n == 0 {
				stale = append(stale, ref)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return stale, nil
}

// Finish ends the attempt that ref names with result r.
func (s *Store) Finish(ctx context.Context, ref tasks.LeaseRef, r tasks.Result) (tasks.Task, error) {
	if err := store.CheckResult(r); err != nil {
		return tasks.Task{}, err
	}
	finished := r.FinishedAt
	if finished.IsZero() {
		finished = now()
	}
	var exit any
	if r.ExitCode != nil {
		exit = *r.ExitCode
	}
	var t tasks.Task
	err := s.write(ctx, "finish task", func(tx wtx) error {
		var err error
		t, err = scanTask(tx.QueryRowContext(ctx, finishSQL,
			string(r.State), exit, r.Signal, r.Error, r.StdoutTruncated, r.StderrTruncated, micros(finished),
			int64(ref.Task), ref.Attempt, ref.Token))
		if errors.Is(err, sql.ErrNoRows) {
			return fence(ctx, tx, ref)
		}
		return err
	})
	if err != nil {
		return tasks.Task{}, err
	}
	return t, nil
}

// fence returns nil when ref is current, else ENotFound or an EStaleLease
// error that says why, so a shim's log explains the refusal. Inside a write
// transaction the answer holds until commit: SQLite has one writer.
func fence(ctx context.Context, tx wtx, ref tasks.LeaseRef) error {
	var st tasks.State
	var attempt int
	var token sql.NullString
	err := tx.QueryRowContext(ctx, fenceSQL, int64(ref.Task)).
		Scan(&st, &attempt, &token)
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.Errorf(tasks.ENotFound, "task %d not found", ref.Task)
	}
	if err != nil {
		return err
	}
	return store.StaleLease(ref, st, attempt, token.String)
}

// RequeueExpired sends running tasks whose lease ran out back to the
// queue, or fails them when they have used all their attempts.
func (s *Store) RequeueExpired(ctx context.Context, at time.Time) ([]tasks.Task, error) {
	var out []tasks.Task
	err := s.write(ctx, "requeue expired tasks", func(tx wtx) error {
		rows, err := tx.QueryContext(ctx, requeueSQL, micros(at), "lease expired")
		if err != nil {
			return err
		}
		out, err = collectTasks(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ReleaseLeases ends the current attempts among refs that host holds.
func (s *Store) ReleaseLeases(ctx context.Context, host string, refs []tasks.LeaseRef, reason string, at time.Time) ([]tasks.Task, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	var out []tasks.Task
	err := s.write(ctx, "release leases", func(tx wtx) error {
		for _, ref := range refs {
			t, err := scanTask(tx.QueryRowContext(ctx, releaseSQL, micros(at), reason, int64(ref.Task), ref.Attempt, ref.Token, host))
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
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
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
