package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/worker/watchdog"
)

// drainWait bounds how long output is read after the watchdog reported
// the attempt dead: only a process that escaped it can still hold the
// pipes.
const drainWait = 2 * time.Second

// stopCause says why an attempt was killed before it exited by itself.
type stopCause int

const (
	causeNone      stopCause = iota
	causeTimeout             // it outlived its timeout
	causeCancelled           // the coordinator stopped it
	causeLeaseLost           // its lease ran out or a write was refused as stale
	causeShutdown            // the worker is stopping
)

// String says what the cause is, as the watchdog reports it.
func (c stopCause) String() string {
	switch c {
	case causeTimeout:
		return "timeout"
	case causeCancelled:
		return "cancelled"
	case causeLeaseLost:
		return stopLeaseLost
	case causeShutdown:
		return "worker stopping"
	}
	return ""
}

// attempt is one running attempt of a task.
type attempt struct {
	ref  tasks.LeaseRef
	task tasks.Task
	log  *slog.Logger
	// ctx scopes the attempt's writes to the coordinator. cancelIO ends it
	// when the lease is lost (nothing more may be written) and when the
	// worker stops.
	ctx      context.Context
	cancelIO context.CancelFunc

	stopOnce sync.Once
	stopped  chan struct{} // closed when the attempt must be killed
	cause    stopCause     // set before stopped is closed
	reason   string

	// record is the attempt's run record (rundir.go), or "".
	record string
	// keepRecord, guarded by worker.mu, keeps the record when the
	// attempt ends: it died unreported, and the next worker on the host
	// releases it unless this one's deregister call does.
	keepRecord bool

	// Guarded by worker.mu:
	renewedAt time.Time
	// wd is the attempt under its watchdog once the command runs.
	wd *watchdog.Attempt
}

// stop asks for the attempt to be killed; the first call wins.
func (a *attempt) stop(cause stopCause, reason string) {
	a.stopOnce.Do(func() {
		a.cause, a.reason = cause, reason
		close(a.stopped)
	})
}

// abandon kills the attempt and stops all its writes: its lease is gone, so
// the coordinator would refuse them anyway, and it must not report an end.
func (a *attempt) abandon(reason string) {
	a.stop(causeLeaseLost, reason)
	a.cancelIO()
}

// stopReason says why the attempt was stopped, or "" when it was not
// (reason is only written before stopped is closed).
func (a *attempt) stopReason() string {
	if !a.isStopped() {
		return ""
	}
	return a.reason
}

func (a *attempt) isStopped() bool {
	select {
	case <-a.stopped:
		return true
	default:
		return false
	}
}

// runAttempt runs one attempt from start to report, and always removes its
// working directory.
func (w *worker) runAttempt(a *attempt) {
	a.log.Info("attempt started")
	dir, err := os.MkdirTemp(w.workRoot, fmt.Sprintf("%d-%d-", a.ref.Task, a.ref.Attempt))
	if err != nil {
		now := time.Now()
		w.finish(a, tasks.Result{State: tasks.Failed, Error: fmt.Sprintf("create work directory: %v", err), StartedAt: now, FinishedAt: now})
		return
	}
	// Deferred in this order, the run record goes after the directory it
	// names: a worker that dies in between leaves the next one a record
	// to clean up after it.
	defer w.dropRecord(a)
	defer w.removeDir(a, dir)
	out := filepath.Join(dir, tasks.OutputDirName)
	if err := os.Mkdir(out, 0o755); err != nil {
		now := time.Now()
		w.finish(a, tasks.Result{State: tasks.Failed, Error: fmt.Sprintf("create output directory: %v", err), StartedAt: now, FinishedAt: now})
		return
	}
	started := time.Now()
	if err := w.fetchInputs(a, dir); err != nil {
		res := tasks.Result{State: tasks.Failed, Error: err.Error(), StartedAt: started, FinishedAt: time.Now()}
		switch {
		case a.ctx.Err() != nil:
			a.log.Info("attempt ended without a report", "reason", a.stopReason())
			w.noteUnreported(a)
			return
		case a.isStopped():
			res.State, res.Error = tasks.Cancelled, "cancelled"
			if a.reason != "" {
				res.Error = "cancelled: " + a.reason
			}
		case errors.Is(err, context.DeadlineExceeded):
			res.State = tasks.TimedOut
			res.Error = fmt.Sprintf("fetching the inputs took longer than the task's timeout of %s; the command did not run", tasks.FormatDuration(w.timeout(a)))
			a.log.Warn("inputs not fetched within the timeout; the command does not run")
		default:
			a.log.Warn("cannot fetch an input; the command does not run", keyErr, err)
		}
		w.finish(a, res)
		return
	}

	res := w.execute(a, dir, out)
	if a.ctx.Err() != nil {
		// Lease lost or worker stopping: the attempt reports nothing more.
		a.log.Info("attempt ended without a report", "reason", a.stopReason())
		w.noteUnreported(a)
		return
	}
	if res.State != tasks.Cancelled {
		refused := w.uploadArtifacts(a, out)
		if a.ctx.Err() != nil {
			w.noteUnreported(a)
			return
		}
		res = failRefused(res, refused)
	}
	w.finish(a, res)
}

