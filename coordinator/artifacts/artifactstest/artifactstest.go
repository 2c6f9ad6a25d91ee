// Package artifactstest is the conformance suite every artifacts.Store
// implementation must pass, so that the local directory and S3 behave the
// same to the coordinator: atomic puts, exact bytes and checksums, sorted
// listings and refused keys.
package artifactstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/tasks"
)

// Run runs the suite. newStore must return an empty store, cleaned up by
// the test (t.Cleanup); each subtest gets its own.
func Run(t *testing.T, newStore func(t *testing.T) artifacts.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s artifacts.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"Empty", testEmpty},
		{"Large", testLarge},
		{"ConcurrentPut", testConcurrentPut},
		{"FailedPut", testFailedPut},
		{"BadKeys", testBadKeys},
		{"Cancelled", testCancelled},
		{"List", testList},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// put stores data under key and checks the returned size and checksum.
func put(t *testing.T, s artifacts.Store, key string, data []byte) {
	t.Helper()
	size, got, err := s.Put(context.Background(), key, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if size != int64(len(data)) || got != sum(data) {
		t.Fatalf("Put(%q) = %d, %s; want %d, %s", key, size, got, len(data), sum(data))
	}
}

// get reads key back whole.
func get(t *testing.T, s artifacts.Store, key string) []byte {
	t.Helper()
	rc, size, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	if int64(len(b)) != size {
		t.Fatalf("Open(%q) size %d; read %d bytes", key, size, len(b))
	}
	return b
}

func wantNotFound(t *testing.T, s artifacts.Store, key string) {
	t.Helper()
	rc, _, err := s.Open(context.Background(), key)
	if err == nil {
		rc.Close()
		t.Fatalf("Open(%q) succeeded; want not found", key)
	}
	if !errors.Is(err, tasks.ErrNotFound) {
		t.Fatalf("Open(%q) error %v (code %s); want code not_found", key, err, tasks.ErrorCode(err))
	}
}

func list(t *testing.T, s artifacts.Store, prefix string) []string {
	t.Helper()
	keys, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}

func testRoundTrip(t *testing.T, s artifacts.Store) {
	key := "tasks/42/1/out/result.csv"
	data := []byte("a,b\n1,2\n")
	put(t, s, key, data)
	if got := get(t, s, key); !bytes.Equal(got, data) {
		t.Fatalf("Open = %q; want %q", got, data)
	}
	if got := list(t, s, "tasks/42/"); !slices.Equal(got, []string{key}) {
		t.Fatalf("List = %q; want [%s]", got, key)
	}
	if err := s.Delete(context.Background(), key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, s, key)
	if got := list(t, s, ""); len(got) != 0 {
		t.Fatalf("List after Delete = %q; want none", got)
	}
	if err := s.Delete(context.Background(), key); err != nil {
		t.Fatalf("Delete of a missing key: %v; want nil", err)
	}
	wantNotFound(t, s, "tasks/never/put")
}

func testOverwrite(t *testing.T, s artifacts.Store) {
	put(t, s, "k/v", []byte("first, longer version"))
	put(t, s, "k/v", []byte("second"))
	if got := get(t, s, "k/v"); string(got) != "second" {
		t.Fatalf("Open = %q; want %q", got, "second")
	}
	if got := list(t, s, ""); !slices.Equal(got, []string{"k/v"}) {
		t.Fatalf("List = %q; want [k/v]", got)
	}
}

func testEmpty(t *testing.T, s artifacts.Store) {
	put(t, s, "empty", nil)
	if got := get(t, s, "empty"); len(got) != 0 {
		t.Fatalf("Open = %d bytes; want 0", len(got))
	}
}

// patternReader yields n pseudo-random bytes without holding them, so the
// test itself shows whether a store streams.
type patternReader struct {
	rng *rand.ChaCha8
	n   int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	p.rng.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

func newPattern(seed byte, n int64) *patternReader {
	return &patternReader{rng: rand.NewChaCha8([32]byte{seed}), n: n}
}

func testLarge(t *testing.T, s artifacts.Store) {
	const n = 64 << 20
	h := sha256.New()
	if _, err := io.Copy(h, newPattern(1, n)); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))

	size, got, err := s.Put(context.Background(), "big", newPattern(1, n))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if size != n || got != want {
		t.Fatalf("Put = %d, %s; want %d, %s", size, got, n, want)
	}
	rc, osize, err := s.Open(context.Background(), "big")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	h.Reset()
	read, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if osize != n || read != n || hex.EncodeToString(h.Sum(nil)) != want {
		t.Fatalf("Open: size %d, read %d, sha256 %x; want %d, %s", osize, read, h.Sum(nil), n, want)
	}
}

func testConcurrentPut(t *testing.T, s artifacts.Store) {
	const writers, size = 8, 1 << 20
	objects := make(map[string]bool)
	for i := range writers {
		b, _ := io.ReadAll(newPattern(byte(i), size))
		objects[sum(b)] = true
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			// Small reads interleave the writers.
			_, _, err := s.Put(context.Background(), "same/key", io.LimitReader(&slowReader{newPattern(byte(i), size)}, size))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	if got := sum(get(t, s, "same/key")); !objects[got] {
		t.Fatalf("after concurrent Puts the object (sha256 %s) is none of the objects put", got)
	}
	if got := list(t, s, ""); !slices.Equal(got, []string{"same/key"}) {
		t.Fatalf("List = %q; want [same/key]", got)
	}
}

// slowReader returns at most 4 KiB per read.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(b []byte) (int, error) {
	if len(b) > 4096 {
		b = b[:4096]
	}
	return s.r.Read(b)
}

