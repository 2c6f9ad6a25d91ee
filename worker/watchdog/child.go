package watchdog

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// IsChild reports whether this process was started as a watchdog. A
// program that starts watchdogs (mito-shim, mito) calls it first thing in
// main and, if so, runs Main instead of itself.
func IsChild() bool {
	return len(os.Args) > 0 && filepath.Base(os.Args[0]) == childName
}

// Main is the watchdog's program: it runs the attempts its worker sends,
// one at a time, until the worker closes its side or it gets SIGTERM. It
// returns the exit code of the process.
func Main() int {
	// fd 3 came without close-on-exec: no command may inherit the
	// worker's side of the control socket.
	unix.CloseOnExec(3)
	f := os.NewFile(3, "ctl")
	c, err := net.FileConn(f)
	if f == nil || err != nil {
		fmt.Fprintln(os.Stderr, "mito-watchdog: it is started by the mito worker, not by hand")
		return 2
	}
	f.Close()
	ctl := c.(*net.UnixConn)
	// What ps and top show, rather than "exe".
	_ = os.WriteFile("/proc/self/comm", []byte(childName), 0)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		report(ctl, eventMsg{Ev: "error", Err: fmt.Sprintf("become the tasks' subreaper: %v", err)})
		return 1
	}
	// Handled, not ignored: an ignored signal stays ignored across exec,
	// in the command.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	msgs := make(chan control)
	go readControl(ctl, msgs)
	cg := &cgroupCache{fd: -1}
	defer cg.drop()
	for {
		var m control
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM {
				return 0
			}
			reapAll()
			continue
		case got, ok := <-msgs:
			if !ok {
				return 0 // the worker is gone
			}
			if got.Op != "run" || got.Run == nil {
				closeAll(got.fds) // meant for an attempt that ended
				continue
			}
			m = got
		}
		s := &supervisor{spec: *m.Run, seq: m.Seq, ctl: ctl, self: os.Getpid(), cg: cg}
		if !s.attempt(m.fds, sigs, msgs) {
			return 0
		}
	}
}

// control is a message from the worker with the descriptors it came with.
type control struct {
	ctlMsg
	fds []int
}

// report sends one event to the worker; a worker that is gone does not
// read it, which is no error here.
func report(ctl *net.UnixConn, ev eventMsg) {
	_ = writeFrame(ctl, ev)
}

// readControl passes the worker's messages on until its side closes, and
// then closes msgs.
func readControl(ctl *net.UnixConn, msgs chan<- control) {
	defer close(msgs)
	for {
		var m ctlMsg
		fds, err := readFrame(ctl, &m)
		if err != nil {
			return
		}
		msgs <- control{m, fds}
	}
}

// reapAll collects children that ended while no attempt ran.
func reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid == 0 {
			return
		}
	}
}

// supervisor is the state of one attempt.
type supervisor struct {
	spec runMsg
	seq  int
	ctl  *net.UnixConn
	self int
	pid  int // the command's main process

	cg        *cgroupCache // the watchdog's cgroup, kept between attempts
	cgroup    string       // the attempt's cgroup, or ""
	cgroupErr error        // why there is none though spec.Cgroup asked for one

	mainDone   bool
	status     syscall.WaitStatus
	cause      Cause
	killing    bool
	killAt     time.Time // when SIGKILL follows the SIGTERM
	stragglers int
	err        string // cleanup gave up
	orphaned   bool   // the worker is gone: the watchdog exits after
	terminated bool   // SIGTERM: likewise
}

