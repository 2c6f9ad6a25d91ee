package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mitolab/mito/tasks"
)

// TestArtifactsDownloadHostileListing has a malicious coordinator list
// artifacts whose names climb out of the download directory, next to an
// honest one. `tasks artifacts download -o DIR` with no names must fetch
// and write the honest one, refuse each hostile one by name without even
// fetching it, and leave nothing outside DIR.
func TestArtifactsDownloadHostileListing(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "out", "dl")
	// An absolute name aimed at a file of the test's own, so that a
	// broken refusal shows without touching the machine's files.
	canary := filepath.Join(parent, "canary")
	hostile := []string{"../x", "../../x", "/etc/passwd", canary, "a/../../b", "sub/../../../c", "..", "./../y"}

	f := newFake()
	f.put(&tasks.Task{ID: 7, State: tasks.Succeeded})
	f.files["ok.txt"] = "fine\n"
	for _, n := range hostile {
		f.files[n] = "evil"
	}
	// The fake would serve a hostile name if asked; record what is asked,
	// and answer /etc/passwd with nothing, in case (run as root).
	var (
		mu      sync.Mutex
		fetched []string
	)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const prefix = "/api/v1/tasks/7/artifacts/"
		if name, ok := strings.CutPrefix(r.URL.Path, prefix); ok {
			mu.Lock()
			fetched = append(fetched, name)
			mu.Unlock()
			if name == "/etc/passwd" || strings.HasPrefix(name, "/") {
				http.NotFound(w, r)
				return
			}
		}
		f.ServeHTTP(w, r)
	})

	_, errOut, code := runClientHandler(t, h, "tasks", "artifacts", "download", "7", "-o", dir)
	if code == exitOK {
		t.Errorf("download: exit 0; want a failure for the hostile names")
	}
	for _, n := range hostile {
		if !strings.Contains(errOut, `artifact "`+n+`"`) {
			t.Errorf("stderr does not name artifact %q:\n%s", n, errOut)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "ok.txt")); err != nil || string(b) != "fine\n" {
		t.Errorf("ok.txt: %q, %v; want it downloaded next to the refused ones", b, err)
	}
	mu.Lock()
	if !slices.Equal(fetched, []string{"ok.txt"}) {
		t.Errorf("fetched %q; want only ok.txt (hostile names refused before any request)", fetched)
	}
	mu.Unlock()

	// Nothing anywhere under parent but dir/ok.txt: no file, no
	// temporary, no directory made for a hostile name.
	_ = filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		switch p {
		case parent, filepath.Join(parent, "out"), dir, filepath.Join(dir, "ok.txt"):
			return nil
		}
		t.Errorf("download left %s", p)
		return nil
	})
	if _, err := os.Stat(canary); err == nil {
		t.Errorf("the absolute name %s was written", canary)
	}
}

// runClientHandler runs `mito client args...` against h, like runClient,
// and returns stdout, stderr (with the error exitCode printed) and the
// exit code.
func runClientHandler(t *testing.T, h http.Handler, args ...string) (string, string, int) {
	t.Helper()
	srv := httptest.NewServer(h)
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
	code := exitCode(cmd.ExecuteContext(t.Context()), &stderr)
	return stdout.String(), stderr.String(), code
}

// fetchRecorder wraps f and records the artifact names fetched of task id.
func fetchRecorder(f *fakeCoordinator, id tasks.ID) (http.Handler, func() []string) {
	var (
		mu      sync.Mutex
		fetched []string
	)
	prefix := fmt.Sprintf("/api/v1/tasks/%d/artifacts/", id)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name, ok := strings.CutPrefix(r.URL.Path, prefix); ok {
			mu.Lock()
			fetched = append(fetched, name)
			mu.Unlock()
		}
		f.ServeHTTP(w, r)
	})
	return h, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), fetched...)
	}
}

// readFile returns a file's content, or "<missing>".
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "<missing>"
	}
	return string(b)
}

