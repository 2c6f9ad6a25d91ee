package storetest

import (
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// after returns a spec of group that takes artifact out of each of srcs.
func after(group string, srcs ...tasks.ID) tasks.Spec {
	sp := spec(group)
	for i, id := range srcs {
		sp.Inputs = append(sp.Inputs, tasks.Input{Task: id, Artifact: "out", Path: "in/" + string(rune('a'+i))})
	}
	return sp
}

// end finishes a claimed attempt in state st and fails the test on error.
func end(t *testing.T, s store.Store, a tasks.Assignment, st tasks.State) {
	t.Helper()
	r := tasks.Result{State: st, FinishedAt: t0, ExitCode: ptr(0)}
	if st != tasks.Succeeded {
		r.ExitCode, r.Error = ptr(1), "exit status 1"
	}
	_, err := s.Finish(t.Context(), a.Lease.LeaseRef, r)
	ok(t, err, "Finish")
}

// testClaimWaitsOnSources checks that a task taking another task's
// artifact is not claimed while that source is queued or running, and is
// once the source has ended, whether or not it ended well (the fetch then
// says what is missing); and that the tasks queued behind a waiting one
// are claimed meanwhile.
func testClaimWaitsOnSources(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := func(group string, max int) store.ClaimParams {
		return store.ClaimParams{Host: "h", Groups: []string{group}, Max: max, TTL: time.Minute, Now: t0}
	}

	t.Run("source succeeds", func(t *testing.T) {
		src := submit(t, s, "alice", spec("lab"))[0].ID
		dep := after("lab", src)
		dep.Priority = 10 // at the head of the queue, yet not claimable
		ts := submit(t, s, "alice", dep, spec("lab"))
		waiting, behind := ts[0].ID, ts[1].ID

		a := claim(t, s, p("lab", 1))
		wantIDs(t, assignedIDs(a), []tasks.ID{src}, "claim while the source is queued")
		wantIDs(t, assignedIDs(claim(t, s, p("lab", 10))), []tasks.ID{behind}, "claim while the source runs")
		wantIDs(t, assignedIDs(claim(t, s, p("lab", 10))), nil, "claim of a queue holding only a waiting task")
		if st := getTask(t, s, waiting).State; st != tasks.Queued {
			t.Errorf("waiting task: %s; want queued", st)
		}
		end(t, s, a[0], tasks.Succeeded)
		wantIDs(t, assignedIDs(claim(t, s, p("lab", 10))), []tasks.ID{waiting}, "claim after the source succeeded")
	})

	t.Run("source ends otherwise", func(t *testing.T) {
		failing := submit(t, s, "alice", spec("fail"))[0].ID
		dep := submit(t, s, "alice", after("fail", failing))[0].ID
		a := claim(t, s, p("fail", 10))
		wantIDs(t, assignedIDs(a), []tasks.ID{failing}, "claim while the source is queued")
		end(t, s, a[0], tasks.Failed)
		wantIDs(t, assignedIDs(claim(t, s, p("fail", 10))), []tasks.ID{dep}, "claim after the source failed")

		cancelled := submit(t, s, "alice", spec("cancel"))[0].ID
		dep = submit(t, s, "alice", after("cancel", cancelled))[0].ID
		_, err := s.CancelTask(ctx, cancelled, t0)
		ok(t, err, "CancelTask")
		wantIDs(t, assignedIDs(claim(t, s, p("cancel", 10))), []tasks.ID{dep}, "claim after the source was cancelled")
	})

	t.Run("source requeued", func(t *testing.T) {
		src := submit(t, s, "alice", spec("requeue"))[0].ID
		dep := submit(t, s, "alice", after("requeue", src))[0].ID
		early := p("requeue", 1)
		early.Now = t0.Add(-time.Hour) // so that only this lease has expired at t0
		claim(t, s, early)
		got, err := s.RequeueExpired(ctx, t0)
		ok(t, err, "RequeueExpired")
		if len(got) != 1 || got[0].ID != src || got[0].State != tasks.Queued {
			t.Fatalf("RequeueExpired = %+v; want task %d queued again", got, src)
		}
		a := claim(t, s, p("requeue", 10))
		wantIDs(t, assignedIDs(a), []tasks.ID{src}, "claim after the source was requeued")
		end(t, s, a[0], tasks.Succeeded)
		wantIDs(t, assignedIDs(claim(t, s, p("requeue", 10))), []tasks.ID{dep}, "claim after the second attempt")
	})

	t.Run("two sources", func(t *testing.T) {
		ts := submit(t, s, "alice", spec("two"), spec("two"))
		x, y := ts[0].ID, ts[1].ID
		// x twice: the store keeps each source once, and must not wait on
		// it twice or miscount.
		dep := submit(t, s, "alice", after("two", x, y, x))[0].ID
		as := claim(t, s, p("two", 10))
		wantIDs(t, assignedIDs(as), []tasks.ID{x, y}, "claim while both sources are queued")
		end(t, s, as[0], tasks.Succeeded)
		wantIDs(t, assignedIDs(claim(t, s, p("two", 10))), nil, "claim while the second source runs")
		end(t, s, as[1], tasks.Succeeded)
		wantIDs(t, assignedIDs(claim(t, s, p("two", 10))), []tasks.ID{dep}, "claim after both sources ended")
	})

	t.Run("source of another group", func(t *testing.T) {
		src := submit(t, s, "alice", spec("upstream"))[0].ID
		dep := submit(t, s, "alice", after("downstream", src))[0].ID
		wantIDs(t, assignedIDs(claim(t, s, p("downstream", 10))), nil, "claim while the other group's source is queued")
		a := claim(t, s, p("upstream", 10))
		end(t, s, a[0], tasks.Succeeded)
		wantIDs(t, assignedIDs(claim(t, s, p("downstream", 10))), []tasks.ID{dep}, "claim after the other group's source ended")
	})

	t.Run("missing source", func(t *testing.T) {
		// Submission refuses it, but the store does not know: the task
		// runs, and its fetch says the source is missing.
		dep := submit(t, s, "alice", after("missing", 1<<40))[0].ID
		wantIDs(t, assignedIDs(claim(t, s, p("missing", 10))), []tasks.ID{dep}, "claim of a task whose source does not exist")
	})
}
