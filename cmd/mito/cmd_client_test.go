package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

func TestLocalArtifactPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want string // "" means refused
	}{
		{"out.txt", "out.txt"},
		{"plots/loss.png", filepath.Join("plots", "loss.png")},
		{"./a/./b", filepath.Join("a", "b")},
		{"a//b", filepath.Join("a", "b")},
		{"..x/y", filepath.Join("..x", "y")},
		{"../x", ""},
		{"..", ""},
		{".", ""},
		{"", ""},
		{"/etc/passwd", ""},
		{"a/../../b", ""},
		{"a/../b", ""}, // stays inside, but no honest task output has a ".." part
		{"a/b/..", ""},
		{"a\x00b", ""},
	}
	for _, tt := range tests {
		got, err := localArtifactPath(tt.name)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("localArtifactPath(%q) = %q; want it refused", tt.name, got)
		case tt.want != "" && (err != nil || got != tt.want):
			t.Errorf("localArtifactPath(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestPickArtifacts(t *testing.T) {
	t.Parallel()
	arts := []tasks.Artifact{
		{Attempt: 1, Name: "a", SHA256: "A1"}, {Attempt: 2, Name: "a", SHA256: "A2"}, {Attempt: 1, Name: "b", SHA256: "B1"},
	}
	got := pickArtifacts(arts, 0)
	if len(got) != 2 || got[0].attempt != 2 || got[0].sha256 != "a2" || got[1].name != "b" {
		t.Errorf("latest: got %+v", got)
	}
	if got = pickArtifacts(arts, 1); len(got) != 2 || got[0].attempt != 1 {
		t.Errorf("attempt 1: got %+v", got)
	}
}

// fakeCoordinator answers the user API for command tests: tasks kept in a
// map, artifacts served from files, and every submitted spec recorded.
type fakeCoordinator struct {
	mu        sync.Mutex
	tasks     map[tasks.ID]*tasks.Task
	files     map[string]string // artifact name → content
	badSum    map[string]bool   // artifacts served with a wrong SHA-256
	submitted []tasks.Spec
	hosts     []tasks.Host
	// createdUsers records the users created through the API.
	createdUsers []string
	// finish is the state a task takes when waited on.
	finish map[tasks.ID]tasks.State
}

// put adds or replaces a task while the fake may be serving.
func (f *fakeCoordinator) put(t *tasks.Task) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks[t.ID] = t
}

