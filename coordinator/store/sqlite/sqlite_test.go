package sqlite_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/coordinator/store/sqlite"
	"github.com/mitolab/mito/coordinator/store/storetest"
	"github.com/mitolab/mito/tasks"
)

// open returns a store on a fresh file in the test's temporary directory.
func open(tb testing.TB) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(tb.Context(), filepath.Join(tb.TempDir(), "mito.db"))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

func TestConformanceMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), ":memory:")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestReopen checks that data survives Close and that running the
// migrations again on a migrated file changes nothing.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mito.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.CreateUser(t.Context(), tasks.User{Name: "alice"}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	s.Close()
	s, err = sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open again: %v", err)
	}
	defer s.Close()
	if n, err := s.CountUsers(t.Context()); err != nil || n != 1 {
		t.Errorf("CountUsers after reopening = %d, %v; want 1", n, err)
	}
}

// TestOpenConcurrently opens one new file from several stores at once, as
// two coordinator processes started together would: each migration must
// apply once, and none may fail with SQLITE_BUSY.
func TestOpenConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mito.db")
	var wg sync.WaitGroup
	stores := make([]*sqlite.Store, 4)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = sqlite.Open(context.Background(), path)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		stores[i].Close()
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, path := range []string{"", "a?b", filepath.Join(t.TempDir(), "missing", "dir", "mito.db")} {
		if s, err := sqlite.Open(t.Context(), path); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded; want an error", path)
		}
	}
}

func BenchmarkClaimFinish(b *testing.B) {
	storetest.BenchClaimFinish(b, open(b))
}

func BenchmarkClaimFinishParallel(b *testing.B) {
	storetest.BenchClaimFinishParallel(b, open(b))
}
