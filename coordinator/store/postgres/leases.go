package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// claimSQL claims in one statement. locked walks the queue index best
// first and locks up to $3 rows, skipping rows another claim has locked, so
// claimers neither wait for nor collide with each other. (FOR UPDATE does
// not mix with window functions, hence the last CTE.) row_number pairs
// each task with one of the tokens made in Go ($4), so every task gets its
// own crypto/rand token. A task may run on the host when its tags are a
// subset of the host's ($2); an untagged task runs anywhere.
//
// waiting lists the queued tasks of the host's groups that take an
// artifact of a task still queued or running (store.WaitsOn), through the
// tasks_waiting index, which holds only queued tasks with sources; locked
// skips them. It is a hashed set built once per claim, costing a look at
// each queued task with sources, rather than a subquery per queued row:
// the planner prices such a subquery at every row it might walk, whatever
// the row's list holds, and then re-plans the statement at every claim
// instead of keeping its generic plan (BenchClaimFinish went from 1.0 to
// 1.45 ms). The sources are read, not locked: one that ends during the
// claim only makes the task wait for the next one.
//
// With $8 set (ClaimParams.NoInputs) locked takes only tasks without
// inputs: 'null' as CreateTasks writes it, or an empty list (jsonb
// compares by value, so any spelling of it).
var claimSQL = `WITH waiting AS (
	SELECT id FROM tasks w
	WHERE state = 'queued' AND waits_on <> '{}' AND group_name = ANY($1::text[])
	  AND EXISTS (SELECT 1 FROM tasks src WHERE src.id = ANY(w.waits_on) AND src.state IN ('queued', 'running'))
), locked AS (
	SELECT id, priority FROM tasks
	WHERE state = 'queued' AND group_name = ANY($1::text[]) AND tags <@ $2::text[]
	  AND id NOT IN (SELECT id FROM waiting)
	  AND (NOT $8::boolean OR inputs IN ('null'::jsonb, '[]'::jsonb))
	ORDER BY priority DESC, id
	LIMIT $3
	FOR UPDATE SKIP LOCKED
), picked AS (
	SELECT id, row_number() OVER (ORDER BY priority DESC, id) AS n FROM locked
)
UPDATE tasks t SET
	state = 'running',
	attempt = t.attempt + 1,
	host = $5,
	lease_token = ($4::text[])[picked.n],
	lease_expires = $6,
	started_at = $7,
	finished_at = NULL,
	exit_code = NULL,
	signal = '',
	error = '',
	stdout_truncated = false,
	stderr_truncated = false
FROM picked
WHERE t.id = picked.id
RETURNING ` + taskCols("t.") + `, t.lease_token`

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
	rows, err := s.pool.Query(ctx, claimSQL, p.Groups, list(p.Tags), n, tokens, p.Host, p.Now.Add(p.TTL), p.Now, p.NoInputs)
	if err != nil {
		return nil, fmt.Errorf("claim tasks: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Assignment, error) {
		var a tasks.Assignment
		var err error
		if a.Task, err = scanTask(r, &a.Lease.Token); err != nil {
			return a, err
		}
		a.Lease.Task, a.Lease.Attempt, a.Lease.Expires = a.Task.ID, a.Task.Attempt, *a.Task.LeaseExpires
		return a, nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim tasks: %w", err)
	}
	store.SortAssignments(out)
	return out, nil
}

