package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

func testGetArtifact(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkGroup(t, s, "lab", "alice")
	id := submit(t, s, "alice", spec("lab"))[0].ID
	add := func(ref tasks.LeaseRef, name string, size int64) tasks.Artifact {
		t.Helper()
		a := tasks.Artifact{Task: ref.Task, Attempt: ref.Attempt, Name: name, Size: size, SHA256: fmt.Sprintf("sha-%d-%s", ref.Attempt, name), CreatedAt: t0.Add(time.Duration(ref.Attempt) * time.Hour)}
		ok(t, s.AddArtifact(ctx, ref, a), "AddArtifact "+name)
		return a
	}
	// Attempt 1 leaves a, b and only; attempt 2 a and c; attempt 3
	// nothing. Names that sort around one another check that a lookup
	// matches the name exactly, not by prefix or order.
	ref1 := claimOne(t, s, "h", "lab").Lease.LeaseRef
	a1 := add(ref1, "a", 1)
	b1 := add(ref1, "b", 2)
	only1 := add(ref1, "out/only", 3)
	_, err := s.RequeueExpired(ctx, t0.Add(time.Hour))
	ok(t, err, "RequeueExpired")
	ref2 := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, Now: t0.Add(time.Hour)})[0].Lease.LeaseRef
	a2 := add(ref2, "a", 10)
	c2 := add(ref2, "c", 30)
	a2 = add(ref2, "a", 11) // a replaced record is the one found
	_, err = s.RequeueExpired(ctx, t0.Add(3*time.Hour))
	ok(t, err, "RequeueExpired")
	claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, Now: t0.Add(3 * time.Hour)})

	// Another task with the same names, which no lookup of id sees.
	otherID := submit(t, s, "alice", spec("lab"))[0].ID
	otherRef := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, Now: t0.Add(3 * time.Hour)})[0].Lease.LeaseRef
	otherA := add(otherRef, "a", 50)

	found := []struct {
		id      tasks.ID
		attempt int
		name    string
		want    tasks.Artifact
	}{
		{id, 1, "a", a1},
		{id, 1, "b", b1},
		{id, 1, "out/only", only1},
		{id, 2, "a", a2},
		{id, 2, "c", c2},
		{id, 0, "a", a2}, // the latest attempt that has it
		{id, 0, "b", b1}, // an earlier attempt when the later ones lack it
		{id, 0, "out/only", only1},
		{id, 0, "c", c2},
		{otherID, 0, "a", otherA},
		{otherID, 1, "a", otherA},
	}
	for _, tc := range found {
		what := fmt.Sprintf("GetArtifact(%d, %d, %q)", tc.id, tc.attempt, tc.name)
		got, err := s.GetArtifact(ctx, tc.id, tc.attempt, tc.name)
		ok(t, err, what)
		wantArtifacts(t, []tasks.Artifact{got}, []tasks.Artifact{tc.want}, what)
	}

	missing := []struct {
		id      tasks.ID
		attempt int
		name    string
	}{
		{id, 2, "b"},         // attempt 1's only
		{id, 1, "c"},         // attempt 2's only
		{id, 3, "a"},         // an attempt that left nothing
		{id, 7, "a"},         // an attempt that never ran
		{id, 0, "d"},         // no attempt has it
		{id, 0, "out"},       // a prefix of a name is not the name
		{id, 0, "out/only/"}, // nor is a longer one
		{id, 0, "A"},
		{id, 1 << 40, "a"},
		{id, 0, "a\x00"}, // names no store can hold find nothing
		{id, 0, "\xff"},
		{otherID, 0, "b"},
		{1 << 40, 0, "a"}, // no such task
		{1 << 40, 1, "a"},
	}
	for _, tc := range missing {
		what := fmt.Sprintf("GetArtifact(%d, %d, %q)", tc.id, tc.attempt, tc.name)
		got, err := s.GetArtifact(ctx, tc.id, tc.attempt, tc.name)
		wantCode(t, err, tasks.ENotFound, what)
		if got != (tasks.Artifact{}) {
			t.Errorf("%s = %+v with its error; want the zero Artifact", what, got)
		}
		words := []string{fmt.Sprintf("task %d", tc.id), fmt.Sprintf("%q", tc.name)}
		if tc.attempt != 0 {
			words = append(words, fmt.Sprintf("attempt %d", tc.attempt))
		}
		mention(t, err, what, words...)
	}

	_, err = s.GetArtifact(ctx, id, -1, "a")
	wantCode(t, err, tasks.EInvalid, "GetArtifact of attempt -1")
	if !strings.Contains(err.Error(), "-1") {
		t.Errorf("GetArtifact of attempt -1: %v; want it to name the attempt", err)
	}

	// Deleting the latest attempt's record uncovers the one before it.
	_, err = s.CancelTask(ctx, id, t0.Add(4*time.Hour))
	ok(t, err, "CancelTask")
	deleteArtifacts(t, s, id, 2, "a")
	got, err := s.GetArtifact(ctx, id, 0, "a")
	ok(t, err, "GetArtifact of a after deleting attempt 2's")
	wantArtifacts(t, []tasks.Artifact{got}, []tasks.Artifact{a1}, "GetArtifact of a after deleting attempt 2's")
	_, err = s.GetArtifact(ctx, id, 2, "a")
	wantCode(t, err, tasks.ENotFound, "GetArtifact of a deleted record")
}
