package coordinator_test

import (
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

// TestClaimWaitsForInputSource: a task that takes another's artifact is
// not handed out while its source runs, and a host's claim long poll
// wakes when the source ends, so that a pipeline's next step starts at
// once rather than at the next Recheck.
func TestClaimWaitsForInputSource(t *testing.T) {
	e := newEnv(t, coordinator.Config{Recheck: time.Hour}) // only an event can wake it
	alice := e.user("alice")
	w := e.worker(alice, "h", []string{"alice"}, 1)
	src := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	as := w.claim(1, 0)
	if len(as) != 1 || as[0].Task.ID != src.ID {
		t.Fatalf("claimed %+v; want task %d", as, src.ID)
	}
	dep := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"},
		Inputs: []tasks.Input{{Task: src.ID, Artifact: "out.txt"}}})

	w2 := e.worker(alice, "h2", []string{"alice"}, 1)
	got := make(chan []tasks.Assignment, 1)
	go func() { got <- w2.claim(1, 20*time.Second) }()
	time.Sleep(200 * time.Millisecond)
	select {
	case early := <-got:
		t.Fatalf("claim returned %+v while task %d runs; want it to wait", early, src.ID)
	default:
	}
	w.relay(as[0].Lease.LeaseRef, "out.txt", "hello")
	now := time.Now()
	if status, err := w.finish(as[0].Lease.LeaseRef, tasks.Result{State: tasks.Succeeded, ExitCode: exitCode(0), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatalf("finish task %d: %d %s", src.ID, status, err.Message)
	}
	select {
	case as := <-got:
		if len(as) != 1 || as[0].Task.ID != dep.ID {
			t.Fatalf("long poll returned %+v; want task %d", as, dep.ID)
		}
		ref := as[0].Lease.LeaseRef
		if status, _, body, err := w2.fetchInput(ref, 0); err != nil || body != "hello" {
			t.Errorf("fetch input: %d %+v %q; want the source's artifact", status, err, body)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("claim did not wake within 10s of task %d ending", src.ID)
	}
}