// attempt runs one attempt to its end: starts the command with the
// descriptors fds (stdout, stderr, lock), supervises it, kills what is
// left, and reports. It reports whether the watchdog may go on to the
// next attempt.
func (s *supervisor) attempt(fds []int, sigs <-chan os.Signal, msgs <-chan control) bool {
	if len(fds) != 3 {
		closeAll(fds)
		report(s.ctl, eventMsg{Ev: "error", Err: fmt.Sprintf("watchdog: got %d descriptors with the attempt; want 3", len(fds))})
		return true
	}
	stdout, stderr := os.NewFile(uintptr(fds[0]), "stdout"), os.NewFile(uintptr(fds[1]), "stderr")
	lock := os.NewFile(uintptr(fds[2]), "lock") // held until the attempt is over
	err := s.start(stdout, stderr)
	// The command has the output pipes; the watchdog lets go of its
	// copies, so the worker sees their end when the last process of the
	// attempt is gone.
	stdout.Close()
	stderr.Close()
	if err != nil {
		lock.Close()
		report(s.ctl, eventMsg{Ev: "error", Err: err.Error()})
		return true
	}
	if s.spec.Record {
		writeRecord(lock, s.self, s.cgroup)
	}
	report(s.ctl, eventMsg{Ev: "started", Pid: s.pid, Containment: s.containment()})
	s.run(sigs, msgs)
	s.cleanup(sigs, msgs)
	// Nothing of the attempt is left: its lock goes before the worker
	// hears so.
	lock.Close()
	report(s.ctl, eventMsg{Ev: "exited", Status: int(s.status), Cause: s.cause, Stragglers: s.stragglers, Err: s.err})
	return !s.orphaned && !s.terminated && s.err == ""
}

func (s *supervisor) containment() string {
	if s.cgroup != "" {
		return "cgroup " + s.cgroup
	}
	if s.cgroupErr != nil {
		return "subreaper (cgroup: " + s.cgroupErr.Error() + ")"
	}
	return "subreaper"
}

// start starts the command: in its own process group, and in a new
// cgroup under spec.Cgroup when there is one and the kernel lets it be
// started there.
func (s *supervisor) start(stdout, stderr *os.File) error {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	attr := &os.ProcAttr{
		Dir:   s.spec.Dir,
		Env:   s.spec.Env,
		Files: []*os.File{null, stdout, stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	if s.spec.Cgroup != "" {
		cg, err := s.cg.get(s.spec.Cgroup)
		if err == nil {
			attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, cg.fd
			p, err := os.StartProcess(s.spec.Path, s.spec.Args, attr)
			if err == nil {
				s.cgroup, s.pid = cg.dir, p.Pid
				_ = p.Release() // reaped by pid (wait4), not through its pidfd
				return nil
			}
			if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EOPNOTSUPP) {
				return err // the program itself cannot be run
			}
			s.cg.drop()
			attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = false, 0
		}
		s.cgroupErr = err
	}
	p, err := os.StartProcess(s.spec.Path, s.spec.Args, attr)
	if err != nil {
		return err
	}
	s.pid = p.Pid
	_ = p.Release()
	return nil
}

// run waits until the command's main process has exited, killing it when
// a timeout, the lease deadline, the worker or a signal says so.
func (s *supervisor) run(sigs <-chan os.Signal, msgs <-chan control) {
	var timeout, deadline, grace <-chan time.Time
	if s.spec.Timeout > 0 {
		t := time.NewTimer(s.spec.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	deadlineTimer := time.NewTimer(time.Hour)
	deadlineTimer.Stop()
	defer deadlineTimer.Stop()
	setDeadline := func(d int64) {
		if d == 0 {
			return
		}
		deadlineTimer.Reset(time.Duration(d - monoNow()))
		deadline = deadlineTimer.C
	}
	setDeadline(s.spec.Deadline)
	graceTimer := time.NewTimer(time.Hour)
	graceTimer.Stop()
	defer graceTimer.Stop()
	kill := func(c Cause, g time.Duration) {
		if s.mainDone {
			return
		}
		at := time.Now().Add(g)
		if !s.killing {
			s.killing, s.cause, s.killAt = true, c, at
			s.signalAll(syscall.SIGTERM)
		} else if at.Before(s.killAt) {
			s.killAt = at
		} else {
			return
		}
		// The lease deadline stays armed: a cancel or a shutdown with a
		// long grace must still be over before the lease runs out.
		graceTimer.Reset(time.Until(s.killAt))
		grace = graceTimer.C
	}
	s.reap() // a command that failed at once may be gone already
	for !s.mainDone {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGCHLD:
				s.reap()
			case syscall.SIGTERM:
				s.terminated = true
				kill(CauseTerminated, s.spec.LeaseGrace)
			}
		case m, ok := <-msgs:
			closeAll(m.fds)
			switch {
			case !ok:
				msgs = nil
				s.orphaned = true
				kill(CauseOrphaned, s.spec.LeaseGrace)
			case m.Seq != s.seq:
				// Meant for an attempt that ended.
			case m.Op == "extend":
				setDeadline(m.Deadline)
			case m.Op == "stop":
				g := m.Grace
				if g <= 0 {
					g = s.spec.Grace
				}
				kill(m.Cause, g)
			}
		case <-timeout:
			timeout = nil
			kill(CauseTimeout, s.spec.Grace)
		case <-deadline:
			deadline = nil
			kill(CauseDeadline, s.spec.LeaseGrace)
		case <-grace:
			grace = nil
			s.signalAll(syscall.SIGKILL)
		}
	}
}

// reap collects every child that has ended: the command's main process,
// and orphans of the attempt that came to the watchdog as their subreaper.
func (s *supervisor) reap() (children bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil: // ECHILD: no children at all
			return false
		case pid == 0: // children, none ended
			return true
		case pid == s.pid:
			s.mainDone, s.status = true, syscall.WaitStatus(ws)
		}
	}
}

