package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/transport/link"
)

// Reconnect backoff bounds for a host whose link failed.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
	// stableLink is how long a link must have lasted for the backoff to
	// start again from the minimum.
	stableLink = time.Minute
)

// hostOf returns a copy of the session's host, read under the lock.
func (c *Coordinator) hostOf(s *session) tasks.Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := s.host
	h.Tags, h.Groups = slices.Clone(h.Tags), slices.Clone(h.Groups)
	return h
}

// setHostState records a host's state, in memory and, when this
// coordinator owns the host, in the store: another coordinator's host
// record is its owner's to write. A draining host stays draining, whatever
// its link does, until it goes offline: it must not claim again after a
// reconnect.
func (c *Coordinator) setHostState(ctx context.Context, d *hostDriver, st tasks.HostState, lastErr string) {
	c.mu.Lock()
	h := c.setHostStateLocked(d.s, st, lastErr)
	owned := d.owned
	c.mu.Unlock()
	if !owned {
		return
	}
	if err := c.store.PutHost(ctx, h); err != nil && ctx.Err() == nil {
		c.log.Warn("store host", logHost, h.Name, logErr, err)
	}
}

// setHostStateLocked is setHostState's in-memory part; c.mu must be held.
// It returns a copy of the host to store.
func (c *Coordinator) setHostStateLocked(s *session, st tasks.HostState, lastErr string) tasks.Host {
	switch {
	case s.draining && st != tasks.HostOffline:
		st = tasks.HostDraining
	case st == tasks.HostReady && !s.flakySince.IsZero():
		// Up again after a failure: degraded, with the failure shown, until
		// the link has held for a while.
		st, lastErr = tasks.HostDegraded, s.host.LastError
	}
	s.host.State, s.host.LastError, s.host.UpdatedAt = st, lastErr, c.cfg.Now().UTC()
	h := s.host
	h.Tags, h.Groups = slices.Clone(h.Tags), slices.Clone(h.Groups)
	return h
}

func claimParams(h tasks.Host, max int, ttl time.Duration, now time.Time) store.ClaimParams {
	return store.ClaimParams{Host: h.Name, Groups: h.Groups, Tags: h.Tags, Max: max, TTL: ttl, Now: now}
}

// hostDriver keeps one inventory host connected.
type hostDriver struct {
	s      *session
	cancel context.CancelFunc
	done   chan struct{}

	// Guarded by Coordinator.mu:
	inv inventory.Host
	// forceUpload makes the next connect send the shim even if a file of
	// the right size is there: the last one could not be executed.
	forceUpload bool
	// owned is true while this driver holds the host's ownership lease
	// (ownership.go).
	owned bool
}

// manageHosts keeps a shim running for every inventory host until ctx
// ends, following inventory changes given to UpdateHosts.
func (c *Coordinator) manageHosts(ctx context.Context) error {
	c.mu.Lock()
	c.runCtx = ctx
	c.mu.Unlock()
	c.UpdateHosts(c.cfg.Hosts)
	<-ctx.Done()
	c.mu.Lock()
	c.runCtx = nil // no driver starts after this
	c.mu.Unlock()
	c.drivers.Wait()
	return nil
}

// UpdateHosts makes the coordinator drive exactly these hosts, as after an
// inventory reload, without dropping running tasks: new hosts connect;
// removed hosts drain (their running tasks finish, they claim nothing new)
// and then disconnect; a host whose connection settings changed drains on
// its old link while the new one waits; tags, groups, env and slots apply
// to the next claim. Before Run it only records the hosts.
func (c *Coordinator) UpdateHosts(hosts []inventory.Host) {
	var changed []*hostDriver
	c.mu.Lock()
	ctx := c.runCtx
	c.cfg.Hosts = hosts
	if ctx == nil {
		c.mu.Unlock()
		return
	}
	seen := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		seen[h.Name] = true
		d, ok := c.hosts[h.Name]
		switch {
		case !ok:
			c.hosts[h.Name] = c.startDriver(ctx, h, nil)
		case reconnectNeeded(d.inv, h):
			c.log.Info("host connection settings changed; draining the old link", logHost, h.Name)
			c.retire(ctx, d)
			c.hosts[h.Name] = c.startDriver(ctx, h, d.done)
		default:
			if d.s.draining {
				c.log.Info("host is back in the inventory", logHost, h.Name)
				d.s.draining = false
			}
			d.inv, d.s.env = h, h.Env
			d.s.host.Tags, d.s.host.Groups, d.s.host.Slots = h.Tags, h.Groups, h.Slots
			changed = append(changed, d)
		}
	}
	for name, d := range c.hosts {
		if !seen[name] && !d.s.draining {
			c.log.Info("host removed from the inventory; draining", logHost, name)
			c.retire(ctx, d)
		}
	}
	c.mu.Unlock()
	for _, d := range changed { // store what hosts list shows
		h := c.hostOf(d.s)
		c.setHostState(ctx, d, h.State, h.LastError)
	}
	if groups, err := c.EnsureGroups(ctx); err != nil {
		c.log.Error("create the inventory's groups", logErr, err)
	} else {
		for _, g := range groups {
			c.log.Info("created group "+g+" for the inventory's hosts; admin is its admin", "group", g)
		}
	}
}

