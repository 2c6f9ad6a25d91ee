package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/coordinator/store/postgres"
	"github.com/mitolab/mito/coordinator/store/storetest"
	"github.com/mitolab/mito/tasks"
)

// testURL returns the test database's URL, or skips (fails, when
// MITO_TEST_REQUIRE is set) the test when there is none.
func testURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("MITO_TEST_PG_URL")
	if url == "" {
		msg := "no PostgreSQL: set MITO_TEST_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable), or run `make test`, which starts one"
		if os.Getenv("MITO_TEST_REQUIRE") != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return url
}

// newSchema returns the name of a schema no other test uses, and drops it,
// with everything in it, when the test ends.
func newSchema(tb testing.TB, url string) string {
	tb.Helper()
	var b [6]byte
	rand.Read(b[:])
	schema := "mito_test_" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		// The test's context is done by now.
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// open returns a store on a fresh schema of the test database.
func open(tb testing.TB) *postgres.Store {
	tb.Helper()
	url := testURL(tb)
	s, err := postgres.Open(tb.Context(), url, postgres.WithSchema(newSchema(tb, url)), postgres.WithMaxConns(8))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	testURL(t)
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

// TestOpenConcurrently opens one new schema from several stores at once,
// as coordinators started together would: the advisory lock must let each
// migration apply once, and none may fail.
func TestOpenConcurrently(t *testing.T) {
	url := testURL(t)
	schema := newSchema(t, url)
	var wg sync.WaitGroup
	stores := make([]*postgres.Store, 4)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = postgres.Open(t.Context(), url, postgres.WithSchema(schema))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	if err := stores[0].CreateUser(t.Context(), tasks.User{Name: "alice"}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if n, err := stores[3].CountUsers(t.Context()); err != nil || n != 1 {
		t.Errorf("CountUsers through another store = %d, %v; want 1", n, err)
	}
}

// TestSearchPathInURL checks the other way to choose a schema: a
// search_path parameter in the URL.
func TestSearchPathInURL(t *testing.T) {
	url := testURL(t)
	schema := newSchema(t, url)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	_, err = conn.Exec(t.Context(), `CREATE SCHEMA `+schema)
	conn.Close(t.Context())
	if err != nil {
		t.Fatalf("create schema: %v", err)
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	s, err := postgres.Open(t.Context(), url+sep+"search_path="+schema)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := s.CreateUser(t.Context(), tasks.User{Name: "alice"}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	other, err := postgres.Open(t.Context(), url, postgres.WithSchema(schema))
	if err != nil {
		t.Fatalf("Open with WithSchema: %v", err)
	}
	defer other.Close()
	if n, err := other.CountUsers(t.Context()); err != nil || n != 1 {
		t.Errorf("CountUsers in schema %s = %d, %v; want 1", schema, n, err)
	}
}

func TestOpenBadURL(t *testing.T) {
	_, err := postgres.Open(t.Context(), "postgres://u:secret@host:notaport/db")
	if tasks.ErrorCode(err) != tasks.EInvalid {
		t.Fatalf("Open with a bad port: %v; want an invalid error", err)
	}
	if err != nil && strings.Contains(err.Error(), "secret") {
		t.Errorf("error %q shows the password", err)
	}
}

func BenchmarkClaimFinish(b *testing.B) {
	storetest.BenchClaimFinish(b, open(b))
}

func BenchmarkClaimFinishParallel(b *testing.B) {
	storetest.BenchClaimFinishParallel(b, open(b))
}
