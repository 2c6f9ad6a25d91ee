package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/mitolab/mito/coordinator/store"
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

// setHostState records a host's state, in memory and in the store.
func (c *Coordinator) setHostState(ctx context.Context, s *session, st tasks.HostState, lastErr string) {
	c.mu.Lock()
	s.host.State, s.host.LastError, s.host.UpdatedAt = st, lastErr, c.cfg.Now().UTC()
	h := s.host
	c.mu.Unlock()
	if err := c.store.PutHost(ctx, h); err != nil && ctx.Err() == nil {
		c.log.Warn("store host", logHost, h.Name, logErr, err)
	}
}

func claimParams(h tasks.Host, max int, ttl time.Duration, now time.Time) store.ClaimParams {
	return store.ClaimParams{Host: h.Name, Groups: h.Groups, Tags: h.Tags, Max: max, TTL: ttl, Now: now}
}

// manageHosts keeps a shim running for every inventory host until ctx ends.
func (c *Coordinator) manageHosts(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, h := range c.cfg.Hosts {
		s := &session{
			id:     newSessionID(),
			linked: true,
			env:    h.Env,
			host: tasks.Host{
				Name: h.Name, Transport: h.Transport, Tags: h.Tags, Groups: h.Groups,
				Slots: h.Slots, State: tasks.HostConnecting,
			},
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.driveHost(ctx, s)
		}()
	}
	wg.Wait()
	return nil
}

// driveHost connects a host, again and again with backoff, until ctx ends.
func (c *Coordinator) driveHost(ctx context.Context, s *session) {
	name := s.host.Name
	final := context.WithoutCancel(ctx)
	defer c.setHostState(final, s, tasks.HostOffline, "")
	if s.host.Transport != "local" {
		c.setHostState(ctx, s, tasks.HostUnreachable, fmt.Sprintf("transport %q is not supported by this coordinator", s.host.Transport))
		<-ctx.Done()
		return
	}
	backoff := minBackoff
	for ctx.Err() == nil {
		c.setHostState(ctx, s, tasks.HostConnecting, "")
		start := time.Now()
		err := c.runLocalShim(ctx, s)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > stableLink {
			backoff = minBackoff
		}
		msg := "shim exited"
		if err != nil {
			msg = err.Error()
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