// reconnectNeeded reports whether a host's new settings need a new link.
func reconnectNeeded(old, new inventory.Host) bool {
	return old.Transport != new.Transport || inventory.SSHChanged(old, new)
}

// retire marks a driver draining and disconnects it once its running tasks
// have finished. c.mu must be held.
func (c *Coordinator) retire(ctx context.Context, d *hostDriver) {
	d.s.draining = true
	c.drivers.Add(1)
	go func() {
		defer c.drivers.Done()
		c.drain(ctx, d)
	}()
}

// startDriver starts driving h once after (if not nil) is closed. c.mu
// must be held.
func (c *Coordinator) startDriver(ctx context.Context, h inventory.Host, after <-chan struct{}) *hostDriver {
	dctx, cancel := context.WithCancel(ctx)
	d := &hostDriver{
		inv:    h,
		cancel: cancel,
		done:   make(chan struct{}),
		s: &session{
			id:     newSessionID(),
			linked: true,
			env:    h.Env,
			host: tasks.Host{
				Name: h.Name, Transport: h.Transport, Tags: h.Tags, Groups: h.Groups,
				Slots: h.Slots, State: tasks.HostConnecting,
			},
		},
	}
	c.drivers.Add(1)
	go func() {
		defer c.drivers.Done()
		defer close(d.done)
		if after != nil {
			select {
			case <-after:
			case <-dctx.Done():
				return
			}
		}
		c.driveHost(dctx, d)
	}()
	return d
}

// drain lets a draining host finish its running tasks, claiming nothing
// new, then disconnects it. It stops early, leaving the host connected, if
// the host is taken back into the inventory. A host that another
// coordinator owns runs nothing here: it stops driving it at once.
func (c *Coordinator) drain(ctx context.Context, d *hostDriver) {
	c.setHostState(ctx, d, tasks.HostDraining, "")
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		c.mu.Lock()
		draining, owned := d.s.draining, d.owned
		c.mu.Unlock()
		if !draining {
			return
		}
		if !owned {
			c.log.Info("host drained: another coordinator drives it", logHost, d.s.host.Name)
			d.cancel()
			return
		}
		h, err := c.store.GetHost(ctx, d.s.host.Name)
		if err == nil && h.Running == 0 {
			c.log.Info("host drained", logHost, h.Name)
			d.cancel()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-d.done:
			return
		case <-t.C:
		}
	}
}

// hostEnv returns the session's host environment, read under the lock.
func (c *Coordinator) hostEnv(s *session) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.env
}

// driveHost drives a host until ctx ends: it waits until it owns the
// host (other coordinators on the same store may), then connects it, again
// and again with backoff, for as long as it keeps owning it.
func (c *Coordinator) driveHost(ctx context.Context, d *hostDriver) {
	name := d.s.host.Name
	defer func() {
		c.mu.Lock()
		cur, listed := c.hosts[name]
		if cur == d {
			delete(c.hosts, name)
		}
		c.mu.Unlock()
		switch {
		case errors.Is(context.Cause(ctx), ErrAbandonHosts):
			// A simulated crash: leave the record and the lease as they
			// are, for another coordinator to take over when it expires.
			c.setOwned(d, false)
		case !listed || cur == d:
			c.setHostState(context.WithoutCancel(ctx), d, tasks.HostOffline, "")
			c.releaseHost(d)
		default:
			// A new driver of this coordinator has taken the name over
			// (changed connection settings) and keeps the lease.
		}
	}()
	for ctx.Err() == nil {
		if !c.acquireHost(ctx, d) {
			return
		}
		owned, lost := context.WithCancelCause(ctx)
		stop := c.holdHost(owned, d, lost)
		c.connectLoop(owned, d)
		stop()
		lost(nil)
	}
}

