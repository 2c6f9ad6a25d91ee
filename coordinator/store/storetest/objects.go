package storetest

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// wantReferenced fails unless ReferencedObjects of keys reports exactly
// want (a subset of keys) referenced.
func wantReferenced(t *testing.T, s store.Store, keys, want []string, what string) {
	t.Helper()
	got, err := s.ReferencedObjects(t.Context(), keys)
	ok(t, err, "ReferencedObjects "+what)
	var gotKeys []string
	for k, ref := range got {
		if ref {
			gotKeys = append(gotKeys, k)
		}
	}
	slices.Sort(gotKeys)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(gotKeys, want) {
		t.Errorf("%s: referenced %q; want %q", what, gotKeys, want)
	}
	for k := range maps.Keys(got) {
		if !slices.Contains(keys, k) {
			t.Errorf("%s: reported %q, which was not asked about", what, k)
		}
	}
}

func testReferencedObjects(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkGroup(t, s, "lab", "alice")
	put(t, s, attachment("lab", "data.csv", "attachments/lab/aaaa", 1))
	put(t, s, attachment("lab", "old.csv", "attachments/lab/bbbb", 1))
	_, err := s.DeleteAttachment(ctx, "lab", "old.csv")
	ok(t, err, "DeleteAttachment")

	// Task 1 ran twice and ended, with artifacts in both attempts; task 2
	// is running its first attempt.
	done := submit(t, s, "alice", spec("lab"))[0].ID
	ref1 := claimOne(t, s, "h", "lab").Lease.LeaseRef
	add := func(ref tasks.LeaseRef, name string) {
		t.Helper()
		a := tasks.Artifact{Task: ref.Task, Attempt: ref.Attempt, Name: name, Size: 1, SHA256: "sha", CreatedAt: t0}
		ok(t, s.AddArtifact(ctx, ref, a), "AddArtifact "+name)
	}
	add(ref1, "out/a.txt")
	_, err = s.RequeueExpired(ctx, t0.Add(time.Hour))
	ok(t, err, "RequeueExpired")
	ref2 := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, Now: t0.Add(time.Hour)})[0].Lease.LeaseRef
	add(ref2, "b")
	_, err = s.Finish(ctx, ref2, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0.Add(2 * time.Hour)})
	ok(t, err, "Finish")
	running := submit(t, s, "alice", spec("lab"))[0].ID
	claimOne(t, s, "h", "lab")

	key := func(id tasks.ID, attempt int, name string) string {
		return fmt.Sprintf("tasks/%d/%d/%s", id, attempt, name)
	}
	referenced := []string{
		"attachments/lab/aaaa",
		key(done, 1, "out/a.txt"),
		key(done, 2, "b"),
		// The running attempt's shim may be uploading under any name.
		key(running, 1, "not/yet/recorded"),
		// Keys no artifact record could name are never orphans.
		"tasks/0/1/x", "tasks/-1/1/x", "tasks/01/1/x", fmt.Sprintf("tasks/%d/0/x", done),
		fmt.Sprintf("tasks/%d/1/", done), fmt.Sprintf("tasks/%d/1", done), "tasks/x/1/y",
		fmt.Sprintf("tasks/%d/99999999999/x", done), "other/key", "", "tasks/1/1/\x00", "attachments/\xff",
	}
	orphans := []string{
		"attachments/lab/bbbb", // its record was deleted
		"attachments/lab/cccc", // never recorded
		"attachments/other/aaaa",
		key(done, 1, "b"), // recorded in another attempt
		key(done, 2, "out/a.txt"),
		key(done, 3, "b"),         // an attempt that never was
		key(done, 1, "out"),       // a directory of a name, not a name
		key(running, 2, "x"),      // not the running attempt
		key(1<<40, 1, "x"),        // no such task
		key(done, 1, "out/A.txt"), // names compare exactly
	}
	all := append(slices.Clone(referenced), orphans...)
	wantReferenced(t, s, all, referenced, "mixed keys")
	wantReferenced(t, s, orphans, nil, "orphans only")
	wantReferenced(t, s, nil, nil, "no keys")

	// Once the task ends, what its attempt did not record is an orphan.
	_, err = s.CancelTask(ctx, running, t0.Add(3*time.Hour))
	ok(t, err, "CancelTask")
	wantReferenced(t, s, []string{key(running, 1, "not/yet/recorded")}, nil, "after the task ended")

	// A full batch is one call; one key more is refused.
	batch := make([]string, store.MaxObjectBatch)
	for i := range batch {
		batch[i] = fmt.Sprintf("attachments/lab/%04x", i)
	}
	batch[len(batch)-1] = "attachments/lab/aaaa"
	batch[0] = key(done, 2, "b")
	wantReferenced(t, s, batch, []string{"attachments/lab/aaaa", key(done, 2, "b")}, "a full batch")
	_, err = s.ReferencedObjects(ctx, append(batch, "attachments/lab/x"))
	wantCode(t, err, tasks.EInvalid, "ReferencedObjects of more than MaxObjectBatch keys")
}