func (f *fakeCoordinator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("wait") != "" {
		time.Sleep(20 * time.Millisecond) // a long poll holds the request a while
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/api/v1/auth/login":
		var in struct{ User, Password string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.User != "ann" || in.Password != "secret" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"code":"unauthorized","message":"wrong user or password"}}`)
			return
		}
		fmt.Fprint(w, `{"token":"tok","user":{"name":"ann"},"expires":"2099-01-01T00:00:00Z"}`)
		return
	case "/api/v1/auth/logout":
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Header.Get("Authorization") != "Bearer tok" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"unauthorized","message":"token expired"}}`)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/api/v1/")
	switch {
	case p == "auth/whoami":
		fmt.Fprint(w, `{"name":"ann"}`)
	case p == "hosts":
		if f.hosts == nil {
			fmt.Fprint(w, `{"hosts":[]}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"hosts": f.hosts})
	case p == "users" && r.Method == "POST":
		var in struct{ Name string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		f.createdUsers = append(f.createdUsers, in.Name)
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":{"code":"forbidden","message":"only global admins may manage users"}}`)
	case p == "tasks" && r.Method == "POST":
		var spec tasks.Spec
		if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		f.submitted = append(f.submitted, spec)
		t := &tasks.Task{ID: 42, Spec: spec, Creator: "ann", State: tasks.Queued}
		f.tasks[t.ID] = t
		w.WriteHeader(201)
		_ = json.NewEncoder(w).Encode(t)
	case strings.HasPrefix(p, "tasks/"):
		rest := strings.TrimPrefix(p, "tasks/")
		idStr, sub, _ := strings.Cut(rest, "/")
		id, _ := strconv.Atoi(idStr)
		t, ok := f.tasks[tasks.ID(id)]
		if !ok {
			w.WriteHeader(404)
			fmt.Fprintf(w, `{"error":{"code":"not_found","message":"task %d not found"}}`, id)
			return
		}
		switch {
		case sub == "cancel" && r.Method == "POST":
			if t.State.Final() {
				w.WriteHeader(http.StatusConflict)
				fmt.Fprintf(w, `{"error":{"code":"conflict","message":"task %d is already %s"}}`, id, t.State)
				return
			}
			t.State = tasks.Cancelled
			_ = json.NewEncoder(w).Encode(t)
		case sub == "":
			if r.URL.Query().Get("wait") != "" {
				if st, ok := f.finish[t.ID]; ok {
					t.State = st
					code := 0
					if st != tasks.Succeeded {
						code = 3
					}
					t.ExitCode = &code
				}
			}
			_ = json.NewEncoder(w).Encode(t)
		case sub == "logs":
			log := f.files["log:"+r.URL.Query().Get("stream")]
			off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
			end := min(off+4, len(log)) // tiny pages, so that paging is exercised
			w.Header().Set("X-Mito-Next-Offset", strconv.Itoa(end))
			fmt.Fprint(w, log[off:end])
		case sub == "artifacts":
			var arts []tasks.Artifact
			for name, content := range f.files {
				sum := sha256.Sum256([]byte(content))
				arts = append(arts, tasks.Artifact{Task: t.ID, Attempt: 1, Name: name, Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])})
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"artifacts": arts})
		case strings.HasPrefix(sub, "artifacts/"):
			name := strings.TrimPrefix(sub, "artifacts/")
			content, ok := f.files[name]
			if !ok {
				w.WriteHeader(404)
				fmt.Fprint(w, `{"error":{"code":"not_found","message":"no such artifact"}}`)
				return
			}
			sum := sha256.Sum256([]byte(content))
			if f.badSum[name] {
				sum = sha256.Sum256([]byte("something else"))
			}
			w.Header().Set("X-Mito-SHA256", hex.EncodeToString(sum[:]))
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			fmt.Fprint(w, content)
		default:
			http.NotFound(w, r)
		}
	default:
		http.NotFound(w, r)
	}
}

// runClient runs `mito client args...` against f with a fresh config
// directory and returns stdout, stderr and the process exit code.
func runClient(t *testing.T, f *fakeCoordinator, args ...string) (string, string, int) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("MITO_CONFIG_DIR", t.TempDir())
	t.Setenv("MITO_COORDINATOR", srv.URL)
	t.Setenv("MITO_TOKEN", "tok")
	var stdout, stderr bytes.Buffer
	cmd := newClientCmd()
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(""))
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(t.Context())
	code := exitCode(err, &stderr)
	return stdout.String(), stderr.String(), code
}

func newFake() *fakeCoordinator {
	return &fakeCoordinator{tasks: map[tasks.ID]*tasks.Task{}, files: map[string]string{},
		badSum: map[string]bool{}, finish: map[tasks.ID]tasks.State{}}
}

func TestSubmitCommand(t *testing.T) {
	f := newFake()
	out, errOut, code := runClient(t, f, "submit", "-t", "gpu", "--env", "A=1", "--", "echo", "hi")
	if code != 0 || out != "submitted task 42\n" {
		t.Fatalf("got %q, %q, exit %d; want \"submitted task 42\", exit 0", out, errOut, code)
	}
	if len(f.submitted) != 1 {
		t.Fatalf("got %d submissions; want 1", len(f.submitted))
	}
	// The group defaults to the user's personal group, learnt from whoami
	// as the token came from MITO_TOKEN.
	if s := f.submitted[0]; s.Group != "ann" || s.Command[1] != "hi" || s.Env["A"] != "1" || s.Tags[0] != "gpu" {
		t.Errorf("coordinator got %+v", s)
	}

	out, _, code = runClient(t, f, "submit", "-o", "json", "-g", "netlab", "--", "true")
	var task struct {
		ID    *int   `json:"id"`
		Group string `json:"group"`
	}
	if err := json.Unmarshal([]byte(out), &task); err != nil || code != 0 || task.ID == nil || *task.ID != 42 || task.Group != "netlab" {
		t.Errorf("submit -o json: got %q (%v), exit %d; want a task object with id 42", out, err, code)
	}

	if out, _, code = runClient(t, f, "submit", "-q", "--", "true"); out != "42\n" {
		t.Errorf("submit -q: got %q, exit %d; want \"42\\n\"", out, code)
	}

	// A spec the coordinator would refuse is refused before sending, with
	// the usage exit code.
	n := len(f.submitted)
	if _, errOut, code = runClient(t, f, "submit", "-g", "no such/group", "--", "true"); code != exitUsage || !strings.Contains(errOut, "group") {
		t.Errorf("bad group: got %q, exit %d; want exit %d naming the group", errOut, code, exitUsage)
	}
	if _, errOut, code = runClient(t, f, "submit", "--env", "NOEQUALS", "--", "true"); code != exitUsage {
		t.Errorf("bad env: got %q, exit %d; want exit %d", errOut, code, exitUsage)
	}
	if len(f.submitted) != n {
		t.Errorf("invalid submissions reached the coordinator")
	}
}