// connectLoop connects a host, again and again with backoff, until ctx
// ends.
func (c *Coordinator) connectLoop(ctx context.Context, d *hostDriver) {
	s := d.s
	name := c.hostOf(s).Name
	backoff := minBackoff
	for ctx.Err() == nil {
		c.setHostState(ctx, d, tasks.HostConnecting, c.hostOf(s).LastError)
		start := time.Now()
		err := c.connectStable(ctx, d)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > stableLink {
			backoff = minBackoff
		}
		c.mu.Lock()
		s.flakySince = time.Now()
		c.mu.Unlock()
		msg := "shim exited"
		if err != nil {
			msg = err.Error()
		}
		if !retryable(err) {
			backoff = maxBackoff // a wrong key or host key does not fix itself quickly
		}
		c.log.Warn("host link ended", logHost, name, logErr, msg, "retry_in", backoff)
		c.setHostState(ctx, d, tasks.HostUnreachable, msg)
		// Full jitter keeps many hosts from reconnecting in lockstep.
		sleep := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(sleep):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// connectStable runs one link with connectHost; once the link has held
// for stableLink, a degraded host counts as ready again.
func (c *Coordinator) connectStable(ctx context.Context, d *hostDriver) error {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-time.After(stableLink):
		case <-stop:
			return
		}
		c.mu.Lock()
		d.s.flakySince = time.Time{}
		degraded := d.s.host.State == tasks.HostDegraded
		c.mu.Unlock()
		if degraded {
			c.setHostState(ctx, d, tasks.HostReady, "")
		}
	}()
	err := c.connectHost(ctx, d)
	close(stop)
	<-done
	return err
}

// connectHost runs one link to a host until it ends.
func (c *Coordinator) connectHost(ctx context.Context, d *hostDriver) error {
	c.mu.Lock()
	h := d.inv
	c.mu.Unlock()
	switch h.Transport {
	case inventory.TransportLocal:
		return c.runLocalShim(ctx, d.s)
	case inventory.TransportSSH:
		return c.runSSHShim(ctx, d, h)
	}
	return fmt.Errorf("transport %q is not supported", h.Transport)
}

// serveShim serves the worker protocol to a started shim over its stdout
// and stdin until the link ends (ctx ends, the shim exits, or down is
// closed). It then closes the shim's stdin, which tells the shim to kill
// its tasks and exit, and waits for it up to the kill grace and a margin
// before calling kill: a host must never be left running a task the
// coordinator no longer follows.
func (c *Coordinator) serveShim(ctx context.Context, s *session, stdout io.Reader, stdin io.WriteCloser, down <-chan struct{}, wait func() error, kill func()) error {
	conn := link.NewConn(stdout, stdin, stdin.Close)
	served := make(chan struct{})
	go func() {
		defer close(served)
		link.ServeConn(ctx, conn, c.handler, linkContext(s))
	}()
	select {
	case <-served:
	case <-down:
		_ = conn.Close()
		<-served
	}
	_ = conn.Close()
	exited := make(chan error, 1)
	go func() { exited <- wait() }()
	select {
	case err := <-exited:
		return err
	case <-time.After(c.cfg.KillGrace + 5*time.Second):
		c.log.Warn("shim did not exit after its link closed; killing it", logHost, c.hostOf(s).Name)
		kill()
		return <-exited
	}
}

// preambleWait bounds how long a started shim may take to open its link.
const preambleWait = 30 * time.Second

// awaitPreamble skips what a host's shell printed before the shim's link
// preamble (a chatty .bashrc), calling abort if the preamble does not come.
func awaitPreamble(r io.Reader, abort func()) (io.Reader, error) {
	type result struct {
		r   io.Reader
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := link.SkipPreamble(r)
		ch <- result{out, err}
	}()
	select {
	case res := <-ch:
		return res.r, res.err
	case <-time.After(preambleWait):
		abort()
		<-ch
		return nil, fmt.Errorf("the shim did not open its link within %s", preambleWait)
	}
}

// runLocalShim starts a shim as a child process and serves the worker
// protocol on its stdin/stdout until either side ends.
func (c *Coordinator) runLocalShim(ctx context.Context, s *session) error {
	if len(c.cfg.ShimCommand) == 0 {
		return errors.New("no shim command configured for local hosts")
	}
	name := c.hostOf(s).Name
	cmd := exec.Command(c.cfg.ShimCommand[0], c.cfg.ShimCommand[1:]...)
	cmd.Env = append(os.Environ(), c.cfg.ShimEnv...)
	cmd.Stderr = &lineLogger{log: c.log, host: name}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start shim %s: %w", c.cfg.ShimCommand[0], err)
	}
	c.log.Info("shim started", logHost, name, "pid", cmd.Process.Pid)
	out, err := awaitPreamble(stdout, func() { _ = cmd.Process.Kill() })
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("shim %s: %w", name, err)
	}
	err = c.serveShim(ctx, s, out, stdin, nil, cmd.Wait, func() { _ = cmd.Process.Kill() })
	if err != nil {
		return fmt.Errorf("shim: %w", err)
	}
	return nil
}

// lineLogger turns a shim's stderr into coordinator log lines.
type lineLogger struct {
	log  interface{ Info(string, ...any) }
	host string
	buf  []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := slices.Index(l.buf, '\n')
		if i < 0 {
			break
		}
		if line := string(l.buf[:i]); line != "" {
			l.log.Info("shim: "+line, logHost, l.host)
		}
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a line without end: flush what we have
		l.log.Info("shim: "+string(l.buf), logHost, l.host)
		l.buf = l.buf[:0]
	}
	return len(p), nil
}
