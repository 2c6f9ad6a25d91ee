// Package watchdog runs a task attempt's command under a supervisor
// process of its own, the watchdog, so that the attempt dies when it must
// even when the worker that started it cannot see to it: the worker was
// killed (SIGKILL, an OOM kill), or it is frozen (SIGSTOP, a stalled
// machine) while its lease runs out on the coordinator.
//
// The watchdog is the same binary as the worker, started again in another
// mode (see IsChild and Main). It makes itself a child subreaper, starts
// the command in its own process group (and, where the host lets this
// user have one, its own cgroup v2), and kills every descendant of it,
// those that called setsid or double-forked included, when:
//
//   - the command's main process exits (what it left behind dies),
//   - the task's timeout passes, or the worker says to stop (a cancel),
//   - the lease deadline the worker keeps extending passes without an
//     extension (the worker is frozen, or cannot reach the coordinator),
//   - its control connection to the worker closes (the worker died),
//   - it gets SIGTERM (a new worker reconciling what an old one left).
//
// Only then does it report how the command ended and exit: when the
// worker hears the watchdog has exited, nothing of the attempt is left.
//
// The worker speaks to the watchdog over a socket pair (fd 3 in the
// watchdog) in JSON lines; the command's stdout and stderr are the
// watchdog's fd 1 and 2, passed on to the command and then closed in the
// watchdog, so that the worker's readers see the end of the output when
// the last process of the attempt is gone.
package watchdog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Cause says why the watchdog killed a command. The worker's own causes
// (a cancel, a shutdown) are passed to Stop and come back as given.
type Cause string

// The causes the watchdog finds by itself.
const (
	// CauseNone: the command's main process exited by itself.
	CauseNone Cause = ""
	// CauseTimeout: the task's timeout passed.
	CauseTimeout Cause = "timeout"
	// CauseDeadline: the lease deadline passed without an extension.
	CauseDeadline Cause = "lease deadline passed"
	// CauseOrphaned: the control connection closed: the worker is gone.
	CauseOrphaned Cause = "worker gone"
	// CauseTerminated: the watchdog got SIGTERM.
	CauseTerminated Cause = "watchdog terminated"
)

// Spec is what to run and when to kill it.
type Spec struct {
	// Path is the program, Args its argv (Args[0] included), Env its
	// whole environment and Dir its working directory.
	Path string
	Args []string
	Env  []string
	Dir  string
	// Stdout and Stderr are the write ends the command's output goes to.
	Stdout, Stderr *os.File
	// Timeout is the task's timeout, counted from the start. Zero means
	// none.
	Timeout time.Duration
	// Grace is how long the command has between SIGTERM and SIGKILL when
	// it timed out or Stop says so without a grace of its own.
	Grace time.Duration
	// LeaseGrace is the (shorter) time between SIGTERM and SIGKILL when
	// the lease deadline passed, the worker is gone or the watchdog got
	// SIGTERM: the coordinator is about to give the task to another host,
	// so the attempt must be dead first.
	LeaseGrace time.Duration
	// Deadline is the lease deadline: the watchdog kills the command when
	// it passes, unless Extend moved it. Zero means none.
	Deadline time.Time
	// Cgroup is a cgroup v2 directory this user may create cgroups in
	// (see DetectCgroup); the command then runs in a new cgroup under it,
	// which the watchdog kills as a whole and removes. Empty means none:
	// the watchdog finds the command's descendants as their subreaper.
	Cgroup string
	// Name names the attempt ("12-1") in the watchdog's argv and cgroup.
	Name string
	// Lock, if set, is an open file the watchdog keeps open (and so any
	// flock on it held) for as long as it lives: a worker that finds the
	// lock free knows the watchdog is gone.
	Lock *os.File
	// RecordDir, if set, is a directory where the watchdog writes, once
	// the command runs, the file "watchdog": its own pid and the
	// attempt's cgroup ("" for none), for a later worker to find it by
	// (see Record).
	RecordDir string
	// Program is the executable that runs Main. Empty means this
	// process's own (/proc/self/exe).
	Program string
}

// Exit is how an attempt ended.
type Exit struct {
	// Status is the command's main process's wait status.
	Status syscall.WaitStatus
	// Cause says why the watchdog killed it; CauseNone if it exited by
	// itself.
	Cause Cause
	// Stragglers counts the processes left when the main process ended,
	// which the watchdog killed.
	Stragglers int
	// Err is set when the watchdog itself failed (it died, or could not
	// clean up); the command's status is then unknown.
	Err string
}

// Watchdog is a running watchdog, seen from the worker that started it.
type Watchdog struct {
	proc        *os.Process
	pid         int // the command's
	containment string
	done        chan struct{}

	// mu serialises writes to ctl.
	mu  sync.Mutex
	ctl *os.File

	exit Exit // set before done is closed
}

// Wire messages. Durations are nanoseconds; deadlines are CLOCK_MONOTONIC
// nanoseconds, a clock both processes share whatever the wall clock does.
type startMsg struct {
	Path       string        `json:"path"`
	Args       []string      `json:"args"`
	Env        []string      `json:"env"`
	Dir        string        `json:"dir"`
	Timeout    time.Duration `json:"timeout"`
	Grace      time.Duration `json:"grace"`
	LeaseGrace time.Duration `json:"lease_grace"`
	Deadline   int64         `json:"deadline,omitempty"`
	Cgroup     string        `json:"cgroup,omitempty"`
	Name       string        `json:"name"`
	RecordDir  string        `json:"record_dir,omitempty"`
}