func TestTasksGetAndWait(t *testing.T) {
	f := newFake()
	code0 := 0
	f.put(&tasks.Task{ID: 1, State: tasks.Succeeded, ExitCode: &code0})
	f.put(&tasks.Task{ID: 2, State: tasks.Running})
	f.put(&tasks.Task{ID: 3, State: tasks.Queued})
	f.finish[2] = tasks.Succeeded
	f.finish[3] = tasks.Failed

	out, _, code := runClient(t, f, "tasks", "get", "-o", "json", "1")
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 || got["state"] != "succeeded" || got["exit_code"] != 0.0 {
		t.Errorf("get -o json: got %q, exit %d; want state and exit_code", out, code)
	}

	out, errOut, code := runClient(t, f, "tasks", "wait", "1", "2")
	if code != 0 || !strings.Contains(out, "succeeded") {
		t.Errorf("wait on successes: got %q %q, exit %d; want exit 0", out, errOut, code)
	}
	if strings.Contains(errOut, "waiting:") {
		t.Errorf("progress line written to a non-terminal: %q", errOut)
	}

	out, errOut, code = runClient(t, f, "tasks", "wait", "-o", "json", "1", "3")
	var ts []tasks.Task
	if err := json.Unmarshal([]byte(out), &ts); err != nil || len(ts) != 2 || ts[1].State != tasks.Failed {
		t.Errorf("wait -o json: got %q (%v); want two tasks, the second failed", out, err)
	}
	if code != exitFailure || errOut != "" {
		t.Errorf("wait with a failure: got exit %d, stderr %q; want exit %d and no message", code, errOut, exitFailure)
	}

	if _, errOut, code = runClient(t, f, "tasks", "wait", "1", "99"); code != exitNotFound {
		t.Errorf("wait on an unknown task: got exit %d (%q); want %d", code, errOut, exitNotFound)
	}

	f.put(&tasks.Task{ID: 4, State: tasks.Running})
	_, errOut, code = runClient(t, f, "tasks", "wait", "--timeout", "300ms", "--poll", "50ms", "4")
	if code != exitTimeout || !strings.Contains(errOut, "gave up") {
		t.Errorf("wait timeout: got exit %d (%q); want %d saying it gave up", code, errOut, exitTimeout)
	}
}

