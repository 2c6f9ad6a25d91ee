package coordinator

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// session is one worker's link: a shim the coordinator started (its host
// comes from the inventory) or a `mito worker` that registered over TCP.
type session struct {
	id   string
	host tasks.Host
	env  map[string]string
	// linked marks sessions over a shim's link, which need no token.
	linked bool
	// user is the user a TCP worker authenticated as, and tokenHash the
	// token it used: claims re-check both, so that a revoked token, a
	// disabled user or a lost role stops the worker getting new work.
	user      string
	tokenHash string
	// lastSeen is when the session last called (a long poll counts as a
	// call until it ends), and inflight how many of its calls are under
	// way: a TCP worker with none under way and silent for long is gone.
	// stored is when its host record was last written, which tells other
	// coordinators (and this one after a restart) that it is alive.
	// instance is the worker process's RegisterRequest.Instance. Guarded
	// by Coordinator.mu, like the fields below.
	lastSeen time.Time
	inflight int
	stored   time.Time
	instance string
	// draining marks a host removed from the inventory: it finishes its
	// running tasks and claims nothing new.
	draining bool
	// flakySince is when the host's last link failed; zero once a link has
	// held for stableLink.
	flakySince time.Time
	// inputs is set when the worker announced tasks.FeatureInputs at its
	// last registration. A worker without it (a `mito worker` of an older
	// build) would drop a task's inputs unread and run its command without
	// them, so it claims only tasks that have none.
	inputs bool
}

const sessionKey ctxKey = iota + 100

func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// linkContext returns the base context of requests over a shim's link: the
// session is fixed by the link itself.
func linkContext(s *session) func(context.Context) context.Context {
	return func(ctx context.Context) context.Context { return context.WithValue(ctx, sessionKey, s) }
}

func (c *Coordinator) addSession(s *session) {
	c.mu.Lock()
	s.lastSeen = c.cfg.Now()
	c.sessions[s.id] = s
	c.mu.Unlock()
}

// dropUserSessions forgets the TCP worker sessions of a user whose
// password changed or who was disabled; their workers must register again.
func (c *Coordinator) dropUserSessions(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, s := range c.sessions {
		if s.user == user {
			delete(c.sessions, id)
		}
	}
}

// sessionIdle is how long a TCP worker may stay silent, with no call
// under way, before its host shows offline: three quarters of a lease
// TTL, so that with the sweep every quarter it is offline within a TTL.
// A live worker always has a claim or a heartbeat under way, both long
// polls, and leaves only a moment between two.
func (c *Coordinator) sessionIdle() time.Duration {
	return c.cfg.LeaseTTL * 3 / 4
}

// sessionForget is how long a silent TCP worker's session is kept: one
// that calls again within it (it was stopped, or cut off, for a while)
// comes back ready without registering again, and its late writes are
// refused for what they are (a stale lease), not for an unknown session.
func (c *Coordinator) sessionForget() time.Duration {
	return max(2*c.cfg.LeaseTTL, c.cfg.MaxWait+c.cfg.LeaseTTL)
}

// liveLocked reports whether a TCP session's worker is alive; c.mu is held.
func (c *Coordinator) liveLocked(s *session, now time.Time) bool {
	return s.inflight > 0 || now.Sub(s.lastSeen) <= c.sessionIdle()
}

