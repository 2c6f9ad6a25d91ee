package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

const appendLogSQL = `INSERT INTO task_logs (task_id, attempt, stream, off, data) VALUES (?, ?, ?, ?, ?)
	ON CONFLICT DO NOTHING`

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
	return s.write(ctx, "append log", func(tx wtx) error {
		if err := fence(ctx, tx, ref); err != nil || len(data) == 0 {
			return err
		}
		_, err := tx.ExecContext(ctx, appendLogSQL, int64(ref.Task), ref.Attempt, string(st), off, data)
		return err
	})
}

// ReadLog returns up to limit bytes (all if limit <= 0) of a stream from
// byte offset off, joined by store.JoinLog.
func (s *Store) ReadLog(ctx context.Context, id tasks.ID, attempt int, st tasks.Stream, off int64, limit int) ([]byte, error) {
	if off < 0 {
		return nil, tasks.Invalid("offset", "must not be negative, got %d", off)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT off, data FROM task_logs
		WHERE task_id = ? AND attempt = ? AND stream = ? AND off + length(data) > ?
		ORDER BY off`, int64(id), attempt, string(st), off)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	defer rows.Close()
	out, err := store.JoinLog(rows, off, limit)
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
	return s.write(ctx, "add artifact", func(tx wtx) error {
		if err := fence(ctx, tx, ref); err != nil {
			return err
		}
		var group string
		var old int64
		err := tx.QueryRowContext(ctx, `SELECT group_name,
			coalesce((SELECT size FROM task_artifacts WHERE task_id = ?1 AND attempt = ?2 AND name = ?3), 0)
			FROM tasks WHERE id = ?1`, int64(ref.Task), ref.Attempt, a.Name).Scan(&group, &old)
		if err != nil {
			return err
		}
		if err := charge(ctx, tx, group, a.Size-old, strconv.Quote(a.Name), a.Size); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO task_artifacts (task_id, attempt, name, size, sha256, created_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (task_id, attempt, name) DO UPDATE SET
				size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at`,
			int64(ref.Task), ref.Attempt, a.Name, a.Size, a.SHA256, micros(a.CreatedAt))
		return err
	})
}

// ListArtifacts returns a task's artifacts by attempt, then name.
func (s *Store) ListArtifacts(ctx context.Context, id tasks.ID) ([]tasks.Artifact, error) {
	return queryAll(ctx, s, "list artifacts", func(row rowScanner) (tasks.Artifact, error) {
		var a tasks.Artifact
		var created int64
		err := row.Scan(&a.Task, &a.Attempt, &a.Name, &a.Size, &a.SHA256, &created)
		a.CreatedAt = fromMicros(created)
		return a, err
	}, `SELECT task_id, attempt, name, size, sha256, created_at FROM task_artifacts
		WHERE task_id = ? ORDER BY attempt, name`, int64(id))
}

// GetArtifact returns one artifact record of a task. Either query is one
// probe of an index: the primary key (task_id, attempt, name) for an
// attempt, task_artifacts_name (task_id, name, attempt) for the latest,
// which the primary key would serve only by scanning every artifact of
// the later attempts.
func (s *Store) GetArtifact(ctx context.Context, id tasks.ID, attempt int, name string) (tasks.Artifact, error) {
	if err := store.CheckArtifactAttempt(attempt); err != nil {
		return tasks.Artifact{}, err
	}
	const cols = `SELECT task_id, attempt, name, size, sha256, created_at FROM task_artifacts`
	var row *sql.Row
	if attempt == 0 {
		row = s.r.QueryRowContext(ctx, cols+` WHERE task_id = ? AND name = ? ORDER BY attempt DESC LIMIT 1`, int64(id), name)
	} else {
		row = s.r.QueryRowContext(ctx, cols+` WHERE task_id = ? AND attempt = ? AND name = ?`, int64(id), attempt, name)
	}
	var a tasks.Artifact
	var created int64
	err := row.Scan(&a.Task, &a.Attempt, &a.Name, &a.Size, &a.SHA256, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.Artifact{}, store.ArtifactNotFound(id, attempt, name)
	}
	if err != nil {
		return tasks.Artifact{}, fmt.Errorf("get artifact: %w", err)
	}
	a.CreatedAt = fromMicros(created)
	return a, nil
}

// PutHost creates or replaces a host's record.
func (s *Store) PutHost(ctx context.Context, h tasks.Host) error {
	if h.UpdatedAt.IsZero() {
		h.UpdatedAt = now()
	}
	return s.write(ctx, "put host", func(tx wtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO hosts (name, transport, tags, group_names, slots, state, last_error, os, arch, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET
				transport = excluded.transport, tags = excluded.tags, group_names = excluded.group_names,
				slots = excluded.slots, state = excluded.state, last_error = excluded.last_error,
				os = excluded.os, arch = excluded.arch, updated_at = excluded.updated_at`,
			h.Name, h.Transport, encList(h.Tags), encList(h.Groups), h.Slots, string(h.State), h.LastError,
			h.OS, h.Arch, micros(h.UpdatedAt))
		return err
	})
}

// hostSQL selects hosts with Running counted from the tasks they hold and
// Coordinator from their ownership lease.
const hostSQL = `SELECT name, transport, tags, group_names, slots, state, last_error, os, arch, updated_at,
	(SELECT count(*) FROM tasks WHERE tasks.state = 'running' AND tasks.host = hosts.name),
	coalesce((SELECT owner FROM host_owners WHERE host_owners.name = hosts.name), '')
	FROM hosts`

func scanHost(row rowScanner) (tasks.Host, error) {
	var h tasks.Host
	var tags, groups string
	var updated int64
	if err := row.Scan(&h.Name, &h.Transport, &tags, &groups, &h.Slots, &h.State, &h.LastError, &h.OS, &h.Arch,
		&updated, &h.Running, &h.Coordinator); err != nil {
		return tasks.Host{}, err
	}
	var err error
	if h.Tags, err = decList(tags); err != nil {
		return tasks.Host{}, fmt.Errorf("decode tags of host %s: %w", h.Name, err)
	}
	if h.Groups, err = decList(groups); err != nil {
		return tasks.Host{}, fmt.Errorf("decode groups of host %s: %w", h.Name, err)
	}
	h.UpdatedAt = fromMicros(updated)
	return h, nil
}

// ListHosts returns every host, ordered by name.
func (s *Store) ListHosts(ctx context.Context) ([]tasks.Host, error) {
	return queryAll(ctx, s, "list hosts", scanHost, hostSQL+` ORDER BY name`)
}

// GetHost returns one host.
func (s *Store) GetHost(ctx context.Context, name string) (tasks.Host, error) {
	h, err := scanHost(s.r.QueryRowContext(ctx, hostSQL+` WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.Host{}, tasks.Errorf(tasks.ENotFound, "host %q not found", name)
	}
	if err != nil {
		return tasks.Host{}, fmt.Errorf("get host: %w", err)
	}
	return h, nil
}
