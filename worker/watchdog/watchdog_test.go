package watchdog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary be its own watchdog (Start runs
// /proc/self/exe), and a controller that a test can kill (see
// startController).
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(Main())
	}
	if os.Getenv("WATCHDOG_TEST_CONTROLLER") != "" {
		os.Exit(controllerMain())
	}
	os.Exit(m.Run())
}

// daemonScript leaves, before it waits or exits, a child that called
// setsid and a double-forked grandchild in a session of its own, as
// daemons do; each writes its pid to a file in $D.
const daemonScript = `
setsid sleep 1000 </dev/null >/dev/null 2>&1 &
echo $! > "$D/setsid"
sh -c 'setsid sh -c "sleep 1001 & echo \$! > \"$D/daemon\"" </dev/null >/dev/null 2>&1 &'
while [ ! -s "$D/daemon" ]; do sleep 0.01; done
echo ready
`

func spec(t *testing.T, script string) (Spec, string, *os.File) {
	t.Helper()
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return Spec{
		Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"D=" + dir, "PATH=/usr/bin:/bin"}, Dir: dir,
		Stdout: w, Stderr: w, Grace: time.Second, LeaseGrace: 500 * time.Millisecond, Name: "t",
	}, dir, r
}

// start starts a watchdog and closes the test's copy of the output's
// write end, so that reading it ends with the attempt.
func start(t *testing.T, s Spec) *Attempt {
	t.Helper()
	w, err := Start(s, "")
	s.Stdout.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = w.Stop("test over", time.Millisecond)
		<-w.Done()
	})
	return w
}

// readPids reads the pids the script wrote to files in dir.
func readPids(t *testing.T, dir string, names ...string) []int {
	t.Helper()
	var pids []int
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

func assertDead(t *testing.T, what string, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("%s: process %d still runs", what, pid)
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// readLine reads one line of the attempt's output.
func readLine(t *testing.T, r io.Reader) string {
	t.Helper()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("read output: %v (got %q)", err, line)
	}
	return strings.TrimSpace(line)
}

func TestExitStatusAndOutput(t *testing.T) {
	t.Parallel()
	s, _, out := spec(t, `echo hello; echo oops >&2; exit 3`)
	w := start(t, s)
	b, err := io.ReadAll(out) // ends when the attempt is gone
	if err != nil {
		t.Fatal(err)
	}
	<-w.Done()
	ex := w.Exit()
	if ex.Err != "" || ex.Cause != CauseNone || !ex.Status.Exited() || ex.Status.ExitStatus() != 3 {
		t.Errorf("exit: %+v; want exit status 3, no cause, no error", ex)
	}
	if string(b) != "hello\noops\n" {
		t.Errorf("output %q; want both streams", b)
	}
}

func TestStartFails(t *testing.T) {
	t.Parallel()
	s, dir, _ := spec(t, "")
	s.Path = filepath.Join(dir, "no-such-program")
	_, err := Start(s, "")
	if err == nil || !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Start of a missing program: %v; want a 'no such file' error", err)
	}
}

// TestDescendantsDieWithMain checks that what a task leaves behind when
// its main process exits (a setsid child, a double-forked daemon) dies.
func TestDescendantsDieWithMain(t *testing.T) {
	t.Parallel()
	for _, cg := range cgroupModes(t) {
		t.Run(cg.name, func(t *testing.T) {
			s, dir, out := spec(t, daemonScript)
			s.Cgroup = cg.dir
			w := start(t, s)
			if got := readLine(t, out); got != "ready" {
				t.Fatalf("output %q", got)
			}
			<-w.Done()
			ex := w.Exit()
			if ex.Err != "" || ex.Cause != CauseNone || ex.Status.ExitStatus() != 0 {
				t.Errorf("exit %+v; want a clean exit", ex)
			}
			if ex.Stragglers < 2 {
				t.Errorf("stragglers %d; want the 2 daemons counted", ex.Stragglers)
			}
			assertDead(t, "after the main process exited", readPids(t, dir, "setsid", "daemon")...)
			if cg.dir != "" && !strings.HasPrefix(w.Containment(), "cgroup ") {
				t.Errorf("containment %q; want a cgroup", w.Containment())
			}
		})
	}
}

// TestTimeoutKillsEverything checks that a timeout kills the main
// process and every descendant, and that one deaf to SIGTERM gets SIGKILL
// after the grace.
func TestTimeoutKillsEverything(t *testing.T) {
	t.Parallel()
	for _, cg := range cgroupModes(t) {
		t.Run(cg.name, func(t *testing.T) {
			s, dir, out := spec(t, daemonScript+`trap "" TERM; while :; do sleep 1; done`)
			s.Cgroup = cg.dir
			s.Timeout = 300 * time.Millisecond
			s.Grace = 200 * time.Millisecond
			w := start(t, s)
			readLine(t, out)
			<-w.Done()
			ex := w.Exit()
			if ex.Cause != CauseTimeout || !ex.Status.Signaled() || ex.Status.Signal() != syscall.SIGKILL {
				t.Errorf("exit %+v; want killed by SIGKILL for the timeout", ex)
			}
			assertDead(t, "after the timeout", readPids(t, dir, "setsid", "daemon")...)
		})
	}
}