// noteUnreported records an attempt that ends without a report because
// the worker stops, for its deregister call to release: the attempt is
// dead but its lease still holds, and the coordinator may queue it again
// at once. Its run record stays, dead, in case the coordinator cannot be
// told (the link is gone): the next worker on the host releases it. One
// whose lease was lost is not the worker's to release.
func (w *worker) noteUnreported(a *attempt) {
	if a.isStopped() && a.cause == causeLeaseLost {
		return
	}
	w.mu.Lock()
	w.unreported = append(w.unreported, unreported{a.ref, a.record})
	a.keepRecord = a.record != ""
	w.mu.Unlock()
}

// unreported is an attempt killed because the worker stops: its lease,
// and its run record, which stays for the next worker on the host to
// release it should the coordinator not hear of it from this one.
type unreported struct {
	ref    tasks.LeaseRef
	record string
}

// maxRefusedNamed bounds how many refused artifacts an attempt's error
// names one by one.
const maxRefusedNamed = 3

// failRefused makes an attempt whose artifacts the coordinator refused
// for good end failed, not succeeded, with an error that names them:
// their bytes are lost, and a pipeline must not take the task's success
// for its output's. A run that failed already keeps its state and gets
// the refusals added to its error.
func failRefused(res tasks.Result, refused []string) tasks.Result {
	if len(refused) == 0 {
		return res
	}
	msg := strings.Join(refused[:min(len(refused), maxRefusedNamed)], "; ")
	if n := len(refused) - maxRefusedNamed; n > 0 {
		msg += fmt.Sprintf("; and %d more artifacts refused", n)
	}
	if res.State == tasks.Succeeded {
		res.State = tasks.Failed
	}
	if res.Error != "" {
		msg = res.Error + "; " + msg
	}
	res.Error = msg
	return res
}

