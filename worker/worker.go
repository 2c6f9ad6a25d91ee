// Package worker is the shim's loop: it registers with the coordinator,
// claims tasks while it has free slots, runs each in a fresh directory and
// process group, streams its output, uploads its artifacts and reports how
// it ended, renewing the leases of everything it runs meanwhile.
//
// The same loop runs in `mito-shim` (over its SSH or pipe link) and in
// `mito worker` (over TCP); only the client differs. Nothing it starts
// outlives it: when its context ends, or the coordinator stops answering for
// longer than a lease lasts, it kills what it runs.
package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/worker/watchdog"
)

// Log attribute keys.
const (
	keyHost    = "host"
	keyTask    = "task"
	keyAttempt = "attempt"
	keyErr     = "err"
)

// Defaults, used when the coordinator's register answer leaves a value zero.
const (
	defaultSlots     = 1
	defaultLeaseTTL  = 30 * time.Second
	defaultHeartbeat = 10 * time.Second
	defaultKillGrace = 5 * time.Second
	defaultClaimWait = 20 * time.Second

	// requestSlack is how much longer than its wait a long poll may take
	// before the worker gives up on it: a link can hang without closing.
	requestSlack = 10 * time.Second
	// minHeartbeatGap keeps a coordinator that answers heartbeats at once
	// from making the worker spin.
	minHeartbeatGap = 250 * time.Millisecond
)

// Config configures Run. Only Client is required.
type Config struct {
	// Client talks to the coordinator: over TCP for `mito worker`, over the
	// link for the shim.
	Client *client.Client
	// Name, Groups, Tags and Slots describe a standalone worker at
	// registration. Over a link the coordinator knows the host from its
	// inventory and ignores them.
	Name   string
	Groups []string
	Tags   []string
	// Slots is how many tasks run at once when the coordinator's answer does
	// not say. Zero means 1.
	Slots int
	// Version is sent at registration, so the coordinator can tell which
	// shim build a host runs.
	Version string
	// WorkDir is the root of the per-attempt working directories. Empty
	// means os.TempDir()/mito-work-<uid>, which must then belong to the
	// worker's user.
	WorkDir string
	// BaseEnv is the environment every task starts from, before the host's
	// and the task's variables. Nil means PATH, HOME, USER, LOGNAME and LANG
	// from the worker's own environment, so that tasks find their programs
	// but inherit nothing else of the shim's.
	BaseEnv []string
	// ClaimWait is how long one claim waits for a task. Zero means 20s. It
	// is bounded by the coordinator's lease settings (see leaseTimes).
	ClaimWait time.Duration
	// Logger receives the worker's own log. Nil discards it.
	Logger *slog.Logger
	// RunDir is the root of the run records: what a worker starting on
	// the host reads to find the attempts an earlier one left (see
	// rundir.go). Empty means ~/.cache/mito/run.
	RunDir string
	// Cgroup is where each attempt gets a cgroup v2 of its own: "" finds
	// one (this process's own cgroup, if this user may create cgroups
	// in it; see watchdog.DetectCgroup), "none" uses none, and the
	// watchdogs find an attempt's processes as their subreaper.
	Cgroup string
	// WatchdogProgram is the executable started as the attempts'
	// watchdogs (one per slot, each running attempt after attempt); it
	// must call watchdog.Main when watchdog.IsChild. Empty means this
	// process's own executable.
	WatchdogProgram string
	// DirectClient sends artifacts straight to the artifact store, by the
	// URLs the coordinator presigns, over the host's own network rather
	// than Client's link. Nil means a client that gives up connecting
	// after 5s (see newDirectClient).
	DirectClient *http.Client
}

// worker is the state of one Run.
type worker struct {
	cfg      Config
	log      *slog.Logger
	workRoot string
	baseEnv  []string
	wait     time.Duration // claim wait asked for in the configuration
	cgroup   string        // parent of the attempts' cgroups, or ""
	runRoot  string        // root of the run records
	direct   *http.Client  // for direct artifact uploads

	slotFreed chan struct{} // an attempt ended; capacity 1
	hbWake    chan struct{} // an attempt started; capacity 1
	sessLost  chan struct{} // a session call was refused as unauthorized; capacity 1

	// mu guards the fields below.
	mu      sync.Mutex
	running map[attemptKey]*attempt
	// hbCancel cancels the heartbeat in flight so that the next one carries
	// newly started attempts at once; nil when none may be cancelled.
	hbCancel context.CancelFunc
	// sess is the current session. It is replaced as a whole, never
	// changed, when the worker registers again: a caller takes it with cur,
	// sends with its client, and reports it to awaitSession when the
	// coordinator no longer knows it.
	sess *session
	// sessChanged is closed and replaced when sess is.
	sessChanged chan struct{}
	// lostSess is the session last reported lost.
	lostSess *session
	// unreported lists the attempts killed because the worker stops,
	// which the deregister call releases.
	unreported []unreported
	// instance is RegisterRequest.Instance: random, new for each Run.
	instance string
	// idle holds watchdogs between attempts: one runs attempt after
	// attempt, so that a task costs no process start of its own.
	idle []*watchdog.Watchdog
}

