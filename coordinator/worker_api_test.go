package coordinator_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

func TestLostHostRequeuesAsNextAttemptAndRefusesLateReport(t *testing.T) {
	e := newEnv(t, coordinator.Config{LeaseTTL: time.Second})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})

	a := e.worker(alice, "host-a", []string{"alice"}, 1)
	got := a.claim(1, 0)
	if len(got) != 1 || got[0].Lease.Attempt != 1 {
		t.Fatalf("host-a claimed %+v; want task %d attempt 1", got, task.ID)
	}
	first := got[0].Lease.LeaseRef

	// host-a goes silent; the rescuer requeues the task when its lease expires.
	requeued := e.waitState(alice, task.ID, 10*time.Second, tasks.Queued)
	if requeued.Attempt != 1 {
		t.Errorf("requeued task has attempt %d; want 1 (incremented at the next claim)", requeued.Attempt)
	}

	b := e.worker(alice, "host-b", []string{"alice"}, 1)
	got = b.claim(1, 5*time.Second)
	if len(got) != 1 || got[0].Lease.Attempt != 2 {
		t.Fatalf("host-b claimed %+v; want attempt 2", got)
	}
	second := got[0].Lease.LeaseRef

	now := time.Now()
	status, err := a.finish(first, tasks.Result{State: tasks.Succeeded, ExitCode: exitCode(0), StartedAt: now, FinishedAt: now})
	if status != http.StatusConflict || err == nil || err.Code != tasks.EStaleLease {
		t.Fatalf("late finish of attempt 1: got %d %+v; want 409 stale_lease", status, err)
	}
	if status, err := b.finish(second, tasks.Result{State: tasks.Failed, ExitCode: exitCode(3), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatalf("finish attempt 2: %d %s", status, err.Message)
	}
	final := e.task(alice, task.ID)
	if final.State != tasks.Failed || final.Attempt != 2 || final.ExitCode == nil || *final.ExitCode != 3 || final.Host != "host-b" {
		t.Errorf("final task = state %s attempt %d exit %v host %s; want failed, 2, 3, host-b", final.State, final.Attempt, final.ExitCode, final.Host)
	}
	// And a second report of the same attempt is refused too: finished once.
	if status, _ := b.finish(second, tasks.Result{State: tasks.Succeeded, ExitCode: exitCode(0), StartedAt: now, FinishedAt: now}); status != http.StatusConflict {
		t.Errorf("second finish of attempt 2: status %d; want 409", status)
	}
}

func TestLastAttemptLostFailsTask(t *testing.T) {
	e := newEnv(t, coordinator.Config{LeaseTTL: time.Second})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, MaxAttempts: 1})
	a := e.worker(alice, "host-a", []string{"alice"}, 1)
	if got := a.claim(1, 0); len(got) != 1 {
		t.Fatalf("claimed %d tasks; want 1", len(got))
	}
	final := e.waitState(alice, task.ID, 10*time.Second, tasks.Failed)
	if !strings.Contains(final.Error, "host lost") {
		t.Errorf("error = %q; want it to say the host was lost", final.Error)
	}
}

func TestCancelRunningTaskStopsItThroughHeartbeat(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"sleep", "100"}})
	w := e.worker(alice, "h", []string{"alice"}, 1)
	as := w.claim(1, 0)
	if len(as) != 1 {
		t.Fatalf("claimed %d; want 1", len(as))
	}
	ref := as[0].Lease.LeaseRef

	type result struct {
		resp tasks.HeartbeatResponse
		err  *tasks.Error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		_, r.err = w.call("POST", "/worker/v1/heartbeat", tasks.HeartbeatRequest{Running: []tasks.LeaseRef{ref}, Wait: tasks.Duration(20 * time.Second)}, &r.resp)
		done <- r
	}()
	time.Sleep(100 * time.Millisecond) // let the heartbeat start waiting
	var cancelled tasks.Task
	e.must(alice, "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", task.ID), nil, &cancelled)
	if cancelled.State != tasks.Cancelled {
		t.Errorf("cancel answered state %s; want cancelled", cancelled.State)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("heartbeat: %s", r.err.Message)
	}
	if len(r.resp.Stop) != 1 || r.resp.Stop[0].Task != task.ID || r.resp.Stop[0].Reason != "cancelled" {
		t.Errorf("heartbeat stops = %+v; want task %d cancelled", r.resp.Stop, task.ID)
	}
	// The attempt's late report cannot undo the cancel.
	now := time.Now()
	if status, _ := w.finish(ref, tasks.Result{State: tasks.Succeeded, ExitCode: exitCode(0), StartedAt: now, FinishedAt: now}); status != http.StatusConflict {
		t.Errorf("finish after cancel: status %d; want 409", status)
	}
	if got := e.task(alice, task.ID); got.State != tasks.Cancelled {
		t.Errorf("state after late finish = %s; want cancelled", got.State)
	}
}

func TestClaimLongPollWakesOnSubmit(t *testing.T) {
	e := newEnv(t, coordinator.Config{Recheck: time.Hour}) // only an event can wake it
	alice := e.user("alice")
	w := e.worker(alice, "h", []string{"alice"}, 1)
	got := make(chan []tasks.Assignment, 1)
	go func() { got <- w.claim(1, 20*time.Second) }()
	time.Sleep(100 * time.Millisecond)
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	as := <-got
	if len(as) != 1 || as[0].Task.ID != task.ID {
		t.Fatalf("long poll returned %+v; want task %d", as, task.ID)
	}
}

