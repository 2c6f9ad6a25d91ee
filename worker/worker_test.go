package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/transport/link"
)

// testReg is the session the fake coordinator hands out unless a test
// says otherwise: fast heartbeats, a long lease, a short kill grace.
func testReg() tasks.RegisterResponse {
	return tasks.RegisterResponse{
		Host:      "test-host",
		Slots:     4,
		Env:       map[string]string{"HOST_VAR": "from-host", "SHARED": "host"},
		LeaseTTL:  tasks.Duration(10 * time.Second),
		Heartbeat: tasks.Duration(200 * time.Millisecond),
		KillGrace: tasks.Duration(time.Second),
	}
}

type testWorker struct {
	workDir string
	cancel  context.CancelFunc
	done    chan error
}

// startWorker runs a worker against f until the test ends.
func startWorker(t *testing.T, f *fakeCoord, mod func(*Config)) *testWorker {
	t.Helper()
	c, err := client.New(f.srv.URL, client.WithToken("test-token"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Client:    c,
		Name:      "w1",
		WorkDir:   t.TempDir(),
		RunDir:    t.TempDir(),
		ClaimWait: 2 * time.Second,
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tw := &testWorker{workDir: cfg.WorkDir, cancel: cancel, done: make(chan error, 1)}
	go func() { tw.done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-tw.done:
		case <-time.After(15 * time.Second):
			t.Error("Run did not return 15s after its context ended")
		}
	})
	return tw
}

// testWriter sends the worker's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupScript records the task's process group (the shell is its leader)
// next to the output directory, then leaves a background child and waits.
const groupScript = `echo $$ > "$MITO_OUTPUT_DIR/../pgid"; sleep 300 & sleep 300`

// readPgid waits for a task started with groupScript to record its group.
func readPgid(t *testing.T, workDir string) int {
	t.Helper()
	return readPgidN(t, workDir, 2)
}

// readPgidN is readPgid for a task that runs at least n processes.
func readPgidN(t *testing.T, workDir string, n int) int {
	t.Helper()
	var pgid int
	waitFor(t, 10*time.Second, "task records its process group", func() bool {
		m, _ := filepath.Glob(filepath.Join(workDir, "*", "pgid"))
		if len(m) == 0 {
			return false
		}
		b, _ := os.ReadFile(m[0])
		pgid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pgid > 0
	})
	// Wait until the background sleep runs too, so that a surviving child
	// would be seen.
	waitFor(t, 5*time.Second, "task's processes start", func() bool { return len(groupMembers(t, pgid)) >= n })
	return pgid
}

// groupMembers returns the live (not zombie) processes of a process group.
func groupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process went away
		}
		// pid (comm) state ppid pgrp ...; comm may contain anything, so
		// parse after the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

func assertGroupDead(t *testing.T, pgid int) {
	t.Helper()
	// The kill is asynchronous at the kernel's end; allow it a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		pids := groupMembers(t, pgid)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process group %d: processes %v survive; want none", pgid, pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	waitFor(t, 5*time.Second, "work directories removed", func() bool {
		ents, err := os.ReadDir(dir)
		return err == nil && len(ents) == 0
	})
}