// execute runs the task's process and streams its output until it exits,
// is killed, and its output is drained and sent.
func (w *worker) execute(a *attempt, dir, out string) tasks.Result {
	res := tasks.Result{StartedAt: time.Now()}
	fail := func(err error) tasks.Result {
		res.State = tasks.Failed
		res.Error = err.Error()
		res.FinishedAt = time.Now()
		return res
	}
	argv := a.task.Argv()
	if len(argv) == 0 || argv[0] == "" {
		return fail(errors.New("task has no command"))
	}
	env, path := w.taskEnv(a, dir, out)
	prog, err := lookPath(argv[0], path)
	if err != nil {
		return fail(err)
	}

	// The process writes straight into pipes (not through Go copies), so
	// that the readers see their end when the last process of the attempt
	// is gone.
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("create stdout pipe: %w", err))
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutR.Close()
		stdoutW.Close()
		return fail(fmt.Errorf("create stderr pipe: %w", err))
	}
	defer stdoutR.Close()
	defer stderrR.Close()
	s := w.cur()
	w.mu.Lock()
	deadline := a.renewedAt.Add(s.leaseTTL - s.margin)
	w.mu.Unlock()
	record, lock, err := w.newRecord(a, dir)
	if err != nil {
		a.log.Warn("no run record for the attempt: a worker started after this one dies would not find it", keyErr, err)
	}
	a.record = record
	res.StartedAt = time.Now()
	// The watchdog, not this process, starts the command and sees it
	// killed: on time, also when this process is killed or frozen.
	spec := watchdog.Spec{
		Path: prog, Args: argv, Env: env, Dir: dir,
		Stdout: stdoutW, Stderr: stderrW,
		Timeout:    w.timeout(a),
		Grace:      s.grace,
		LeaseGrace: s.leaseGrace,
		Deadline:   deadline,
		Cgroup:     w.cgroup,
		Name:       fmt.Sprintf("%d-%d", a.ref.Task, a.ref.Attempt),
		Lock:       lock,
		Record:     lock != nil,
	}
	dog, wd, err := w.runUnderWatchdog(spec)
	stdoutW.Close()
	stderrW.Close()
	if lock != nil {
		// The watchdog holds the lock now, and alone: a later worker
		// that can take it knows the attempt is over.
		lock.Close()
	}
	if err != nil {
		if errors.Is(err, watchdog.ErrGone) {
			w.killLeftovers(a, dir) // it may have started the command before it died
		}
		return fail(err)
	}
	defer w.idleWatchdog(dog)
	w.mu.Lock()
	a.wd = wd
	// A renewal that came while the command started found no watchdog
	// to tell.
	deadline = a.renewedAt.Add(s.leaseTTL - s.margin)
	w.mu.Unlock()
	wd.Extend(deadline)
	a.log.Debug("command started", "pid", wd.Pid(), "containment", wd.Containment())

	pumps := []*logPump{
		newLogPump(w, a, tasks.Stdout, s.logCap),
		newLogPump(w, a, tasks.Stderr, s.logCap),
	}
	var wg sync.WaitGroup
	for i, r := range []*os.File{stdoutR, stderrR} {
		p := pumps[i]
		wg.Go(func() { p.read(r) })
		wg.Go(func() { p.upload(a.ctx) })
	}

	cause := w.supervise(a, wd)
	res.FinishedAt = time.Now()
	// Every process of the attempt is dead now, and with them the writers
	// of the pipes; only one that escaped the watchdog could hold them.
	deadline = time.Now().Add(drainWait)
	_ = stdoutR.SetReadDeadline(deadline)
	_ = stderrR.SetReadDeadline(deadline)
	wg.Wait()

	res.StdoutTruncated = pumps[0].isTruncated()
	res.StderrTruncated = pumps[1].isTruncated()
	ex := wd.Exit()
	if ex.Err != "" {
		// The watchdog died with the attempt under way, or could not kill
		// all of it: what is left is killed here, or, if that fails too,
		// left to the next worker on the host by the run record.
		if !w.killLeftovers(a, dir) {
			w.mu.Lock()
			a.keepRecord = a.record != ""
			w.mu.Unlock()
		}
		return fail(fmt.Errorf("run command: %s", ex.Err))
	}
	if ex.Stragglers > 0 {
		a.log.Info("killed processes the command left behind", "count", ex.Stragglers)
	}
	switch ws := ex.Status; {
	case ws.Exited():
		code := ws.ExitStatus()
		res.ExitCode = &code
	case ws.Signaled():
		res.Signal = signalName(ws.Signal())
	}
	switch cause {
	case causeTimeout:
		res.State = tasks.TimedOut
		res.Error = "timed out after " + w.timeout(a).String()
	case causeCancelled:
		res.State = tasks.Cancelled
		res.Error = "cancelled"
		if a.reason != "" {
			res.Error = "cancelled: " + a.reason
		}
	default:
		res.State = tasks.Failed
		if res.ExitCode != nil && *res.ExitCode == 0 {
			res.State = tasks.Succeeded
		}
	}
	return res
}

func (w *worker) timeout(a *attempt) time.Duration {
	if t := time.Duration(a.task.Timeout); t > 0 {
		return t
	}
	return tasks.DefaultTimeout
}

// runUnderWatchdog starts the attempt under an idle watchdog, or a new
// one; one that turns out dead (it exited while idle) is replaced once.
func (w *worker) runUnderWatchdog(spec watchdog.Spec) (*watchdog.Watchdog, *watchdog.Attempt, error) {
	for try := 0; ; try++ {
		dog, err := w.watchdog()
		if err != nil {
			return nil, nil, err
		}
		a, err := dog.Run(spec)
		if err == nil {
			return dog, a, nil
		}
		w.idleWatchdog(dog) // kept only if it may run another
		if !errors.Is(err, watchdog.ErrGone) || try > 0 {
			return nil, nil, err
		}
	}
}

// killLeftovers kills what is left of an attempt whose watchdog died: its
// cgroup, by the watchdog's record, and the processes that carry its work
// directory. It reports whether nothing is left.
func (w *worker) killLeftovers(a *attempt, dir string) bool {
	var cgroup string
	if a.record != "" {
		if r, err := watchdog.ReadRecord(a.record); err == nil {
			cgroup = r.Cgroup
		}
	}
	n, err := watchdog.KillLeftovers(cgroup, "MITO_WORK_DIR="+dir, w.cur().leaseGrace+reconcileLimit)
	if err != nil {
		a.log.Error("cannot kill what is left of the attempt", keyErr, err)
		return false
	}
	if n > 0 {
		a.log.Warn("killed what was left of the attempt after its watchdog died", "count", n)
	}
	return true
}

