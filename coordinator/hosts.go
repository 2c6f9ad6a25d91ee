package coordinator

import (
	"context"
	"errors"
	"fmt"
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

// setHostState records a host's state, in memory and in the store. A
// draining host stays draining, whatever its link does, until it goes
// offline: it must not claim again after a reconnect.
func (c *Coordinator) setHostState(ctx context.Context, s *session, st tasks.HostState, lastErr string) {
	c.mu.Lock()
	h := c.setHostStateLocked(s, st, lastErr)
	c.mu.Unlock()
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
	inv    inventory.Host
	cancel context.CancelFunc
	done   chan struct{}
}

// manageHosts keeps a shim running for every inventory host until ctx
// ends, following inventory changes given to UpdateHosts.
func (c *Coordinator) manageHosts(ctx context.Context) error {
	c.mu.Lock()
	c.runCtx = ctx
	c.mu.Unlock()
	c.UpdateHosts(c.cfg.Hosts)
	<-ctx.Done()
	c.drivers.Wait()
	return nil
}

// UpdateHosts makes the coordinator drive exactly these hosts, as after an
// inventory reload: new hosts connect; removed hosts drain (their running
// tasks finish, they claim nothing new) and then disconnect; hosts whose
// connection settings or slots changed reconnect; other changes (tags,
// groups, env) apply to the next claim. It does nothing before Run.
func (c *Coordinator) UpdateHosts(hosts []inventory.Host) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx := c.runCtx
	if ctx == nil || ctx.Err() != nil {
		c.cfg.Hosts = hosts
		return
	}
	seen := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		seen[h.Name] = true
		old, ok := c.hosts[h.Name]
		switch {
		case !ok:
			c.hosts[h.Name] = c.startDriver(ctx, h, nil)
		case reconnectNeeded(old.inv, h):
			c.log.Info("host settings changed; reconnecting", logHost, h.Name)
			old.cancel()
			c.hosts[h.Name] = c.startDriver(ctx, h, old.done)
		default:
			old.inv = h
			old.s.env = h.Env
			old.s.host.Tags, old.s.host.Groups = h.Tags, h.Groups
		}
	}
	for name, d := range c.hosts {
		if !seen[name] {
			delete(c.hosts, name)
			c.log.Info("host removed from the inventory; draining", logHost, name)
			c.drivers.Add(1)
			go func() {
				defer c.drivers.Done()
				c.drain(ctx, d)
			}()
		}
	}
	c.cfg.Hosts = hosts
}

// reconnectNeeded reports whether a host's new settings need a new link.
func reconnectNeeded(old, new inventory.Host) bool {
	return old.Transport != new.Transport || old.Slots != new.Slots || inventory.SSHChanged(old, new)
}

// startDriver starts driving h once after (if not nil) is closed. It must
// be called with c.mu held.
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
			<-after
		}
		c.driveHost(dctx, d)
	}()
	return d
}

// drain lets a removed host finish its running tasks, claiming nothing
// new, then disconnects it.
func (c *Coordinator) drain(ctx context.Context, d *hostDriver) {
	defer d.cancel()
	c.mu.Lock()
	d.s.draining = true
	c.mu.Unlock()
	c.setHostState(ctx, d.s, tasks.HostDraining, "")
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		h, err := c.store.GetHost(ctx, d.s.host.Name)
		if err == nil && h.Running == 0 {
			c.log.Info("host drained", logHost, h.Name)
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

// driveHost connects a host, again and again with backoff, until ctx ends.
func (c *Coordinator) driveHost(ctx context.Context, d *hostDriver) {
	s := d.s
	name := s.host.Name
	final := context.WithoutCancel(ctx)
	defer func() {
		if c.hostOf(s).State != tasks.HostDraining || ctx.Err() != nil {
			c.setHostState(final, s, tasks.HostOffline, "")
		}
	}()
	backoff := minBackoff
	for ctx.Err() == nil {
		if st := c.hostOf(s).State; st != tasks.HostDraining {
			c.setHostState(ctx, s, tasks.HostConnecting, c.hostOf(s).LastError)
		}
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
		c.setHostState(ctx, s, tasks.HostUnreachable, msg)
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
			c.setHostState(ctx, d.s, tasks.HostReady, "")
		}
	}()
	err := c.connectHost(ctx, d)
	close(stop)
	<-done
	return err
}

// connectHost runs one link to a host until it ends.
func (c *Coordinator) connectHost(ctx context.Context, d *hostDriver) error {
	switch d.inv.Transport {
	case inventory.TransportLocal:
		return c.runLocalShim(ctx, d.s)
	case inventory.TransportSSH:
		return c.runSSHShim(ctx, d)
	}
	return fmt.Errorf("transport %q is not supported", d.inv.Transport)
}

// runLocalShim starts a shim as a child process and serves the worker
// protocol on its stdin/stdout until either side ends. When ctx ends it
// closes the shim's stdin, which tells the shim to kill its tasks and
// exit, and waits for it.
func (c *Coordinator) runLocalShim(ctx context.Context, s *session) error {
	if len(c.cfg.ShimCommand) == 0 {
		return errors.New("no shim command configured for local hosts")
	}
	name := s.host.Name
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
	conn := link.NewConn(stdout, stdin, stdin.Close)
	link.ServeConn(ctx, conn, c.handler, linkContext(s))
	_ = conn.Close()

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(c.cfg.KillGrace + 5*time.Second):
		c.log.Warn("shim did not exit; killing it", logHost, name)
		_ = cmd.Process.Kill()
		err = <-done
	}
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