func TestResults(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	tests := []struct {
		name       string
		spec       tasks.Spec
		state      tasks.State
		exitCode   *int
		signal     string
		err        string
		stdout     string
		stderr     string
		wantStderr bool
	}{
		{name: "success", spec: tasks.Spec{Shell: "echo hello; echo oops >&2"}, state: tasks.Succeeded, exitCode: ptr(0), stdout: "hello\n", stderr: "oops\n"},
		{name: "exit 3", spec: tasks.Spec{Shell: "exit 3"}, state: tasks.Failed, exitCode: ptr(3)},
		{name: "argv", spec: tasks.Spec{Command: []string{"printf", "%s|", "a b", "$HOME"}}, state: tasks.Succeeded, exitCode: ptr(0), stdout: "a b|$HOME|"},
		{name: "signal", spec: tasks.Spec{Shell: "kill -9 $$"}, state: tasks.Failed, signal: "SIGKILL"},
		{name: "not found", spec: tasks.Spec{Command: []string{"nosuch-mito-test"}}, state: tasks.Failed, err: `exec: "nosuch-mito-test": executable file not found in $PATH`},
		{name: "stdin is empty", spec: tasks.Spec{Shell: "cat; echo done"}, state: tasks.Succeeded, exitCode: ptr(0), stdout: "done\n"},
	}
	ids := make([]tasks.ID, len(tests))
	for i, tt := range tests {
		ids[i] = f.submit(tt.spec)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.waitResult(t, ids[i], 20*time.Second)
			if res.State != tt.state {
				t.Errorf("state: got %s; want %s (error %q)", res.State, tt.state, res.Error)
			}
			if got, want := fmtInt(res.ExitCode), fmtInt(tt.exitCode); got != want {
				t.Errorf("exit code: got %s; want %s", got, want)
			}
			if res.Signal != tt.signal {
				t.Errorf("signal: got %q; want %q", res.Signal, tt.signal)
			}
			if res.Error != tt.err {
				t.Errorf("error: got %q; want %q", res.Error, tt.err)
			}
			if res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
				t.Errorf("times: started %v, finished %v; want both set, in order", res.StartedAt, res.FinishedAt)
			}
			logs, _, _ := f.snapshotTask(ids[i])
			if logs[tasks.Stdout] != tt.stdout {
				t.Errorf("stdout: got %q; want %q", logs[tasks.Stdout], tt.stdout)
			}
			if logs[tasks.Stderr] != tt.stderr {
				t.Errorf("stderr: got %q; want %q", logs[tasks.Stderr], tt.stderr)
			}
		})
	}
	assertEmptyDir(t, w.workDir)
	f.mu.Lock()
	reg := f.registered
	f.mu.Unlock()
	if reg.Name != "w1" || reg.OS == "" || reg.Arch == "" {
		t.Errorf("register request: got %+v; want name w1 with os and arch", reg)
	}
}

func ptr(i int) *int { return &i }

func fmtInt(p *int) string {
	if p == nil {
		return "nil"
	}
	return strconv.Itoa(*p)
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: groupScript, Timeout: tasks.Duration(time.Second)})
	start := time.Now()
	pgid := readPgid(t, w.workDir)
	// timeout + grace + 2s, the grace being 1s here.
	res := f.waitResult(t, id, 4*time.Second-time.Since(start))
	if res.State != tasks.TimedOut {
		t.Errorf("state: got %s; want %s", res.State, tasks.TimedOut)
	}
	if want := "timed out after 1s"; res.Error != want {
		t.Errorf("error: got %q; want %q", res.Error, want)
	}
	assertGroupDead(t, pgid)
	assertEmptyDir(t, w.workDir)
}

func TestTimeoutEscalatesToSIGKILL(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: `trap "" TERM; sleep 300`, Timeout: tasks.Duration(time.Second)})
	res := f.waitResult(t, id, 5*time.Second)
	if res.State != tasks.TimedOut || res.Signal != "SIGKILL" {
		t.Errorf("got state %s, signal %q; want %s, SIGKILL", res.State, res.Signal, tasks.TimedOut)
	}
}

func TestStopFromHeartbeatKills(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: groupScript})
	pgid := readPgid(t, w.workDir)
	f.with(id, func(ft *fakeTask) { ft.stop = "cancelled by alice" })
	res := f.waitResult(t, id, 5*time.Second)
	if res.State != tasks.Cancelled {
		t.Errorf("state: got %s; want %s", res.State, tasks.Cancelled)
	}
	if !strings.Contains(res.Error, "cancelled by alice") {
		t.Errorf("error: got %q; want it to give the reason", res.Error)
	}
	assertGroupDead(t, pgid)
	assertEmptyDir(t, w.workDir)
}

func TestLogCap(t *testing.T) {
	t.Parallel()
	reg := testReg()
	reg.LogCap = 1000
	f := newFake(t, reg)
	startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: `head -c 300000 /dev/zero | tr '\0' a; echo small >&2`})
	res := f.waitResult(t, id, 10*time.Second)
	if res.State != tasks.Succeeded {
		t.Fatalf("state: got %s; want %s (%s)", res.State, tasks.Succeeded, res.Error)
	}
	logs, _, _ := f.snapshotTask(id)
	if got := logs[tasks.Stdout]; got != strings.Repeat("a", 1000) {
		t.Errorf("stdout: got %d bytes; want 1000 bytes of 'a'", len(got))
	}
	if !res.StdoutTruncated || res.StderrTruncated {
		t.Errorf("truncated: got stdout %v, stderr %v; want true, false", res.StdoutTruncated, res.StderrTruncated)
	}
	if got := logs[tasks.Stderr]; got != "small\n" {
		t.Errorf("stderr: got %q; want %q", got, "small\n")
	}
}