// watchdog returns an idle watchdog, or starts one.
func (w *worker) watchdog() (*watchdog.Watchdog, error) {
	var found *watchdog.Watchdog
	var gone []*watchdog.Watchdog
	w.mu.Lock()
	for found == nil && len(w.idle) > 0 {
		d := w.idle[len(w.idle)-1]
		w.idle = w.idle[:len(w.idle)-1]
		if d.Reusable() {
			found = d
		} else {
			gone = append(gone, d)
		}
	}
	w.mu.Unlock()
	for _, d := range gone {
		d.Close()
	}
	if found != nil {
		return found, nil
	}
	return watchdog.New(w.cfg.WatchdogProgram)
}

// idleWatchdog keeps a watchdog whose attempt is over for the next one,
// up to one per slot, and closes the others.
func (w *worker) idleWatchdog(d *watchdog.Watchdog) {
	w.mu.Lock()
	keep := d.Reusable() && w.sess != nil && len(w.idle) < w.sess.slots
	if keep {
		w.idle = append(w.idle, d)
	}
	w.mu.Unlock()
	if !keep {
		d.Close()
	}
}

// closeWatchdogs ends the idle watchdogs, as the worker stops.
func (w *worker) closeWatchdogs() {
	w.mu.Lock()
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, d := range idle {
		d.Close()
	}
}

// session is one registration with the coordinator: the client that sends
// its id, and the settings from the coordinator's register answer (or
// defaults).
type session struct {
	c        *client.Client
	slots    int
	hostEnv  map[string]string
	leaseTTL time.Duration
	margin   time.Duration // give an attempt up this long before its lease would run out
	// leaseGrace is the time between SIGTERM and SIGKILL for an attempt
	// whose lease runs out: shorter than grace, so that it is dead before
	// the coordinator gives the task to another host.
	leaseGrace time.Duration
	heartbeat  time.Duration
	claimWait  time.Duration
	logCap     int64
	grace      time.Duration
	// artifacts is how artifacts go: tasks.ArtifactsRelay, Direct or Auto.
	artifacts string
	// runScope is RegisterResponse.RunScope, if it is one path element.
	runScope string
	// directInputs is set when the coordinator can presign input
	// downloads (RegisterResponse.DirectInputs).
	directInputs bool
	// noDirect is set once a direct upload failed in auto mode: the rest
	// of the session relays.
	noDirect atomic.Bool
	// noDirectOnce logs that decision once.
	noDirectOnce sync.Once
}

type attemptKey struct {
	task    tasks.ID
	attempt int
}

// Run registers with the coordinator and runs tasks until ctx ends, which
// is the normal way to stop it (it then returns nil), or until the
// coordinator refuses the worker's credentials. Before it returns, every
// process it started is dead and every working directory removed.
// Transport errors are retried with backoff; while the coordinator cannot
// be reached, running attempts are killed once their leases would have run
// out, since the coordinator will have given them to another host. When the
// coordinator no longer knows the worker's session (it restarted, or the
// session expired), Run registers again, reporting the attempts it runs:
// those whose leases still hold go on running, the others are killed. Only
// a refused registration (the token was revoked) ends it.
func Run(ctx context.Context, cfg Config) error {
	return run(ctx, cfg, nil)
}

// silenceLeases is how many lease TTLs a worker over a link waits for an
// answer from the coordinator before it gives up the link. By then every
// attempt it ran has been killed (their leases ran out) and the
// coordinator has given them to other hosts: a link that stays silent
// that long is half-open, and the shim would otherwise linger until TCP
// gives up on the SSH connection, a quarter of an hour later.
const silenceLeases = 2

// ErrUnreachable is returned by RunLink when the coordinator has not
// answered any call for two lease TTLs.
var ErrUnreachable = errors.New("the coordinator has not answered for two lease TTLs; giving up the link")

