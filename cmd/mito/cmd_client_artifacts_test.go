package main

import (
	"bytes"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
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
