package coordinator_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

// presignInput asks for a presigned GET of an input as a worker does.
func (w *worker) presignInput(ref tasks.LeaseRef, index int) (tasks.InputPresignResponse, int, *tasks.Error) {
	w.e.t.Helper()
	var p tasks.InputPresignResponse
	status, err := w.call("POST", fmt.Sprintf("/worker/v1/tasks/%d/inputs-presign", ref.Task), tasks.InputPresignRequest{Lease: ref, Index: index}, &p)
	return p, status, err
}

// getURL GETs a presigned URL and returns the status and body.
func getURL(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestPresignInput: a worker gets a presigned GET for each input of its
// attempt, with the size and sha256 to check; the call is lease-fenced
// and resolves the input as the relayed fetch does, with the same 404s.
func TestPresignInput(t *testing.T) {
	e, arts := newPresignEnv(t, coordinator.Config{})
	alice := e.user("alice")
	attach(e, alice, "alice", "data.csv", "a,b\n")
	w := e.worker(alice, "h", []string{"alice"}, 1)
	src := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w.runTask(src.ID, tasks.Succeeded, map[string]string{"out/res.txt": "hello", "lost.txt": "soon gone"})
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Inputs: []tasks.Input{
		{Attachment: "data.csv", Path: "in/data.csv"},
		{Task: src.ID, Artifact: "out/res.txt", Path: "res.txt"},
		{Task: src.ID, Artifact: "lost.txt"},
	}})
	as := w.claim(1, 0)
	if len(as) != 1 || as[0].Task.ID != task.ID {
		t.Fatalf("claimed %+v; want task %d", as, task.ID)
	}
	ref := as[0].Lease.LeaseRef

	for i, want := range []string{"a,b\n", "hello"} {
		p, status, err := w.presignInput(ref, i)
		if err != nil {
			t.Fatalf("presign input %d: %d %s", i, status, err.Message)
		}
		if p.Method != http.MethodGet || p.Size != int64(len(want)) || p.SHA256 != fmt.Sprintf("%x", sha256.Sum256([]byte(want))) || !p.Expires.After(time.Now()) {
			t.Errorf("presign input %d: %+v; want GET of %d bytes with their sha256, expiring later", i, p, len(want))
		}
		if status, body := getURL(t, p.URL); status != http.StatusOK || body != want {
			t.Errorf("GET input %d: %d %q; want %q", i, status, body, want)
		}
	}

	notFound := func(index int, msg string) {
		t.Helper()
		if _, status, err := w.presignInput(ref, index); status != http.StatusNotFound || err == nil || err.Message != msg {
			t.Errorf("presign input %d: got %d %+v; want 404 %q", index, status, err, msg)
		}
	}
	// The record is there, its bytes are not.
	if err := arts.Delete(t.Context(), fmt.Sprintf("tasks/%d/1/lost.txt", src.ID)); err != nil {
		t.Fatal(err)
	}
	notFound(2, fmt.Sprintf("input task:%d/lost.txt: task %d's artifact lost.txt is no longer stored", src.ID, src.ID))
	e.must(alice, "DELETE", "/api/v1/groups/alice/attachments/data.csv", nil, nil)
	notFound(0, "input attachment:data.csv=in/data.csv: no such attachment in group alice")

	for _, tc := range []struct {
		name   string
		ref    tasks.LeaseRef
		index  int
		status int
		code   tasks.Code
		field  string
	}{
		{"forged token", tasks.LeaseRef{Task: ref.Task, Attempt: ref.Attempt, Token: "forged"}, 1, http.StatusConflict, tasks.EStaleLease, ""},
		{"another attempt", tasks.LeaseRef{Task: ref.Task, Attempt: ref.Attempt + 1, Token: ref.Token}, 1, http.StatusConflict, tasks.EStaleLease, ""},
		{"no token", tasks.LeaseRef{Task: ref.Task, Attempt: ref.Attempt}, 1, http.StatusBadRequest, tasks.EInvalid, "lease"},
		{"index out of range", ref, 3, http.StatusBadRequest, tasks.EInvalid, "index"},
		{"negative index", ref, -1, http.StatusBadRequest, tasks.EInvalid, "index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, status, err := w.presignInput(tc.ref, tc.index)
			if status != tc.status || err == nil || err.Code != tc.code || err.Field != tc.field {
				t.Errorf("got %d %+v; want %d %s on %q", status, err, tc.status, tc.code, tc.field)
			}
		})
	}
	// The path names the task the lease is for.
	status, err := w.call("POST", fmt.Sprintf("/worker/v1/tasks/%d/inputs-presign", src.ID), tasks.InputPresignRequest{Lease: ref, Index: 1}, nil)
	if status != http.StatusBadRequest || err.Field != "lease.task" {
		t.Errorf("presign with a lease of another task than the path's: %d %+v; want 400 on lease.task", status, err)
	}

	// Once the attempt ended, its lease presigns nothing.
	now := time.Now()
	if status, err := w.finish(ref, tasks.Result{State: tasks.Failed, Error: "x", StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatalf("finish: %d %s", status, err.Message)
	}
	if _, status, err := w.presignInput(ref, 1); status != http.StatusConflict || err.Code != tasks.EStaleLease {
		t.Errorf("presign after finish: got %d %+v; want 409 stale_lease", status, err)
	}
}

// TestPresignInputNeedsAPresigningStore: on a local artifact directory the
// worker is told not to ask, and the call answers 400 on "artifacts": the
// input comes through the coordinator.
func TestPresignInputNeedsAPresigningStore(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	attach(e, alice, "alice", "data.csv", "a,b\n")
	var reg tasks.RegisterResponse
	e.must(alice, "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "host-a", Groups: []string{"alice"}, Features: []string{tasks.FeatureInputs}}, &reg)
	if reg.DirectInputs {
		t.Errorf("register on a local artifact directory: direct_inputs is set")
	}
	w := &worker{e: e, token: alice, session: reg.Session}
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Inputs: []tasks.Input{{Attachment: "data.csv"}}})
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	if _, status, err := w.presignInput(ref, 0); status != http.StatusBadRequest || err.Field != "artifacts" {
		t.Errorf("presign input of task %d on a local directory: %d %+v; want 400 on artifacts", task.ID, status, err)
	}

	// On a presigning store, a TCP worker (auto) is told it may ask.
	e2, _ := newPresignEnv(t, coordinator.Config{})
	bob := e2.user("bob")
	e2.must(bob, "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "host-b", Groups: []string{"bob"}, Features: []string{tasks.FeatureInputs}}, &reg)
	if !reg.DirectInputs || reg.Artifacts != tasks.ArtifactsAuto {
		t.Errorf("register on a presigning store: artifacts %q, direct_inputs %t; want auto and set", reg.Artifacts, reg.DirectInputs)
	}
}