// run is Run. When heard is not nil, it records every answer from the
// coordinator, and run stops, killing everything it runs, and returns
// ErrUnreachable once none has come for silenceLeases lease TTLs (the
// default TTL until the first registration).
func run(ctx context.Context, cfg Config, heard *contactClock) error {
	if cfg.Client == nil {
		return errors.New("run worker: no client configured")
	}
	w, err := newWorker(cfg)
	if err != nil {
		return err
	}
	if heard == nil && scopeRE.MatchString(cfg.Name) {
		// A standalone worker holds its name on this machine for as long
		// as it runs: a second one of the name is refused here, and a
		// restarted one takes the name back from the coordinator at once.
		lock, err := w.holdName()
		if err != nil {
			return err
		}
		defer lock.Close()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if heard != nil {
		var wg sync.WaitGroup
		defer wg.Wait()
		wdCtx, wdCancel := context.WithCancel(ctx)
		defer wdCancel()
		log := w.log
		wg.Go(func() {
			if w.watchSilence(wdCtx, log, heard) {
				cancel(ErrUnreachable)
			}
		})
	}
	err = w.runSessions(ctx)
	w.closeWatchdogs()
	if context.Cause(ctx) == ErrUnreachable {
		return ErrUnreachable
	}
	if err == nil {
		w.deregister()
	}
	w.dropScope()
	return err
}

// deregisterWait bounds the last call of a stopping worker.
const deregisterWait = 5 * time.Second

// deregister tells the coordinator the worker stops, releasing the
// attempts it killed as it stopped, so that its host shows offline and
// those tasks go back to the queue at once, not a lease TTL later. A
// coordinator that cannot be reached finds out by itself.
func (w *worker) deregister() {
	s := w.cur()
	if s == nil {
		return
	}
	w.mu.Lock()
	dead := slices.Clone(w.unreported)
	w.mu.Unlock()
	refs := make([]tasks.LeaseRef, len(dead))
	for i, u := range dead {
		refs[i] = u.ref
	}
	ctx, cancel := context.WithTimeout(context.Background(), deregisterWait)
	defer cancel()
	if err := s.c.Deregister(ctx, tasks.ReleaseRequest{Attempts: refs, Reason: "its worker stopped"}); err != nil {
		w.log.Info("could not tell the coordinator this worker stops; the next worker on the host releases what it killed", "killed", len(refs), keyErr, err)
		return
	}
	// Told: their records have served.
	for _, u := range dead {
		if u.record != "" {
			_ = os.Remove(u.record)
		}
	}
	w.log.Info("deregistered", "released", len(refs))
}

// holdName takes the lock of the worker's name in its run directory and
// sets its instance from it: the same for every run of this name by this
// user on this machine, so that the coordinator lets a restarted worker
// take back the session of the one before it (which is dead: it held
// the lock), and different for a worker of the name anywhere else, which
// it refuses while this one lives.
func (w *worker) holdName() (*os.File, error) {
	if err := os.MkdirAll(w.runRoot, 0o700); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	path := filepath.Join(w.runRoot, "worker-"+w.cfg.Name+".lock")
	lock, err := watchdog.TryLock(path)
	if errors.Is(err, watchdog.ErrLocked) {
		return nil, &tasks.Error{Code: tasks.EConflict, Field: "name", Message: fmt.Sprintf(
			"name: another worker named %q runs on this machine as this user (it holds %s); start this one with its own --name", w.cfg.Name, path)}
	}
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if id, err := os.ReadFile(f); err == nil && len(bytes.TrimSpace(id)) > 0 {
			sum := sha256.Sum256(append(append(bytes.TrimSpace(id), 0), path...))
			w.instance = hex.EncodeToString(sum[:8])
			break
		}
	}
	return lock, nil
}

// watchSilence waits until ctx ends (false) or the coordinator has not
// answered for silenceLeases lease TTLs (true).
func (w *worker) watchSilence(ctx context.Context, log *slog.Logger, heard *contactClock) bool {
	for {
		ttl := defaultLeaseTTL
		if s := w.cur(); s != nil {
			ttl = s.leaseTTL
		}
		limit := silenceLeases * ttl
		silent := heard.since()
		if silent >= limit {
			log.Error("the coordinator has not answered; giving up the link and killing what runs", "silent_for", silent.Round(time.Millisecond), "limit", limit)
			return true
		}
		// Check again when the limit would be reached, or sooner in case
		// a new session shortened the TTL.
		if !sleep(ctx, min(limit-silent, time.Second)) {
			return false
		}
	}
}

