package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// fencedSQL wraps a data-modifying statement (ins, which may use $1 task,
// $2 attempt, and cur's columns) so that it runs only while the lease
// $1/$2/$3 is current, in the same statement. FOR SHARE holds the task row
// until commit, so a concurrent Finish or requeue waits for the write
// instead of slipping in between the check and the write. The statement
// returns the task's state, attempt and token, from which the caller tells
// a missing task from a stale lease.
func fencedSQL(ins string) string {
	return `WITH cur AS (
		SELECT state, attempt, lease_token FROM tasks WHERE id = $1 FOR SHARE
	), ins AS (
		` + ins + `
	)
	SELECT state, attempt, lease_token FROM cur`
}

// fenced runs a statement built by fencedSQL and turns its answer into
// ENotFound or EStaleLease.
func (s *Store) fenced(ctx context.Context, what, q string, ref tasks.LeaseRef, args ...any) error {
	var st string
	var attempt int
	var token pgtype.Text
	err := s.pool.QueryRow(ctx, q, append([]any{int64(ref.Task), ref.Attempt, ref.Token}, args...)...).Scan(&st, &attempt, &token)
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Errorf(tasks.ENotFound, "task %d not found", ref.Task)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return store.StaleLease(ref, tasks.State(st), attempt, token.String)
}

// currentSQL is the condition, on cur, under which a fenced write happens.
const currentSQL = `cur.state = 'running' AND cur.attempt = $2 AND cur.lease_token = $3`

// AppendLog stores a chunk of output at byte offset off. An empty chunk is
// dropped after the fence check: stored, it would claim its offset and make
// the real chunk sent there later be ignored.
func (s *Store) AppendLog(ctx context.Context, ref tasks.LeaseRef, st tasks.Stream, off int64, data []byte) error {
	if _, err := tasks.ParseStream(string(st)); err != nil {
		return err
	}
	if off < 0 {
		return tasks.Invalid("offset", "must not be negative, got %d", off)
	}
	if data == nil {
		data = []byte{} // nil would be NULL
	}
	return s.fenced(ctx, "append log", fencedSQL(`INSERT INTO task_logs (task_id, attempt, stream, off, data)
		SELECT $1, $2, $4, $5, $6::bytea FROM cur WHERE `+currentSQL+` AND octet_length($6::bytea) > 0
		ON CONFLICT DO NOTHING`), ref, string(st), off, data)
}

