package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"
)

// Host ownership: when several coordinators share one store, each
// inventory host is driven by exactly one of them at a time. A driver
// takes the host's ownership lease in the store (store.AcquireHost) before
// it connects, renews it every HostLeaseTTL/3 while it holds it, and
// releases it when it stops cleanly. A coordinator that dies stops
// renewing, and another one that has the host in its inventory takes it
// over once the lease expires: it retries every HostLeaseTTL/2, so within
// about 1.5×HostLeaseTTL. Only the owner writes a host's record; the
// others leave it alone.

// ErrAbandonHosts, given as the cause of the cancellation of Run's context
// (context.WithCancelCause), makes the coordinator stop as if it had
// crashed: its hosts are disconnected but not marked offline, and their
// ownership leases are not released, so other coordinators take them over
// only when the leases expire. Tests use it to simulate a crash; an
// operator's restart with the same Config.ID picks its hosts up again at
// once.
var ErrAbandonHosts = errors.New("coordinator abandons its hosts")

// errHostLost is the cause of a driver's ownership context ending because
// another coordinator owns the host now, or the lease could not be renewed.
var errHostLost = errors.New("host ownership lost")

// defaultID returns a coordinator id that is unique across machines and
// restarts: hostname-pid-random.
func defaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "coordinator"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// owns reports whether d holds its host's ownership lease.
func (c *Coordinator) owns(d *hostDriver) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return d.owned
}

// setOwned records whether d holds its host's ownership lease.
func (c *Coordinator) setOwned(d *hostDriver, owned bool) {
	c.mu.Lock()
	d.owned = owned
	c.mu.Unlock()
}

// acquireHost waits until d holds its host's ownership lease, trying every
// HostLeaseTTL/2. It returns false if ctx ends first.
func (c *Coordinator) acquireHost(ctx context.Context, d *hostDriver) bool {
	name := c.hostOf(d.s).Name
	every := max(c.cfg.HostLeaseTTL/2, 10*time.Millisecond)
	waiting := false
	for {
		ok, err := c.store.AcquireHost(ctx, name, c.cfg.ID, c.cfg.Now(), c.cfg.HostLeaseTTL)
		switch {
		case ctx.Err() != nil:
			return false
		case err != nil:
			c.log.Warn("acquire host ownership", logHost, name, logErr, err)
		case ok:
			c.setOwned(d, true)
			if waiting {
				c.log.Warn("took over host from another coordinator", logHost, name, "coordinator", c.cfg.ID)
			} else {
				c.log.Info("host ownership acquired", logHost, name, "coordinator", c.cfg.ID)
			}
			return true
		case !waiting:
			owner := ""
			if h, err := c.store.GetHost(ctx, name); err == nil {
				owner = h.Coordinator
			}
			c.log.Info("host is driven by another coordinator; standing by", logHost, name, "owner", owner)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(every):
		}
	}
}

// holdHost renews d's ownership lease every HostLeaseTTL/3 until ctx ends.
// If another coordinator owns the host now, or renewals have failed for a
// whole HostLeaseTTL (so that another may have taken it over), it marks d
// as not owning the host and cancels ctx with errHostLost, which
// disconnects the host. The returned stop ends it and waits for it.
func (c *Coordinator) holdHost(ctx context.Context, d *hostDriver, lost context.CancelCauseFunc) (stop func()) {
	name := c.hostOf(d.s).Name
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ttl := c.cfg.HostLeaseTTL
		t := time.NewTicker(max(ttl/3, 10*time.Millisecond))
		defer t.Stop()
		lastOK := c.cfg.Now()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
			now := c.cfg.Now()
			ok, err := c.store.AcquireHost(hctx, name, c.cfg.ID, now, ttl)
			switch {
			case hctx.Err() != nil:
				return
			case err == nil && ok:
				lastOK = now
				continue
			case err == nil:
				owner := ""
				if h, err := c.store.GetHost(hctx, name); err == nil {
					owner = h.Coordinator
				}
				c.log.Error("SPLIT BRAIN: another coordinator took over this host; disconnecting it (its running tasks are killed and requeued)",
					logHost, name, "coordinator", c.cfg.ID, "owner", owner)
			case now.Sub(lastOK) < ttl:
				c.log.Warn("renew host ownership", logHost, name, logErr, err)
				continue
			default:
				c.log.Error("cannot renew host ownership for the whole lease; disconnecting the host, which another coordinator may have taken over",
					logHost, name, "coordinator", c.cfg.ID, "since", lastOK, logErr, err)
			}
			c.setOwned(d, false)
			lost(errHostLost)
			return
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// releaseHost gives d's host up, if d holds it, so that another
// coordinator takes it over without waiting for the lease to expire.
func (c *Coordinator) releaseHost(d *hostDriver) {
	if !c.owns(d) {
		return
	}
	c.setOwned(d, false)
	name := c.hostOf(d.s).Name
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.store.ReleaseHost(ctx, name, c.cfg.ID); err != nil {
		c.log.Warn("release host ownership", logHost, name, logErr, err)
		return
	}
	c.log.Info("host ownership released", logHost, name, "coordinator", c.cfg.ID)
}

// ID returns the coordinator's id (Config.ID, or the default made for it).
func (c *Coordinator) ID() string { return c.cfg.ID }