// supervise waits for the watchdog to end the attempt, telling it to kill
// the command when the attempt must stop, and returns why it was killed
// (causeNone if it was not). The timeout and the lease deadline are the
// watchdog's to keep.
func (w *worker) supervise(a *attempt, wd *watchdog.Attempt) stopCause {
	var cause stopCause
	select {
	case <-wd.Done():
	case <-a.stopped:
		cause = a.cause
	case <-a.ctx.Done():
		// A lost lease cancels the context too: its shorter grace wins.
		cause = causeShutdown
		if a.isStopped() {
			cause = a.cause
		}
	}
	if cause != causeNone {
		s := w.cur()
		grace := s.grace
		if cause == causeLeaseLost {
			grace = s.leaseGrace
		}
		_ = wd.Stop(watchdog.Cause(cause.String()), grace)
		<-wd.Done()
	}
	switch ex := wd.Exit(); ex.Cause {
	case watchdog.CauseTimeout:
		a.log.Info("attempt timed out; killed it", "timeout", w.timeout(a))
		return causeTimeout
	case watchdog.CauseDeadline, watchdog.CauseOrphaned, watchdog.CauseTerminated:
		a.log.Warn("the watchdog killed the attempt", "cause", ex.Cause)
		a.abandon(string(ex.Cause))
		return causeLeaseLost
	}
	return cause
}

// taskEnv builds a task's environment: the base, then the host's variables
// from the inventory, then the task's, then mito's own, which nothing may
// override. It also returns the PATH the program is looked up in.
func (w *worker) taskEnv(a *attempt, dir, out string) ([]string, string) {
	m := make(map[string]string)
	for _, kv := range w.baseEnv {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	maps.Copy(m, w.cur().hostEnv)
	maps.Copy(m, a.task.Env)
	m["MITO_TASK_ID"] = strconv.FormatInt(int64(a.ref.Task), 10)
	m["MITO_ATTEMPT"] = strconv.Itoa(a.ref.Attempt)
	m["MITO_WORK_DIR"] = dir
	m["MITO_OUTPUT_DIR"] = out
	if _, ok := m["PATH"]; !ok {
		m["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	env := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		env = append(env, k+"="+m[k])
	}
	return env, m["PATH"]
}

// lookPath finds a program like exec.LookPath does, but in the task's PATH
// rather than the worker's, since the inventory may add directories for a
// host's tools. Relative PATH entries are skipped, as exec.LookPath refuses
// them. A name with a slash is used as is, relative to the work directory.
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}

// removeDir removes an attempt's working directory, also when the task made
// parts of it read-only.
func (w *worker) removeDir(a *attempt, dir string) {
	if err := removeAll(dir); err != nil {
		a.log.Warn("cannot remove work directory", "dir", dir, keyErr, err)
	}
}

// removeAll removes dir and everything in it, also what a task made
// read-only.
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// finish reports the attempt's result, retrying while the coordinator
// cannot be reached and the lease holds. A refusal because the lease is no
// longer current is expected after a stop and is not an error.
func (w *worker) finish(a *attempt, res tasks.Result) {
	bo := backoff{min: 250 * time.Millisecond, max: 5 * time.Second}
	for try := 1; ; try++ {
		s := w.cur()
		_, err := s.c.Finish(a.ctx, a.ref, res)
		switch {
		case err == nil:
			a.log.Info("attempt finished", "state", res.State)
			return
		case a.ctx.Err() != nil:
			return
		case tasks.ErrorCode(err) == tasks.EUnauthorized && try < maxTries:
			if !w.awaitSession(a.ctx, s) {
				return
			}
			continue
		case leaseGone(err):
			a.log.Info("coordinator refused the result; the attempt is no longer current", "state", res.State, keyErr, err)
			return
		case !retryable(err) || try >= maxTries:
			a.log.Error("cannot report the result", "state", res.State, keyErr, err)
			return
		}
		a.log.Warn("cannot report the result; retrying", keyErr, err)
		sleep(a.ctx, bo.next())
	}
}

// maxTries bounds the retries of one write, so that a coordinator that
// keeps failing cannot hold a slot forever while it still renews leases.
const maxTries = 20

// signalNames spells the signals a task is likely to die of as people
// know them ("SIGKILL"), which syscall.Signal.String does not.
var signalNames = map[syscall.Signal]string{
	syscall.SIGABRT: "SIGABRT", syscall.SIGALRM: "SIGALRM", syscall.SIGBUS: "SIGBUS",
	syscall.SIGFPE: "SIGFPE", syscall.SIGHUP: "SIGHUP", syscall.SIGILL: "SIGILL",
	syscall.SIGINT: "SIGINT", syscall.SIGKILL: "SIGKILL", syscall.SIGPIPE: "SIGPIPE",
	syscall.SIGQUIT: "SIGQUIT", syscall.SIGSEGV: "SIGSEGV", syscall.SIGSYS: "SIGSYS",
	syscall.SIGTERM: "SIGTERM", syscall.SIGTRAP: "SIGTRAP", syscall.SIGUSR1: "SIGUSR1",
	syscall.SIGUSR2: "SIGUSR2", syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ",
}

func signalName(s syscall.Signal) string {
	if n, ok := signalNames[s]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}
