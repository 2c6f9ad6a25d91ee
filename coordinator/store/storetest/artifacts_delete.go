package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// wantArtifacts fails unless got is want, in order, CreatedAt compared at
// the contract's precision.
func wantArtifacts(t *testing.T, got, want []tasks.Artifact, what string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s = %+v\nwant %+v", what, got, want)
	}
	for i := range want {
		g := got[i]
		wantTime(t, g.CreatedAt, want[i].CreatedAt, fmt.Sprintf("%s[%d].CreatedAt", what, i))
		g.CreatedAt = us(want[i].CreatedAt)
		w := want[i]
		w.CreatedAt = us(w.CreatedAt)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s[%d] = %+v; want %+v", what, i, g, w)
		}
	}
}

// deleteArtifacts calls DeleteArtifacts and fails the test on error.
func deleteArtifacts(t *testing.T, s store.Store, id tasks.ID, attempt int, names ...string) []tasks.Artifact {
	t.Helper()
	got, err := s.DeleteArtifacts(t.Context(), id, attempt, names)
	ok(t, err, fmt.Sprintf("DeleteArtifacts(%d, %d, %q)", id, attempt, names))
	return got
}

func testDeleteArtifacts(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkGroup(t, s, "lab", "alice")
	mkGroup(t, s, "other", "alice")
	ok(t, s.SetGroupQuota(ctx, "lab", 100), "SetGroupQuota")
	id := submit(t, s, "alice", spec("lab"))[0].ID
	ref1 := claimOne(t, s, "h", "lab").Lease.LeaseRef
	add := func(ref tasks.LeaseRef, name string, size int64) tasks.Artifact {
		t.Helper()
		a := tasks.Artifact{Task: ref.Task, Attempt: ref.Attempt, Name: name, Size: size, SHA256: "sha-" + name, CreatedAt: t0}
		ok(t, s.AddArtifact(ctx, ref, a), "AddArtifact "+name)
		return a
	}
	a1 := add(ref1, "a.txt", 10)
	b1 := add(ref1, "out/b.bin", 20)
	c1 := add(ref1, "c", 5)

	// While the task runs its shim may still upload: refused, and
	// nothing removed or credited.
	_, err := s.DeleteArtifacts(ctx, id, 0, nil)
	wantCode(t, err, tasks.EConflict, "DeleteArtifacts of a running task")
	mention(t, err, "EConflict of a running task", fmt.Sprintf("task %d", id), "running", "uploading")
	wantUsage(t, s, "lab", 100, 35, "after a refused delete")

	// A second attempt, then the task ends.
	_, err = s.RequeueExpired(ctx, t0.Add(time.Hour))
	ok(t, err, "RequeueExpired")
	ref2 := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, Now: t0.Add(time.Hour)})[0].Lease.LeaseRef
	a2 := add(ref2, "a.txt", 7)
	d2 := add(ref2, "d", 3)
	_, err = s.Finish(ctx, ref2, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0.Add(2 * time.Hour)})
	ok(t, err, "Finish")
	wantUsage(t, s, "lab", 100, 45, "after two attempts")

	// Another task of the group, whose artifacts no delete of id touches.
	otherID := submit(t, s, "alice", spec("lab"))[0].ID
	otherRef := claimOne(t, s, "h", "lab").Lease.LeaseRef
	kept := add(otherRef, "a.txt", 50)
	wantUsage(t, s, "lab", 100, 95, "with another task's artifact")

	_, err = s.DeleteArtifacts(ctx, 1<<40, 0, nil)
	wantCode(t, err, tasks.ENotFound, "DeleteArtifacts of a missing task")
	_, err = s.DeleteArtifacts(ctx, id, -1, nil)
	wantCode(t, err, tasks.EInvalid, "DeleteArtifacts of attempt -1")

	// By attempt and name; a name that matches nothing is not returned.
	got := deleteArtifacts(t, s, id, 1, "a.txt", "nope", "d")
	wantArtifacts(t, got, []tasks.Artifact{a1}, "delete of attempt 1, a.txt, nope and d")
	wantUsage(t, s, "lab", 100, 85, "after deleting a.txt of attempt 1")

	// By name across attempts: a.txt of attempt 1 is gone already.
	got = deleteArtifacts(t, s, id, 0, "a.txt")
	wantArtifacts(t, got, []tasks.Artifact{a2}, "delete of a.txt, every attempt")
	wantUsage(t, s, "lab", 100, 78, "after deleting a.txt of attempt 2")

	// Every name of one attempt.
	got = deleteArtifacts(t, s, id, 2)
	wantArtifacts(t, got, []tasks.Artifact{d2}, "delete of attempt 2")
	wantUsage(t, s, "lab", 100, 75, "after deleting attempt 2")
	got = deleteArtifacts(t, s, id, 2)
	wantArtifacts(t, got, nil, "delete of attempt 2 again")
	got = deleteArtifacts(t, s, id, 7)
	wantArtifacts(t, got, nil, "delete of an attempt that never ran")
	wantUsage(t, s, "lab", 100, 75, "after deleting nothing")

	// Everything, ordered by attempt then name.
	got = deleteArtifacts(t, s, id, 0)
	wantArtifacts(t, got, []tasks.Artifact{c1, b1}, "delete of everything")
	wantUsage(t, s, "lab", 100, 50, "after deleting everything")
	left, err := s.ListArtifacts(ctx, id)
	ok(t, err, "ListArtifacts")
	wantArtifacts(t, left, nil, "ListArtifacts after deleting everything")
	left, err = s.ListArtifacts(ctx, otherID)
	ok(t, err, "ListArtifacts of the other task")
	wantArtifacts(t, left, []tasks.Artifact{kept}, "ListArtifacts of the other task")

	// The freed quota takes an upload that did not fit before.
	add(otherRef, "big", 50)
	wantUsage(t, s, "lab", 100, 100, "after filling the freed quota")

	// A task that never ran has nothing to delete, and that is no error.
	queued := submit(t, s, "alice", spec("other"))[0].ID
	wantArtifacts(t, deleteArtifacts(t, s, queued, 0), nil, "delete of a queued task's artifacts")

	// A credit never takes usage below zero: artifacts recorded while
	// their group did not exist were charged to nobody.
	submit(t, s, "alice", spec("late"))
	lateRef := claimOne(t, s, "h", "late").Lease.LeaseRef
	late := add(lateRef, "x", 40)
	_, err = s.CancelTask(ctx, lateRef.Task, t0)
	ok(t, err, "CancelTask")
	mkGroup(t, s, "late", "alice")
	got = deleteArtifacts(t, s, lateRef.Task, 0, "x")
	wantArtifacts(t, got, []tasks.Artifact{late}, "delete in a group created after the upload")
	wantUsage(t, s, "late", 0, 0, "after a credit of more than the usage")

	// A group that no longer exists is credited nothing, and the records
	// still go.
	submit(t, s, "alice", spec("ghost"))
	ghostRef := claimOne(t, s, "h", "ghost").Lease.LeaseRef
	ghost := add(ghostRef, "y", 1<<40)
	_, err = s.Finish(ctx, ghostRef, tasks.Result{State: tasks.Failed, ExitCode: ptr(1), FinishedAt: t0})
	ok(t, err, "Finish ghost")
	got = deleteArtifacts(t, s, ghostRef.Task, 0)
	wantArtifacts(t, got, []tasks.Artifact{ghost}, "delete in a missing group")
	wantUsage(t, s, "lab", 100, 100, "after a delete in another group")
}
