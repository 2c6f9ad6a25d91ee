package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/coordinator/store/sqlite"
	"github.com/mitolab/mito/tasks"
)

// env is a coordinator on a real SQLite store and (unless the Config
// brings its own artifact store) an artifact directory, served over HTTP.
type env struct {
	t     *testing.T
	c     *coordinator.Coordinator
	srv   *httptest.Server
	admin string // token of the global admin
}

const adminPassword = "admin-password-1"

func newEnv(t *testing.T, cfg coordinator.Config) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "mito.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if cfg.Artifacts == nil {
		arts, err := artifacts.NewDir(filepath.Join(dir, "artifacts"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Artifacts = arts
	}
	cfg.Store = st
	c := coordinator.New(cfg)
	if _, err := c.EnsureAdmin(ctx, adminPassword, filepath.Join(dir, "admin-password")); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator Run: %v", err)
		}
	})
	e := &env{t: t, c: c, srv: srv}
	e.admin = e.login("admin", adminPassword)
	return e
}

// call sends a JSON request and decodes a JSON answer into out (when not
// nil). It returns the status and, for an error answer, the error.
func (e *env) call(token, method, path string, in, out any) (int, *tasks.Error) {
	e.t.Helper()
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case string:
		body = strings.NewReader(v)
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var env struct{ Error *tasks.Error }
		if err := json.Unmarshal(raw, &env); err != nil || env.Error == nil {
			e.t.Fatalf("%s %s: status %d with a body that is not an error object: %q", method, path, resp.StatusCode, raw)
		}
		return resp.StatusCode, env.Error
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, nil
}

// must is call that fails the test on an error answer.
func (e *env) must(token, method, path string, in, out any) {
	e.t.Helper()
	if status, err := e.call(token, method, path, in, out); err != nil {
		e.t.Fatalf("%s %s: %d %s", method, path, status, err.Message)
	}
}

func (e *env) login(user, password string) string {
	e.t.Helper()
	var resp struct{ Token string }
	e.must("", "POST", "/api/v1/auth/login", map[string]string{"user": user, "password": password}, &resp)
	if resp.Token == "" {
		e.t.Fatal("login returned no token")
	}
	return resp.Token
}

// user creates a user and returns a token for them.
func (e *env) user(name string) string {
	e.t.Helper()
	e.must(e.admin, "POST", "/api/v1/users", map[string]any{"name": name, "password": name + "-password"}, nil)
	return e.login(name, name+"-password")
}

func (e *env) submit(token string, spec tasks.Spec) tasks.Task {
	e.t.Helper()
	var t tasks.Task
	e.must(token, "POST", "/api/v1/tasks", spec, &t)
	return t
}

func (e *env) task(token string, id tasks.ID) tasks.Task {
	e.t.Helper()
	var t tasks.Task
	e.must(token, "GET", fmt.Sprintf("/api/v1/tasks/%d", id), nil, &t)
	return t
}

// waitState polls a task until it reaches one of the states, or fails the
// test after timeout.
func (e *env) waitState(token string, id tasks.ID, timeout time.Duration, states ...tasks.State) tasks.Task {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		t := e.task(token, id)
		for _, s := range states {
			if t.State == s {
				return t
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("task %d is %s after %s; want %v", id, t.State, timeout, states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// worker is a hand-driven TCP worker session, for protocol tests.
type worker struct {
	e       *env
	token   string
	session string
}

// worker registers a TCP worker of the current build: it announces every
// feature (registerWorker, as in features_test.go, makes one that does
// not).
func (e *env) worker(token, name string, groups []string, slots int) *worker {
	e.t.Helper()
	return e.registerWorker(token, tasks.RegisterRequest{Name: name, Groups: groups, Slots: slots, Features: []string{tasks.FeatureInputs}})
}

// registerWorker registers a TCP worker with req as it is.
func (e *env) registerWorker(token string, req tasks.RegisterRequest) *worker {
	e.t.Helper()
	var resp tasks.RegisterResponse
	e.must(token, "POST", "/worker/v1/register", req, &resp)
	return &worker{e: e, token: token, session: resp.Session}
}

func (w *worker) call(method, path string, in, out any) (int, *tasks.Error) {
	w.e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, w.e.srv.URL+path, body)
	req.Header.Set("X-Mito-Session", w.session)
	resp, err := w.e.srv.Client().Do(req)
	if err != nil {
		w.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var env struct{ Error *tasks.Error }
		_ = json.Unmarshal(raw, &env)
		if env.Error == nil {
			w.e.t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, raw)
		}
		return resp.StatusCode, env.Error
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			w.e.t.Fatal(err)
		}
	}
	return resp.StatusCode, nil
}

func (w *worker) claim(max int, wait time.Duration) []tasks.Assignment {
	w.e.t.Helper()
	var resp tasks.ClaimResponse
	if _, err := w.call("POST", "/worker/v1/claim", tasks.ClaimRequest{Max: max, Wait: tasks.Duration(wait)}, &resp); err != nil {
		w.e.t.Fatalf("claim: %s", err.Message)
	}
	return resp.Assignments
}

func (w *worker) finish(ref tasks.LeaseRef, r tasks.Result) (int, *tasks.Error) {
	w.e.t.Helper()
	return w.call("POST", fmt.Sprintf("/worker/v1/tasks/%d/finish", ref.Task), tasks.FinishRequest{Lease: ref, Result: r}, nil)
}

func exitCode(n int) *int { return &n }

// stallLimit is how long waitProgress lets a count stand still before it
// fails: a test bounded by progress, not by how long the whole takes, so
// that a busy machine slows it down without failing it.
const stallLimit = 90 * time.Second

// waitProgress polls check until it reports done. It fails the test when
// the count check reports has not changed for stallLimit: whatever the
// test waits for has stopped moving.
func waitProgress(t *testing.T, what string, check func() (done bool, count int)) {
	t.Helper()
	last, since := -1, time.Now()
	for {
		done, n := check()
		if done {
			return
		}
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > stallLimit {
			t.Fatalf("%s: stuck at %d for %s", what, n, stallLimit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
