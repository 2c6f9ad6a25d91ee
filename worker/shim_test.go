package worker

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/worker/watchdog"
)

// shimDir holds the binaries shimBinaries built.
var shimDir string

// shimBinaries builds, once per test binary, the two programs the
// coordinator starts as shims: mito-shim and `mito worker --stdio`.
var shimBinaries = sync.OnceValues(func() (map[string][]string, error) {
	dir, err := os.MkdirTemp("", "mito-shim-test-")
	if err != nil {
		return nil, err
	}
	shimDir = dir
	bins := map[string][]string{}
	for name, args := range map[string][]string{
		"mito-shim":         nil,
		"mito worker stdio": {"worker", "--stdio"},
	} {
		pkg := "../cmd/" + strings.Fields(name)[0]
		out := filepath.Join(dir, strings.Fields(name)[0])
		cmd := exec.Command("go", "build", "-o", out, pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		bins[name] = append([]string{out}, args...)
	}
	return bins, nil
})

// TestMain lets the test binary be the watchdog of the workers the tests
// run in process, and removes the binaries shimBinaries built.
func TestMain(m *testing.M) {
	if watchdog.IsChild() {
		os.Exit(watchdog.Main())
	}
	code := m.Run()
	if shimDir != "" {
		os.RemoveAll(shimDir)
	}
	os.Exit(code)
}

// shimProc is a shim child process, with the test holding the other ends
// of its stdin, stdout and stderr, as sshd does.
type shimProc struct {
	cmd     *exec.Cmd
	workDir string
	stdinW  *os.File
	stdoutR *os.File
	stderrR *os.File
	toShim  cuttable      // what the coordinator side writes to stdinW
	exited  chan struct{} // closed once cmd.Wait returned
	waitErr error
	stderr  lockedBuffer
}

// cuttable writes to w until cut, then drops everything, as a dead SSH
// connection does; it is not an io.Closer.
type cuttable struct {
	w   io.Writer
	cut atomic.Bool
}

func (c *cuttable) Write(p []byte) (int, error) {
	if c.cut.Load() {
		return len(p), nil
	}
	return c.w.Write(p)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startShim starts argv as a shim served by f, after writing noise on its
// stdout as a chatty .bashrc would.
func startShim(t *testing.T, f *fakeCoord, argv []string, noise string) *shimProc {
	t.Helper()
	return startShimIn(t, f, argv, noise, t.TempDir(), t.TempDir())
}

// startShimIn is startShim with the shim's work root and its cache
// directory (where its run records go) given, so that a second shim can
// find what a first one left.
func startShimIn(t *testing.T, f *fakeCoord, argv []string, noise, workDir, cacheDir string) *shimProc {
	t.Helper()
	p := &shimProc{workDir: workDir, exited: make(chan struct{})}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdinW, p.stdoutR, p.stderrR = stdinW, stdoutR, stderrR
	p.toShim.w = stdinW
	if _, err := stdoutW.WriteString(noise); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(argv[0], append(argv[1:], "--work-dir", p.workDir)...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = stdinR, stdoutW, stderrW
	p.cmd.Env = append(os.Environ(), "MITO_COORDINATOR=", "MITO_TOKEN=", "XDG_CACHE_HOME="+cacheDir)
	err = p.cmd.Start()
	for _, f := range []*os.File{stdinR, stdoutW, stderrW} {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	go func() {
		sc := bufio.NewScanner(stderrR)
		for sc.Scan() {
			fmt.Fprintln(&p.stderr, sc.Text())
		}
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		for _, f := range []*os.File{stdinW, stdoutR, stderrR} {
			f.Close()
		}
		if t.Failed() {
			t.Logf("shim's stderr:\n%s", p.stderr.String())
		}
	})
	// The link must not close the shim's stdin when it ends, nor write
	// to it once the channel is cut: the test closes the pipes itself,
	// in the order sshd might.
	serveLink(t, f, stdoutR, &p.toShim)
	return p
}

// TestShimSurvivesClosedSSHChannel runs the real shim binaries and closes
// their stdin, stdout and stderr as sshd does when the SSH channel closes:
// the shim must not die of SIGPIPE on its next write, but kill its tasks'
// process groups (one ignores SIGTERM), remove their directories and exit.
// On the way it checks that a chatty login shell does not corrupt the link
// and that tasks get the default SIGPIPE disposition.
func TestShimSurvivesClosedSSHChannel(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the shim binaries")
	}
	bins, err := shimBinaries()
	if err != nil {
		t.Fatal(err)
	}
	// sshd closes the shim's stdin, stdout and stderr in some order: with
	// stdin first, the shim sees the link end and its first write is a log
	// line; with stdout first, its next write is an HTTP/2 frame.
	orders := map[string]func(p *shimProc) []*os.File{
		"stdin first":  func(p *shimProc) []*os.File { return []*os.File{p.stdinW, p.stdoutR, p.stderrR} },
		"stdout first": func(p *shimProc) []*os.File { return []*os.File{p.stdoutR, p.stderrR, p.stdinW} },
	}
	for name, argv := range bins {
		for order, files := range orders {
			t.Run(name+"/"+order, func(t *testing.T) {
				t.Parallel()
				testShimClosedChannel(t, argv, files)
			})
		}
	}
}

func testShimClosedChannel(t *testing.T, argv []string, files func(*shimProc) []*os.File) {
	reg := testReg()
	grace := time.Duration(reg.KillGrace)
	f := newFake(t, reg)
	p := startShim(t, f, argv, "Welcome to lab host\n\x1b[1mLast login: yesterday\x1b[0m\n")

	// SIGPIPE is handled in the shim, not ignored: tasks must get the
	// default, or a pipeline's writer outlives its reader.
	id := f.submit(tasks.Spec{Shell: `yes | head -1`, Timeout: tasks.Duration(10 * time.Second)})
	res := f.waitResult(t, id, 15*time.Second)
	if res.State != tasks.Succeeded {
		t.Errorf("yes | head -1: got %s (%s); want %s at once", res.State, res.Error, tasks.Succeeded)
	}
	if logs, _, _ := f.snapshotTask(id); logs[tasks.Stdout] != "y\n" || logs[tasks.Stderr] != "" {
		t.Errorf("yes | head -1: stdout %q, stderr %q; want \"y\\n\" and nothing (yes killed by SIGPIPE, not told EPIPE)", logs[tasks.Stdout], logs[tasks.Stderr])
	}
	id = f.submit(tasks.Spec{Shell: `kill -PIPE $$; echo survived`})
	if res := f.waitResult(t, id, 10*time.Second); res.Signal != "SIGPIPE" {
		t.Errorf("kill -PIPE $$: got %s, signal %q; want the task killed by SIGPIPE", res.State, res.Signal)
	}

	// A task that ignores SIGTERM, leaves a child in its group, and keeps
	// writing output for the shim to send.
	f.submit(tasks.Spec{Shell: `trap "" TERM; echo $$ > "$MITO_OUTPUT_DIR/../pgid"; sleep 300 & while :; do echo tick; sleep 0.05; done`})
	pgid := readPgid(t, p.workDir)
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })

	// The SSH connection dies; sshd closes the channel.
	p.toShim.cut.Store(true)
	closed := time.Now()
	for i, f := range files(p) {
		if i > 0 {
			// Far enough apart for the shim to write in between: it
			// sends the task's output as it comes.
			time.Sleep(300 * time.Millisecond)
		}
		f.Close()
	}
	select {
	case <-p.exited:
	case <-time.After(grace + 2*time.Second):
		t.Fatalf("shim still runs %s after its SSH channel closed; want it gone within the kill grace (%s) + 2s", time.Since(closed).Round(time.Millisecond), grace)
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Errorf("shim killed by %s; want it to exit by itself", ws.Signal())
	}
	assertGroupDead(t, pgid)
	if ents, err := os.ReadDir(p.workDir); err != nil || len(ents) != 0 {
		t.Errorf("work directory: %d entries left (%v); want none", len(ents), err)
	}
}
