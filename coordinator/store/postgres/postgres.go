// Package postgres is the coordinator's shared store: PostgreSQL through
// pgx, for when several coordinators share one database or the queue
// outgrows one SQLite file.
//
// Claims take queued rows with FOR UPDATE SKIP LOCKED inside the one UPDATE
// statement that leases them, so concurrent claimers never wait for each
// other and never take the same task. Every write of a running attempt
// re-checks its lease in the same statement that makes the change.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// migrations holds the schema, one numbered file per version, applied in
// order at Open.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// config holds what Options change.
type config struct {
	schema   string
	maxConns int32
}

// Option changes how Open sets up the store.
type Option func(*config)

// WithSchema keeps mito's tables in schema, created if missing, by setting
// the connections' search_path. Default: the URL's search_path parameter
// if it has one, else the server's default (normally "public"). Tests use
// it to give each test a fresh schema; deployments to share a database.
func WithSchema(schema string) Option { return func(c *config) { c.schema = schema } }

// WithMaxConns bounds the connection pool. Default: the URL's
// pool_max_conns, else pgxpool's default (the larger of 4 and the number
// of CPUs).
func WithMaxConns(n int32) Option { return func(c *config) { c.maxConns = n } }

// Open connects to the database at url (postgres://user@host/db?...),
// and brings its schema up to date.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message quotes the URL, and can only try to hide a password.
		msg := "is not a valid PostgreSQL URL"
		if inner := errors.Unwrap(err); inner != nil {
			msg += " (" + inner.Error() + ")"
		}
		return nil, tasks.Invalid("url", "%s", msg)
	}
	if cfg.maxConns > 0 {
		pc.MaxConns = cfg.maxConns
	}
	if cfg.schema != "" {
		pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{cfg.schema}.Sanitize()
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx, cfg.schema); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// migrateLock is the first half of the advisory lock key that serializes
// migrations; the second half is the schema's, so that coordinators on
// different schemas of one database do not wait for each other.
const migrateLock = 0x6d69746f // "mito"

// migrate applies the embedded migrations the schema has not seen, all in
// one transaction (PostgreSQL's DDL is transactional) under an advisory
// lock, so two coordinators starting at once apply each one exactly once.
func (s *Store) migrate(ctx context.Context, schema string) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if schema != "" {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, migrateLock, schema); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
				return err
			}
		} else if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))`, migrateLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY,
			name text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return err
		}
		applied := make(map[int]bool, len(versions))
		for _, v := range versions {
			applied[v] = true
		}
		if err := store.CheckSchemaVersion(versions, names); err != nil {
			return err
		}
		for _, name := range names {
			base := strings.TrimPrefix(name, "migrations/")
			num, _, ok := strings.Cut(base, "_")
			version, err := strconv.Atoi(num)
			if !ok || err != nil {
				return fmt.Errorf("migration %s: name must start with a number and '_'", base)
			}
			if applied[version] {
				continue
			}
			body, err := migrations.ReadFile(name)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("migration %s: %w", base, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, version, base); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	return nil
}

// tx runs f in a transaction. A *tasks.Error from f is returned bare;
// other errors from f, and errors of the transaction itself, are wrapped
// once with what.
func (s *Store) tx(ctx context.Context, what string, f func(tx pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, s.pool, f)
	return wrap(what, err)
}

// wrap wraps a driver error with what. A *tasks.Error is returned bare,
// as the Store contract promises, so callers can pass it through.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	var te *tasks.Error
	if errors.As(err, &te) {
		return te
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isUnique reports whether err is a unique violation: the loser of a race
// to create a name.
func isUnique(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "23505"
}

// now is the store's clock for records whose caller gives no time, at the
// precision that survives a round trip.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// nullTime stores a zero time as NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// utcPtr returns a scanned nullable time in UTC; pgx gives local time.
func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// list returns l as a non-nil slice: pgx sends a nil slice as NULL, and
// NULL would make every array comparison NULL.
func list(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// nilIfEmpty returns an empty scanned list as nil, as it was given.
func nilIfEmpty(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}
