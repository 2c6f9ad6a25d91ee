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
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
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
	// ClaimWait is how long one claim waits for a task. Zero means 20s.
	ClaimWait time.Duration
	// Logger receives the worker's own log. Nil discards it.
	Logger *slog.Logger
}

// worker is the state of one Run.
type worker struct {
	cfg      Config
	c        *client.Client
	log      *slog.Logger
	workRoot string
	baseEnv  []string
	wait     time.Duration // claim wait

	// From the coordinator's register answer, or defaults.
	slots     int
	hostEnv   map[string]string
	leaseTTL  time.Duration
	margin    time.Duration // renew this long before a lease would run out
	heartbeat time.Duration
	logCap    int64
	grace     time.Duration

	slotFreed chan struct{} // an attempt ended; capacity 1
	hbWake    chan struct{} // an attempt started; capacity 1

	// mu guards the fields below.
	mu      sync.Mutex
	running map[attemptKey]*attempt
	// hbCancel cancels the heartbeat in flight so that the next one carries
	// newly started attempts at once; nil when none may be cancelled.
	hbCancel context.CancelFunc
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
// out, since the coordinator will have given them to another host.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Client == nil {
		return errors.New("run worker: no client configured")
	}
	w, err := newWorker(cfg)
	if err != nil {
		return err
	}
	resp, err := w.register(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	w.configure(resp)
	w.log.Info("registered", "slots", w.slots, "lease_ttl", w.leaseTTL, "heartbeat", w.heartbeat, "work_dir", w.workRoot)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.claimLoop(gctx, g) })
	g.Go(func() error { return w.heartbeatLoop(gctx) })
	return g.Wait()
}

func newWorker(cfg Config) (*worker, error) {
	w := &worker{
		cfg:       cfg,
		c:         cfg.Client,
		log:       cfg.Logger,
		workRoot:  cfg.WorkDir,
		baseEnv:   cfg.BaseEnv,
		wait:      cfg.ClaimWait,
		slots:     cfg.Slots,
		slotFreed: make(chan struct{}, 1),
		hbWake:    make(chan struct{}, 1),
		running:   make(map[attemptKey]*attempt),
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

// register starts the session, retrying while the coordinator cannot be
// reached: a shim may start before the coordinator serves its link.
func (w *worker) register(ctx context.Context) (*tasks.RegisterResponse, error) {
	req := tasks.RegisterRequest{
		Name:    w.cfg.Name,
		Groups:  w.cfg.Groups,
		Tags:    w.cfg.Tags,
		Slots:   w.cfg.Slots,
		Version: w.cfg.Version,
		OS:      runtime.GOOS,
		Arch:    runtime.GOARCH,
	}
	bo := backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
	for {
		resp, err := w.c.Register(ctx, req)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !retryable(err) {
			return nil, fmt.Errorf("register worker: %w", err)
		}
		w.log.Warn("cannot register; retrying", keyErr, err)
		if !sleep(ctx, bo.next()) {
			return nil, ctx.Err()
		}
	}
}

// configure applies the coordinator's settings for the session.
func (w *worker) configure(r *tasks.RegisterResponse) {
	if r.Host != "" {
		w.log = w.log.With(keyHost, r.Host)
	}
	if r.Slots > 0 {
		w.slots = r.Slots
	}
	if w.slots <= 0 {
		w.slots = defaultSlots
	}
	w.hostEnv = r.Env
	w.leaseTTL = orDefault(time.Duration(r.LeaseTTL), defaultLeaseTTL)
	w.heartbeat = orDefault(time.Duration(r.Heartbeat), defaultHeartbeat)
	w.grace = orDefault(time.Duration(r.KillGrace), defaultKillGrace)
	w.logCap = r.LogCap
	if w.logCap <= 0 {
		w.logCap = tasks.DefaultLogCap
	}
	// Kill an attempt a little before its lease runs out on the
	// coordinator, so that it is dead before anyone else may start it.
	w.margin = max(w.leaseTTL/5, 500*time.Millisecond)
	// Renew at least twice per lease, whatever the coordinator asked for.
	if limit := (w.leaseTTL - w.margin) / 2; w.heartbeat > limit {
		w.heartbeat = limit
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
		free := w.free()
		if free <= 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-w.slotFreed:
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, w.wait+requestSlack)
		start := time.Now()
		resp, err := w.c.Claim(cctx, tasks.ClaimRequest{Max: free, Wait: tasks.Duration(w.wait)})
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
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
		now := time.Now()
		for _, as := range resp.Assignments {
			w.start(ctx, g, as, now)
		}
		w.wakeHeartbeat()
	}
}

// free returns the number of free slots.
func (w *worker) free() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.slots - len(w.running)
}

// start records an assignment as running and runs it in g. Its lease is
// counted from when the claim came back: the coordinator granted it a
// moment before.
func (w *worker) start(ctx context.Context, g *errgroup.Group, as tasks.Assignment, now time.Time) {
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
		renewedAt: now,
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
		refs, deadline := w.snapshot()
		if len(refs) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-w.hbWake:
			}
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, min(w.heartbeat+requestSlack, time.Until(deadline)))
		w.mu.Lock()
		w.hbCancel = nil
		if cancellable {
			w.hbCancel = cancel
		}
		w.mu.Unlock()
		sent := time.Now()
		resp, err := w.c.Heartbeat(hctx, tasks.HeartbeatRequest{Running: refs, Wait: tasks.Duration(w.heartbeat)})
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
			w.renewed(refs, sent)
			w.stopAttempts(resp.Stop)
			if gap := minHeartbeatGap - time.Since(sent); gap > 0 && len(resp.Stop) == 0 {
				sleep(ctx, gap)
			}
		case restarted:
			cancellable = false
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
		if d := a.renewedAt.Add(w.leaseTTL - w.margin); first.IsZero() || d.Before(first) {
			first = d
		}
	}
	return refs, first
}

// renewed records that the leases in refs were renewed no earlier than
// sent: the coordinator renews when the heartbeat arrives.
func (w *worker) renewed(refs []tasks.LeaseRef, sent time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range refs {
		if a := w.running[attemptKey{r.Task, r.Attempt}]; a != nil && a.ref.Token == r.Token && sent.After(a.renewedAt) {
			a.renewedAt = sent
		}
	}
}

// stopAttempts kills the attempts the coordinator stopped.
func (w *worker) stopAttempts(stops []tasks.Stop) {
	for _, s := range stops {
		w.mu.Lock()
		a := w.running[attemptKey{s.Task, s.Attempt}]
		w.mu.Unlock()
		if a == nil {
			continue
		}
		a.log.Info("coordinator stopped the attempt", "reason", s.Reason)
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
		if !a.isStopped() && now.After(a.renewedAt.Add(w.leaseTTL-w.margin)) {
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