// TestArtifactsDownloadRefusesToOverwrite checks that a download that
// would replace files refuses, before fetching anything, naming them and
// --force, and that --force replaces them, a symbolic link included
// (never the file it points to).
func TestArtifactsDownloadRefusesToOverwrite(t *testing.T) {
	f := newFake()
	f.put(&tasks.Task{ID: 7, State: tasks.Succeeded})
	f.files["result.txt"] = "new result\n"
	f.files["plots/loss.csv"] = "new loss\n"
	f.files["fresh.txt"] = "fresh\n"
	h, fetched := fetchRecorder(f, 7)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "plots"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"result.txt": "old result\n", "plots/loss.csv": "old loss\n"} {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(name)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name  string
		args  []string
		names []string // files the message must name
	}{
		{"every artifact", nil, []string{"result.txt", filepath.Join("plots", "loss.csv")}},
		{"one name", []string{"result.txt"}, []string{"result.txt"}},
		{"a name among new ones", []string{"fresh.txt", "plots/loss.csv"}, []string{filepath.Join("plots", "loss.csv")}},
	}
	for _, tt := range tests {
		args := append([]string{"tasks", "artifacts", "download", "7", "-o", dir}, tt.args...)
		out, errOut, code := runClientHandler(t, h, args...)
		if code != exitConflict || !strings.Contains(errOut, "--force") || !strings.Contains(errOut, "nothing was downloaded") {
			t.Errorf("%s: exit %d, %q %q; want %d saying nothing was downloaded and naming --force", tt.name, code, out, errOut, exitConflict)
		}
		for _, n := range tt.names {
			if !strings.Contains(errOut, filepath.Join(dir, n)) {
				t.Errorf("%s: %q does not name %s", tt.name, errOut, filepath.Join(dir, n))
			}
		}
	}
	if got := fetched(); len(got) != 0 {
		t.Errorf("fetched %q before refusing; want nothing", got)
	}
	for name, want := range map[string]string{"result.txt": "old result\n", "plots/loss.csv": "old loss\n", "fresh.txt": "<missing>"} {
		if got := readFile(t, filepath.Join(dir, filepath.FromSlash(name))); got != want {
			t.Errorf("after the refusals %s holds %q; want %q", name, got, want)
		}
	}

	// --force replaces; a symbolic link in a file's place is replaced
	// itself, and the file it points to is left alone.
	outside := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(outside, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "fresh.txt")); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runClientHandler(t, h, "tasks", "artifacts", "download", "7", "-o", dir, "fresh.txt"); code != exitConflict {
		t.Errorf("download over a symlink: exit %d, %q; want %d", code, errOut, exitConflict)
	}
	out, errOut, code := runClientHandler(t, h, "tasks", "artifacts", "download", "7", "-o", dir, "--force")
	if code != exitOK {
		t.Fatalf("download --force: exit %d, %q %q", code, out, errOut)
	}
	for name, want := range f.files {
		if got := readFile(t, filepath.Join(dir, filepath.FromSlash(name))); got != want {
			t.Errorf("after --force %s holds %q; want %q", name, got, want)
		}
	}
	if st, err := os.Lstat(filepath.Join(dir, "fresh.txt")); err != nil || st.Mode()&fs.ModeSymlink != 0 {
		t.Errorf("fresh.txt after --force: %v, %v; want a regular file in the link's place", st, err)
	}
	if got := readFile(t, outside); got != "precious\n" {
		t.Errorf("the file the link pointed to holds %q; want it untouched", got)
	}
	// No temporary file is left anywhere.
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".tmp") {
			t.Errorf("left %s", p)
		}
		return nil
	})

	// A directory in a file's place is refused even with --force.
	f.files["sub"] = "a file named like a directory"
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	n := len(fetched())
	_, errOut, code = runClientHandler(t, h, "tasks", "artifacts", "download", "7", "-o", dir, "--force")
	if code != exitConflict || !strings.Contains(errOut, "is a directory") {
		t.Errorf("download onto a directory: exit %d, %q; want %d saying it is a directory", code, errOut, exitConflict)
	}
	if got := fetched(); len(got) != n {
		t.Errorf("fetched %q before refusing; want nothing more", got[n:])
	}
}

// artifactsDeleter answers DELETE /api/v1/tasks/{id}/artifacts from a
// list of records, as the coordinator does, refusing a running task; the
// rest goes to f. It records the queries it got.
type artifactsDeleter struct {
	f       *fakeCoordinator
	mu      sync.Mutex
	arts    []tasks.Artifact
	queries []url.Values
}

