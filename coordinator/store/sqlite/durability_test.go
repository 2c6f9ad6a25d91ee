package sqlite

import (
	"path/filepath"
	"testing"
)

// TestSynchronousFull checks that the write connection syncs the WAL at
// every commit: with synchronous=NORMAL a power loss may drop commits the
// coordinator has acknowledged.
func TestSynchronousFull(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "mito.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	var mode string
	if err := s.w.QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatalf("read journal_mode: %v", err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q; want wal", mode)
	}
	var sync int
	if err := s.w.QueryRowContext(t.Context(), `PRAGMA synchronous`).Scan(&sync); err != nil {
		t.Fatalf("read synchronous: %v", err)
	}
	const full = 2
	if sync != full {
		t.Errorf("synchronous = %d; want %d (FULL)", sync, full)
	}
}