// runSessions registers with the coordinator and runs tasks until ctx ends
// (nil) or the coordinator refuses the worker.
func (w *worker) runSessions(ctx context.Context) error {
	c, resp, err := w.register(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if resp.Host != "" {
		w.log = w.log.With(keyHost, resp.Host)
	}
	s := w.newSession(c, resp)
	w.mu.Lock()
	w.sess = s
	w.mu.Unlock()
	w.log.Info("registered", "slots", s.slots, "artifacts", s.artifacts, "lease_ttl", s.leaseTTL, "heartbeat", s.heartbeat, "kill_margin", s.margin, "work_dir", w.workRoot)
	// What an earlier worker left on the host dies before anything new
	// is claimed.
	w.reconcile(ctx, s)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.claimLoop(gctx, g) })
	g.Go(func() error { return w.heartbeatLoop(gctx) })
	g.Go(func() error { return w.sessionLoop(gctx) })
	return g.Wait()
}

func newWorker(cfg Config) (*worker, error) {
	w := &worker{
		cfg:         cfg,
		log:         cfg.Logger,
		workRoot:    cfg.WorkDir,
		baseEnv:     cfg.BaseEnv,
		wait:        cfg.ClaimWait,
		slotFreed:   make(chan struct{}, 1),
		hbWake:      make(chan struct{}, 1),
		sessLost:    make(chan struct{}, 1),
		running:     make(map[attemptKey]*attempt),
		sessChanged: make(chan struct{}),
		direct:      cfg.DirectClient,
		instance:    fmt.Sprintf("%016x", rand.Uint64()),
	}
	if w.direct == nil {
		w.direct = newDirectClient()
	}
	if w.log == nil {
		w.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if w.wait <= 0 {
		w.wait = defaultClaimWait
	}
	if w.baseEnv == nil {
		for _, k := range []string{"PATH", "HOME", "USER", "LOGNAME", "LANG"} {
			if v, ok := os.LookupEnv(k); ok {
				w.baseEnv = append(w.baseEnv, k+"="+v)
			}
		}
	}
	if w.workRoot == "" {
		w.workRoot = filepath.Join(os.TempDir(), fmt.Sprintf("mito-work-%d", os.Getuid()))
		if err := ownPrivateDir(w.workRoot); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(w.workRoot, 0o700); err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	w.runRoot = cfg.RunDir
	if w.runRoot == "" {
		w.runRoot = defaultRunDir(w.workRoot)
	}
	switch cfg.Cgroup {
	case "none":
	case "":
		dir, err := watchdog.DetectCgroup()
		if err != nil {
			w.log.Info("attempts run without a cgroup; their watchdogs find their processes as subreapers", "why", err.Error())
		} else {
			w.cgroup = dir
		}
	default:
		w.cgroup = cfg.Cgroup
	}
	return w, nil
}

// ownPrivateDir creates dir, or checks that an existing one is a real
// directory of ours: in a shared temporary directory another user could
// have planted a symlink or a directory of theirs to catch task files.
func ownPrivateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create work directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check work directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || (ok && int(st.Uid) != os.Getuid()) {
		return fmt.Errorf("check work directory: %s is not a directory owned by uid %d", dir, os.Getuid())
	}
	return nil
}

// registerRequest describes the worker, and the attempts it still runs.
// Features lists all this worker can do: the coordinator gives it only the
// tasks these cover.
func (w *worker) registerRequest(running []tasks.LeaseRef) tasks.RegisterRequest {
	return tasks.RegisterRequest{
		Name:     w.cfg.Name,
		Groups:   w.cfg.Groups,
		Tags:     w.cfg.Tags,
		Slots:    w.cfg.Slots,
		Version:  w.cfg.Version,
		OS:       runtime.GOOS,
		Arch:     runtime.GOARCH,
		Running:  running,
		Features: []string{tasks.FeatureInputs},
		Instance: w.instance,
	}
}

// register starts the first session, retrying while the coordinator cannot
// be reached: a shim may start before the coordinator serves its link.
func (w *worker) register(ctx context.Context) (*client.Client, *tasks.RegisterResponse, error) {
	req := w.registerRequest(nil)
	bo := backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
	for {
		c, resp, err := w.cfg.Client.RegisterSession(ctx, req)
		if err == nil {
			return c, resp, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if !retryable(err) {
			return nil, nil, fmt.Errorf("register worker: %w", err)
		}
		w.log.Warn("cannot register; retrying", keyErr, err)
		if !sleep(ctx, bo.next()) {
			return nil, nil, ctx.Err()
		}
	}
}

// newSession makes a session of the coordinator's settings.
func (w *worker) newSession(c *client.Client, r *tasks.RegisterResponse) *session {
	s := &session{c: c, slots: w.cfg.Slots, hostEnv: r.Env, logCap: r.LogCap, artifacts: r.Artifacts, directInputs: r.DirectInputs}
	if scopeRE.MatchString(r.RunScope) {
		s.runScope = r.RunScope
	} else if r.RunScope != "" {
		w.log.Warn("the coordinator's run scope is not a file name; keeping no run records", "scope", r.RunScope)
	}
	switch s.artifacts {
	case tasks.ArtifactsAuto, tasks.ArtifactsDirect:
	default: // an older coordinator, or a mode this worker does not know
		s.artifacts = tasks.ArtifactsRelay
	}
	if r.Slots > 0 {
		s.slots = r.Slots
	}
	if s.slots <= 0 {
		s.slots = defaultSlots
	}
	if s.logCap <= 0 {
		s.logCap = tasks.DefaultLogCap
	}
	s.leaseTTL = orDefault(time.Duration(r.LeaseTTL), defaultLeaseTTL)
	s.grace = orDefault(time.Duration(r.KillGrace), defaultKillGrace)
	s.leaseGrace, s.margin, s.heartbeat, s.claimWait = leaseTimes(s.leaseTTL, s.grace, orDefault(time.Duration(r.Heartbeat), defaultHeartbeat), w.wait)
	return s
}

// leaseTimes derives from a lease's TTL and the kill grace how an attempt
// whose lease cannot be renewed is killed: its watchdog starts the kill
// margin before the lease would run out on the coordinator, sending
// SIGTERM and, leaseGrace later, SIGKILL. It also bounds the heartbeat
// interval and the claim wait so that renewals fit in what is left.
//
// The kill must be over before the lease runs out, so margin =
// leaseGrace + slack, where slack covers a watchdog woken late on a loaded
// machine and the kill itself. leaseGrace is the task's grace, cut to a
// tenth of the TTL: the task's own grace (for timeouts and cancels) may
// be as long as a user likes, but a lease that runs out leaves no time
// for it. slack is a tenth of the TTL, and at least a second (a quarter
// of the TTL for TTLs under 4s). With the coordinator's defaults (TTL 30s,
// grace 5s) that is a 3s lease grace and a 6s margin: 24s from the last
// renewal to the kill.
//
// What is left (the budget, from the last renewal to the kill) must hold
// the renewals: a heartbeat is a long poll that renews when it arrives,
// but the worker learns so only when its answer comes, hb later, and the
// next one's answer comes two waits and round trips after the renewal it
// follows. At a fifth of the budget, two heartbeats leave three fifths of
// it for round trips slowed by load. A new attempt's lease is counted from
// when its claim was sent, and a claim may wait for a task: a quarter of
// the budget.
func leaseTimes(ttl, grace, heartbeat, claimWait time.Duration) (leaseGrace, margin, hb, wait time.Duration) {
	leaseGrace = min(grace, ttl/10)
	slack := max(ttl/10, min(time.Second, ttl/4))
	margin = leaseGrace + slack
	budget := ttl - margin // from the last renewal to the kill
	hb = min(heartbeat, budget/5)
	wait = min(claimWait, budget/4)
	return leaseGrace, margin, hb, wait
}

// cur returns the current session.
func (w *worker) cur() *session {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sess
}

// awaitSession is called when the coordinator refused a call made in
// session old as unauthorized: it no longer knows the session (it
// restarted, or the session expired). It asks the session loop to register
// again and waits for the new session, or until ctx ends. It reports
// whether a new session is there.
func (w *worker) awaitSession(ctx context.Context, old *session) bool {
	w.mu.Lock()
	cur, changed := w.sess, w.sessChanged
	if cur == old {
		w.lostSess = old
	}
	w.mu.Unlock()
	if cur != old {
		return true
	}
	select {
	case w.sessLost <- struct{}{}:
	default:
	}
	select {
	case <-ctx.Done():
		return false
	case <-changed:
		return true
	}
}

// sessionLoop registers again whenever a session call was refused as
// unauthorized. It returns nil when ctx ends and an error when the
// coordinator refuses the registration itself: the worker's credentials
// were revoked.
func (w *worker) sessionLoop(ctx context.Context) error {
	// Not reset by a successful registration: a coordinator that forgets
	// every new session at once must not make the worker spin.
	bo := backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
	var last time.Time // last successful registration
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.sessLost:
		}
		w.mu.Lock()
		old := w.sess
		stale := w.lostSess != old
		w.mu.Unlock()
		if stale {
			continue // already registered again
		}
		if time.Since(last) > time.Minute {
			bo.reset()
		} else if !sleep(ctx, bo.next()) {
			return nil
		}
		w.log.Warn("coordinator no longer knows the session; registering again")
		if err := w.reregister(ctx, &bo); err != nil {
			return err
		}
		last = time.Now()
	}
}