func TestLargeLog(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	startWorker(t, f, nil)
	// Several chunks, written faster than one request per flush.
	id := f.submit(tasks.Spec{Shell: `seq 1 400000`})
	res := f.waitResult(t, id, 20*time.Second)
	if res.State != tasks.Succeeded || res.StdoutTruncated {
		t.Fatalf("got state %s, truncated %v; want succeeded, not truncated", res.State, res.StdoutTruncated)
	}
	var want strings.Builder
	for i := 1; i <= 400000; i++ {
		want.WriteString(strconv.Itoa(i))
		want.WriteByte('\n')
	}
	logs, _, _ := f.snapshotTask(id)
	if got := logs[tasks.Stdout]; got != want.String() {
		t.Errorf("stdout: got %d bytes; want %d, the same", len(got), want.Len())
	}
}

func TestEnvironment(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, func(c *Config) {
		c.BaseEnv = []string{"PATH=" + os.Getenv("PATH"), "HOME=/home/test", "SHARED=base"}
	})
	id := f.submit(tasks.Spec{
		Shell: `env; echo "PWD=$(pwd)"`,
		Env:   map[string]string{"TASK_VAR": "from-task", "SHARED": "task"},
	})
	res := f.waitResult(t, id, 10*time.Second)
	if res.State != tasks.Succeeded {
		t.Fatalf("state: got %s; want %s (%s)", res.State, tasks.Succeeded, res.Error)
	}
	logs, _, _ := f.snapshotTask(id)
	env := map[string]string{}
	for _, l := range strings.Split(logs[tasks.Stdout], "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	for k, want := range map[string]string{
		"HOST_VAR":     "from-host",
		"TASK_VAR":     "from-task",
		"SHARED":       "task",
		"HOME":         "/home/test",
		"PATH":         os.Getenv("PATH"),
		"MITO_TASK_ID": strconv.Itoa(int(id)),
		"MITO_ATTEMPT": "1",
	} {
		if env[k] != want {
			t.Errorf("%s: got %q; want %q", k, env[k], want)
		}
	}
	wd := env["MITO_WORK_DIR"]
	if filepath.Dir(wd) != w.workDir || !strings.HasPrefix(filepath.Base(wd), strconv.Itoa(int(id))+"-1-") {
		t.Errorf("MITO_WORK_DIR: got %q; want %s/%d-1-<random>", wd, w.workDir, id)
	}
	if got, want := env["MITO_OUTPUT_DIR"], filepath.Join(wd, "out"); got != want {
		t.Errorf("MITO_OUTPUT_DIR: got %q; want %q", got, want)
	}
	if env["PWD"] != wd {
		t.Errorf("working directory: got %q; want %q", env["PWD"], wd)
	}
	if _, ok := env["MITO_TEST_LEAK"]; ok {
		t.Error("the worker's own environment leaked into the task")
	}
}

func TestArtifacts(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: `
		cd "$MITO_OUTPUT_DIR"
		echo top > top.txt
		mkdir -p a/b && echo deep > a/b/deep.txt
		echo spaced > "a/with space %.txt"
		: > empty
		ln -s /etc/passwd passwd
		ln -s /etc linkdir
		mkfifo fifo
		exit 1`})
	res := f.waitResult(t, id, 10*time.Second)
	if res.State != tasks.Failed {
		t.Errorf("state: got %s; want %s (artifacts are kept for failed tasks too)", res.State, tasks.Failed)
	}
	_, arts, _ := f.snapshotTask(id)
	want := map[string]string{"top.txt": "top\n", "a/b/deep.txt": "deep\n", "a/with space %.txt": "spaced\n", "empty": ""}
	if len(arts) != len(want) {
		t.Errorf("artifacts: got %d (%v); want %d", len(arts), keys(arts), len(want))
	}
	for name, content := range want {
		if got, ok := arts[name]; !ok || got != content {
			t.Errorf("artifact %q: got %q (present %v); want %q", name, got, ok, content)
		}
	}
	assertEmptyDir(t, w.workDir)
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestShutdownKillsEverything(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: groupScript})
	f.submit(tasks.Spec{Shell: `trap "" TERM; sleep 300`})
	pgid := readPgid(t, w.workDir)
	waitFor(t, 5*time.Second, "both tasks start", func() bool {
		m, _ := filepath.Glob(filepath.Join(w.workDir, "*"))
		return len(m) == 2
	})
	w.cancel()
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("Run: got %v; want nil after its context ended", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of its context ending")
	}
	w.done <- nil // for the cleanup
	assertGroupDead(t, pgid)
	if ents, _ := os.ReadDir(w.workDir); len(ents) != 0 {
		t.Errorf("work directory: %d entries left; want none", len(ents))
	}
	if _, _, res := f.snapshotTask(id); res != nil {
		t.Errorf("result: got %+v; want none reported on shutdown", res)
	}
}

