// Package sqlite is the coordinator's embedded store: one SQLite file,
// through the pure-Go driver modernc.org/sqlite, so the default coordinator
// needs no database server and no cgo.
//
// SQLite lets one connection write at a time. The store therefore keeps one
// write connection, on which every change runs as a BEGIN IMMEDIATE
// transaction, and a separate pool of read-only connections that WAL mode
// lets read while the writer writes. Writers from many goroutines queue in
// database/sql for the one connection instead of failing with SQLITE_BUSY;
// busy_timeout covers the rare second process on the same file.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	sqlitedrv "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// migrations holds the schema, one numbered file per version, applied in
// order at Open.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Store is the SQLite implementation of store.Store.
type Store struct {
	// w is the single write connection; every change goes through it so
	// that writers queue in Go instead of contending for SQLite's lock.
	w *sql.DB
	// r is the read pool. For ":memory:" it is w, because each connection
	// to ":memory:" would open a separate, empty database.
	r *sql.DB
	// hot holds the statements every task runs, prepared once on w at
	// Open: parsing them again at each call took half of a claim's time.
	// Read-only after Open.
	hot map[string]*sql.Stmt
}

// hotSQL lists the statements prepared at Open.
var hotSQL = []string{claimSQL, renewSQL, finishSQL, fenceSQL, requeueSQL, appendLogSQL}

var _ store.Store = (*Store)(nil)

// config holds what Options change; the zero value is not used directly,
// defaults come from Open.
type config struct {
	busyTimeout time.Duration
	readConns   int
}

// Option changes how Open sets up the store.
type Option func(*config)

// WithBusyTimeout sets how long a connection waits for another process's
// lock on the file before failing with SQLITE_BUSY. Default 10s: only a
// second process on the same file ever waits, and it should rather wait
// than fail.
func WithBusyTimeout(d time.Duration) Option { return func(c *config) { c.busyTimeout = d } }

// WithReadConns bounds the read pool. Default: GOMAXPROCS, at least 4,
// since reads run in parallel under WAL and each one is short.
func WithReadConns(n int) Option { return func(c *config) { c.readConns = n } }

// Open opens (creating if needed) the SQLite database at path and brings
// its schema up to date. path ":memory:" gives a private in-memory
// database, for tests and throwaway runs.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	cfg := config{busyTimeout: 10 * time.Second, readConns: max(4, runtime.GOMAXPROCS(0))}
	for _, o := range opts {
		o(&cfg)
	}
	if path == "" {
		return nil, tasks.Invalid("path", "is empty")
	}
	if strings.ContainsRune(path, '?') {
		// The driver reads everything after '?' as connection parameters.
		return nil, tasks.Invalid("path", "%q contains '?'", path)
	}
	memory := path == ":memory:"

	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(cfg.busyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "foreign_keys(1)")
	if !memory {
		// WAL lets readers read while the writer writes. With WAL,
		// synchronous=NORMAL survives a process crash but may lose the
		// last commits on power loss, and every acknowledged submission
		// must reach a final state: FULL syncs the WAL at each commit,
		// so a commit that returned is on disk.
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
	}
	wq := url.Values{}
	for k, v := range q {
		wq[k] = v
	}
	// IMMEDIATE takes the write lock at BEGIN, so a transaction never has
	// to upgrade a read lock, which SQLite can only refuse.
	wq.Set("_txlock", "immediate")

	w, err := sql.Open("sqlite", path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{w: w, r: w, hot: make(map[string]*sql.Stmt, len(hotSQL))}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	for _, q := range hotSQL {
		st, err := w.PrepareContext(ctx, q)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("prepare statement: %w", err)
		}
		s.hot[q] = st
	}
	if !memory {
		rq := q
		rq.Add("_pragma", "query_only(1)")
		r, err := sql.Open("sqlite", path+"?"+rq.Encode())
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
		r.SetMaxOpenConns(cfg.readConns)
		r.SetMaxIdleConns(cfg.readConns)
		s.r = r
	}
	return s, nil
}

// Close closes both connection pools.
func (s *Store) Close() error {
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// migrate applies the embedded migrations that the database has not seen,
// each in its own transaction together with its schema_migrations row.
// BEGIN IMMEDIATE holds the file's write lock, so two processes opening the
// same new file apply each migration once.
func (s *Store) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	// Under the write lock, like the migrations, so that a process opening
	// the file while another creates it waits rather than fails.
	var applied []int
	err = s.write(ctx, "read schema_migrations", func(tx wtx) error {
		rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				return err
			}
			applied = append(applied, v)
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	if err := store.CheckSchemaVersion(applied, names); err != nil {
		return err
	}
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return fmt.Errorf("apply migration %s: name must start with a number and '_'", base)
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return fmt.Errorf("read migration %s: %w", base, err)
		}
		err = s.write(ctx, "apply migration "+base, func(tx wtx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil || n > 0 {
				return err
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				version, base, time.Now().UnixMicro())
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// wtx is a write transaction that runs the statements of hotSQL through
// their prepared form. They were prepared on the one write connection, so
// database/sql reuses them in the transaction without parsing them again.
type wtx struct {
	*sql.Tx
	hot map[string]*sql.Stmt
}

// ExecContext is sql.Tx.ExecContext, prepared when q is hot.
func (tx wtx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := tx.hot[q]; st != nil {
		return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.Tx.ExecContext(ctx, q, args...)
}

// QueryContext is sql.Tx.QueryContext, prepared when q is hot.
func (tx wtx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := tx.hot[q]; st != nil {
		return tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return tx.Tx.QueryContext(ctx, q, args...)
}

// QueryRowContext is sql.Tx.QueryRowContext, prepared when q is hot.
func (tx wtx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := tx.hot[q]; st != nil {
		return tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return tx.Tx.QueryRowContext(ctx, q, args...)
}

// write runs f in a write transaction and commits it. A *tasks.Error from
// f is returned bare, as the Store contract promises; other errors from f,
// and errors of the transaction itself, are wrapped once with what, so
// that callers need not wrap each statement.
func (s *Store) write(ctx context.Context, what string, f func(tx wtx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := f(wtx{tx, s.hot}); err != nil {
		tx.Rollback()
		var te *tasks.Error
		if errors.As(err, &te) {
			return te
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// isUnique reports whether err is a violated PRIMARY KEY or UNIQUE
// constraint: the loser of a race to create a name.
func isUnique(err error) bool {
	var e *sqlitedrv.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

// now is the store's clock for records whose caller gives no time, at the
// precision that survives a round trip.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// micros converts a time to the stored form.
func micros(t time.Time) int64 { return t.UnixMicro() }

// nullMicros stores a zero time, or a nil pointer, as NULL.
func nullMicros(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// fromMicros converts a stored time back, in UTC.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// ptrMicros converts a nullable stored time; NULL is nil.
func ptrMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

// rowScanner is what a scan function reads a row from: *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(...any) error }

// queryAll runs q on the read pool and returns every row scanned by scan,
// in order; errors are wrapped as "what: cause". It is the loop every
// listing would otherwise repeat.
func queryAll[T any](ctx context.Context, s *Store, what string, scan func(rowScanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
