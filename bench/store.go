package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// countingStore counts the store calls the coordinator makes, and the time
// they take, so that a run can say how many round trips a task costs and
// how much of its time they are. Calls it does not override pass through
// uncounted; they are not on a task's path.
type countingStore struct {
	store.Store

	// mu guards calls.
	mu    sync.Mutex
	calls map[string]*callStats
}

type callStats struct {
	n     int
	total time.Duration
}

func newCountingStore(s store.Store) *countingStore {
	return &countingStore{Store: s, calls: make(map[string]*callStats)}
}

func (s *countingStore) track(name string, start time.Time) {
	d := time.Since(start)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[name]
	if c == nil {
		c = &callStats{}
		s.calls[name] = c
	}
	c.n++
	c.total += d
}

// snapshot returns a copy of the counts so far.
func (s *countingStore) snapshot() map[string]callStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]callStats, len(s.calls))
	for k, v := range s.calls {
		out[k] = *v
	}
	return out
}

// report writes, per store call made between before and after, how many
// there were per task and their mean duration.
func report(w io.Writer, label string, before, after map[string]callStats, perTask int) {
	var names []string
	for k := range after {
		names = append(names, k)
	}
	slices.Sort(names)
	fmt.Fprintf(w, "store calls during %s (%d tasks):\n", label, perTask)
	var sum time.Duration
	for _, k := range names {
		n := after[k].n - before[k].n
		d := after[k].total - before[k].total
		if n == 0 {
			continue
		}
		sum += d
		fmt.Fprintf(w, "  %-16s %7d calls  %5.2f/task  mean %7.2f ms  total %6.2f s\n",
			k, n, float64(n)/float64(perTask), float64(d)/float64(n)/1e6, d.Seconds())
	}
	fmt.Fprintf(w, "  %-16s %46s %6.2f s\n", "all", "", sum.Seconds())
}

func (s *countingStore) LookupToken(ctx context.Context, hash string) (tasks.Token, tasks.User, error) {
	defer s.track("LookupToken", time.Now())
	return s.Store.LookupToken(ctx, hash)
}

func (s *countingStore) Role(ctx context.Context, user, group string) (tasks.Role, error) {
	defer s.track("Role", time.Now())
	return s.Store.Role(ctx, user, group)
}

func (s *countingStore) ListUserGroups(ctx context.Context, user string) ([]tasks.Group, error) {
	defer s.track("ListUserGroups", time.Now())
	return s.Store.ListUserGroups(ctx, user)
}

func (s *countingStore) CreateTasks(ctx context.Context, creator string, specs []tasks.Spec, retryOf tasks.ID) ([]tasks.Task, error) {
	defer s.track("CreateTasks", time.Now())
	return s.Store.CreateTasks(ctx, creator, specs, retryOf)
}

func (s *countingStore) GetTask(ctx context.Context, id tasks.ID) (tasks.Task, error) {
	defer s.track("GetTask", time.Now())
	return s.Store.GetTask(ctx, id)
}

func (s *countingStore) ListTasks(ctx context.Context, f tasks.Filter) ([]tasks.Task, error) {
	defer s.track("ListTasks", time.Now())
	return s.Store.ListTasks(ctx, f)
}

func (s *countingStore) Claim(ctx context.Context, p store.ClaimParams) ([]tasks.Assignment, error) {
	defer s.track("Claim", time.Now())
	return s.Store.Claim(ctx, p)
}

func (s *countingStore) Renew(ctx context.Context, refs []tasks.LeaseRef, now time.Time, ttl time.Duration) ([]tasks.LeaseRef, error) {
	defer s.track("Renew", time.Now())
	return s.Store.Renew(ctx, refs, now, ttl)
}

func (s *countingStore) Finish(ctx context.Context, ref tasks.LeaseRef, r tasks.Result) (tasks.Task, error) {
	defer s.track("Finish", time.Now())
	return s.Store.Finish(ctx, ref, r)
}

func (s *countingStore) AppendLog(ctx context.Context, ref tasks.LeaseRef, st tasks.Stream, off int64, data []byte) error {
	defer s.track("AppendLog", time.Now())
	return s.Store.AppendLog(ctx, ref, st, off, data)
}

func (s *countingStore) AddArtifact(ctx context.Context, ref tasks.LeaseRef, a tasks.Artifact) error {
	defer s.track("AddArtifact", time.Now())
	return s.Store.AddArtifact(ctx, ref, a)
}

func (s *countingStore) PutHost(ctx context.Context, h tasks.Host) error {
	defer s.track("PutHost", time.Now())
	return s.Store.PutHost(ctx, h)
}

func (s *countingStore) RequeueExpired(ctx context.Context, now time.Time) ([]tasks.Task, error) {
	defer s.track("RequeueExpired", time.Now())
	return s.Store.RequeueExpired(ctx, now)
}