// tickScript records its process group and writes a line every 50ms.
const tickScript = `echo $$ > "$MITO_OUTPUT_DIR/../pgid"; while :; do echo tick; sleep 0.05; done`

func TestStaleLeaseOnLogKills(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: tickScript})
	pgid := readPgidN(t, w.workDir, 1)
	f.with(id, func(ft *fakeTask) { ft.staleLogs = true })
	assertEmptyDirWithin(t, w.workDir, 5*time.Second)
	assertGroupDead(t, pgid)
	if _, _, res := f.snapshotTask(id); res != nil {
		t.Errorf("result: got %+v; want none reported for a stale lease", res)
	}
}

func TestLeaseExpiryKills(t *testing.T) {
	t.Parallel()
	reg := testReg()
	reg.LeaseTTL = tasks.Duration(2 * time.Second)
	f := newFake(t, reg)
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: groupScript})
	pgid := readPgid(t, w.workDir)
	f.mu.Lock()
	f.failHeartbeats = true
	f.mu.Unlock()
	// The lease is counted from the last heartbeat sent: it is given up
	// 2s - 1.5s margin (grace + 1s, clamped to 3/4 of the lease) after
	// that, then killed within the grace.
	assertEmptyDirWithin(t, w.workDir, 2*time.Second+time.Second+2*time.Second)
	assertGroupDead(t, pgid)
	if _, _, res := f.snapshotTask(id); res != nil {
		t.Errorf("result: got %+v; want none reported after the lease ran out", res)
	}
}

func assertEmptyDirWithin(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	waitFor(t, d, "work directories removed", func() bool {
		ents, err := os.ReadDir(dir)
		return err == nil && len(ents) == 0
	})
}

// TestRevokedTokenEndsRun checks that a worker whose registration is
// refused (its token was revoked) stops, killing what it runs.
func TestRevokedTokenEndsRun(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: groupScript})
	pgid := readPgid(t, w.workDir)
	f.mu.Lock()
	f.revoked = true
	f.broadcast()
	f.mu.Unlock()
	select {
	case err := <-w.done:
		if tasks.ErrorCode(err) != tasks.EUnauthorized {
			t.Errorf("Run: got %v; want an unauthorized error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of a 401")
	}
	w.done <- nil // for the cleanup
	assertGroupDead(t, pgid)
	assertEmptyDir(t, w.workDir)
	_ = id
}

func TestSlotsBoundConcurrency(t *testing.T) {
	t.Parallel()
	reg := testReg()
	reg.Slots = 2
	f := newFake(t, reg)
	startWorker(t, f, func(c *Config) { c.ClaimWait = 30 * time.Second })
	var ids []tasks.ID
	for range 6 {
		ids = append(ids, f.submit(tasks.Spec{Shell: "sleep 0.2"}))
	}
	start := time.Now()
	for _, id := range ids {
		if res := f.waitResult(t, id, 10*time.Second); res.State != tasks.Succeeded {
			t.Errorf("task %d: got %s; want %s", id, res.State, tasks.Succeeded)
		}
	}
	f.mu.Lock()
	maxRun := f.maxRun
	f.mu.Unlock()
	if maxRun != 2 {
		t.Errorf("most attempts at once: got %d; want 2", maxRun)
	}
	// A freed slot is claimed for at once, not after the claim wait (30s)
	// runs out: 6 tasks of 0.2s on 2 slots take about 0.6s.
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("6 tasks took %s; want far less than the 30s claim wait", d)
	}
}

func TestStrayChildrenKilledAfterExit(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	pgidFile := filepath.Join(t.TempDir(), "pgid")
	// The background sleep keeps stdout open: the worker must kill it to
	// see the end of the output at all.
	id := f.submit(tasks.Spec{
		Shell: `echo $$ > "$PGID_FILE"; sleep 300 & echo started`,
		Env:   map[string]string{"PGID_FILE": pgidFile},
	})
	res := f.waitResult(t, id, 10*time.Second)
	if res.State != tasks.Succeeded {
		t.Errorf("state: got %s; want %s", res.State, tasks.Succeeded)
	}
	b, err := os.ReadFile(pgidFile)
	if err != nil {
		t.Fatal(err)
	}
	pgid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	assertGroupDead(t, pgid)
	if logs, _, _ := f.snapshotTask(id); logs[tasks.Stdout] != "started\n" {
		t.Errorf("stdout: got %q; want %q", logs[tasks.Stdout], "started\n")
	}
	assertEmptyDir(t, w.workDir)
}

