package faults_test

import (
	"context"
	"syscall"
	"time"
)

// The injectors. Each runs until ctx ends, records every fault it
// injects, and undoes what it did before it returns (a frozen shim is
// thawed, a service started again, a link brought up).

// loopback returns the run's loopback hosts.
func (r *run) loopback() []*sshHost {
	var out []*sshHost
	for _, h := range r.hosts {
		if h.ns == "" {
			out = append(out, h)
		}
	}
	return out
}

// pick returns a random loopback host.
func (r *run) pick() *sshHost {
	hs := r.loopback()
	return hs[r.rng.IntN(len(hs))]
}

// jitter returns d ± 50%.
func (r *run) jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(r.rng.Int64N(int64(d)+1))
}

// estimate is about how long the run's tasks take without faults.
func (r *run) estimate() time.Duration {
	n := r.sz.nTasks
	if r.sc.shim {
		n = r.sz.shimTasks
	}
	return time.Duration(n) * (r.sz.taskMin + r.sz.taskMax) / 2 / time.Duration(len(r.loopback())*r.sz.slots)
}

// injectShimKill SIGKILLs the shim of a random host every few seconds.
func injectShimKill(ctx context.Context, r *run) {
	for sleep(ctx, r.jitter(r.sz.killEvery)) {
		h := r.pick()
		for _, p := range h.shims() {
			if syscall.Kill(p.pid, syscall.SIGKILL) == nil {
				now := time.Now()
				r.addFault("shim SIGKILL", h.name, now, now)
			}
		}
	}
}

// injectShimStop freezes the shim of a random host for three lease TTLs,
// then thaws it, again and again.
func injectShimStop(ctx context.Context, r *run) {
	for sleep(ctx, r.jitter(r.sz.killEvery)) {
		h := r.pick()
		var stopped []int
		for _, p := range h.shims() {
			if syscall.Kill(p.pid, syscall.SIGSTOP) == nil {
				stopped = append(stopped, p.pid)
			}
		}
		if len(stopped) == 0 {
			continue
		}
		from := time.Now()
		sleep(ctx, 3*r.sz.ttl)
		for _, pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		r.addFault("shim SIGSTOP", h.name, from, time.Now())
	}
}

// injectConnKill kills the sshd process of a random host's SSH
// connection: the session dies under the shim.
func injectConnKill(ctx context.Context, r *run) {
	for sleep(ctx, r.jitter(r.sz.killEvery)) {
		h := r.pick()
		for _, p := range h.connections() {
			if syscall.Kill(p.pid, syscall.SIGKILL) == nil {
				now := time.Now()
				r.addFault("SSH connection killed", h.name, now, now)
			}
		}
	}
}

// injectCoordinatorRestart SIGKILLs the coordinator and starts it again,
// twice, a third and two thirds into the run.
func injectCoordinatorRestart(ctx context.Context, r *run) {
	c := r.coords[0]
	for range 2 {
		if !sleep(ctx, r.estimate()/3) {
			return
		}
		from := time.Now()
		c.kill()
		c.start(r.t)
		r.addFault("coordinator SIGKILL", "", from, time.Now())
	}
}

// injectPostgresStop stops PostgreSQL for a while, a third into the run.
func injectPostgresStop(ctx context.Context, r *run) {
	if !sleep(ctx, r.estimate()/3) {
		return
	}
	from := time.Now()
	r.pg.stop(r.t)
	sleep(context.WithoutCancel(ctx), r.sz.serviceDown)
	r.pg.start(r.t)
	r.addFault("PostgreSQL stopped", "", from, time.Now())
}

// injectRedisStop stops Redis for a while, a third into the run.
func injectRedisStop(ctx context.Context, r *run) {
	if !sleep(ctx, r.estimate()/3) {
		return
	}
	from := time.Now()
	r.redis.stop()
	sleep(context.WithoutCancel(ctx), r.sz.serviceDown)
	r.redis.start(r.t)
	r.addFault("Redis stopped", "", from, time.Now())
}

// hostLeaseTTL is the coordinators' default host ownership lease: a
// crashed one's hosts are taken over within about 1.5 of it.
const hostLeaseTTL = 15 * time.Second

// injectCoordinatorCrash SIGKILLs, a third into the run, the one of two
// coordinators that drives the most hosts, for good.
func injectCoordinatorCrash(ctx context.Context, r *run) {
	if !sleep(ctx, r.estimate()/3) {
		return
	}
	hosts, err := r.live().ListHosts(ctx)
	if err != nil {
		r.t.Errorf("list hosts: %v", err)
		return
	}
	count := map[string]int{}
	for _, h := range hosts {
		count[h.Coordinator]++
	}
	victim := r.coords[0]
	if count[r.coords[1].name] > count[victim.name] {
		victim = r.coords[1]
	}
	from := time.Now()
	victim.kill()
	r.t.Logf("killed %s, which drove %d of %d hosts", victim.name, count[victim.name], len(hosts))
	r.addFault("coordinator SIGKILL", "", from, from.Add(2*hostLeaseTTL))
}

// injectPartition cuts the netns host's link for three lease TTLs, again
// and again.
func injectPartition(ctx context.Context, r *run) {
	var h *sshHost
	for _, x := range r.hosts {
		if x.ns != "" {
			h = x
		}
	}
	for sleep(ctx, r.jitter(2*r.sz.killEvery)) {
		h.setLink(r.t, false)
		from := time.Now()
		sleep(context.WithoutCancel(ctx), 3*r.sz.ttl)
		h.setLink(r.t, true)
		r.addFault("host partitioned", h.name, from, time.Now())
	}
}

// injectCPUHog keeps every CPU busy for the whole run: a load, not a
// fault, so no requeue may come of it.
func injectCPUHog(ctx context.Context, r *run) {
	cpuHog(ctx, r.t)
}