// TestDeadline checks that the lease deadline kills the attempt, and that
// it is the last one Extend gave. (That an extended deadline does not kill
// is what every task longer than its lease shows, in the worker's and the
// fault suite's tests.)
func TestDeadline(t *testing.T) {
	t.Parallel()
	s, dir, out := spec(t, daemonScript+`sleep 1000`)
	s.Deadline = time.Now().Add(time.Hour)
	w := start(t, s)
	readLine(t, out)
	// Extended to the past: the watchdog kills at once.
	w.Extend(time.Now().Add(-time.Second))
	<-w.Done()
	if ex := w.Exit(); ex.Cause != CauseDeadline {
		t.Errorf("exit %+v; want cause %q", ex, CauseDeadline)
	}
	assertDead(t, "after the deadline", readPids(t, dir, "setsid", "daemon")...)
}

// TestStopShortensGrace checks that a later, more urgent stop shortens
// the grace of one already under way.
func TestStopShortensGrace(t *testing.T) {
	t.Parallel()
	s, _, out := spec(t, `trap "" TERM; echo ready; while :; do sleep 1; done`)
	w := start(t, s)
	readLine(t, out)
	if err := w.Stop("cancelled", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop("lease lost", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	<-w.Done()
	if ex := w.Exit(); ex.Cause != "cancelled" || ex.Status.Signal() != syscall.SIGKILL {
		t.Errorf("exit %+v; want the first cause, killed by SIGKILL", ex)
	}
}

// TestSIGTERMToWatchdog checks what a reconciling worker relies on: a
// watchdog that gets SIGTERM kills its attempt and exits.
func TestSIGTERMToWatchdog(t *testing.T) {
	t.Parallel()
	s, dir, out := spec(t, daemonScript+`sleep 1000`)
	w := start(t, s)
	readLine(t, out)
	if err := syscall.Kill(w.Watchdog().Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-w.Done()
	if ex := w.Exit(); ex.Cause != CauseTerminated {
		t.Errorf("exit %+v; want cause %q", ex, CauseTerminated)
	}
	assertDead(t, "after SIGTERM to the watchdog", readPids(t, dir, "setsid", "daemon")...)
}

// TestWorkerKilled kills the process that started the watchdog, as a
// SIGKILLed shim: the watchdog must kill the whole attempt by itself.
func TestWorkerKilled(t *testing.T) {
	for _, cg := range cgroupModes(t) {
		t.Run(cg.name, func(t *testing.T) {
			dir := t.TempDir()
			ctrl, watchdogPid := startController(t, dir, cg.dir)
			pids := readPids(t, dir, "setsid", "daemon", "main")
			if err := ctrl.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = ctrl.Wait()
			// The test is the watchdog's subreaper: it can wait for it.
			var ws unix.WaitStatus
			for {
				_, err := unix.Wait4(watchdogPid, &ws, 0, nil)
				if !errors.Is(err, unix.EINTR) {
					if err != nil {
						t.Fatalf("wait for the watchdog %d: %v", watchdogPid, err)
					}
					break
				}
			}
			assertDead(t, "after the worker was killed", pids...)
		})
	}
}

// startController starts this test binary as a worker that runs one
// watchdog and then waits to be killed; it returns when the attempt runs,
// with the watchdog's pid. The test process becomes a subreaper, so the
// orphaned watchdog becomes its child.
func startController(t *testing.T, dir, cgroup string) (*exec.Cmd, int) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), "WATCHDOG_TEST_CONTROLLER="+dir, "WATCHDOG_TEST_CGROUP="+cgroup)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := readLine(t, out)
	pid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("controller printed %q", line)
	}
	return cmd, pid
}

