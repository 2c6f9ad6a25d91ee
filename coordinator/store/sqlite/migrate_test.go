package sqlite

import (
	"database/sql"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestMigrateChargesExistingArtifacts opens a file last migrated before
// quotas existed: the artifacts already recorded must count into their
// groups' usage, so that a quota set later compares with the truth.
func TestMigrateChargesExistingArtifacts(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "mito.db")
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatalf("list migrations: %v", err)
	}
	sort.Strings(names)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`)
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
		exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)`, version, base)
	}
	for _, g := range []string{"lab", "empty"} {
		exec(`INSERT INTO user_groups (name, created_at) VALUES (?, 0)`, g)
	}
	// Tasks of lab, and one of a group that no longer exists.
	for id, g := range map[int]string{1: "lab", 2: "lab", 3: "gone"} {
		exec(`INSERT INTO tasks (id, group_name, creator, timeout_ns, max_attempts, state, created_at)
			VALUES (?, ?, 'alice', 1, 1, 'succeeded', 0)`, id, g)
	}
	for _, a := range []struct {
		task, attempt int
		name          string
		size          int64
	}{{1, 1, "a", 10}, {1, 2, "a", 20}, {2, 1, "b", 5 << 30}, {3, 1, "c", 7}} {
		exec(`INSERT INTO task_artifacts (task_id, attempt, name, size, sha256, created_at) VALUES (?, ?, ?, ?, 'x', 0)`,
			a.task, a.attempt, a.name, a.size)
	}
	db.Close()

	s, err := Open(ctx, path)
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