// reregister starts a new session in place of old, reporting the attempts
// that still run, and kills those the coordinator says to stop. The others
// go on running: their leases are in the coordinator's store, not in the
// session. It retries with backoff until it succeeds, ctx ends (nil) or
// the coordinator refuses the worker (the error).
func (w *worker) reregister(ctx context.Context, bo *backoff) error {
	for {
		refs, _ := w.snapshot()
		// The coordinator renews the reported leases when the request
		// comes: no earlier than now.
		sent := time.Now()
		c, resp, err := w.cfg.Client.RegisterSession(ctx, w.registerRequest(refs))
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			s := w.newSession(c, resp)
			w.mu.Lock()
			w.sess = s
			close(w.sessChanged)
			w.sessChanged = make(chan struct{})
			w.mu.Unlock()
			w.log.Info("registered again", "running", len(refs), "stop", len(resp.Stop), "slots", s.slots, "lease_ttl", s.leaseTTL, "heartbeat", s.heartbeat)
			w.renewed(without(refs, resp.Stop), sent)
			w.stopAttempts(resp.Stop)
			w.wakeHeartbeat()
			// Slots may have changed.
			select {
			case w.slotFreed <- struct{}{}:
			default:
			}
			return nil
		case refused(err) || tasks.ErrorCode(err) == tasks.EConflict:
			// A conflict: another worker of this name registered while
			// this one's session was lost; two must not share it.
			return fmt.Errorf("register worker again: %w", err)
		}
		w.log.Warn("cannot register again; retrying", keyErr, err, "running", len(refs))
		if !sleep(ctx, bo.next()) {
			return nil
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// claimLoop keeps one claim outstanding while a slot is free and starts
// what it gets. It returns nil when ctx ends and an error only when the
// coordinator refuses the worker.
func (w *worker) claimLoop(ctx context.Context, g *errgroup.Group) error {
	bo := backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
	for {
		s := w.cur()
		free := w.free()
		if free <= 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-w.slotFreed:
			}
			continue
		}
		// An answer that comes later than the kill deadline of what it
		// assigns would only start attempts to kill them at once.
		cctx, cancel := context.WithTimeout(ctx, min(s.claimWait+requestSlack, s.leaseTTL-s.margin))
		// The coordinator starts the leases of what it assigns between now
		// and its answer: count them from now, the earliest it can be.
		start := time.Now()
		resp, err := s.c.Claim(cctx, tasks.ClaimRequest{Max: free, Wait: tasks.Duration(s.claimWait)})
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if tasks.ErrorCode(err) == tasks.EUnauthorized {
				if !w.awaitSession(ctx, s) {
					return nil
				}
				continue
			}
			if refused(err) {
				return fmt.Errorf("claim tasks: %w", err)
			}
			w.log.Warn("cannot claim tasks; retrying", keyErr, err)
			sleep(ctx, bo.next())
			continue
		}
		bo.reset()
		if len(resp.Assignments) == 0 {
			// The wait ran out. A coordinator that answers at once with
			// nothing must not make us spin.
			if time.Since(start) < time.Second {
				sleep(ctx, time.Second+rand.N(time.Second))
			}
			continue
		}
		if len(resp.Assignments) > free {
			w.log.Warn("coordinator assigned more tasks than asked for; running them all", "asked", free, "got", len(resp.Assignments))
		}
		for _, as := range resp.Assignments {
			w.start(ctx, g, as, start)
		}
		w.wakeHeartbeat()
	}
}