func TestUnauthorizedHint(t *testing.T) {
	f := newFake()
	srv := httptest.NewServer(f)
	defer srv.Close()
	_, errOut, code := runClient(t, f, "whoami")
	if code != 0 {
		t.Fatalf("whoami with a good token: exit %d, %q", code, errOut)
	}
	t.Setenv("MITO_TOKEN", "bad")
	var stderr bytes.Buffer
	cmd := newClientCmd()
	cmd.SetArgs([]string{"-c", srv.URL, "whoami"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&stderr)
	err := cmd.ExecuteContext(t.Context())
	if code := exitCode(err, &stderr); code != exitAuth || !strings.Contains(stderr.String(), "mito client login") {
		t.Errorf("got exit %d, %q; want %d with a login hint", code, stderr.String(), exitAuth)
	}
}

func TestArtifactsDownload(t *testing.T) {
	f := newFake()
	f.put(&tasks.Task{ID: 7, State: tasks.Succeeded})
	f.files["result.txt"] = "42\n"
	f.files["plots/loss.csv"] = "1,2\n"
	dir := filepath.Join(t.TempDir(), "out")

	out, errOut, code := runClient(t, f, "tasks", "artifacts", "download", "7", "-o", dir)
	if code != 0 {
		t.Fatalf("download: exit %d, %q %q", code, out, errOut)
	}
	for name, content := range f.files {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil || string(b) != content {
			t.Errorf("%s: got %q, %v; want %q", name, b, err, content)
		}
	}

	// A corrupted transfer leaves nothing behind, not even a temporary file.
	f.files["bad.bin"] = "payload"
	f.badSum["bad.bin"] = true
	_, errOut, code = runClient(t, f, "tasks", "artifacts", "download", "7", "-o", dir, "bad.bin")
	if code != exitFailure || !strings.Contains(errOut, "SHA-256 mismatch") {
		t.Errorf("bad checksum: got exit %d, %q; want %d and a mismatch", code, errOut, exitFailure)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "result.txt" && e.Name() != "plots" {
			t.Errorf("left behind %s", e.Name())
		}
	}

	// Hostile names are refused before anything is fetched or written.
	for _, name := range []string{"../x", "/etc/passwd", "a/../../b"} {
		f.files[name] = "evil"
		_, errOut, code = runClient(t, f, "tasks", "artifacts", "download", "7", "-o", dir, name)
		if code != exitUsage || !strings.Contains(errOut, "name") {
			t.Errorf("%q: got exit %d, %q; want %d refusing the name", name, code, errOut, exitUsage)
		}
		delete(f.files, name)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x")); err == nil {
		t.Error("../x was written outside the directory")
	}

	// A symbolic link inside the directory cannot lead a write out of it.
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	f.files["link/escape.txt"] = "evil"
	_, errOut, code = runClient(t, f, "tasks", "artifacts", "download", "7", "-o", dir, "link/escape.txt")
	if code == 0 {
		t.Errorf("write through an escaping symlink: exit 0, %q; want a failure", errOut)
	}
	if _, err := os.Stat(filepath.Join(outside, "escape.txt")); err == nil {
		t.Error("a file was written through a symlink outside the directory")
	}
}

func TestListTasksPaging(t *testing.T) {
	var (
		mu      sync.Mutex
		befores []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		befores = append(befores, r.URL.Query().Get("before"))
		mu.Unlock()
		switch r.URL.Query().Get("before") {
		case "":
			fmt.Fprint(w, `{"tasks":[{"id":5,"state":"queued"},{"id":4,"state":"running"}],"next":4}`)
		default:
			fmt.Fprint(w, `{"tasks":[{"id":3,"state":"failed"}],"next":0}`)
		}
	}))
	defer srv.Close()
	t.Setenv("MITO_CONFIG_DIR", t.TempDir())
	t.Setenv("MITO_TOKEN", "tok")
	var stdout, stderr bytes.Buffer
	cmd := newClientCmd()
	cmd.SetArgs([]string{"-c", srv.URL, "tasks", "list", "--all", "-q", "--since", time.Now().Add(-time.Hour).Format(time.RFC3339)})
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "5\n4\n3\n" {
		t.Errorf("got %q; want ids 5, 4, 3", stdout.String())
	}
	if strings.Join(befores, ",") != ",4" {
		t.Errorf("got before params %q; want \"\" then 4", befores)
	}
}