func (d *artifactsDeleter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	idStr, ok := strings.CutPrefix(r.URL.Path, "/api/v1/tasks/")
	idStr, ok2 := strings.CutSuffix(idStr, "/artifacts")
	if !ok || !ok2 || r.Method != "DELETE" {
		d.f.ServeHTTP(w, r)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	q := r.URL.Query()
	d.queries = append(d.queries, q)
	id, _ := strconv.Atoi(idStr)
	d.f.mu.Lock()
	task, found := d.f.tasks[tasks.ID(id)]
	d.f.mu.Unlock()
	switch {
	case !found:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"code":"not_found","message":"no task %d"}}`, id)
		return
	case task.State == tasks.Running:
		w.WriteHeader(http.StatusConflict)
		fmt.Fprintf(w, `{"error":{"code":"conflict","message":"task %d is running: its shim may still be uploading artifacts"}}`, id)
		return
	}
	attempt, _ := strconv.Atoi(q.Get("attempt"))
	names := q["name"]
	deleted := []tasks.Artifact{}
	d.arts = slices.DeleteFunc(d.arts, func(a tasks.Artifact) bool {
		if a.Task != tasks.ID(id) || (attempt != 0 && a.Attempt != attempt) || (len(names) > 0 && !slices.Contains(names, a.Name)) {
			return false
		}
		deleted = append(deleted, a)
		return true
	})
	_ = json.NewEncoder(w).Encode(map[string]any{"deleted": deleted})
}

func TestArtifactsDelete(t *testing.T) {
	f := newFake()
	f.put(&tasks.Task{ID: 7, State: tasks.Failed})
	f.put(&tasks.Task{ID: 8, State: tasks.Running})
	d := &artifactsDeleter{f: f, arts: []tasks.Artifact{
		{Task: 7, Attempt: 1, Name: "a.txt", Size: 10, SHA256: "a1"},
		{Task: 7, Attempt: 1, Name: "out/b.bin", Size: 3 << 20, SHA256: "b1"},
		{Task: 7, Attempt: 2, Name: "a.txt", Size: 20, SHA256: "a2"},
		{Task: 7, Attempt: 2, Name: "c", Size: 1, SHA256: "c2"},
	}}
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return runClientHandler(t, d, append([]string{"tasks", "artifacts", "delete"}, args...)...)
	}

	// Usage errors, before any request.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"7"}, "--all"},
		{[]string{"7", "--attempt", "1"}, "--all"},
		{[]string{"7", "a.txt", "--all"}, "not both"},
		{[]string{"7", "../x"}, "NAME"},
		{[]string{"7", "--all", "--attempt", "-1"}, "--attempt"},
		{[]string{"x", "--all"}, "task id"},
	} {
		if _, errOut, code := run(tt.args...); code != exitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("delete %q: exit %d, %q; want %d naming %s", tt.args, code, errOut, exitUsage, tt.want)
		}
	}
	if len(d.queries) != 0 {
		t.Fatalf("usage errors sent %v; want nothing", d.queries)
	}

	// Names: the found ones are deleted and listed with the space freed;
	// a missing one is an error naming it, after the others went.
	out, errOut, code := run("7", "a.txt", "./nope", "a.txt", "--attempt", "1")
	if code != exitNotFound || !strings.Contains(errOut, `"nope"`) || !strings.Contains(errOut, "task 7") {
		t.Errorf("delete with a missing name: exit %d, %q; want %d naming \"nope\"", code, errOut, exitNotFound)
	}
	if want := "deleted a.txt (attempt 1, 10 B)\ndeleted 1 artifact of task 7, freeing 10 B\n"; out != want {
		t.Errorf("delete printed %q; want %q", out, want)
	}
	if want := (url.Values{"attempt": {"1"}, "name": {"a.txt", "nope"}}); len(d.queries) != 1 || !reflect.DeepEqual(d.queries[0], want) {
		t.Errorf("sent %v; want one request with %v", d.queries, want)
	}

	// A running task is refused.
	if _, errOut, code := run("8", "--all"); code != exitConflict || !strings.Contains(errOut, "running") {
		t.Errorf("delete of a running task: exit %d, %q; want %d", code, errOut, exitConflict)
	}
	if _, errOut, code := run("9", "--all"); code != exitNotFound {
		t.Errorf("delete of a missing task: exit %d, %q; want %d", code, errOut, exitNotFound)
	}

	// --all of one attempt, as JSON.
	out, errOut, code = run("7", "--all", "--attempt", "2", "-o", "json")
	var got []tasks.Artifact
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != exitOK {
		t.Fatalf("delete --all -o json: exit %d, %q %q (%v)", code, out, errOut, err)
	}
	if len(got) != 2 || got[0].Name != "a.txt" || got[0].Attempt != 2 || got[1].Name != "c" {
		t.Errorf("delete --all --attempt 2 -o json = %+v; want a.txt and c of attempt 2", got)
	}

	// --all: the rest; sizes summed for people.
	out, errOut, code = run("7", "--all")
	if code != exitOK || out != "deleted out/b.bin (attempt 1, 3.0 MiB)\ndeleted 1 artifact of task 7, freeing 3.0 MiB\n" {
		t.Errorf("delete --all: exit %d, %q %q", code, out, errOut)
	}
	out, errOut, code = run("7", "--all")
	if code != exitOK || out != "" || !strings.Contains(errOut, "no artifacts") {
		t.Errorf("delete --all of nothing: exit %d, %q %q; want 0 and a note", code, out, errOut)
	}
	if out, _, _ = run("7", "--all", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("delete --all -o json of nothing printed %q; want []", out)
	}
}

// TestArtifactsDownloadIntoAFile: -o naming a file is a usage error that
// says so, before anything is fetched.
func TestArtifactsDownloadIntoAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"artifacts":[{"task":7,"attempt":1,"name":"a.txt","size":1,"sha256":"00"}]}`)
	})
	_, errOut, code := runClientWith(t, h, "tasks", "artifacts", "download", "7", "-o", file)
	if code != exitUsage || !strings.Contains(errOut, "is a file") {
		t.Errorf("download -o FILE: exit %d, stderr %q; want a usage error saying it is a file", code, errOut)
	}
}
