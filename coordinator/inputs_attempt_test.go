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

// TestInputComesFromTheSucceededAttempt: a source whose first attempt
// uploaded model.bin and was then lost, and whose second attempt
// succeeded without it, gives no model.bin: the lost attempt's file may be
// partial or stale. Submission says so, and so does a fetch.
func TestInputComesFromTheSucceededAttempt(t *testing.T) {
	e := newEnv(t, coordinator.Config{LeaseTTL: time.Second})
	alice := e.user("alice")
	src := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	// The dependent is submitted while the source runs, so that it is
	// queued and claimable once the source ends.
	dep := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"},
		Inputs: []tasks.Input{{Task: src.ID, Artifact: "model.bin"}, {Task: src.ID, Artifact: "log.txt"}}})

	a := e.worker(alice, "host-a", []string{"alice"}, 1)
	got := a.claim(1, 0)
	if len(got) != 1 || got[0].Task.ID != src.ID {
		t.Fatalf("host-a claimed %+v; want the source, task %d", got, src.ID)
	}
	a.relay(got[0].Lease.LeaseRef, "model.bin", "half a model")
	e.waitState(alice, src.ID, 10*time.Second, tasks.Queued) // host-a lost

	b := e.worker(alice, "host-b", []string{"alice"}, 1)
	got = b.claim(1, 5*time.Second)
	if len(got) != 1 || got[0].Task.ID != src.ID || got[0].Lease.Attempt != 2 {
		t.Fatalf("host-b claimed %+v; want the source's attempt 2", got)
	}
	b.relay(got[0].Lease.LeaseRef, "log.txt", "fine")
	now := time.Now()
	if status, err := b.finish(got[0].Lease.LeaseRef, tasks.Result{State: tasks.Succeeded, ExitCode: exitCode(0), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatalf("finish attempt 2: %d %s", status, err.Message)
	}

	_, serr := e.call(alice, "POST", "/api/v1/tasks", tasks.Spec{Group: "alice", Command: []string{"true"},
		Inputs: []tasks.Input{{Task: src.ID, Artifact: "model.bin"}}}, nil)
	if serr == nil || serr.Code != tasks.EInvalid || !strings.Contains(serr.Message, "succeeded without an artifact model.bin") {
		t.Errorf("submit taking the lost attempt's model.bin: %+v; want invalid, succeeded without it", serr)
	}

	got = b.claim(1, 5*time.Second)
	if len(got) != 1 || got[0].Task.ID != dep.ID {
		t.Fatalf("host-b claimed %+v; want the dependent, task %d", got, dep.ID)
	}
	ref := got[0].Lease.LeaseRef
	status, _, body, ferr := b.fetchInput(ref, 0)
	if want := fmt.Sprintf("input task:%d/model.bin: task %d succeeded without an artifact model.bin", src.ID, src.ID); status != http.StatusNotFound || ferr == nil || ferr.Message != want {
		t.Errorf("fetch of model.bin: %d %q %+v; want 404 %q", status, body, ferr, want)
	}
	if status, _, body, ferr := b.fetchInput(ref, 1); status != http.StatusOK || body != "fine" {
		t.Errorf("fetch of log.txt: %d %q %+v; want 200 with attempt 2's bytes", status, body, ferr)
	}
}
