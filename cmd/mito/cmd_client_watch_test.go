package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/mitolab/mito/tasks"
)

// runClientWith runs `mito client args...` against h, like runClient.
func runClientWith(t *testing.T, h http.Handler, args ...string) (string, string, int) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Setenv("MITO_CONFIG_DIR", t.TempDir())
	t.Setenv("MITO_COORDINATOR", srv.URL)
	t.Setenv("MITO_TOKEN", "tok")
	var stdout, stderr bytes.Buffer
	cmd := newClientCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(t.Context())
	code := exitCode(err, &stderr) // before reading stderr: it writes the error there
	return stdout.String(), stderr.String(), code
}

// eventsHandler streams, for task=… queries, each known task's states in
// turn and then "end"; unknown tasks are not found.
func eventsHandler(states map[tasks.ID][]tasks.State) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/events" {
			http.NotFound(w, r)
			return
		}
		var ids []tasks.ID
		for _, s := range r.URL.Query()["task"] {
			var id tasks.ID
			fmt.Sscan(s, &id)
			if _, ok := states[id]; !ok {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(404)
				fmt.Fprintf(w, `{"error":{"code":"not_found","message":"no task %d"}}`, id)
				return
			}
			ids = append(ids, id)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, id := range ids {
			for i, st := range states[id] {
				t := tasks.Task{ID: id, State: st, Attempt: min(i, 1)}
				if st != tasks.Queued {
					t.Host = "h1"
				}
				if st.Final() {
					code := 0
					if st != tasks.Succeeded {
						code = 2
					}
					t.ExitCode = &code
				}
				b, _ := json.Marshal(t)
				fmt.Fprintf(w, "event: task\ndata: %s\n\n", b)
			}
		}
		fmt.Fprint(w, "event: end\ndata: {}\n\n")
	})
}

func TestTasksWatch(t *testing.T) {
	h := eventsHandler(map[tasks.ID][]tasks.State{
		1: {tasks.Queued, tasks.Running, tasks.Succeeded},
		2: {tasks.Running, tasks.Failed},
		3: {tasks.Succeeded},
	})
	out, errOut, code := runClientWith(t, h, "tasks", "watch", "1", "3")
	line := regexp.MustCompile(`^\d\d:\d\d:\d\d  (\d+) +(\w+) +(\S+)(  \(exit (\d+)\))?$`)
	var got []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %q does not read TIME  ID  STATE  HOST  (exit N)", l)
		}
		got = append(got, strings.Join([]string{m[1], m[2], m[3], m[5]}, " "))
	}
	want := []string{"1 queued - ", "1 running h1 ", "1 succeeded h1 0", "3 succeeded h1 0"}
	if code != 0 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("watch 1 3: got %q (%q), exit %d; want %v, exit 0", out, errOut, code, want)
	}

	out, errOut, code = runClientWith(t, h, "tasks", "watch", "-o", "json", "2")
	var states []tasks.State
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var task tasks.Task
		if err := json.Unmarshal([]byte(l), &task); err != nil {
			t.Fatalf("-o json line %q is not a task: %v", l, err)
		}
		states = append(states, task.State)
	}
	if code != exitFailure || errOut != "" || len(states) != 2 || states[1] != tasks.Failed {
		t.Errorf("watch -o json 2: got %q (%q), exit %d; want two NDJSON tasks and exit %d", out, errOut, code, exitFailure)
	}

	if out, _, code = runClientWith(t, h, "tasks", "watch", "-q", "1"); out != "" || code != 0 {
		t.Errorf("watch -q: got %q, exit %d; want nothing, exit 0", out, code)
	}
	if _, errOut, code = runClientWith(t, h, "tasks", "watch", "1", "99"); code != exitNotFound {
		t.Errorf("watch of an unknown task: exit %d (%q); want %d", code, errOut, exitNotFound)
	}
	for _, args := range [][]string{{"tasks", "watch"}, {"tasks", "watch", "1", "--group", "lab"}, {"tasks", "watch", "x"}, {"tasks", "watch", "-g", "Bad Name"}} {
		if _, errOut, code = runClientWith(t, h, args...); code != exitUsage {
			t.Errorf("%v: exit %d (%q); want %d", args, code, errOut, exitUsage)
		}
	}
}

func TestTasksLogsFollowLongPolls(t *testing.T) {
	// The log grows by one chunk per follow read; the task ends after the
	// third, and the state header tells the reader so.
	chunks := []string{"one\n", "two\n", "three\n"}
	var (
		mu    sync.Mutex
		reads []string
	)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		defer mu.Unlock()
		reads = append(reads, q.Encode())
		if r.URL.Path != "/api/v1/tasks/7/logs" || q.Get("follow") != "true" || q.Get("wait") == "" {
			t.Errorf("got %s?%s; want a follow read of task 7's log", r.URL.Path, q.Encode())
		}
		var off int
		fmt.Sscan(q.Get("offset"), &off)
		all := strings.Join(chunks, "")
		n := len(reads)
		state, end := "running", min(len(all), off+len(chunks[min(n-1, 2)]))
		if n > 3 {
			state, end = "succeeded", off
		}
		w.Header().Set("X-Mito-Next-Offset", fmt.Sprint(end))
		w.Header().Set("X-Mito-Attempt", "1")
		w.Header().Set("X-Mito-Task-State", state)
		fmt.Fprint(w, all[off:end])
	})
	out, errOut, code := runClientWith(t, h, "tasks", "logs", "-f", "7")
	if code != 0 || out != "one\ntwo\nthree\n" {
		t.Errorf("logs -f: got %q (%q), exit %d; want the three lines", out, errOut, code)
	}
	if len(reads) != 4 {
		t.Errorf("made %d reads (%v); want 4: three chunks and the final empty one", len(reads), reads)
	}
}