func TestLoginLogout(t *testing.T) {
	f := newFake()
	srv := httptest.NewServer(f)
	defer srv.Close()
	dir := t.TempDir()
	t.Setenv("MITO_CONFIG_DIR", dir)
	t.Setenv("MITO_COORDINATOR", srv.URL+"/")
	t.Setenv("MITO_TOKEN", "")
	t.Setenv("MITO_PASSWORD", "")
	run := func(stdin string, args ...string) (string, int) {
		t.Helper()
		var out bytes.Buffer
		cmd := newClientCmd()
		cmd.SetArgs(args)
		cmd.SetIn(strings.NewReader(stdin))
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		code := exitCode(cmd.ExecuteContext(t.Context()), &out)
		return out.String(), code
	}

	if out, code := run("", "login", "-u", "ann"); code != exitUsage || !strings.Contains(out, "MITO_PASSWORD") {
		t.Errorf("login without a password source: got exit %d, %q; want %d naming MITO_PASSWORD", code, out, exitUsage)
	}
	if out, code := run("wrong\n", "login", "-u", "ann", "--password-stdin"); code != exitAuth {
		t.Errorf("wrong password: got exit %d, %q; want %d", code, out, exitAuth)
	}
	if out, code := run("secret\n", "login", "-u", "ann", "--password-stdin"); code != 0 || !strings.Contains(out, "logged in") {
		t.Fatalf("login: got exit %d, %q", code, out)
	}
	creds, err := loadCredentials(dir)
	if c := creds[srv.URL]; err != nil || c.Token != "tok" || c.User != "ann" || c.Expires.Year() != 2099 {
		t.Fatalf("stored %+v, %v; want ann's token under %s", creds, err, srv.URL)
	}
	if out, code := run("", "whoami", "-q"); code != 0 || out != "ann\n" {
		t.Errorf("whoami with the stored token: got exit %d, %q", code, out)
	}
	// Login again without -u reuses the stored user name.
	t.Setenv("MITO_PASSWORD", "secret")
	if out, code := run("", "login"); code != 0 {
		t.Errorf("login without -u: got exit %d, %q", code, out)
	}
	if out, code := run("", "logout"); code != 0 {
		t.Errorf("logout: got exit %d, %q", code, out)
	}
	if creds, _ = loadCredentials(dir); len(creds) != 0 {
		t.Errorf("after logout stored %+v; want nothing", creds)
	}
	if out, code := run("", "whoami"); code != exitAuth {
		t.Errorf("whoami after logout: got exit %d, %q; want %d", code, out, exitAuth)
	}
}

