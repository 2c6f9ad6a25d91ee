package coordinator_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

// fetchInput fetches an input as a worker does; tok overrides the lease
// token when not empty. It returns the status, the headers and the body,
// or the error answer.
func (w *worker) fetchInput(ref tasks.LeaseRef, index int) (int, http.Header, string, *tasks.Error) {
	w.e.t.Helper()
	url := fmt.Sprintf("%s/worker/v1/tasks/%d/inputs/%d?attempt=%d", w.e.srv.URL, ref.Task, index, ref.Attempt)
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Mito-Session", w.session)
	if ref.Token != "" {
		req.Header.Set("X-Mito-Lease", ref.Token)
	}
	resp, err := w.e.srv.Client().Do(req)
	if err != nil {
		w.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var env struct{ Error *tasks.Error }
		if err := json.Unmarshal(b, &env); err != nil || env.Error == nil {
			w.e.t.Fatalf("GET %s: %d with a body that is not an error: %q", url, resp.StatusCode, b)
		}
		return resp.StatusCode, resp.Header, "", env.Error
	}
	return resp.StatusCode, resp.Header, string(b), nil
}

// relay uploads an artifact through the coordinator as a worker does.
func (w *worker) relay(ref tasks.LeaseRef, name, data string) {
	w.e.t.Helper()
	url := fmt.Sprintf("%s/worker/v1/tasks/%d/artifacts/%s?attempt=%d", w.e.srv.URL, ref.Task, name, ref.Attempt)
	req, _ := http.NewRequest("PUT", url, strings.NewReader(data))
	req.Header.Set("X-Mito-Session", w.session)
	req.Header.Set("X-Mito-Lease", ref.Token)
	resp, err := w.e.srv.Client().Do(req)
	if err != nil {
		w.e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		w.e.t.Fatalf("relay artifact %s: %s", name, resp.Status)
	}
}

// runTask claims task id on w, uploads artifacts (name → content) and
// finishes it with state.
func (w *worker) runTask(id tasks.ID, state tasks.State, artifacts map[string]string) {
	w.e.t.Helper()
	as := w.claim(1, 0)
	if len(as) != 1 || as[0].Task.ID != id {
		w.e.t.Fatalf("claimed %+v; want task %d", as, id)
	}
	ref := as[0].Lease.LeaseRef
	for name, data := range artifacts {
		w.relay(ref, name, data)
	}
	now := time.Now()
	res := tasks.Result{State: state, ExitCode: exitCode(0), StartedAt: now, FinishedAt: now}
	if state != tasks.Succeeded {
		res.ExitCode = exitCode(1)
	}
	if status, err := w.finish(ref, res); err != nil {
		w.e.t.Fatalf("finish task %d: %d %s", id, status, err.Message)
	}
}

func attach(e *env, token, group, key, data string) {
	e.t.Helper()
	e.must(token, "PUT", "/api/v1/groups/"+group+"/attachments/"+key, data, nil)
}

