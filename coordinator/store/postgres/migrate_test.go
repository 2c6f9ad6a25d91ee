package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestMigrateChargesExistingArtifacts opens a schema last migrated before
// quotas existed: the artifacts already recorded must count into their
// groups' usage, so that a quota set later compares with the truth.
func TestMigrateChargesExistingArtifacts(t *testing.T) {
	ctx := t.Context()
	url := os.Getenv("MITO_TEST_PG_URL")
	if url == "" {
		msg := "no PostgreSQL: set MITO_TEST_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable), or run `make test`, which starts one"
		if os.Getenv("MITO_TEST_REQUIRE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "mito_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() {
		// The test's context is done by now.
		bg := context.Background()
		if _, err := conn.Exec(bg, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		conn.Close(bg)
	})
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	exec(`CREATE SCHEMA ` + pgx.Identifier{schema}.Sanitize())
	exec(`SET search_path = ` + pgx.Identifier{schema}.Sanitize())
	exec(`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatalf("list migrations: %v", err)
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		num, _, _ := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if err != nil {
			t.Fatalf("migration %s: %v", base, err)
		}
		if version >= 4 {
			break
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", base, err)
		}
		exec(string(body))
		exec(`INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, version, base)
	}
	for _, g := range []string{"lab", "empty"} {
		exec(`INSERT INTO user_groups (name, created_at) VALUES ($1, now())`, g)
	}
	// Tasks of lab, and one of a group that no longer exists.
	for id, g := range map[int64]string{1: "lab", 2: "lab", 3: "gone"} {
		exec(`INSERT INTO tasks (id, group_name, creator, timeout_ns, max_attempts, state, created_at)
			VALUES ($1, $2, 'alice', 1, 1, 'succeeded', now())`, id, g)
	}
	for _, a := range []struct {
		task    int64
		attempt int
		name    string
		size    int64
	}{{1, 1, "a", 10}, {1, 2, "a", 20}, {2, 1, "b", 5 << 30}, {3, 1, "c", 7}} {
		exec(`INSERT INTO task_artifacts (task_id, attempt, name, size, sha256, created_at) VALUES ($1, $2, $3, $4, 'x', now())`,
			a.task, a.attempt, a.name, a.size)
	}

	s, err := Open(ctx, url, WithSchema(schema))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	for group, want := range map[string]int64{"lab": 30 + 5<<30, "empty": 0} {
		g, err := s.GetGroup(ctx, group)
		if err != nil {
			t.Fatalf("GetGroup %s: %v", group, err)
		}
		if g.UsedBytes != want || g.QuotaBytes != 0 {
			t.Errorf("%s after migrating: quota, usage = %d, %d; want 0, %d", group, g.QuotaBytes, g.UsedBytes, want)
		}
	}
}
