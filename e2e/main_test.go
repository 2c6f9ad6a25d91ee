package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/internal/testbin"
	"github.com/mitolab/mito/tasks"
)

// bin holds the binaries built once for all tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := testbin.Build("../cmd", "mito-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const adminPassword = "e2e-admin-password"

// lab is a running coordinator and a client configuration for it.
type lab struct {
	t      *testing.T
	url    string
	data   string // the coordinator's data directory
	cfgDir string
	work   string // shims' work root
	cmd    *exec.Cmd
	args   []string // the coordinator's
	logs   *syncBuffer
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startLab starts `mito coordinator` with an inventory and logs in as admin.
func startLab(t *testing.T, inventory string, extraArgs ...string) *lab {
	t.Helper()
	dir := t.TempDir()
	inv := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inv, []byte(inventory), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	l := &lab{t: t, url: "http://" + addr, data: filepath.Join(dir, "data"), cfgDir: filepath.Join(dir, "config"), work: filepath.Join(dir, "work"), logs: &syncBuffer{}}
	l.args = append([]string{"coordinator", "--listen", addr, "--data-dir", filepath.Join(dir, "data"), "--inventory", inv, "--lease-ttl", "4s", "--kill-grace", "1s", "--log-level", "debug"}, extraArgs...)
	if err := os.MkdirAll(l.work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.stop()
		if t.Failed() {
			t.Logf("coordinator log:\n%s", l.logs.String())
		}
	})
	l.startCoordinator()
	l.mustRun(withEnv("MITO_PASSWORD="+adminPassword), "client", "login", "-u", "admin")
	return l
}

// startCoordinator starts the lab's coordinator and waits until it answers.
func (l *lab) startCoordinator() {
	t := l.t
	t.Helper()
	l.cmd = exec.Command(filepath.Join(bin, "mito"), l.args...)
	// Local shims inherit TMPDIR and XDG_CACHE_HOME: their work and run
	// directories are the lab's, not the user's.
	l.cmd.Env = append(os.Environ(), "MITO_ADMIN_PASSWORD="+adminPassword, "TMPDIR="+l.work, "XDG_CACHE_HOME="+filepath.Join(l.work, "cache"))
	l.cmd.Stdout, l.cmd.Stderr = l.logs, l.logs
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(l.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator did not come up: %v\n%s", err, l.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restart stops the lab's coordinator and starts it again on the same
// data directory and address.
func (l *lab) restart() {
	l.t.Helper()
	l.stop()
	l.startCoordinator()
}

// stop sends SIGTERM and waits, as a service manager would.
func (l *lab) stop() {
	if l.cmd.ProcessState != nil {
		return
	}
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = l.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		l.t.Errorf("coordinator did not stop within 30s of SIGTERM")
		_ = l.cmd.Process.Kill()
		<-done
	}
}

type runOpt func(*exec.Cmd)

func withEnv(kv ...string) runOpt { return func(c *exec.Cmd) { c.Env = append(c.Env, kv...) } }

// run runs the mito binary as the lab's user and returns stdout, stderr
// and the exit code.
func (l *lab) run(opts []runOpt, args ...string) (string, string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "mito"), args...)
	cmd.Env = append(os.Environ(), "MITO_CONFIG_DIR="+l.cfgDir, "MITO_COORDINATOR="+l.url)
	for _, o := range opts {
		o(cmd)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("run mito %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

func (l *lab) mustRun(opt runOpt, args ...string) string {
	l.t.Helper()
	var opts []runOpt
	if opt != nil {
		opts = append(opts, opt)
	}
	out, errOut, code := l.run(opts, args...)
	if code != 0 {
		l.t.Fatalf("mito %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// submit submits a task with `mito client submit -o json` and returns its id.
func (l *lab) submit(args ...string) tasks.ID {
	l.t.Helper()
	out := l.mustRun(nil, append([]string{"client", "submit", "-o", "json"}, args...)...)
	var t tasks.Task
	if err := json.Unmarshal([]byte(out), &t); err != nil || t.ID == 0 {
		l.t.Fatalf("submit printed %q; want a JSON task with an id (%v)", out, err)
	}
	return t.ID
}

func (l *lab) get(id tasks.ID) tasks.Task {
	l.t.Helper()
	out := l.mustRun(nil, "client", "tasks", "get", "-o", "json", strconv.FormatInt(int64(id), 10))
	var t tasks.Task
	if err := json.Unmarshal([]byte(out), &t); err != nil {
		l.t.Fatalf("tasks get printed %q: %v", out, err)
	}
	return t
}

// waitFor polls until the task is in one of the states. It fails when
// the task has not moved (its state, attempt or host) for timeout: a test
// bounded by progress, so that a loaded machine slows it down without
// failing it.
func (l *lab) waitFor(id tasks.ID, timeout time.Duration, states ...tasks.State) tasks.Task {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	var last tasks.Task
	for {
		t := l.get(id)
		for _, s := range states {
			if t.State == s {
				return t
			}
		}
		if t.State != last.State || t.Attempt != last.Attempt || t.Host != last.Host {
			last, deadline = t, time.Now().Add(timeout)
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("task %d is %s, unchanged for %s; want %v", id, t.State, timeout, states)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// liveProcs calls fn with the pid and the /proc/PID/stat fields after the
// command name (state, ppid, pgrp, ...) of every process that is not a
// zombie. The name may hold spaces and parentheses, so the fields start
// after the last ')'.
func liveProcs(fn func(pid int, stat []string)) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		fn(pid, f)
	}
}

// liveInGroup lists the processes of a process group that are not zombies.
func liveInGroup(pgid int) []int {
	var live []int
	liveProcs(func(pid int, stat []string) {
		if g, _ := strconv.Atoi(stat[2]); g == pgid {
			live = append(live, pid)
		}
	})
	return live
}

func readPID(t *testing.T, path string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s after %s", path, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func init() {
	if runtime.GOOS != "linux" {
		panic("the e2e tests need Linux")
	}
}

// skipOrFail skips a test whose services are missing, or fails it when
// MITO_TEST_REQUIRE says they must be there (as in CI).
func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("MITO_TEST_REQUIRE") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// freshSchema creates a PostgreSQL schema for one test, dropped after it,
// and returns pg's URL with that schema as its search_path.
func freshSchema(t *testing.T, pg, prefix string) string {
	t.Helper()
	schema := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	conn, err := pgx.Connect(t.Context(), pg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		conn.Close(context.Background())
	})
	sep := "?"
	if strings.Contains(pg, "?") {
		sep = "&"
	}
	return pg + sep + "search_path=" + schema
}