// workerSession wraps a worker handler: the session comes from the link,
// or from the X-Mito-Session header of a registered TCP worker.
func (c *Coordinator) workerSession(h func(http.ResponseWriter, *http.Request, *session) error) http.Handler {
	return c.errorHandler(func(w http.ResponseWriter, r *http.Request) error {
		if s, ok := r.Context().Value(sessionKey).(*session); ok {
			return h(w, r, s)
		}
		id := r.Header.Get("X-Mito-Session")
		now := c.cfg.Now()
		c.mu.Lock()
		s := c.sessions[id]
		var rec *tasks.Host
		if s != nil {
			s.lastSeen = now
			s.inflight++
			// The record says the worker lives, for other coordinators
			// and for this one after a restart; a quarter of a TTL old
			// is fresh enough. A worker shown offline for its silence
			// is back.
			if now.Sub(s.stored) > c.cfg.LeaseTTL/4 || s.host.State == tasks.HostOffline {
				if s.host.State == tasks.HostOffline {
					c.log.Info("worker calls again; ready", logHost, s.host.Name)
					s.host.State = tasks.HostReady
				}
				s.stored = now
				h := c.setHostStateLocked(s, s.host.State, s.host.LastError)
				rec = &h
			}
		}
		c.mu.Unlock()
		if s == nil {
			return tasks.Errorf(tasks.EUnauthorized, "unknown worker session: register again")
		}
		defer func() { // a long poll counts as activity until it ends
			c.mu.Lock()
			s.lastSeen = c.cfg.Now()
			s.inflight--
			c.mu.Unlock()
		}()
		if rec != nil {
			if err := c.store.PutHost(r.Context(), *rec); err != nil {
				c.log.Warn("store host", logHost, rec.Name, logErr, err)
			}
		}
		return h(w, r, s)
	})
}

func (c *Coordinator) registerResponse(ctx context.Context, s *session) (tasks.RegisterResponse, error) {
	h := c.hostOf(s)
	mode := c.artifactsMode(s)
	_, canGet := c.cfg.Artifacts.(getPresigner)
	cluster, err := c.clusterID(ctx)
	if err != nil {
		return tasks.RegisterResponse{}, err
	}
	return tasks.RegisterResponse{
		Session:      s.id,
		Host:         h.Name,
		Slots:        h.Slots,
		Env:          c.hostEnv(s),
		LeaseTTL:     tasks.Duration(c.cfg.LeaseTTL),
		Heartbeat:    tasks.Duration(c.cfg.LeaseTTL / 3),
		LogCap:       c.cfg.LogCap,
		KillGrace:    tasks.Duration(c.cfg.KillGrace),
		Artifacts:    mode,
		DirectInputs: canGet && mode != tasks.ArtifactsRelay,
		RunScope:     cluster + "-" + h.Name,
	}, nil
}

// clusterID returns the store's cluster id, read once.
func (c *Coordinator) clusterID(ctx context.Context) (string, error) {
	c.mu.Lock()
	id := c.cluster
	c.mu.Unlock()
	if id != "" {
		return id, nil
	}
	id, err := c.store.ClusterID(ctx)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.cluster = id
	c.mu.Unlock()
	return id, nil
}

