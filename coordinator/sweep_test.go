package coordinator_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/tasks"
)

// putObject stores an object straight into the artifact store, as a
// crashed upload leaves it: no record points at it.
func putObject(t *testing.T, s artifacts.Store, key, data string) {
	t.Helper()
	if _, _, err := s.Put(context.Background(), key, strings.NewReader(data)); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// sweep runs one sweep and fails unless it deleted want objects.
func sweep(t *testing.T, e *env, want int, what string) {
	t.Helper()
	n, err := e.c.SweepOrphans(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if n != want {
		t.Errorf("%s deleted %d objects; want %d", what, n, want)
	}
}

// wantObjects fails unless the artifact store holds exactly want
// (sorted) under the sweep's prefixes and "other/".
func wantObjects(t *testing.T, s artifacts.Store, want []string, what string) {
	t.Helper()
	var got []string
	for _, p := range []string{"attachments/", "other/", "tasks/"} {
		got = append(got, keys(t, s, p)...)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: artifact store holds\n%q\nwant\n%q", what, got, want)
	}
}

// wantBody fails unless a GET of path answers 200 with body.
func wantBody(t *testing.T, e *env, token, path, body string) {
	t.Helper()
	status, _, got := e.fetch(token, path)
	if status != http.StatusOK || got != body {
		t.Errorf("GET %s = %d %q; want 200 %q", path, status, got, body)
	}
}

func TestSweepDeletesOrphansAtTheSecondSweep(t *testing.T) {
	dir, err := artifacts.NewDir(filepath.Join(t.TempDir(), "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	arts := &hookStore{Store: dir}
	// Run's loop never sweeps: the test does, at the moments it chooses.
	e := newEnv(t, coordinator.Config{Artifacts: arts, SweepEvery: -1})
	alice := e.user("alice")

	// Recorded: an attachment, and an artifact relayed by a finished task.
	attach(e, alice, "alice", "data.csv", "a,b\n")
	w := e.worker(alice, "h", []string{"alice"}, 2)
	done := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w.runTask(done.ID, tasks.Succeeded, map[string]string{"out/result.txt": "42\n"})
	// A task left running, whose shim uploaded an object it has not
	// recorded yet: it may still, so it is no orphan.
	running := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	if as := w.claim(1, 0); len(as) != 1 || as[0].Task.ID != running.ID {
		t.Fatalf("claimed %+v; want task %d", as, running.ID)
	}
	uploading := fmt.Sprintf("tasks/%d/1/partial.bin", running.ID)
	putObject(t, arts, uploading, "half")
	recorded := append(keys(t, arts, "attachments/"), keys(t, arts, "tasks/")...)
	if len(recorded) != 3 {
		t.Fatalf("artifact store holds %q; want an attachment, an artifact and an upload", recorded)
	}

	orphans := []string{
		"attachments/alice/0123456789abcdef0123456789abcdef",
		fmt.Sprintf("tasks/%d/1/lost.txt", done.ID), // the attempt ended without recording it
		fmt.Sprintf("tasks/%d/2/out/result.txt", done.ID),
		"tasks/999999/1/x", // no such task
	}
	// Keys the sweep cannot account for, never deleted.
	foreign := []string{"tasks/junk", "tasks/01/1/x", "other/x"}
	for _, k := range append(slices.Clone(orphans), foreign...) {
		putObject(t, arts, k, "orphan "+k)
	}

	// The first sweep runs between a new upload's Put and its record: it
	// sees the object without one, and must still keep it at the second.
	var late []string
	arts.mu.Lock()
	arts.afterPut = func(key string) {
		late = append(late, key)
		sweep(t, e, 0, "the first sweep")
	}
	arts.mu.Unlock()
	attach(e, alice, "alice", "late.csv", "late\n")
	arts.mu.Lock()
	arts.afterPut = nil
	arts.mu.Unlock()
	if len(late) != 1 {
		t.Fatalf("the upload stored %q; want one object", late)
	}
	all := slices.Concat(recorded, orphans, foreign, late)
	wantObjects(t, arts, slices.Clone(all), "after the first sweep")

	// An orphan that appears after the first sweep is only a candidate
	// at the second.
	newer := "attachments/alice/fedcba9876543210fedcba9876543210"
	putObject(t, arts, newer, "newer")

	sweep(t, e, len(orphans), "the second sweep")
	kept := slices.Concat(recorded, foreign, late, []string{newer})
	wantObjects(t, arts, slices.Clone(kept), "after the second sweep")
	wantBody(t, e, alice, attachmentURL("alice", "data.csv"), "a,b\n")
	wantBody(t, e, alice, attachmentURL("alice", "late.csv"), "late\n")
	wantBody(t, e, alice, fmt.Sprintf("/api/v1/tasks/%d/artifacts/out/result.txt", done.ID), "42\n")

	sweep(t, e, 1, "the third sweep")
	kept = slices.DeleteFunc(kept, func(k string) bool { return k == newer })
	wantObjects(t, arts, slices.Clone(kept), "after the third sweep")

	// Once the running task ends, its unrecorded upload is an orphan too,
	// deleted at the second sweep that finds it so.
	e.must(alice, "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", running.ID), nil, nil)
	sweep(t, e, 0, "the first sweep after the task ended")
	sweep(t, e, 1, "the second sweep after the task ended")
	kept = slices.DeleteFunc(kept, func(k string) bool { return k == uploading })
	wantObjects(t, arts, kept, "after the task ended")
}

// failingList is an artifact store whose List fails while fail is set.
type failingList struct {
	artifacts.Store
	fail bool
}

func (f *failingList) List(ctx context.Context, prefix string) ([]string, error) {
	if f.fail {
		return nil, fmt.Errorf("list %s: injected failure", prefix)
	}
	return f.Store.List(ctx, prefix)
}

func TestSweepDeletesNothingOnError(t *testing.T) {
	dir, err := artifacts.NewDir(filepath.Join(t.TempDir(), "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	arts := &failingList{Store: dir}
	e := newEnv(t, coordinator.Config{Artifacts: arts, SweepEvery: -1})
	orphan := "attachments/admin/00"
	putObject(t, arts, orphan, "x")
	sweep(t, e, 0, "the first sweep")
	arts.fail = true
	if n, err := e.c.SweepOrphans(context.Background()); err == nil || n != 0 {
		t.Errorf("sweep with a failing list = %d, %v; want 0 and an error", n, err)
	}
	arts.fail = false
	wantObjects(t, arts, []string{orphan}, "after a failed sweep")
	// The failed sweep kept the candidates: the next one deletes.
	sweep(t, e, 1, "the sweep after the failure")
	wantObjects(t, arts, nil, "after the sweep")
}

// TestSweepLoop: Run sweeps at once and every SweepEvery.
func TestSweepLoop(t *testing.T) {
	dir, err := artifacts.NewDir(filepath.Join(t.TempDir(), "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	putObject(t, dir, "attachments/admin/00", "x")
	newEnv(t, coordinator.Config{Artifacts: dir, SweepEvery: 50 * time.Millisecond})
	deadline := time.Now().Add(10 * time.Second)
	for len(keys(t, dir, "attachments/")) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the orphan is still there after 10s of sweeps every 50ms")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
