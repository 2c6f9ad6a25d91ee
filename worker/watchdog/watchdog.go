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
// Only then does it report how the command ended: when the worker hears
// of the end, nothing of the attempt is left. A watchdog runs one attempt
// at a time, and may then run another (Run), so that a worker keeps a
// few and pays for a process start per slot, not per task.
//
// The worker speaks to the watchdog over a Unix socket pair (fd 3 in the
// watchdog) in length-prefixed JSON frames; with each attempt it passes
// the command's stdout and stderr and the attempt's record lock as file
// descriptors (SCM_RIGHTS), which the watchdog gives to the command and
// then closes, so that the worker's readers see the end of the output
// when the last process of the attempt is gone.
package watchdog

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
	// Name names the attempt ("12-1") in its cgroup's name.
	Name string
	// Lock, if set, is an open file the watchdog keeps open (and so any
	// flock on it held) for as long as the attempt lives: a worker that
	// finds the lock free knows the attempt is over.
	Lock *os.File
	// Record, with Lock, makes the watchdog append to Lock, once the
	// command runs, a line with its own pid and the attempt's cgroup, for
	// a later worker to find it by (see ReadRecord): Lock is then the
	// attempt's run record.
	Record bool
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

// Wire messages. Durations are nanoseconds; deadlines are CLOCK_MONOTONIC
// nanoseconds, a clock both processes share whatever the wall clock does.
type ctlMsg struct {
	Op string `json:"op"` // "run", "extend" or "stop"
	// Seq numbers the watchdog's attempts: an "extend" or "stop" meant
	// for one that has ended is not taken for the next one's.
	Seq int `json:"seq"`
	// For "run", with three file descriptors: stdout, stderr and the
	// lock (/dev/null when there is none).
	Run *runMsg `json:"run,omitempty"`
	// For "extend".
	Deadline int64 `json:"deadline,omitempty"`
	// For "stop".
	Cause Cause         `json:"cause,omitempty"`
	Grace time.Duration `json:"grace,omitempty"`
}

type runMsg struct {
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
	Record     bool          `json:"record,omitempty"`
}

