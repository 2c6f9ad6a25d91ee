package sqlite

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusesANewerSchema: a database migrated by a newer mito is refused
// with an error saying so, rather than used without the columns this
// binary does not know of.
func TestRefusesANewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mito.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = Open(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a database at schema version 999: no error")
	}
	if !strings.Contains(err.Error(), "schema is at version 999, newer than this mito knows") {
		t.Errorf("Open of a database at schema version 999: %v; want it to say the schema is newer", err)
	}
}