// TestRunLink runs the worker over a link served by link.ServeConn, as the
// coordinator will, and checks that closing the link stops it and kills its
// task.
func TestRunLink(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	// Like a parent and its child shim: the shim reads its stdin and writes
	// its stdout.
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	serverConn, served := serveLink(t, f, stdoutR, stdinW)
	workDir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- RunLink(context.Background(), stdinR, stdoutW, Config{WorkDir: workDir, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	}()

	id := f.submit(tasks.Spec{Shell: "echo over the link"})
	if res := f.waitResult(t, id, 10*time.Second); res.State != tasks.Succeeded {
		t.Errorf("state: got %s; want %s", res.State, tasks.Succeeded)
	}
	if logs, _, _ := f.snapshotTask(id); logs[tasks.Stdout] != "over the link\n" {
		t.Errorf("stdout: got %q; want %q", logs[tasks.Stdout], "over the link\n")
	}

	f.submit(tasks.Spec{Shell: groupScript})
	pgid := readPgid(t, workDir)
	serverConn.Close() // the coordinator lets go
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunLink: got %v; want nil when the link closes", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunLink did not return within 10s of the link closing")
	}
	<-served
	assertGroupDead(t, pgid)
	assertEmptyDir(t, workDir)
}

// serveLink serves f's API on a link over the shim's stdout (r) and stdin
// (w), as the coordinator does once it has skipped the preamble. Closing
// the conn it returns ends the link; served is closed once ServeConn has
// returned.
func serveLink(t *testing.T, f *fakeCoord, r io.Reader, w io.Writer) (conn net.Conn, served <-chan struct{}) {
	t.Helper()
	// SkipPreamble reads nothing past the preamble and returns r itself,
	// so the conn can be made (and closed) before it is done.
	conn = link.NewConn(r, w, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := link.SkipPreamble(conn); err != nil {
			t.Errorf("coordinator side: %v", err)
			conn.Close()
			return
		}
		link.ServeConn(context.Background(), conn, f.srv.Config.Handler, nil)
	}()
	return conn, done
}

// TestRunLinkGivesUpOnSilentCoordinator checks that a worker whose
// coordinator no longer answers (a half-open link) does not linger until
// TCP gives up: once nothing has come back for two lease TTLs, RunLink kills
// what runs (already dead by then: its lease ran out) and returns.
func TestRunLinkGivesUpOnSilentCoordinator(t *testing.T) {
	t.Parallel()
	reg := testReg()
	reg.LeaseTTL = tasks.Duration(2 * time.Second)
	ttl := time.Duration(reg.LeaseTTL)
	f := newFake(t, reg)
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	serverConn, served := serveLink(t, f, stdoutR, stdinW)
	t.Cleanup(func() {
		serverConn.Close()
		<-served
	})
	workDir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- RunLink(context.Background(), stdinR, stdoutW, Config{WorkDir: workDir, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	}()

	// A coordinator that answers keeps it running, tasks or not.
	id := f.submit(tasks.Spec{Shell: "echo hello"})
	if res := f.waitResult(t, id, 10*time.Second); res.State != tasks.Succeeded {
		t.Errorf("state: got %s; want %s", res.State, tasks.Succeeded)
	}
	select {
	case err := <-done:
		t.Fatalf("RunLink returned %v while the coordinator answered", err)
	case <-time.After(2*ttl + time.Second):
	}

	f.submit(tasks.Spec{Shell: `trap "" TERM; ` + groupScript})
	pgid := readPgid(t, workDir)
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	f.mu.Lock()
	f.hang = true
	f.broadcast()
	f.mu.Unlock()
	silent := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("RunLink: got %v; want ErrUnreachable", err)
		}
		if d := time.Since(silent); d < 2*ttl-time.Second {
			t.Errorf("RunLink gave up %s after the coordinator fell silent; want two lease TTLs (%s)", d, 2*ttl)
		}
	case <-time.After(2*ttl + 5*time.Second):
		t.Fatalf("RunLink still runs %s after the coordinator fell silent; want it to give up after two lease TTLs (%s)", time.Since(silent).Round(time.Millisecond), 2*ttl)
	}
	assertGroupDead(t, pgid)
	assertEmptyDir(t, workDir)
}