// free returns the number of free slots.
func (w *worker) free() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sess.slots - len(w.running)
}

// start records an assignment as running and runs it in g. Its lease is
// counted from sent, when its claim was sent: the coordinator granted it
// some time between then and its answer, which may have been a long poll
// or slow to arrive.
func (w *worker) start(ctx context.Context, g *errgroup.Group, as tasks.Assignment, sent time.Time) {
	ref := as.Lease.LeaseRef
	key := attemptKey{ref.Task, ref.Attempt}
	actx, cancel := context.WithCancel(ctx)
	a := &attempt{
		ref:       ref,
		task:      as.Task,
		log:       w.log.With(keyTask, int64(ref.Task), keyAttempt, ref.Attempt),
		ctx:       actx,
		cancelIO:  cancel,
		stopped:   make(chan struct{}),
		renewedAt: sent,
	}
	w.mu.Lock()
	_, dup := w.running[key]
	if !dup {
		w.running[key] = a
	}
	w.mu.Unlock()
	if dup {
		cancel()
		w.log.Warn("coordinator assigned an attempt that already runs; ignoring it", keyTask, int64(ref.Task), keyAttempt, ref.Attempt)
		return
	}
	g.Go(func() error {
		defer w.release(key)
		w.runAttempt(a)
		return nil
	})
}