func TestSubmitChecksInputs(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice, bob := e.user("alice"), e.user("bob")
	attach(e, alice, "alice", "data.csv", "a,b\n")
	attach(e, bob, "bob", "secret.csv", "s\n")

	w := e.worker(alice, "h", []string{"alice"}, 1)
	done := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w.runTask(done.ID, tasks.Succeeded, map[string]string{"out.txt": "hello"})
	failed := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w.runTask(failed.ID, tasks.Failed, map[string]string{"out.txt": "half written"})
	queued := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	bobs := e.submit(bob, tasks.Spec{Group: "bob", Command: []string{"true"}})

	spec := func(group string, ins ...string) tasks.Spec {
		s := tasks.Spec{Group: group, Command: []string{"true"}}
		for _, in := range ins {
			parsed, err := tasks.ParseInput(in)
			if err != nil {
				t.Fatal(err)
			}
			s.Inputs = append(s.Inputs, parsed)
		}
		return s
	}
	tests := []struct {
		name  string
		spec  tasks.Spec
		code  tasks.Code // "" for accepted
		field string
		msg   string
	}{
		{"attachment", spec("alice", "attachment:data.csv=in/d.csv"), "", "", ""},
		{"missing attachment", spec("alice", "attachment:data.csv", "attachment:nope.csv"),
			tasks.EInvalid, "inputs[1]", "inputs[1]: attachment:nope.csv: no such attachment in group alice"},
		{"another group's attachment", spec("alice", "attachment:secret.csv"),
			tasks.EInvalid, "inputs[0]", "inputs[0]: attachment:secret.csv: no such attachment in group alice"},
		{"finished task's artifact", spec("alice", fmt.Sprintf("task:%d/out.txt", done.ID)), "", "", ""},
		{"queued task", spec("alice", fmt.Sprintf("task:%d/later.txt", queued.ID)), "", "", ""},
		{"missing task", spec("alice", "task:99999/out.txt"),
			tasks.EInvalid, "inputs[0]", "inputs[0]: task:99999/out.txt: no task 99999"},
		{"unreadable task looks missing", spec("alice", fmt.Sprintf("task:%d/out.txt", bobs.ID)),
			tasks.EInvalid, "inputs[0]", fmt.Sprintf("inputs[0]: task:%d/out.txt: no task %d", bobs.ID, bobs.ID)},
		{"succeeded without the artifact", spec("alice", fmt.Sprintf("task:%d/other.txt", done.ID)),
			tasks.EInvalid, "inputs[0]", fmt.Sprintf("inputs[0]: task:%d/other.txt: task %d succeeded without an artifact other.txt", done.ID, done.ID)},
		{"failed, even with the artifact", spec("alice", fmt.Sprintf("task:%d/out.txt", failed.ID)),
			tasks.EInvalid, "inputs[0]", fmt.Sprintf("inputs[0]: task:%d/out.txt: task %d ended failed; inputs come only from a task that succeeded", failed.ID, failed.ID)},
		// The role is checked first: inputs tell a stranger nothing.
		{"no role in the group", spec("bob", "attachment:secret.csv"), tasks.ENotFound, "group", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got tasks.Task
			status, err := e.call(alice, "POST", "/api/v1/tasks", tt.spec, &got)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("got %d %s; want it accepted", status, err.Message)
				}
				if len(got.Inputs) != len(tt.spec.Inputs) {
					t.Errorf("stored inputs %+v; want %+v", got.Inputs, tt.spec.Inputs)
				}
				return
			}
			if err == nil || err.Code != tt.code || err.Field != tt.field || (tt.msg != "" && err.Message != tt.msg) {
				t.Fatalf("got %d %+v; want %s field %q message %q", status, err, tt.code, tt.field, tt.msg)
			}
		})
	}

	// A batch is refused whole, naming the spec.
	var list struct{ Tasks []tasks.Task }
	e.must(alice, "GET", "/api/v1/tasks?group=alice", nil, &list)
	n := len(list.Tasks)
	status, err := e.call(alice, "POST", "/api/v1/tasks/batch", map[string]any{"tasks": []tasks.Spec{
		spec("alice", "attachment:data.csv"), spec("alice", "attachment:gone.csv"),
	}}, nil)
	if err == nil || err.Field != "tasks[1].inputs[0]" || !strings.Contains(err.Message, "no such attachment in group alice") {
		t.Fatalf("batch: got %d %+v; want invalid naming tasks[1].inputs[0]", status, err)
	}
	e.must(alice, "GET", "/api/v1/tasks?group=alice", nil, &list)
	if len(list.Tasks) != n {
		t.Errorf("a refused batch stored %d tasks", len(list.Tasks)-n)
	}
}