func TestTasksLogs(t *testing.T) {
	f := newFake()
	f.put(&tasks.Task{ID: 7, State: tasks.Failed})
	f.files["log:stdout"] = "line one\nline two\n"
	f.files["log:stderr"] = "oops\n"
	if out, errOut, code := runClient(t, f, "tasks", "logs", "7"); code != 0 || out != f.files["log:stdout"] {
		t.Errorf("logs: got %q (%q), exit %d; want all of stdout", out, errOut, code)
	}
	if out, _, code := runClient(t, f, "tasks", "logs", "7", "--stderr", "-f"); code != 0 || out != "oops\n" {
		t.Errorf("logs --stderr -f: got %q, exit %d; want stderr", out, code)
	}
	out, _, _ := runClient(t, f, "tasks", "logs", "7", "-o", "json")
	var got struct {
		Data       string `json:"data"`
		NextOffset int64  `json:"next_offset"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Data != f.files["log:stdout"] || got.NextOffset != int64(len(got.Data)) {
		t.Errorf("logs -o json: got %q, %v", out, err)
	}
	if _, _, code := runClient(t, f, "tasks", "logs", "8"); code != exitNotFound {
		t.Errorf("logs of an unknown task: exit %d; want %d", code, exitNotFound)
	}
}

func TestSubmitStopsAtCommand(t *testing.T) {
	f := newFake()
	// -la is the command's, not -l a: mito's flags end at the command.
	if _, errOut, code := runClient(t, f, "submit", "ls", "-la", "/tmp"); code != 0 {
		t.Fatalf("submit ls -la /tmp: exit %d, %q", code, errOut)
	}
	if _, errOut, code := runClient(t, f, "tasks", "submit", "-t", "gpu", "python3", "train.py", "--lr", "0.1", "-o", "json"); code != 0 {
		t.Fatalf("tasks submit python3 ...: exit %d, %q", code, errOut)
	}
	if len(f.submitted) != 2 {
		t.Fatalf("got %d submissions; want 2", len(f.submitted))
	}
	if s := f.submitted[0]; !reflect.DeepEqual(s.Command, []string{"ls", "-la", "/tmp"}) || len(s.Labels) != 0 {
		t.Errorf("submit ls -la /tmp sent command %q, labels %q", s.Command, s.Labels)
	}
	if s := f.submitted[1]; !reflect.DeepEqual(s.Command, []string{"python3", "train.py", "--lr", "0.1", "-o", "json"}) || !reflect.DeepEqual(s.Tags, []string{"gpu"}) {
		t.Errorf("tasks submit sent command %q, tags %q", s.Command, s.Tags)
	}
}

func TestSubmitNotesUnservedTasks(t *testing.T) {
	f := newFake()
	const note = "note: no host serves group ann with tags gpu; the task will wait until one does"
	if out, errOut, _ := runClient(t, f, "submit", "-t", "gpu", "true"); out != "submitted task 42\n" || !strings.Contains(errOut, note) {
		t.Errorf("no hosts: got %q, %q; want the note %q", out, errOut, note)
	}
	for _, args := range [][]string{{"-q"}, {"-o", "json"}} {
		if _, errOut, _ := runClient(t, f, append(args, "submit", "-t", "gpu", "true")...); errOut != "" {
			t.Errorf("%v: got stderr %q; want no note", args, errOut)
		}
	}
	f.hosts = []tasks.Host{
		{Name: "a", Groups: []string{"ann"}, Tags: []string{"cpu"}},
		{Name: "b", Groups: []string{"netlab"}, Tags: []string{"gpu"}},
	}
	if _, errOut, _ := runClient(t, f, "submit", "-t", "gpu", "true"); !strings.Contains(errOut, note) {
		t.Errorf("no host with both the group and the tag: got %q; want the note", errOut)
	}
	if _, errOut, _ := runClient(t, f, "submit", "-g", "netlab", "-t", "gpu", "true"); errOut != "" {
		t.Errorf("a host serves it: got stderr %q; want no note", errOut)
	}
	if _, errOut, _ := runClient(t, f, "submit", "true"); errOut != "" {
		t.Errorf("no tags, a host serves the group: got stderr %q; want no note", errOut)
	}
}

func TestGetPrintsOnlyWhatWasFound(t *testing.T) {
	f := newFake()
	f.put(&tasks.Task{ID: 1, State: tasks.Queued})
	out, errOut, code := runClient(t, f, "tasks", "get", "999", "-o", "json")
	if code != exitNotFound || out != "" || strings.Count(errOut, "999") != 1 {
		t.Errorf("get 999 -o json: got %q, %q, exit %d; want nothing on stdout, one mention of 999, exit %d", out, errOut, code, exitNotFound)
	}
	out, _, code = runClient(t, f, "tasks", "get", "1", "999", "-o", "json")
	var ts []tasks.Task
	if err := json.Unmarshal([]byte(out), &ts); err != nil || len(ts) != 1 || ts[0].ID != 1 || code != exitNotFound {
		t.Errorf("get 1 999 -o json: got %q, exit %d; want an array of task 1 and exit %d", out, code, exitNotFound)
	}
	if out, _, _ = runClient(t, f, "hosts", "get", "nohost", "-o", "json"); out != "" {
		t.Errorf("hosts get nohost -o json: got %q on stdout; want nothing", out)
	}
}

func TestCancelMessages(t *testing.T) {
	f := newFake()
	f.put(&tasks.Task{ID: 5, State: tasks.Cancelled})
	f.put(&tasks.Task{ID: 6, State: tasks.Queued})
	out, errOut, code := runClient(t, f, "tasks", "cancel", "5", "6", "7")
	if code != exitConflict && code != exitNotFound {
		t.Errorf("cancel: exit %d; want a conflict or not found", code)
	}
	if out != "cancelled task 6\n" {
		t.Errorf("cancel: got stdout %q; want \"cancelled task 6\\n\"", out)
	}
	want := "mito: task 5 is already cancelled\ntask 7 not found\n"
	if errOut != want {
		t.Errorf("cancel: got stderr %q; want %q", errOut, want)
	}
}

func TestBadCoordinatorURL(t *testing.T) {
	f := newFake()
	_, errOut, code := runClient(t, f, "-c", "127.0.0.1:7800", "tasks", "list")
	want := `mito: invalid coordinator URL "127.0.0.1:7800": want http://host:port or https://host:port` + "\n"
	if code != exitUsage || errOut != want {
		t.Errorf("got exit %d, %q; want %d, %q", code, errOut, exitUsage, want)
	}
}

func TestWithLoginHint(t *testing.T) {
	t.Parallel()
	tests := []struct{ msg, want string }{
		{"token expired", "token expired (log in with 'mito client login -u USER')"},
		{"token is invalid or revoked: log in again", "token is invalid or revoked: log in again with 'mito client login -u USER'"},
		{"user bob is disabled", "user bob is disabled"},
		{"not logged in: send an API token (mito client login)", "not logged in: send an API token (mito client login)"},
	}
	for _, tt := range tests {
		err := withLoginHint(&tasks.Error{Code: tasks.EUnauthorized, Message: tt.msg})
		if err.Error() != tt.want || tasks.ErrorCode(err) != tasks.EUnauthorized {
			t.Errorf("withLoginHint(%q) = %q; want %q", tt.msg, err, tt.want)
		}
	}
	if err := withLoginHint(tasks.ErrNotFound); err != tasks.ErrNotFound {
		t.Errorf("withLoginHint changed a not-found error to %v", err)
	}
}

func TestMessagesDoNotRepeat(t *testing.T) {
	t.Parallel()
	notFound := &tasks.Error{Code: tasks.ENotFound, Message: "no task 7"}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{taskError(7, notFound), "no task 7"},
		{taskError(5, errors.New("task 5 is already cancelled")), "task 5 is already cancelled"},
		{taskError(5, errors.New("task 55 is already cancelled")), "task 5: task 55 is already cancelled"},
		{taskError(5, errors.New("connection refused")), "task 5: connection refused"},
		{namedError("user", "bob", errors.New(`no user named "bob"`)), `no user named "bob"`},
		{namedError("user", "bob", errors.New("forbidden")), "user bob: forbidden"},
		{flagValueError("--state", tasks.Invalid("state", "unknown state %q", "bogus")), `--state: unknown state "bogus"`},
	} {
		if tt.err.Error() != tt.want {
			t.Errorf("got %q; want %q", tt.err, tt.want)
		}
	}
	if !errors.Is(taskError(7, notFound), tasks.ErrNotFound) {
		t.Error("taskError lost the error's code")
	}
}