// release forgets an attempt that ended and frees its slot.
func (w *worker) release(key attemptKey) {
	w.mu.Lock()
	a := w.running[key]
	delete(w.running, key)
	w.mu.Unlock()
	if a != nil {
		a.cancelIO()
	}
	select {
	case w.slotFreed <- struct{}{}:
	default:
	}
}

// wakeHeartbeat makes the heartbeat loop send the new set of running
// attempts now rather than after the heartbeat in flight, so that a task
// cancelled right after it started is stopped at once.
func (w *worker) wakeHeartbeat() {
	select {
	case w.hbWake <- struct{}{}:
	default:
	}
	w.mu.Lock()
	if w.hbCancel != nil {
		w.hbCancel()
		w.hbCancel = nil
	}
	w.mu.Unlock()
}

// heartbeatLoop renews the leases of the running attempts, kills those the
// coordinator stops, and kills those whose leases it could not renew in
// time. It returns nil when ctx ends and an error only when the coordinator
// refuses the worker.
func (w *worker) heartbeatLoop(ctx context.Context) error {
	bo := backoff{min: 250 * time.Millisecond, max: 5 * time.Second}
	// A heartbeat may be cancelled to restart it with new attempts, but
	// never two in a row: each cancelled one might not have renewed
	// anything, and a stream of task starts must not starve renewal.
	cancellable := true
	for {
		w.expireLeases()
		select {
		case <-w.hbWake: // the snapshot below includes what woke us
		default:
		}
		s := w.cur()
		refs, deadline := w.snapshot()
		if len(refs) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-w.hbWake:
			}
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, min(s.heartbeat+requestSlack, time.Until(deadline)))
		w.mu.Lock()
		w.hbCancel = nil
		if cancellable {
			w.hbCancel = cancel
		}
		w.mu.Unlock()
		sent := time.Now()
		resp, err := s.c.Heartbeat(hctx, tasks.HeartbeatRequest{Running: refs, Wait: tasks.Duration(s.heartbeat)})
		restarted := errors.Is(hctx.Err(), context.Canceled)
		w.mu.Lock()
		w.hbCancel = nil
		w.mu.Unlock()
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			cancellable = true
			bo.reset()
			w.renewed(without(refs, resp.Stop), sent)
			w.stopAttempts(resp.Stop)
			if gap := minHeartbeatGap - time.Since(sent); gap > 0 && len(resp.Stop) == 0 {
				sleep(ctx, gap)
			}
		case restarted:
			cancellable = false
		case tasks.ErrorCode(err) == tasks.EUnauthorized:
			// Registering again renews the leases; meanwhile, those that
			// run out must still be given up.
			w.log.Warn("cannot renew leases: the coordinator no longer knows the session", "running", len(refs))
			dctx, dcancel := context.WithDeadline(ctx, deadline)
			w.awaitSession(dctx, s)
			dcancel()
		case refused(err):
			return fmt.Errorf("renew leases: %w", err)
		default:
			cancellable = true
			w.log.Warn("cannot renew leases; retrying", keyErr, err, "running", len(refs))
			sleep(ctx, max(0, min(bo.next(), time.Until(deadline))))
		}
	}
}