// giveUp bounds how long cleanup tries to kill what is left of an
// attempt: a process that cannot be signalled (one of another user, left
// by sudo) or that sleeps in the kernel (state D) would otherwise hold
// the slot, and its renewed lease, for ever.
const giveUp = time.Minute

// cleanup kills what is left of the attempt once its main process has
// ended, and waits until nothing is: no child of the watchdog, no process
// in its cgroup. It keeps reading the worker's messages meanwhile (an
// unread socket would block the worker), and gives up after giveUp,
// saying which processes are left.
func (s *supervisor) cleanup(sigs <-chan os.Signal, msgs <-chan control) {
	first := true
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for {
		// As their subreaper, the watchdog is an ancestor of every process
		// of the attempt: with no child left, none is (and no /proc walk
		// is needed, the common case of a task that left nothing behind).
		if !s.reap() && s.cgroupEmpty() {
			break
		}
		n := s.signalAll(syscall.SIGKILL)
		if first {
			s.stragglers, first = n, false
		}
		if time.Since(start) > giveUp {
			left := descendants(s.self)
			if s.cgroup != "" {
				left = append(left, cgroupProcs(s.cgroup)...)
			}
			s.err = fmt.Sprintf("processes %v of the attempt could not be killed in %s (another user's, or stuck in the kernel)", left, giveUp)
			break
		}
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM {
				s.terminated = true
			}
		case m, ok := <-msgs:
			closeAll(m.fds)
			if !ok {
				msgs = nil
				s.orphaned = true
			}
		case <-tick.C:
		}
	}
}

// signalAll sends sig to every process of the attempt (its process
// group, its cgroup, every descendant of the watchdog) and returns how
// many it found.
func (s *supervisor) signalAll(sig syscall.Signal) int {
	seen := map[int]bool{}
	if s.cgroup != "" {
		if sig == syscall.SIGKILL {
			_ = os.WriteFile(filepath.Join(s.cgroup, "cgroup.kill"), []byte("1"), 0)
		}
		for _, pid := range cgroupProcs(s.cgroup) {
			if !seen[pid] {
				seen[pid] = true
				_ = unix.Kill(pid, sig)
			}
		}
	}
	_ = unix.Kill(-s.pid, sig)
	for _, pid := range descendants(s.self) {
		if !seen[pid] {
			seen[pid] = true
			_ = unix.Kill(pid, sig)
		}
	}
	return len(seen)
}

func (s *supervisor) cgroupEmpty() bool {
	return s.cgroup == "" || !cgroupPopulated(s.cgroup)
}

// cgroupCache is the watchdog's cgroup, made for its first attempt and
// used by the next ones (each ends with it empty), so that an attempt
// costs no mkdir and rmdir; it goes when the watchdog exits.
type cgroupCache struct {
	dir, parent string
	fd          int
}

// get returns the cgroup under parent, making it if need be.
func (c *cgroupCache) get(parent string) (*cgroupCache, error) {
	if c.dir != "" && c.parent == parent && !cgroupPopulated(c.dir) {
		return c, nil
	}
	c.drop()
	dir, fd, err := makeCgroup(parent, "wd"+strconv.Itoa(os.Getpid()))
	if err != nil {
		return nil, err
	}
	c.dir, c.parent, c.fd = dir, parent, fd
	return c, nil
}

// drop removes the cgroup, once the kernel lets go of its last exited
// process.
func (c *cgroupCache) drop() {
	if c.dir == "" {
		return
	}
	unix.Close(c.fd)
	for i := 0; i < 50; i++ {
		err := os.Remove(c.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.dir, c.parent, c.fd = "", "", -1
}