func TestFetchInput(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice, bob := e.user("alice"), e.user("bob")
	attach(e, alice, "alice", "data.csv", "a,b\n")
	w := e.worker(alice, "h", []string{"alice"}, 1)

	src := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w.runTask(src.ID, tasks.Succeeded, map[string]string{"out/res.txt": "hello"})
	// Bob's task, readable by alice until bob takes her role away.
	e.must(bob, "PUT", "/api/v1/groups/bob/members/alice", map[string]string{"role": "read"}, nil)
	bw := e.worker(bob, "hb", []string{"bob"}, 1)
	bsrc := e.submit(bob, tasks.Spec{Group: "bob", Command: []string{"true"}})
	bw.runTask(bsrc.ID, tasks.Succeeded, map[string]string{"b.txt": "from bob"})
	running := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	first := w.claim(1, 0)
	if len(first) != 1 || first[0].Task.ID != running.ID {
		t.Fatalf("claimed %+v; want task %d", first, running.ID)
	}

	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Inputs: []tasks.Input{
		{Attachment: "data.csv", Path: "in/data.csv"},
		{Task: src.ID, Artifact: "out/res.txt", Path: "prev/res.txt"},
		{Task: running.ID, Artifact: "res.txt"},
		{Task: bsrc.ID, Artifact: "b.txt"},
	}})
	w2 := e.worker(alice, "h2", []string{"alice"}, 1)
	// The task waits for its running source, which then ends without the
	// artifact: the task runs, and that input's fetch says why it fails.
	if as := w2.claim(1, 0); len(as) != 0 {
		t.Fatalf("claimed %+v while task %d runs; want nothing", as, running.ID)
	}
	ended := time.Now()
	if status, err := w.finish(first[0].Lease.LeaseRef, tasks.Result{State: tasks.Failed, Error: "x", StartedAt: ended, FinishedAt: ended}); err != nil {
		t.Fatalf("finish task %d: %d %s", running.ID, status, err.Message)
	}
	as := w2.claim(1, 0)
	if len(as) != 1 || as[0].Task.ID != task.ID || len(as[0].Task.Inputs) != 4 {
		t.Fatalf("claimed %+v; want task %d with its 4 inputs", as, task.ID)
	}
	ref := as[0].Lease.LeaseRef

	for i, want := range []string{"a,b\n", "hello", "", "from bob"} {
		if want == "" {
			continue
		}
		status, h, body, err := w2.fetchInput(ref, i)
		if err != nil {
			t.Fatalf("input %d: %d %s", i, status, err.Message)
		}
		if body != want || h.Get("Content-Length") != fmt.Sprint(len(want)) || h.Get("X-Mito-Sha256") != fmt.Sprintf("%x", sha256.Sum256([]byte(want))) {
			t.Errorf("input %d: got %q, length %s, sha256 %s; want %q with its length and sha256", i, body, h.Get("Content-Length"), h.Get("X-Mito-Sha256"), want)
		}
	}

	notFound := func(index int, msg string) {
		t.Helper()
		status, _, _, err := w2.fetchInput(ref, index)
		if status != http.StatusNotFound || err == nil || err.Message != msg {
			t.Errorf("input %d: got %d %+v; want 404 %q", index, status, err, msg)
		}
	}
	notFound(2, fmt.Sprintf("input task:%d/res.txt: task %d ended failed; inputs come only from a task that succeeded", running.ID, running.ID))

	// The lease fences the call like a write.
	for _, bad := range []tasks.LeaseRef{
		{Task: ref.Task, Attempt: ref.Attempt, Token: "not-the-token"},
		{Task: ref.Task, Attempt: ref.Attempt + 1, Token: ref.Token},
	} {
		if status, _, _, err := w2.fetchInput(bad, 0); status != http.StatusConflict || err.Code != tasks.EStaleLease {
			t.Errorf("fetch with lease %+v: got %d %+v; want 409 stale_lease", bad, status, err)
		}
	}
	if status, _, _, err := w2.fetchInput(tasks.LeaseRef{Task: ref.Task, Attempt: ref.Attempt}, 0); status != http.StatusBadRequest || err.Field != "X-Mito-Lease" {
		t.Errorf("fetch without a lease: got %d %+v; want 400 naming the header", status, err)
	}
	if status, _, _, err := w2.fetchInput(ref, 4); status != http.StatusBadRequest || err.Field != "index" {
		t.Errorf("fetch of input 4 of 4: got %d %+v; want 400 naming the index", status, err)
	}

	// Gone since submission: the attachment deleted, the right to read
	// the other group taken away.
	e.must(alice, "DELETE", "/api/v1/groups/alice/attachments/data.csv", nil, nil)
	notFound(0, "input attachment:data.csv=in/data.csv: no such attachment in group alice")
	e.must(bob, "DELETE", "/api/v1/groups/bob/members/alice", nil, nil)
	notFound(3, fmt.Sprintf("input task:%d/b.txt: no task %d", bsrc.ID, bsrc.ID))

	// Once the attempt ended, its lease no longer reads anything.
	now := time.Now()
	if status, err := w2.finish(ref, tasks.Result{State: tasks.Failed, Error: "x", StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatalf("finish: %d %s", status, err.Message)
	}
	if status, _, _, err := w2.fetchInput(ref, 1); status != http.StatusConflict || err.Code != tasks.EStaleLease {
		t.Errorf("fetch after finish: got %d %+v; want 409 stale_lease", status, err)
	}
}