type eventMsg struct {
	Ev          string `json:"ev"` // "started", "exited", "error" or "waiting"
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

// maxFrame bounds one message: a task's argv and environment.
const maxFrame = 64 << 20

// writeFrame writes v as one length-prefixed JSON frame, passing fds (if
// any) with its first bytes.
func writeFrame(c *net.UnixConn, v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if len(fds) > 0 {
		n, _, err := c.WriteMsgUnix(hdr[:], unix.UnixRights(fds...), nil)
		if err != nil {
			return err
		}
		if n != len(hdr) {
			return io.ErrShortWrite
		}
	} else if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}

// readFrame reads one frame into v, and the file descriptors sent with
// it. Only ReadMsgUnix may read a frame's first bytes: a plain read would
// drop the descriptors that come with them.
func readFrame(c *net.UnixConn, v any) ([]int, error) {
	var hdr [4]byte
	oob := make([]byte, unix.CmsgSpace(4*4))
	var fds []int
	for got := 0; got < len(hdr); {
		n, oobn, _, _, err := c.ReadMsgUnix(hdr[got:], oob)
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					if f, perr := unix.ParseUnixRights(&m); perr == nil {
						fds = append(fds, f...)
					}
				}
			}
		}
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		if n == 0 {
			closeAll(fds)
			return nil, io.EOF
		}
		got += n
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > maxFrame {
		closeAll(fds)
		return nil, fmt.Errorf("frame of %d bytes", size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(c, b); err != nil {
		closeAll(fds)
		return nil, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		closeAll(fds)
		return nil, err
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

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

// ErrGone is returned by Run when the watchdog died or broke before the
// command started: nothing ran, and a new watchdog may run it.
var ErrGone = errors.New("the watchdog is gone")

// Watchdog is a watchdog process, seen from the worker that started it.
// It runs one attempt at a time.
type Watchdog struct {
	proc *os.Process
	ctl  *net.UnixConn
	dead chan struct{} // closed once the process has exited

	// wmu serialises writes to ctl.
	wmu sync.Mutex
	// extend holds the latest deadline extension for the sender
	// goroutine (capacity 1): Extend never waits on the socket, so a
	// watchdog that reads slowly cannot hold up a worker's renewals.
	extend chan ctlMsg

	// mu guards the fields below.
	mu      sync.Mutex
	cur     *Attempt      // the attempt under way, or nil
	pending *Attempt      // the attempt of the "run" under way
	starts  chan eventMsg // the answer to the "run" under way
	broken  string        // why the watchdog may not run another attempt
	seq     int           // of the last attempt
}

// Attempt is one attempt a watchdog runs.
type Attempt struct {
	w           *Watchdog
	seq         int
	pid         int
	containment string
	done        chan struct{}
	exit        Exit // set before done is closed
}

// New starts an idle watchdog. program is the executable that runs Main
// ("" for this process's own, /proc/self/exe).
func New(program string) (*Watchdog, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start watchdog: socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "watchdog-ctl")
	child := os.NewFile(uintptr(fds[1]), "watchdog-ctl-child")
	defer child.Close()
	defer ours.Close() // FileConn dups it
	conn, err := net.FileConn(ours)
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	defer devnull.Close()
	if program == "" {
		program = "/proc/self/exe"
	}
	proc, err := os.StartProcess(program, []string{childName}, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{},
		Files: []*os.File{devnull, devnull, devnull, child},
		// A session of its own: a signal to the worker's process group
		// (^C in a terminal) is the worker's to handle, not the watchdog's.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	w := &Watchdog{proc: proc, ctl: conn.(*net.UnixConn), dead: make(chan struct{}), extend: make(chan ctlMsg, 1)}
	go w.follow()
	go w.sendExtensions()
	return w, nil
}

// Start starts a watchdog for one attempt, which exits when the attempt
// is over. It returns once the command runs, or with the error that kept
// it from starting (the program could not be executed, say), when nothing
// of it runs.
func Start(s Spec, program string) (*Attempt, error) {
	w, err := New(program)
	if err != nil {
		return nil, err
	}
	a, err := w.Run(s)
	if err != nil {
		w.Close()
		return nil, err
	}
	go func() {
		<-a.done
		w.Close()
	}()
	return a, nil
}

// Run starts an attempt, when the watchdog has none under way. It
// returns once the command runs, or with the error that kept it from
// starting, when nothing of it runs.
func (w *Watchdog) Run(s Spec) (*Attempt, error) {
	w.mu.Lock()
	switch {
	case w.broken != "":
		w.mu.Unlock()
		return nil, fmt.Errorf("run with watchdog: %w: %s", ErrGone, w.broken)
	case w.cur != nil || w.starts != nil:
		w.mu.Unlock()
		return nil, errors.New("run with watchdog: it runs an attempt already")
	}
	w.seq++
	a := &Attempt{w: w, seq: w.seq, done: make(chan struct{})}
	// follow makes a the current attempt when "started" comes, before it
	// reads the next event, which may be its end already.
	w.cur, w.starts = nil, make(chan eventMsg, 1)
	w.pending = a
	starts := w.starts
	w.mu.Unlock()
	clear := func() {
		w.mu.Lock()
		w.starts, w.pending = nil, nil
		w.mu.Unlock()
	}

	files := []*os.File{s.Stdout, s.Stderr, s.Lock}
	var fds []int
	for _, f := range files {
		if f == nil {
			null, err := os.Open(os.DevNull)
			if err != nil {
				clear()
				return nil, err
			}
			defer null.Close()
			f = null
		}
		fds = append(fds, int(f.Fd()))
	}
	msg := ctlMsg{Op: "run", Seq: a.seq, Run: &runMsg{
		Path: s.Path, Args: s.Args, Env: s.Env, Dir: s.Dir,
		Timeout: s.Timeout, Grace: s.Grace, LeaseGrace: s.LeaseGrace,
		Deadline: mono(s.Deadline), Cgroup: s.Cgroup, Name: s.Name, Record: s.Record && s.Lock != nil,
	}}
	if err := w.write(msg, fds...); err != nil {
		w.markBroken("cannot talk to it: " + err.Error())
		clear()
		return nil, fmt.Errorf("run with watchdog: %w: %v", ErrGone, err)
	}
	ev := <-starts
	switch ev.Ev {
	case "started":
		return a, nil
	case "error":
		return nil, errors.New(ev.Err)
	}
	return nil, fmt.Errorf("run with watchdog: %w: %s", ErrGone, ev.Err) // it died before it answered
}

// Reusable reports whether the watchdog may run another attempt: it is
// alive, idle, and nothing went wrong with the last one.
func (w *Watchdog) Reusable() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.broken == "" && w.cur == nil && w.starts == nil
}

// Close ends an idle watchdog (one with an attempt under way kills it,
// as a dead worker's would) and waits for it to exit.
func (w *Watchdog) Close() {
	w.markBroken("closed")
	_ = w.ctl.CloseWrite()
	<-w.dead
}

// Pid is the watchdog process's pid.
func (w *Watchdog) Pid() int { return w.proc.Pid }

func (w *Watchdog) markBroken(why string) {
	w.mu.Lock()
	if w.broken == "" {
		w.broken = why
	}
	w.mu.Unlock()
}

func (w *Watchdog) write(m ctlMsg, fds ...int) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return writeFrame(w.ctl, m, fds...)
}

// follow reads the watchdog's events until it exits, then reaps it.
func (w *Watchdog) follow() {
	for {
		var ev eventMsg
		fds, err := readFrame(w.ctl, &ev)
		closeAll(fds)
		if err != nil {
			break
		}
		w.mu.Lock()
		starts, cur := w.starts, w.cur
		switch ev.Ev {
		case "started", "error":
			if ev.Ev == "started" && w.pending != nil {
				w.pending.pid, w.pending.containment = ev.Pid, ev.Containment
				w.cur = w.pending
			}
			w.starts, w.pending = nil, nil
			if starts != nil {
				starts <- ev
			}
		case "exited":
			if cur != nil {
				w.cur = nil
				cur.exit = Exit{Status: syscall.WaitStatus(ev.Status), Cause: ev.Cause, Stragglers: ev.Stragglers, Err: ev.Err}
				if ev.Err != "" && w.broken == "" {
					w.broken = ev.Err
				}
				close(cur.done)
			}
		}
		w.mu.Unlock()
	}
	w.ctl.Close()
	st, err := w.proc.Wait()
	msg := "the watchdog died"
	if err == nil {
		msg += " (" + st.String() + ")"
	}
	w.mu.Lock()
	if w.broken == "" {
		w.broken = msg
	}
	if w.starts != nil {
		w.starts <- eventMsg{Ev: "died", Err: msg}
		w.starts, w.pending = nil, nil
	}
	if cur := w.cur; cur != nil {
		// It died with an attempt under way (someone killed it): the
		// attempt's process group is all that can still be reached
		// from here.
		w.cur = nil
		_ = syscall.Kill(-cur.pid, syscall.SIGKILL)
		cur.exit = Exit{Status: syscall.WaitStatus(0xff00), Err: msg}
		close(cur.done)
	}
	w.mu.Unlock()
	close(w.dead)
}

// Pid is the command's main process's pid (also its process group).
func (a *Attempt) Pid() int { return a.pid }

// Watchdog is the watchdog that runs the attempt.
func (a *Attempt) Watchdog() *Watchdog { return a.w }

// Containment says how the watchdog holds the command: "cgroup DIR" or
// "subreaper".
func (a *Attempt) Containment() string { return a.containment }

// Done is closed when the attempt is over: nothing of it runs any more
// (unless Exit().Err says otherwise).
func (a *Attempt) Done() <-chan struct{} { return a.done }

// Exit says how the attempt ended; valid once Done is closed.
func (a *Attempt) Exit() Exit { return a.exit }

// Extend moves the lease deadline. It does not wait: the latest
// extension goes to the watchdog as soon as it reads, and an older one
// not sent yet is dropped.
func (a *Attempt) Extend(deadline time.Time) {
	m := ctlMsg{Op: "extend", Seq: a.seq, Deadline: mono(deadline)}
	for {
		select {
		case a.w.extend <- m:
			return
		default:
		}
		select {
		case <-a.w.extend: // superseded
		default:
		}
	}
}

// sendExtensions writes the extensions Extend leaves, until the watchdog
// is gone.
func (w *Watchdog) sendExtensions() {
	for {
		select {
		case <-w.dead:
			return
		case m := <-w.extend:
			_ = w.write(m)
		}
	}
}

// Stop makes the watchdog kill the command: SIGTERM to every process of
// the attempt, SIGKILL after grace (zero: the Spec's Grace). A second Stop
// can only shorten the grace; the first cause is the one reported.
func (a *Attempt) Stop(cause Cause, grace time.Duration) error {
	return a.w.write(ctlMsg{Op: "stop", Seq: a.seq, Cause: cause, Grace: grace})
}