func TestClaimMatchesTagsAndGroups(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	e.must(alice, "POST", "/api/v1/groups", map[string]string{"name": "lab"}, nil)
	both := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Tags: []string{"10g", "bbr"}})
	plain := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Tags: []string{"10g"}})
	other := e.submit(alice, tasks.Spec{Group: "lab", Command: []string{"true"}})

	// A host with only 10g gets the 10g task, not the one needing bbr too,
	// and nothing of a group it does not serve.
	w := e.worker(alice, "tagged", []string{"alice"}, 4)
	as := w.claim(4, 0)
	if len(as) != 0 {
		t.Fatalf("untagged host claimed %d tagged tasks; want 0", len(as))
	}
	var resp tasks.RegisterResponse
	e.must(alice, "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "h10g", Groups: []string{"alice"}, Tags: []string{"10g"}, Slots: 4}, &resp)
	w2 := &worker{e: e, token: alice, session: resp.Session}
	as = w2.claim(4, 0)
	if len(as) != 1 || as[0].Task.ID != plain.ID {
		t.Fatalf("10g host claimed %v; want only task %d", ids(as), plain.ID)
	}
	e.must(alice, "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "hboth", Groups: []string{"alice", "lab"}, Tags: []string{"bbr", "10g", "x"}, Slots: 4}, &resp)
	w3 := &worker{e: e, token: alice, session: resp.Session}
	as = w3.claim(4, 0)
	if got := ids(as); len(got) != 2 || !(contains(got, both.ID) && contains(got, other.ID)) {
		t.Fatalf("host with 10g,bbr,x claimed %v; want %d and %d", got, both.ID, other.ID)
	}
}

func TestClaimOrdersByPriorityThenAge(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	low := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	high := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Priority: 5})
	low2 := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "h", []string{"alice"}, 1)
	var order []tasks.ID
	for range 3 {
		as := w.claim(1, 0)
		if len(as) != 1 {
			t.Fatalf("claimed %d; want 1", len(as))
		}
		order = append(order, as[0].Task.ID)
	}
	want := []tasks.ID{high.ID, low.ID, low2.ID}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("claim order %v; want %v", order, want)
	}
}

func TestWorkerRegistrationNeedsWriteRole(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	bob := e.user("bob")
	e.must(alice, "PUT", "/api/v1/groups/alice/members/bob", map[string]string{"role": "read"}, nil)
	if status, err := e.call(bob, "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "h", Groups: []string{"alice"}}, nil); status != http.StatusForbidden {
		t.Errorf("reader registering a worker: %d %v; want 403", status, err)
	}
	if status, _ := e.call("", "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "h", Groups: []string{"alice"}}, nil); status != http.StatusUnauthorized {
		t.Errorf("anonymous register: %d; want 401", status)
	}
	w := &worker{e: e, session: "forged"}
	if status, _ := w.call("POST", "/worker/v1/claim", tasks.ClaimRequest{Max: 1}, nil); status != http.StatusUnauthorized {
		t.Errorf("claim with a forged session: %d; want 401", status)
	}
}

func ids(as []tasks.Assignment) []tasks.ID {
	var out []tasks.ID
	for _, a := range as {
		out = append(out, a.Task.ID)
	}
	return out
}

func contains(ids []tasks.ID, id tasks.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func TestWorkerLosesWorkWithItsUsersRights(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	bob := e.user("bob")
	e.must(alice, "PUT", "/api/v1/groups/alice/members/bob", map[string]string{"role": "write"}, nil)
	w := e.worker(bob, "bobs-host", []string{"alice"}, 1)
	if got := w.claim(1, 0); len(got) != 0 {
		t.Fatalf("claimed %d with an empty queue", len(got))
	}

	// bob leaves the group: his worker gets no more of its tasks.
	e.must(alice, "DELETE", "/api/v1/groups/alice/members/bob", nil, nil)
	e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Env: map[string]string{"API_KEY": "s3cret"}})
	if status, err := w.call("POST", "/worker/v1/claim", tasks.ClaimRequest{Max: 1}, nil); status != http.StatusForbidden {
		t.Fatalf("claim after losing the role: %d %v; want 403", status, err)
	}

	// Back in the group, but disabled: the session is gone.
	e.must(alice, "PUT", "/api/v1/groups/alice/members/bob", map[string]string{"role": "write"}, nil)
	e.must(e.admin, "POST", "/api/v1/users/bob/disable", nil, nil)
	if status, _ := w.call("POST", "/worker/v1/claim", tasks.ClaimRequest{Max: 1}, nil); status != http.StatusUnauthorized {
		t.Fatalf("claim after the user was disabled: %d; want 401", status)
	}
}

func TestWorkerNameBelongsToItsUser(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	bob := e.user("bob")
	e.worker(alice, "shared-name", []string{"alice"}, 1)
	status, err := e.call(bob, "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "shared-name", Groups: []string{"bob"}}, nil)
	if status != http.StatusConflict || err == nil || !strings.Contains(err.Message, "name") {
		t.Errorf("bob registering alice's worker name: %d %v; want 409 naming the field", status, err)
	}
	e.worker(alice, "shared-name", []string{"alice"}, 1) // alice's restarted worker takes it over
}