type ctlMsg struct {
	Op       string        `json:"op"` // "extend" or "stop"
	Deadline int64         `json:"deadline,omitempty"`
	Cause    Cause         `json:"cause,omitempty"`
	Grace    time.Duration `json:"grace,omitempty"`
}

type eventMsg struct {
	Ev          string `json:"ev"` // "started", "exited" or "error"
	Pid         int    `json:"pid,omitempty"`
	Containment string `json:"containment,omitempty"`
	Status      int    `json:"status,omitempty"`
	Cause       Cause  `json:"cause,omitempty"`
	Stragglers  int    `json:"stragglers,omitempty"`
	Err         string `json:"err,omitempty"`
}

// childName is the watchdog's argv[0]: how Main's process knows it is one,
// and what ps shows.
const childName = "mito-watchdog"

// monoNow reads CLOCK_MONOTONIC, the clock Go's timers run on.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// mono turns a deadline into CLOCK_MONOTONIC nanoseconds; zero stays zero.
func mono(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(monoNow()+int64(time.Until(t)), 1)
}

// Start starts a watchdog that starts the command, and returns once the
// command runs, or with the error that kept it from starting (the
// program could not be executed, say), when nothing of it runs.
func Start(s Spec) (*Watchdog, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start watchdog: socketpair: %w", err)
	}
	ctl := os.NewFile(uintptr(fds[0]), "watchdog-ctl")
	child := os.NewFile(uintptr(fds[1]), "watchdog-ctl-child")
	defer child.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	defer devnull.Close()
	prog := s.Program
	if prog == "" {
		prog = "/proc/self/exe"
	}
	proc, err := os.StartProcess(prog, []string{childName, s.Name}, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{},
		Files: []*os.File{devnull, s.Stdout, s.Stderr, child, s.Lock},
		// A session of its own: a signal to the worker's process group
		// (^C in a terminal) is the worker's to handle, not the watchdog's.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	w := &Watchdog{proc: proc, ctl: ctl, done: make(chan struct{})}
	start := startMsg{
		Path: s.Path, Args: s.Args, Env: s.Env, Dir: s.Dir,
		Timeout: s.Timeout, Grace: s.Grace, LeaseGrace: s.LeaseGrace,
		Deadline: mono(s.Deadline), Cgroup: s.Cgroup, Name: s.Name, RecordDir: s.RecordDir,
	}
	r := bufio.NewReader(ctl)
	fail := func(err error) (*Watchdog, error) {
		ctl.Close()
		_ = proc.Kill()
		_, _ = proc.Wait()
		return nil, err
	}
	if err := w.write(start); err != nil {
		return fail(fmt.Errorf("start watchdog: %w", err))
	}
	ev, err := readEvent(r)
	if err != nil {
		return fail(fmt.Errorf("start watchdog: %w", err))
	}
	switch ev.Ev {
	case "started":
	case "error":
		ctl.Close()
		_, _ = proc.Wait()
		return nil, errors.New(ev.Err)
	default:
		return fail(fmt.Errorf("start watchdog: unexpected %q", ev.Ev))
	}
	w.pid, w.containment = ev.Pid, ev.Containment
	go w.follow(r)
	return w, nil
}

// Pid is the command's main process's pid (also its process group).
func (w *Watchdog) Pid() int { return w.pid }

// Containment says how the watchdog holds the command: "cgroup DIR" or
// "subreaper".
func (w *Watchdog) Containment() string { return w.containment }

// Done is closed when the watchdog has exited: nothing of the attempt
// runs any more (unless Exit().Err says otherwise).
func (w *Watchdog) Done() <-chan struct{} { return w.done }

// Exit says how the attempt ended; valid once Done is closed.
func (w *Watchdog) Exit() Exit { return w.exit }

// Extend moves the lease deadline. It fails once the watchdog is gone.
func (w *Watchdog) Extend(deadline time.Time) error {
	return w.write(ctlMsg{Op: "extend", Deadline: mono(deadline)})
}

// Stop makes the watchdog kill the command: SIGTERM to every process of
// the attempt, SIGKILL after grace (zero: the Spec's Grace). A second Stop
// can only shorten the grace; the first cause is the one reported.
func (w *Watchdog) Stop(cause Cause, grace time.Duration) error {
	return w.write(ctlMsg{Op: "stop", Cause: cause, Grace: grace})
}

func (w *Watchdog) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err = w.ctl.Write(append(b, '\n'))
	return err
}

// follow reads the watchdog's events until it exits, then reaps it.
func (w *Watchdog) follow(r *bufio.Reader) {
	defer close(w.done)
	var exited bool
	for {
		ev, err := readEvent(r)
		if err != nil {
			break
		}
		if ev.Ev == "exited" {
			exited = true
			w.exit = Exit{Status: syscall.WaitStatus(ev.Status), Cause: ev.Cause, Stragglers: ev.Stragglers, Err: ev.Err}
		}
	}
	w.mu.Lock()
	w.ctl.Close()
	w.mu.Unlock()
	st, err := w.proc.Wait()
	if !exited {
		// The watchdog died before it could say (someone killed it): its
		// command may still run. Its process group is all that can still
		// be reached from here.
		_ = syscall.Kill(-w.pid, syscall.SIGKILL)
		msg := "the watchdog died"
		if err == nil {
			msg += " (" + st.String() + ")"
		}
		w.exit = Exit{Status: syscall.WaitStatus(0xff00), Err: msg}
	}
}

func readEvent(r *bufio.Reader) (eventMsg, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return eventMsg{}, fmt.Errorf("read from watchdog: %w", err)
	}
	var ev eventMsg
	if err := json.Unmarshal(line, &ev); err != nil {
		return eventMsg{}, fmt.Errorf("read from watchdog: %w", err)
	}
	return ev, nil
}