// controllerMain is startController's process.
func controllerMain() int {
	dir := os.Getenv("WATCHDOG_TEST_CONTROLLER")
	r, wr, err := os.Pipe()
	if err != nil {
		return 1
	}
	w, err := Start(Spec{
		Path: "/bin/sh", Args: []string{"sh", "-c", daemonScript + `echo $$ > "$D/main"; trap "" TERM; while :; do sleep 1; done`},
		Env: []string{"D=" + dir, "PATH=/usr/bin:/bin"}, Dir: dir, Stdout: wr, Stderr: wr,
		Grace: time.Hour, LeaseGrace: 200 * time.Millisecond, Cgroup: os.Getenv("WATCHDOG_TEST_CGROUP"), Name: "ctl",
	}, "")
	wr.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	br := bufio.NewReader(r)
	_, _ = br.ReadString('\n') // "ready"
	for {
		if fi, err := os.Stat(filepath.Join(dir, "main")); err == nil && fi.Size() > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println(w.Watchdog().Pid())
	select {}
}

type cgroupMode struct{ name, dir string }

// cgroupModes lists the ways to hold an attempt this machine offers: the
// subreaper always, and a cgroup when this user may make them.
func cgroupModes(t *testing.T) []cgroupMode {
	modes := []cgroupMode{{"subreaper", ""}}
	if dir, err := DetectCgroup(); err == nil {
		modes = append(modes, cgroupMode{"cgroup", dir})
	} else {
		t.Logf("no cgroup mode here: %v", err)
	}
	return modes
}

// TestKillLeftovers checks how a worker kills what is left of an attempt
// whose watchdog was killed: by the entry in the processes' environment
// (and, where there is one, by the attempt's cgroup), setsid children
// and daemons included, leaving processes without the entry alone.
func TestKillLeftovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := "MITO_WORK_DIR=" + dir
	run := func(env string) *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", daemonScript+`sleep 1000`)
		cmd.Env = []string{"D=" + dir, "PATH=/usr/bin:/bin", env}
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	main := run(marker)
	for {
		if fi, err := os.Stat(filepath.Join(dir, "daemon")); err == nil && fi.Size() > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	pids := append(readPids(t, dir, "setsid", "daemon"), main.Process.Pid)
	other := exec.Command("sleep", "1000")
	other.Env = []string{marker + "x"}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()

	n, err := KillLeftovers("", marker, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Errorf("killed %d; want the main process, the setsid child and the daemon", n)
	}
	_ = main.Wait()
	assertDead(t, "after KillLeftovers", pids...)
	if !alive(other.Process.Pid) {
		t.Errorf("a process without the exact entry was killed")
	}
}

// TestReuse runs attempts one after another under one watchdog: each
// gets its own output, what one leaves behind dies before the next
// starts, a stop meant for an attempt that ended does not reach the
// next, and the record lock is let go when each attempt ends.
func TestReuse(t *testing.T) {
	t.Parallel()
	dog, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	defer dog.Close()
	dir := t.TempDir()
	lockPath := filepath.Join(dir, "lock")
	var prev *Attempt
	for i := range 3 {
		s, d, out := spec(t, daemonScript+`echo "run `+strconv.Itoa(i)+`"`)
		lock, err := TryLock(lockPath)
		if err != nil {
			t.Fatalf("run %d: the lock is still held: %v", i, err)
		}
		s.Lock = lock
		a, err := dog.Run(s)
		s.Stdout.Close()
		lock.Close()
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if prev != nil {
			// A stop of the attempt before: not this one's.
			_ = prev.Stop("stale", time.Millisecond)
		}
		b, _ := io.ReadAll(out)
		<-a.Done()
		if ex := a.Exit(); ex.Cause != CauseNone || ex.Status.ExitStatus() != 0 || ex.Stragglers < 2 {
			t.Errorf("run %d: exit %+v; want a clean exit and the daemons killed", i, ex)
		}
		if want := "ready\nrun " + strconv.Itoa(i) + "\n"; string(b) != want {
			t.Errorf("run %d: output %q; want %q", i, b, want)
		}
		assertDead(t, "after the attempt", readPids(t, d, "setsid", "daemon")...)
		if !dog.Reusable() {
			t.Fatalf("run %d: the watchdog may not run another", i)
		}
		prev = a
	}
	// A program that cannot run leaves the watchdog usable.
	s, d, _ := spec(t, "")
	s.Path = filepath.Join(d, "no-such-program")
	if _, err := dog.Run(s); err == nil {
		t.Error("Run of a missing program: no error")
	}
	if !dog.Reusable() {
		t.Error("the watchdog may not run another after a program that could not start")
	}
}

// TestDeadlineDuringSlowKill checks that a kill with a long grace (a
// cancel, a worker stopping) still ends by the lease deadline: the lease
// runs out whatever the task's grace.
func TestDeadlineDuringSlowKill(t *testing.T) {
	t.Parallel()
	s, _, out := spec(t, `trap "" TERM; echo ready; while :; do sleep 1; done`)
	s.Deadline = time.Now().Add(time.Hour)
	w := start(t, s)
	readLine(t, out)
	if err := w.Stop("worker stopping", time.Hour); err != nil {
		t.Fatal(err)
	}
	w.Extend(time.Now().Add(500 * time.Millisecond))
	select {
	case <-w.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the attempt outlived its lease deadline by 30s during a kill with a long grace")
	}
	if ex := w.Exit(); ex.Cause != "worker stopping" || ex.Status.Signal() != syscall.SIGKILL {
		t.Errorf("exit %+v; want the first cause, killed by SIGKILL", ex)
	}
}