// Renew extends the current leases among refs, in one statement, and
// returns the others.
func (s *Store) Renew(ctx context.Context, refs []tasks.LeaseRef, at time.Time, ttl time.Duration) ([]tasks.LeaseRef, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(refs))
	attempts := make([]int32, len(refs))
	tokens := make([]string, len(refs))
	for i, r := range refs {
		ids[i], attempts[i], tokens[i] = int64(r.Task), int32(r.Attempt), r.Token
	}
	rows, err := s.pool.Query(ctx, `UPDATE tasks t SET lease_expires = $1
		FROM unnest($2::bigint[], $3::integer[], $4::text[]) AS r (id, attempt, token)
		WHERE t.id = r.id AND t.state = 'running' AND t.attempt = r.attempt AND t.lease_token = r.token
		RETURNING t.id, t.attempt, t.lease_token`, at.Add(ttl), ids, attempts, tokens)
	if err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	renewed, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.LeaseRef, error) {
		var ref tasks.LeaseRef
		var id int64
		err := r.Scan(&id, &ref.Attempt, &ref.Token)
		ref.Task = tasks.ID(id)
		return ref, err
	})
	if err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	current := make(map[tasks.LeaseRef]bool, len(renewed))
	for _, r := range renewed {
		current[r] = true
	}
	var stale []tasks.LeaseRef
	for _, r := range refs {
		if !current[r] {
			stale = append(stale, r)
		}
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
	t, err := scanTask(s.pool.QueryRow(ctx, `UPDATE tasks SET state = $1, exit_code = $2, signal = $3, error = $4,
		stdout_truncated = $5, stderr_truncated = $6, finished_at = $7, lease_token = NULL, lease_expires = NULL
		WHERE id = $8 AND state = 'running' AND attempt = $9 AND lease_token = $10
		RETURNING `+cols,
		string(r.State), r.ExitCode, r.Signal, r.Error, r.StdoutTruncated, r.StderrTruncated, finished,
		int64(ref.Task), ref.Attempt, ref.Token))
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return tasks.Task{}, fmt.Errorf("finish task: %w", err)
	}
	// A ref that is not current never becomes current again (tokens are
	// new at each claim), so this second look only explains the refusal.
	var st string
	var attempt int
	var token pgtype.Text
	err = s.pool.QueryRow(ctx, `SELECT state, attempt, lease_token FROM tasks WHERE id = $1`, int64(ref.Task)).Scan(&st, &attempt, &token)
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Task{}, tasks.Errorf(tasks.ENotFound, "task %d not found", ref.Task)
	}
	if err != nil {
		return tasks.Task{}, fmt.Errorf("finish task: %w", err)
	}
	if err := store.StaleLease(ref, tasks.State(st), attempt, token.String); err != nil {
		return tasks.Task{}, err
	}
	return tasks.Task{}, tasks.Errorf(tasks.EStaleLease, "task %d attempt %d: lease is no longer current", ref.Task, ref.Attempt)
}

// lostSet ends an attempt its host lost: the task is queued again, and
// the next claim counts the new attempt, or it fails when it has used all
// its attempts, saying why ($2, "lease expired") and when ($1). Its
// columns name their table, for an UPDATE with a FROM.
const lostSet = `state = CASE WHEN tasks.attempt < tasks.max_attempts THEN 'queued' ELSE 'failed' END,
	error = CASE WHEN tasks.attempt < tasks.max_attempts THEN '' ELSE 'host lost: ' || $2::text || ' on attempt ' || tasks.attempt END,
	finished_at = CASE WHEN tasks.attempt < tasks.max_attempts THEN NULL ELSE $1::timestamptz END,
	lease_token = NULL,
	lease_expires = NULL`

// RequeueExpired sends running tasks whose lease ran out back to the
// queue, or fails them when they have used all their attempts. A task
// finished concurrently no longer matches once its row lock is released,
// so it is left alone.
func (s *Store) RequeueExpired(ctx context.Context, at time.Time) ([]tasks.Task, error) {
	rows, err := s.pool.Query(ctx, `UPDATE tasks SET `+lostSet+`
		WHERE state = 'running' AND lease_expires < $1::timestamptz
		RETURNING `+cols, at, "lease expired")
	if err != nil {
		return nil, fmt.Errorf("requeue expired tasks: %w", err)
	}
	out, err := collectTasks(rows)
	if err != nil {
		return nil, fmt.Errorf("requeue expired tasks: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ReleaseLeases ends the current attempts among refs that host holds, in
// one statement: each row is matched by its fence, so a task finished or
// requeued concurrently is left alone.
func (s *Store) ReleaseLeases(ctx context.Context, host string, refs []tasks.LeaseRef, reason string, at time.Time) ([]tasks.Task, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(refs))
	attempts := make([]int32, len(refs))
	tokens := make([]string, len(refs))
	for i, r := range refs {
		ids[i], attempts[i], tokens[i] = int64(r.Task), int32(r.Attempt), r.Token
	}
	rows, err := s.pool.Query(ctx, `UPDATE tasks SET `+lostSet+`
		FROM unnest($3::bigint[], $4::int[], $5::text[]) AS r(id, attempt, token)
		WHERE tasks.id = r.id AND tasks.state = 'running' AND tasks.attempt = r.attempt
		  AND tasks.lease_token = r.token AND tasks.host = $6
		RETURNING `+taskCols("tasks."), at, reason, ids, attempts, tokens, host)
	if err != nil {
		return nil, fmt.Errorf("release leases: %w", err)
	}
	out, err := collectTasks(rows)
	if err != nil {
		return nil, fmt.Errorf("release leases: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