// failingReader yields n bytes, then fails.
type failingReader struct{ n int }

var errBroken = errors.New("connection reset by test")

func (f *failingReader) Read(b []byte) (int, error) {
	if f.n <= 0 {
		return 0, errBroken
	}
	k := min(len(b), f.n)
	for i := range b[:k] {
		b[i] = 'x'
	}
	f.n -= k
	return k, nil
}

func testFailedPut(t *testing.T, s artifacts.Store) {
	_, _, err := s.Put(context.Background(), "new/key", &failingReader{n: 3 << 20})
	if !errors.Is(err, errBroken) {
		t.Fatalf("Put from a failing reader: %v; want the reader's error", err)
	}
	wantNotFound(t, s, "new/key")
	if got := list(t, s, ""); len(got) != 0 {
		t.Fatalf("List after a failed Put = %q; want none", got)
	}

	put(t, s, "old/key", []byte("intact"))
	if _, _, err := s.Put(context.Background(), "old/key", &failingReader{n: 1 << 20}); err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	if got := get(t, s, "old/key"); string(got) != "intact" {
		t.Fatalf("after a failed overwrite Open = %d bytes; want the old object", len(got))
	}
}

func testBadKeys(t *testing.T, s artifacts.Store) {
	ctx := context.Background()
	for _, key := range []string{"../x", "/etc/passwd", "a/../../b", "a//b", "", "a/./b", "a/", "a\\b", "a\x00b", ".tmp/x", string(make([]byte, 1025))} {
		if _, _, err := s.Put(ctx, key, bytes.NewReader([]byte("x"))); tasks.ErrorCode(err) != tasks.EInvalid {
			t.Errorf("Put(%q) = %v; want an invalid-key error", key, err)
		}
		if rc, _, err := s.Open(ctx, key); tasks.ErrorCode(err) != tasks.EInvalid {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Open(%q) = %v; want an invalid-key error", key, err)
		}
		if err := s.Delete(ctx, key); tasks.ErrorCode(err) != tasks.EInvalid {
			t.Errorf("Delete(%q) = %v; want an invalid-key error", key, err)
		}
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Fatalf("List after refused Puts = %q; want none", got)
	}
}

func testCancelled(t *testing.T, s artifacts.Store) {
	put(t, s, "there", []byte("x"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Put(ctx, "k", bytes.NewReader([]byte("x"))); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context = %v; want context.Canceled", err)
	}
	if _, _, err := s.Open(ctx, "there"); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a cancelled context = %v; want context.Canceled", err)
	}
	if _, err := s.List(ctx, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("List with a cancelled context = %v; want context.Canceled", err)
	}
	if err := s.Delete(ctx, "there"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete with a cancelled context = %v; want context.Canceled", err)
	}

	// Cancelled midway: the reader cancels after its first chunk.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	r := &cancellingReader{r: newPattern(2, 8<<20), cancel: cancel}
	if _, _, err := s.Put(ctx, "midway", r); !errors.Is(err, context.Canceled) {
		t.Errorf("Put cancelled midway = %v; want context.Canceled", err)
	}
	wantNotFound(t, s, "midway")
	if got := list(t, s, ""); !slices.Equal(got, []string{"there"}) {
		t.Errorf("List = %q; want [there]", got)
	}
}

// cancellingReader cancels its context after the first read.
type cancellingReader struct {
	r      io.Reader
	cancel context.CancelFunc
	reads  int
}

func (c *cancellingReader) Read(b []byte) (int, error) {
	c.reads++
	if c.reads == 2 {
		c.cancel()
	}
	return c.r.Read(b)
}

func testList(t *testing.T, s artifacts.Store) {
	keys := []string{"tasks/4/1/a", "tasks/42/1/out/z", "tasks/42/1/out/a", "tasks/42/2/b", "tasks/5/1/c", "other"}
	for _, k := range keys {
		put(t, s, k, []byte(k))
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"other", "tasks/4/1/a", "tasks/42/1/out/a", "tasks/42/1/out/z", "tasks/42/2/b", "tasks/5/1/c"}},
		{"tasks/42/", []string{"tasks/42/1/out/a", "tasks/42/1/out/z", "tasks/42/2/b"}},
		{"tasks/4", []string{"tasks/4/1/a", "tasks/42/1/out/a", "tasks/42/1/out/z", "tasks/42/2/b"}},
		{"tasks/42/1/out/a", []string{"tasks/42/1/out/a"}},
		{"nothing/", []string{}},
	} {
		if got := list(t, s, tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("List(%q) = %q; want %q", tc.prefix, got, tc.want)
		}
	}
}

// BenchPut measures Put of 1 MiB objects; b.SetBytes makes `go test
// -bench` report MB/s. Each implementation's benchmark calls it.
func BenchPut(b *testing.B, s artifacts.Store) {
	data, _ := io.ReadAll(newPattern(3, 1<<20))
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, _, err := s.Put(context.Background(), fmt.Sprintf("bench/%d", i%64), bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