func TestUsersCreateNeedsAdminFirst(t *testing.T) {
	f := newFake()
	// whoami says ann is no admin: the command fails before it reads a
	// password (stdin is empty, which would be a usage error).
	_, errOut, code := runClient(t, f, "users", "create", "bob", "--password-stdin")
	if code != exitAuth || !strings.Contains(errOut, "global admin") {
		t.Errorf("got exit %d, %q; want %d saying a global admin is needed", code, errOut, exitAuth)
	}
	if len(f.createdUsers) != 0 {
		t.Errorf("the coordinator was asked to create %v", f.createdUsers)
	}
}

func TestLogsJSONAttempt(t *testing.T) {
	f := newFake()
	f.put(&tasks.Task{ID: 7, State: tasks.Failed, Attempt: 2})
	f.files["log:stdout"] = "hi\n"
	out, errOut, code := runClient(t, f, "tasks", "logs", "7", "-o", "json")
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 || got["attempt"] != 2.0 || got["data"] != "hi\n" {
		t.Errorf("logs -o json: got %q (%q), exit %d; want attempt 2 and the data", out, errOut, code)
	}
	f.put(&tasks.Task{ID: 8, State: tasks.Queued})
	out, _, _ = runClient(t, f, "tasks", "logs", "8", "-o", "json")
	if err := json.Unmarshal([]byte(out), &got); err != nil || got["attempt"] != 0.0 {
		t.Errorf("logs -o json of a queued task: got %q; want attempt 0", out)
	}
}

func TestAttemptText(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		t    tasks.Task
		want string
	}{
		{tasks.Task{State: tasks.Failed, Attempt: 1, Spec: tasks.Spec{MaxAttempts: 3}}, "1"},
		{tasks.Task{State: tasks.Running, Attempt: 1, Spec: tasks.Spec{MaxAttempts: 3}}, "1 (up to 3 if hosts are lost)"},
		{tasks.Task{State: tasks.Running, Attempt: 1, Spec: tasks.Spec{MaxAttempts: 1}}, "1"},
		{tasks.Task{State: tasks.Queued, Attempt: 0, Spec: tasks.Spec{MaxAttempts: 3}}, "0, not started (up to 3 starts if hosts are lost)"},
	} {
		if got := attemptText(tt.t); got != tt.want {
			t.Errorf("attemptText(%s, %d of %d) = %q; want %q", tt.t.State, tt.t.Attempt, tt.t.MaxAttempts, got, tt.want)
		}
	}
}