// snapshot returns the leases to renew and when the first of them must be
// given up. Attempts already being stopped need no renewal.
func (w *worker) snapshot() ([]tasks.LeaseRef, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var refs []tasks.LeaseRef
	var first time.Time
	for _, a := range w.running {
		if a.isStopped() {
			continue
		}
		refs = append(refs, a.ref)
		if d := a.renewedAt.Add(w.sess.leaseTTL - w.sess.margin); first.IsZero() || d.Before(first) {
			first = d
		}
	}
	return refs, first
}

// renewed records that the leases in refs were renewed no earlier than
// sent, since the coordinator renews when the heartbeat arrives, and moves
// their watchdogs' deadlines.
func (w *worker) renewed(refs []tasks.LeaseRef, sent time.Time) {
	type extension struct {
		wd       *watchdog.Attempt
		deadline time.Time
	}
	var ext []extension
	w.mu.Lock()
	for _, r := range refs {
		if a := w.running[attemptKey{r.Task, r.Attempt}]; a != nil && a.ref.Token == r.Token && sent.After(a.renewedAt) {
			a.renewedAt = sent
			if a.wd != nil {
				ext = append(ext, extension{a.wd, sent.Add(w.sess.leaseTTL - w.sess.margin)})
			}
		}
	}
	w.mu.Unlock()
	for _, e := range ext {
		e.wd.Extend(e.deadline)
	}
}

// without returns the refs that stops does not name: the leases the
// coordinator renewed.
func without(refs []tasks.LeaseRef, stops []tasks.Stop) []tasks.LeaseRef {
	if len(stops) == 0 {
		return refs
	}
	out := make([]tasks.LeaseRef, 0, len(refs))
	for _, r := range refs {
		if !slices.ContainsFunc(stops, func(s tasks.Stop) bool { return s.Task == r.Task && s.Attempt == r.Attempt }) {
			out = append(out, r)
		}
	}
	return out
}

// stopLeaseLost is the reason of a Stop for an attempt whose lease is no
// longer current (it ran out, or the task went to another attempt), as
// opposed to one that was cancelled.
const stopLeaseLost = "lease lost"

// stopAttempts kills the attempts the coordinator stopped. A cancelled
// attempt still uploads what it has and reports that it was cancelled; one
// whose lease is lost is abandoned, since the coordinator would refuse
// every write for it.
func (w *worker) stopAttempts(stops []tasks.Stop) {
	for _, s := range stops {
		w.mu.Lock()
		a := w.running[attemptKey{s.Task, s.Attempt}]
		w.mu.Unlock()
		if a == nil {
			continue
		}
		a.log.Info("coordinator stopped the attempt", "reason", s.Reason)
		if s.Reason == stopLeaseLost {
			a.abandon(s.Reason)
			continue
		}
		a.stop(causeCancelled, s.Reason)
	}
}

// expireLeases gives up the attempts whose leases could not be renewed in
// time: the coordinator is about to hand them to another host, so they
// must die here first (at-least-once, never twice at the same time).
func (w *worker) expireLeases() {
	now := time.Now()
	var expired []*attempt
	w.mu.Lock()
	for _, a := range w.running {
		if !a.isStopped() && now.After(a.renewedAt.Add(w.sess.leaseTTL-w.sess.margin)) {
			expired = append(expired, a)
		}
	}
	w.mu.Unlock()
	for _, a := range expired {
		a.log.Error("lease not renewed in time; killing the attempt", "last_renewed", a.renewedAt.Format(time.RFC3339Nano))
		a.abandon("lease not renewed in time")
	}
}

// retryable reports whether trying again later can help.
func retryable(err error) bool {
	switch tasks.ErrorCode(err) {
	case tasks.EUnavailable, tasks.EInternal:
		return true
	}
	return false
}

// refused reports whether the coordinator refuses the worker itself: bad
// or revoked credentials, or a user without the role to serve its groups.
func refused(err error) bool {
	switch tasks.ErrorCode(err) {
	case tasks.EUnauthorized, tasks.EForbidden:
		return true
	}
	return false
}

// leaseGone reports whether a write was refused because the attempt's lease
// is no longer current: the task was cancelled, finished or given away.
func leaseGone(err error) bool {
	switch tasks.ErrorCode(err) {
	case tasks.EStaleLease, tasks.EConflict, tasks.ENotFound:
		return true
	}
	return false
}

// backoff yields exponentially growing, jittered delays.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(2*b.cur, b.max)
	return d
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits for d or until ctx ends, and reports whether it slept fully.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
