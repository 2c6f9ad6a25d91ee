// Package coordinator is mito's server: the HTTP API for users, the worker
// protocol for shims, authentication and authorization, the scheduler that
// hands out leases, the rescuer that requeues the work of lost hosts, and
// the host manager that starts a shim for every inventory host.
package coordinator

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/transport/ssh"
)

// Config configures a Coordinator. Store and Artifacts are required; every
// other field has a working zero value, documented with it.
type Config struct {
	// Store keeps users, groups, tasks and hosts.
	Store store.Store
	// Artifacts keeps the files tasks write.
	Artifacts artifacts.Store
	// Events carries change notifications. Default: an in-process bus.
	Events events.Bus
	// Logger receives the coordinator's log. Default: discard.
	Logger *slog.Logger

	// Hosts are the inventory's hosts. The coordinator starts a shim for
	// each and keeps it running while Run runs.
	Hosts []inventory.Host
	// ShimCommand is the argv that starts a shim speaking the worker
	// protocol on its stdin/stdout, for hosts with transport "local".
	// Required when such hosts exist.
	ShimCommand []string
	// ShimEnv is added to a local shim's environment (for example a work
	// directory for tests).
	ShimEnv []string
	// Shims maps "os/arch" (as Go names them: "linux/amd64") to a static
	// shim binary to push to SSH hosts of that platform. Required when SSH
	// hosts exist.
	Shims map[string]string
	// SSH configures connections to SSH hosts: the ssh_config to honour,
	// timeouts, keepalives. Pins and Logger are set by the coordinator.
	SSH ssh.Config
	// MaxHandshakes bounds concurrent SSH handshakes, since sshd refuses
	// connections past its MaxStartups (10 by default). Default 8.
	MaxHandshakes int

	// LeaseTTL is how long a claim holds without renewal. Default 30s.
	LeaseTTL time.Duration
	// KillGrace is the time a shim gives a task between SIGTERM and
	// SIGKILL. Default 5s.
	KillGrace time.Duration
	// LogCap bounds each output stream of an attempt. Default 16 MiB.
	LogCap int64
	// MaxArtifactSize bounds one artifact. Default 16 GiB.
	MaxArtifactSize int64
	// TokenTTL is the default lifetime of a login token. Default 30 days.
	TokenTTL time.Duration
	// MaxWait bounds long polls (claims, heartbeats, task waits). Default 25s.
	MaxWait time.Duration
	// Recheck is how often a long poll re-reads the store when no event
	// woke it, covering events lost by the bus. Default 2s.
	Recheck time.Duration
	// Now returns the time. Default time.Now; tests move it.
	Now func() time.Time

	// ID names this coordinator among those that share one store: it is
	// the owner of the hosts it drives (shown by hosts list). It must be
	// unique among running coordinators; a restart may reuse it, and then
	// takes its hosts back at once. Default: "hostname-pid-random".
	ID string
	// HostLeaseTTL is how long this coordinator's ownership of a host
	// holds without renewal (renewed every third of it). A host whose
	// coordinator died is taken over by another one within about 1.5×
	// HostLeaseTTL. Default 15s.
	HostLeaseTTL time.Duration
	// SweepEvery is how often the coordinator looks for objects in the
	// artifact store that no record points at (left by a crash between
	// an upload and its record, or by a failed delete) and deletes those
	// it already found at its previous look. Default 1h; negative
	// disables the sweep.
	SweepEvery time.Duration
}

func (c *Config) setDefaults() {
	if c.Events == nil {
		c.Events = events.NewLocal()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.KillGrace <= 0 {
		c.KillGrace = 5 * time.Second
	}
	if c.LogCap <= 0 {
		c.LogCap = tasks.DefaultLogCap
	}
	if c.MaxArtifactSize <= 0 {
		c.MaxArtifactSize = 16 << 30
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 30 * 24 * time.Hour
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 25 * time.Second
	}
	if c.Recheck <= 0 {
		c.Recheck = 2 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 8
	}
	if c.ID == "" {
		c.ID = defaultID()
	}
	if c.HostLeaseTTL <= 0 {
		c.HostLeaseTTL = 15 * time.Second
	}
	if c.SweepEvery == 0 {
		c.SweepEvery = time.Hour
	}
}

// Log attribute keys, constant so that logs can be searched.
const (
	logHost    = "host"
	logTask    = "task"
	logAttempt = "attempt"
	logUser    = "user"
	logErr     = "err"
)

// Coordinator serves the API and drives the hosts. Create it with New,
// serve Handler, and call Run to start the background work.
type Coordinator struct {
	cfg     Config
	store   store.Store
	log     *slog.Logger
	handler http.Handler
	// patterns lists the served routes, for the API documentation test.
	patterns []string

	// drivers counts the goroutines that drive inventory hosts.
	drivers sync.WaitGroup
	// handshakes holds a token per SSH handshake under way.
	handshakes chan struct{}
	// shimSums caches the SHA-256 of each shim binary by path.
	shimSums sync.Map
	// hostOps is the state of host operations (api_hosts_ops.go).
	hostOps *opsState
	// sweep is the state of the artifact store sweep (sweep.go).
	sweep sweepState

	// mu guards the fields below, and the mutable fields of every session
	// (host, env, lastSeen).
	mu       sync.Mutex
	sessions map[string]*session    // TCP worker sessions by id
	hosts    map[string]*hostDriver // inventory hosts by name
	runCtx   context.Context        // Run's context, once Run started
	cluster  string                 // the store's cluster id, once read
}

// New returns a coordinator for cfg.
func New(cfg Config) *Coordinator {
	cfg.setDefaults()
	c := &Coordinator{
		cfg:        cfg,
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		hostOps:    newOpsState(),
		store:      cfg.Store,
		log:        cfg.Logger,
		sessions:   make(map[string]*session),
		hosts:      make(map[string]*hostDriver),
	}
	c.handler = c.routes()
	return c
}

// Handler returns the HTTP handler of the user API and the worker protocol.
func (c *Coordinator) Handler() http.Handler { return c.handler }

// Run runs the rescuer, the host manager and the artifact store sweep
// until ctx ends. It returns
// once every goroutine it started has stopped and every local shim has
// exited.
func (c *Coordinator) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.rescue(ctx) })
	g.Go(func() error { return c.manageHosts(ctx) })
	g.Go(func() error { return c.expireSessions(ctx) })
	g.Go(func() error { return c.sweepLoop(ctx) })
	return g.Wait()
}

// publish announces a task change; a failure only delays waiters, so it is
// logged, not returned.
func (c *Coordinator) publish(ctx context.Context, t tasks.Task) {
	ev := events.Event{Task: t.ID, Group: t.Group, State: t.State, Host: t.Host}
	if err := c.cfg.Events.Publish(ctx, ev); err != nil {
		c.log.Warn("publish event", logTask, t.ID, logErr, err)
	}
}

// rescue requeues the tasks of hosts whose leases ran out.
func (c *Coordinator) rescue(ctx context.Context) error {
	every := c.cfg.LeaseTTL / 4
	if every < 100*time.Millisecond {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		changed, err := c.store.RequeueExpired(ctx, c.cfg.Now())
		if err != nil {
			if ctx.Err() == nil {
				c.log.Error("requeue expired leases", logErr, err)
			}
			continue
		}
		for _, task := range changed {
			c.log.Warn("lease expired", logTask, task.ID, logAttempt, task.Attempt, logHost, task.Host, "state", task.State)
			c.publish(ctx, task)
		}
	}
}