// ReadLog returns up to limit bytes (all if limit <= 0) of a stream from
// byte offset off, joined by store.JoinLog.
func (s *Store) ReadLog(ctx context.Context, id tasks.ID, attempt int, st tasks.Stream, off int64, limit int) ([]byte, error) {
	if off < 0 {
		return nil, tasks.Invalid("offset", "must not be negative, got %d", off)
	}
	rows, err := s.pool.Query(ctx, `SELECT off, data FROM task_logs
		WHERE task_id = $1 AND attempt = $2 AND stream = $3 AND off + octet_length(data) > $4
		ORDER BY off`, int64(id), attempt, string(st), off)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	out, err := store.JoinLog(rows, off, limit)
	rows.Close() // pgx reports rows.Err only once they are closed
	if err == nil {
		err = rows.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	return out, nil
}

// AddArtifact records an artifact of the attempt ref names, replacing one
// of the same name, and charges the task's group the difference in size.
// FOR NO KEY UPDATE holds the task row to commit, as FOR SHARE does for the
// other fenced writes, and besides queues concurrent AddArtifacts of the
// task, so that two records of one name cannot both be charged in full.
func (s *Store) AddArtifact(ctx context.Context, ref tasks.LeaseRef, a tasks.Artifact) error {
	if a.Name == "" {
		return tasks.Invalid("name", "is empty")
	}
	if a.Size < 0 {
		return tasks.Invalid("size", "must not be negative, got %d", a.Size)
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = now()
	}
	return s.tx(ctx, "add artifact", func(tx pgx.Tx) error {
		var st, group string
		var attempt int
		var token pgtype.Text
		err := tx.QueryRow(ctx, `SELECT state, attempt, lease_token, group_name FROM tasks WHERE id = $1 FOR NO KEY UPDATE`,
			int64(ref.Task)).Scan(&st, &attempt, &token, &group)
		if errors.Is(err, pgx.ErrNoRows) {
			return tasks.Errorf(tasks.ENotFound, "task %d not found", ref.Task)
		}
		if err != nil {
			return err
		}
		if err := store.StaleLease(ref, tasks.State(st), attempt, token.String); err != nil {
			return err
		}
		// A statement of its own, after the lock: its snapshot sees what a
		// concurrent AddArtifact that held the lock committed.
		var old int64
		err = tx.QueryRow(ctx, `SELECT coalesce((SELECT size FROM task_artifacts WHERE task_id = $1 AND attempt = $2 AND name = $3), 0)`,
			int64(ref.Task), ref.Attempt, a.Name).Scan(&old)
		if err != nil {
			return err
		}
		if err := charge(ctx, tx, group, a.Size-old, strconv.Quote(a.Name), a.Size); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO task_artifacts (task_id, attempt, name, size, sha256, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (task_id, attempt, name) DO UPDATE SET
				size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at`,
			int64(ref.Task), ref.Attempt, a.Name, a.Size, a.SHA256, a.CreatedAt)
		return err
	})
}

// ListArtifacts returns a task's artifacts by attempt, then name.
func (s *Store) ListArtifacts(ctx context.Context, id tasks.ID) ([]tasks.Artifact, error) {
	rows, err := s.pool.Query(ctx, `SELECT task_id, attempt, name, size, sha256, created_at FROM task_artifacts
		WHERE task_id = $1 ORDER BY attempt, name`, int64(id))
	if err != nil {
		return nil, fmt.Errorf("list artifacts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Artifact, error) {
		var a tasks.Artifact
		var id int64
		err := r.Scan(&id, &a.Attempt, &a.Name, &a.Size, &a.SHA256, &a.CreatedAt)
		a.Task, a.CreatedAt = tasks.ID(id), a.CreatedAt.UTC()
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("list artifacts: %w", err)
	}
	return out, nil
}

// GetArtifact returns one artifact record of a task. Either query is one
// probe of an index: the primary key (task_id, attempt, name) for an
// attempt, task_artifacts_name (task_id, name, attempt) for the latest,
// which the primary key would serve only by scanning every artifact of
// the later attempts. No stored name or attempt is what a text or integer
// parameter cannot hold, so such a lookup finds nothing without asking.
func (s *Store) GetArtifact(ctx context.Context, id tasks.ID, attempt int, name string) (tasks.Artifact, error) {
	if err := store.CheckArtifactAttempt(attempt); err != nil {
		return tasks.Artifact{}, err
	}
	if !textSafe(name) || attempt > math.MaxInt32 {
		return tasks.Artifact{}, store.ArtifactNotFound(id, attempt, name)
	}
	const cols = `SELECT attempt, name, size, sha256, created_at FROM task_artifacts`
	var row pgx.Row
	if attempt == 0 {
		row = s.pool.QueryRow(ctx, cols+` WHERE task_id = $1 AND name = $2 ORDER BY attempt DESC LIMIT 1`, int64(id), name)
	} else {
		row = s.pool.QueryRow(ctx, cols+` WHERE task_id = $1 AND attempt = $2 AND name = $3`, int64(id), attempt, name)
	}
	a := tasks.Artifact{Task: id}
	err := row.Scan(&a.Attempt, &a.Name, &a.Size, &a.SHA256, &a.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Artifact{}, store.ArtifactNotFound(id, attempt, name)
	}
	if err != nil {
		return tasks.Artifact{}, fmt.Errorf("get artifact: %w", err)
	}
	a.CreatedAt = a.CreatedAt.UTC()
	return a, nil
}

// PutHost creates or replaces a host's record.
func (s *Store) PutHost(ctx context.Context, h tasks.Host) error {
	if h.UpdatedAt.IsZero() {
		h.UpdatedAt = now()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO hosts (name, transport, tags, group_names, slots, state, last_error, os, arch, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (name) DO UPDATE SET
			transport = excluded.transport, tags = excluded.tags, group_names = excluded.group_names,
			slots = excluded.slots, state = excluded.state, last_error = excluded.last_error,
			os = excluded.os, arch = excluded.arch, updated_at = excluded.updated_at`,
		h.Name, h.Transport, list(h.Tags), list(h.Groups), h.Slots, string(h.State), h.LastError, h.OS, h.Arch, h.UpdatedAt)
	if err != nil {
		return fmt.Errorf("put host: %w", err)
	}
	return nil
}

// hostSQL selects hosts with Running counted from the tasks they hold and
// Coordinator from their ownership lease.
const hostSQL = `SELECT name, transport, tags, group_names, slots, state, last_error, os, arch, updated_at,
	(SELECT count(*) FROM tasks WHERE tasks.state = 'running' AND tasks.host = hosts.name),
	coalesce((SELECT owner FROM host_owners WHERE host_owners.name = hosts.name), '')
	FROM hosts`

func scanHost(row pgx.Row) (tasks.Host, error) {
	var h tasks.Host
	var state string
	if err := row.Scan(&h.Name, &h.Transport, &h.Tags, &h.Groups, &h.Slots, &state, &h.LastError, &h.OS, &h.Arch,
		&h.UpdatedAt, &h.Running, &h.Coordinator); err != nil {
		return tasks.Host{}, err
	}
	h.State, h.Tags, h.Groups, h.UpdatedAt = tasks.HostState(state), nilIfEmpty(h.Tags), nilIfEmpty(h.Groups), h.UpdatedAt.UTC()
	return h, nil
}

// ListHosts returns every host, ordered by name.
func (s *Store) ListHosts(ctx context.Context) ([]tasks.Host, error) {
	rows, err := s.pool.Query(ctx, hostSQL+` ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Host, error) { return scanHost(r) })
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return out, nil
}

// GetHost returns one host.
func (s *Store) GetHost(ctx context.Context, name string) (tasks.Host, error) {
	h, err := scanHost(s.pool.QueryRow(ctx, hostSQL+` WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Host{}, tasks.Errorf(tasks.ENotFound, "host %q not found", name)
	}
	if err != nil {
		return tasks.Host{}, fmt.Errorf("get host: %w", err)
	}
	return h, nil
}