func (c *Coordinator) handleRegister(w http.ResponseWriter, r *http.Request) error {
	var req tasks.RegisterRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	s, ok := r.Context().Value(sessionKey).(*session)
	if !ok {
		var err error
		if s, err = c.registerTCP(r, req); err != nil {
			return err
		}
	}
	c.mu.Lock()
	s.host.OS, s.host.Arch = req.OS, req.Arch
	s.inputs = slices.Contains(req.Features, tasks.FeatureInputs)
	c.mu.Unlock()
	// The answer first: a host shows ready once its worker can use it.
	resp, err := c.registerResponse(r.Context(), s)
	if err != nil {
		return err
	}
	if len(req.Running) > 0 {
		stops, err := c.renew(r.Context(), s, req.Running)
		if err != nil {
			return err
		}
		resp.Stop = stops
	}
	c.mu.Lock()
	h := c.setHostStateLocked(s, tasks.HostReady, "")
	c.mu.Unlock()
	c.log.Info("worker registered", logHost, h.Name, "transport", h.Transport, "os", req.OS, "arch", req.Arch)
	if err := c.store.PutHost(r.Context(), h); err != nil {
		return err
	}
	if !s.linked {
		c.addSession(s)
	}
	if !slices.Contains(req.Features, tasks.FeatureInputs) {
		c.log.Info("worker is too old to fetch task inputs; it will get no task that has inputs", logHost, h.Name, "version", cmp.Or(req.Version, "unknown"))
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// registerTCP admits a standalone worker: its user must have write in
// every group it offers to serve.
func (c *Coordinator) registerTCP(r *http.Request, req tasks.RegisterRequest) (*session, error) {
	u, tokenHash, err := c.authenticate(r)
	if err != nil {
		return nil, err
	}
	if err := tasks.ValidName("name", req.Name); err != nil {
		return nil, err
	}
	if len(req.Groups) == 0 {
		req.Groups = []string{u.Name}
	}
	for _, g := range req.Groups {
		if _, err := c.requireRole(r.Context(), u, g, tasks.RoleWrite); err != nil {
			return nil, err
		}
	}
	for _, t := range req.Tags {
		if err := tasks.ValidName("tags", t); err != nil {
			return nil, err
		}
	}
	switch {
	case req.Slots == 0:
		req.Slots = 1
	case req.Slots < 0 || req.Slots > 1024:
		return nil, tasks.Invalid("slots", "must be between 1 and 1024, got %d", req.Slots)
	}
	if h, err := c.store.GetHost(r.Context(), req.Name); err == nil && h.Transport != "worker" {
		return nil, &tasks.Error{Code: tasks.EConflict, Field: "name", Message: fmt.Sprintf("name: host %q is an inventory host", req.Name)}
	}
	// A name held by another user's worker is not up for grabs, nor one
	// held by another live worker process: two workers of one name would
	// take each other's session in turns. The same process registering
	// again (the coordinator restarted, or forgot its session) takes its
	// name back, as does any worker once the old one is gone.
	now := c.cfg.Now()
	c.mu.Lock()
	for id, other := range c.sessions {
		if other.host.Name != req.Name {
			continue
		}
		if other.user != u.Name {
			c.mu.Unlock()
			return nil, &tasks.Error{Code: tasks.EConflict, Field: "name", Message: fmt.Sprintf("name: a worker of user %s is registered as %q", other.user, req.Name)}
		}
		if req.Instance != "" && other.instance != "" && req.Instance != other.instance && c.liveLocked(other, now) {
			seen := "calling now"
			if other.inflight == 0 {
				seen = fmt.Sprintf("last seen %s ago", now.Sub(other.lastSeen).Round(time.Second))
			}
			c.mu.Unlock()
			return nil, &tasks.Error{Code: tasks.EConflict, Field: "name", Message: fmt.Sprintf(
				"name: another worker named %q is running (%s); start this one with its own --name, or stop the other (a worker that stopped without saying so frees its name within %s)",
				req.Name, seen, c.cfg.LeaseTTL)}
		}
		delete(c.sessions, id)
	}
	c.mu.Unlock()
	tags := slices.Clone(req.Tags)
	slices.Sort(tags)
	return &session{
		id:        newSessionID(),
		user:      u.Name,
		tokenHash: tokenHash,
		instance:  req.Instance,
		host: tasks.Host{
			Name: req.Name, Transport: "worker", Tags: slices.Compact(tags), Groups: req.Groups,
			Slots: req.Slots, State: tasks.HostReady, OS: req.OS, Arch: req.Arch,
		},
	}, nil
}

func (c *Coordinator) handleClaim(w http.ResponseWriter, r *http.Request, s *session) error {
	var req tasks.ClaimRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Max < 1 {
		return tasks.Invalid("max", "must be at least 1, got %d", req.Max)
	}
	// The inventory may have lowered the host's slots since the shim
	// registered: it gets no more than the slots say.
	req.Max = min(req.Max, c.hostOf(s).Slots)
	groups, err := c.claimGroups(r.Context(), s)
	if err != nil {
		return err
	}
	wait := min(time.Duration(req.Wait), c.cfg.MaxWait)
	as, err := c.claim(r.Context(), s, groups, req.Max, wait)
	if err != nil {
		return err
	}
	if as == nil {
		as = []tasks.Assignment{}
	}
	for i := range as {
		as[i].Task.Env = mergeEnv(c.hostEnv(s), as[i].Task.Env)
	}
	writeJSON(w, http.StatusOK, tasks.ClaimResponse{Assignments: as})
	return nil
}

// mergeEnv puts the task's env over the host's.
func mergeEnv(host, task map[string]string) map[string]string {
	if len(host) == 0 {
		return task
	}
	out := make(map[string]string, len(host)+len(task))
	for k, v := range host {
		out[k] = v
	}
	for k, v := range task {
		out[k] = v
	}
	return out
}

// claimGroups returns the groups a worker may claim for now. A TCP worker
// acts for its user, so the user's token must still be valid and the user
// must still have write in a group for the worker to get its tasks.
func (c *Coordinator) claimGroups(ctx context.Context, s *session) ([]string, error) {
	h := c.hostOf(s)
	if s.linked {
		return h.Groups, nil
	}
	t, u, err := c.store.LookupToken(ctx, s.tokenHash)
	switch {
	case errors.Is(err, tasks.ErrNotFound), err == nil && (u.Disabled || !c.cfg.Now().Before(t.Expires)):
		c.dropUserSessions(s.user)
		return nil, tasks.Errorf(tasks.EUnauthorized, "the worker's token was revoked or expired, or its user disabled")
	case err != nil:
		return nil, err
	}
	var groups []string
	for _, g := range h.Groups {
		role, err := c.store.Role(ctx, s.user, g)
		if err != nil && !errors.Is(err, tasks.ErrNotFound) {
			return nil, err
		}
		if role >= tasks.RoleWrite {
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return nil, tasks.Errorf(tasks.EForbidden, "user %s no longer has write in any group this worker serves", s.user)
	}
	return groups, nil
}

// claim leases tasks for s in groups, waiting up to wait for one to be
// claimable. It claims nothing once the caller has gone, so no lease is
// handed to a shim that will never hear of it.
func (c *Coordinator) claim(ctx context.Context, s *session, groups []string, max int, wait time.Duration) ([]tasks.Assignment, error) {
	var as []tasks.Assignment
	// A task becomes claimable when it is queued, or when the last source
	// of its task inputs ends (the store skips it until then), so a task
	// of a served group that ends wakes the claim too: a pipeline's next
	// step starts at once. Running and log events never matter here. A
	// source in a group the host does not serve wakes nobody; the Recheck
	// finds its dependents.
	err := c.waitFor(ctx, wait, func(ev events.Event) bool {
		return (ev.State == tasks.Queued || ev.State.Final()) && slices.Contains(groups, ev.Group)
	}, func() (bool, error) {
		h := c.hostOf(s)
		c.mu.Lock()
		draining, inputs := s.draining, s.inputs
		c.mu.Unlock()
		if draining {
			return true, nil // a draining host finishes what it runs and takes nothing new
		}
		h.Groups = groups
		var err error
		p := claimParams(h, max, c.cfg.LeaseTTL, c.cfg.Now().UTC())
		p.NoInputs = !inputs
		as, err = c.store.Claim(ctx, p)
		if err != nil {
			return false, err
		}
		for _, a := range as {
			c.log.Info("task claimed", logTask, a.Task.ID, logAttempt, a.Lease.Attempt, logHost, h.Name)
			c.publish(ctx, a.Task)
		}
		return len(as) > 0, nil
	})
	return as, err
}

// waitFor runs check until it reports done, the wait runs out or ctx ends.
// It runs check again whenever an event that wake accepts arrives, and
// every Recheck in any case, since events are only hints. check is never
// run once ctx has ended.
func (c *Coordinator) waitFor(ctx context.Context, wait time.Duration, wake func(events.Event) bool, check func() (bool, error)) error {
	evs, cancel := c.cfg.Events.Subscribe()
	defer cancel()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	recheck := time.NewTicker(c.cfg.Recheck)
	defer recheck.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if done, err := check(); done || err != nil {
			return err
		}
	wait:
		select {
		case <-ctx.Done():
			return nil
		case <-deadline.C:
			return nil
		case <-recheck.C:
		case ev, ok := <-evs:
			if !ok {
				evs = nil // the bus is gone; the recheck timer carries on
				goto wait
			}
			if !wake(ev) {
				goto wait
			}
		}
	}
}

func (c *Coordinator) handleHeartbeat(w http.ResponseWriter, r *http.Request, s *session) error {
	var req tasks.HeartbeatRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ids := make(map[tasks.ID]bool, len(req.Running))
	for _, ref := range req.Running {
		ids[ref.Task] = true
	}
	wait := min(time.Duration(req.Wait), c.cfg.MaxWait)
	if len(req.Running) == 0 {
		wait = 0
	}
	var stops []tasks.Stop
	// Wake only on a cancel or a requeue of a running attempt, so that the
	// shim hears of it at once; an attempt's own finish needs no answer.
	err := c.waitFor(r.Context(), wait, func(ev events.Event) bool {
		return ids[ev.Task] && (ev.State == tasks.Cancelled || ev.State == tasks.Queued)
	}, func() (bool, error) {
		var err error
		stops, err = c.renew(r.Context(), s, req.Running)
		return len(stops) > 0 || err != nil, err
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tasks.HeartbeatResponse{Stop: stops})
	return nil
}

// renew extends the host's current leases and says why the others must stop.
func (c *Coordinator) renew(ctx context.Context, s *session, refs []tasks.LeaseRef) ([]tasks.Stop, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	stale, err := c.store.Renew(ctx, refs, c.cfg.Now().UTC(), c.cfg.LeaseTTL)
	if err != nil {
		return nil, err
	}
	stops := make([]tasks.Stop, 0, len(stale))
	for _, ref := range stale {
		reason := "lease lost"
		if t, err := c.store.GetTask(ctx, ref.Task); err == nil && t.Attempt == ref.Attempt && t.State.Final() {
			switch {
			case t.State == tasks.Cancelled:
				reason = "cancelled"
			case !strings.HasPrefix(t.Error, hostLostPrefix):
				continue // the attempt ended by its own report: nothing to stop
			}
		}
		c.log.Info("stopping attempt", logTask, ref.Task, logAttempt, ref.Attempt, logHost, c.hostOf(s).Name, "reason", reason)
		stops = append(stops, tasks.Stop{Task: ref.Task, Attempt: ref.Attempt, Reason: reason})
	}
	return stops, nil
}

func (c *Coordinator) handleRelease(w http.ResponseWriter, r *http.Request, s *session) error {
	var req tasks.ReleaseRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	released, err := c.release(r.Context(), s, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tasks.ReleaseResponse{Released: released})
	return nil
}

// maxReleaseReason bounds the reason a worker gives, which goes into the
// error of a task that had no attempts left.
const maxReleaseReason = 200

// release ends the attempts of req that the session's host still holds:
// its worker says they are dead, so they need not wait for their leases to
// run out.
func (c *Coordinator) release(ctx context.Context, s *session, req tasks.ReleaseRequest) ([]tasks.LeaseRef, error) {
	if len(req.Attempts) > store.MaxClaim {
		return nil, tasks.Invalid("attempts", "at most %d at a time, got %d", store.MaxClaim, len(req.Attempts))
	}
	reason := cmp.Or(strings.TrimSpace(req.Reason), "released by its worker")
	if len(reason) > maxReleaseReason {
		return nil, tasks.Invalid("reason", "at most %d bytes, got %d", maxReleaseReason, len(reason))
	}
	host := c.hostOf(s).Name
	changed, err := c.store.ReleaseLeases(ctx, host, req.Attempts, reason, c.cfg.Now().UTC())
	if err != nil {
		return nil, err
	}
	released := make([]tasks.LeaseRef, 0, len(changed))
	for _, t := range changed {
		c.log.Warn("attempt released by its worker", logTask, t.ID, logAttempt, t.Attempt, logHost, host, "reason", reason, "state", t.State)
		c.publish(ctx, t)
		for _, ref := range req.Attempts {
			if ref.Task == t.ID && ref.Attempt == t.Attempt {
				released = append(released, ref)
				break
			}
		}
	}
	return released, nil
}

// hostLostPrefix starts the error of a task failed by the rescuer (see
// store.Store.RequeueExpired).
const hostLostPrefix = "host lost"

// leaseFromRequest reads the lease of a raw-body worker call.
func leaseFromRequest(r *http.Request) (tasks.LeaseRef, error) {
	id, err := pathID(r)
	if err != nil {
		return tasks.LeaseRef{}, err
	}
	attempt, err := queryInt(r, "attempt", 0)
	if err != nil {
		return tasks.LeaseRef{}, err
	}
	if attempt < 1 {
		return tasks.LeaseRef{}, tasks.Invalid("attempt", "is required")
	}
	tok := r.Header.Get("X-Mito-Lease")
	if tok == "" {
		return tasks.LeaseRef{}, tasks.Invalid("X-Mito-Lease", "header is required")
	}
	return tasks.LeaseRef{Task: id, Attempt: int(attempt), Token: tok}, nil
}

// maxLogChunk bounds one log upload.
const maxLogChunk = 4 << 20

func (c *Coordinator) handleAppendLog(w http.ResponseWriter, r *http.Request, s *session) error {
	ref, err := leaseFromRequest(r)
	if err != nil {
		return err
	}
	stream, err := tasks.ParseStream(r.URL.Query().Get("stream"))
	if err != nil {
		return err
	}
	off, err := queryInt(r, "offset", -1)
	if err != nil {
		return err
	}
	if off < 0 {
		return tasks.Invalid("offset", "is required")
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLogChunk))
	if err != nil {
		return jsonError(err)
	}
	if off+int64(len(data)) > c.cfg.LogCap {
		return &tasks.Error{Code: tasks.ETooLarge, Field: "offset", Message: fmt.Sprintf("offset: log would exceed the cap of %d bytes", c.cfg.LogCap)}
	}
	if err := c.store.AppendLog(r.Context(), ref, stream, off, data); err != nil {
		return err
	}
	c.publishLog(r.Context(), ref.Task, stream, off, off+int64(len(data)))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (c *Coordinator) handleUploadArtifact(w http.ResponseWriter, r *http.Request, s *session) error {
	ref, err := leaseFromRequest(r)
	if err != nil {
		return err
	}
	name, err := artifacts.CleanName(r.PathValue("name"))
	if err != nil {
		return err
	}
	// Check the lease before taking the bytes: a stale attempt's upload is
	// refused without storing anything.
	if stale, err := c.store.Renew(r.Context(), []tasks.LeaseRef{ref}, c.cfg.Now().UTC(), c.cfg.LeaseTTL); err != nil {
		return err
	} else if len(stale) > 0 {
		return tasks.Errorf(tasks.EStaleLease, "task %d attempt %d: lease is no longer current", ref.Task, ref.Attempt)
	}
	if r.ContentLength > c.cfg.MaxArtifactSize {
		return &tasks.Error{Code: tasks.ETooLarge, Field: "name", Message: fmt.Sprintf("artifact %s: %d bytes is over the limit of %d", name, r.ContentLength, c.cfg.MaxArtifactSize)}
	}
	// Refuse what the group's quota cannot take before the bytes come;
	// AddArtifact charges the quota for good.
	rm, err := c.artifactRoom(r.Context(), ref, name)
	if err != nil {
		return err
	}
	if err := rm.check(r.ContentLength); err != nil {
		return err
	}
	key := artifactKey(ref.Task, ref.Attempt, name)
	size, sum, err := c.cfg.Artifacts.Put(r.Context(), key, rm.limit(http.MaxBytesReader(w, r.Body, c.cfg.MaxArtifactSize)))
	if err != nil {
		return fmt.Errorf("store artifact %s: %w", name, err)
	}
	a := tasks.Artifact{Task: ref.Task, Attempt: ref.Attempt, Name: name, Size: size, SHA256: sum, CreatedAt: c.cfg.Now().UTC()}
	if err := c.store.AddArtifact(r.Context(), ref, a); err != nil {
		if errors.Is(err, tasks.ErrStaleLease) || errors.Is(err, tasks.ErrQuota) {
			c.dropUnrecorded(context.WithoutCancel(r.Context()), ref, name, key)
		}
		return err
	}
	writeJSON(w, http.StatusCreated, a)
	return nil
}

func (c *Coordinator) handleFinish(w http.ResponseWriter, r *http.Request, s *session) error {
	var req tasks.FinishRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if req.Lease.Task != id {
		return tasks.Invalid("lease.task", "is %d but the path says %d", req.Lease.Task, id)
	}
	if err := req.Result.Validate(); err != nil {
		return err
	}
	// The coordinator's clock ends the attempt, as it started it: mixing
	// in the host's clock would make durations lie under clock skew.
	req.Result.FinishedAt = c.cfg.Now().UTC()
	t, err := c.store.Finish(r.Context(), req.Lease, req.Result)
	if err != nil {
		return err
	}
	c.log.Info("task finished", logTask, t.ID, logAttempt, t.Attempt, logHost, t.Host, "state", t.State)
	c.publish(r.Context(), t)
	writeJSON(w, http.StatusOK, t)
	return nil
}

// expireSessions forgets TCP workers that stopped calling, and marks
// their hosts offline; their leases run out on their own. It also marks
// offline the workers whose records nobody refreshed for a lease TTL:
// workers of another coordinator that died, or of this one before it
// restarted, which no session here will ever expire.
func (c *Coordinator) expireSessions(ctx context.Context) error {
	t := time.NewTicker(max(c.cfg.LeaseTTL/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := c.cfg.Now()
		var gone []tasks.Host
		live := map[string]bool{}
		c.mu.Lock()
		for id, s := range c.sessions {
			if s.linked {
				continue
			}
			live[s.host.Name] = true
			if c.liveLocked(s, now) {
				continue
			}
			if now.Sub(s.lastSeen) > c.sessionForget() {
				delete(c.sessions, id)
			}
			if s.host.State != tasks.HostOffline {
				s.stored = now
				gone = append(gone, c.setHostStateLocked(s, tasks.HostOffline, "worker stopped calling"))
			}
		}
		c.mu.Unlock()
		for _, h := range gone {
			c.log.Info("worker stopped calling; offline", logHost, h.Name)
			if err := c.store.PutHost(ctx, h); err != nil {
				c.log.Warn("store host", logHost, h.Name, logErr, err)
			}
		}
		hosts, err := c.store.ListHosts(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("list hosts", logErr, err)
			}
			continue
		}
		for _, h := range hosts {
			if h.Transport != "worker" || h.State == tasks.HostOffline || live[h.Name] || now.Sub(h.UpdatedAt) <= c.cfg.LeaseTTL {
				continue
			}
			c.log.Info("worker's record not refreshed for a lease TTL; offline", logHost, h.Name, "updated_at", h.UpdatedAt)
			h.State, h.LastError, h.UpdatedAt = tasks.HostOffline, "worker stopped calling", now.UTC()
			if err := c.store.PutHost(ctx, h); err != nil {
				c.log.Warn("store host", logHost, h.Name, logErr, err)
			}
		}
	}
}

func (c *Coordinator) handleDeregister(w http.ResponseWriter, r *http.Request, s *session) error {
	var req tasks.ReleaseRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if _, err := c.release(r.Context(), s, req); err != nil {
		return err
	}
	if !s.linked {
		// An inventory host's state is its link's; a TCP worker that
		// says goodbye is offline now.
		c.mu.Lock()
		delete(c.sessions, s.id)
		h := c.setHostStateLocked(s, tasks.HostOffline, "worker stopped")
		c.mu.Unlock()
		if err := c.store.PutHost(r.Context(), h); err != nil {
			return err
		}
		c.log.Info("worker stopped; offline", logHost, h.Name)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
