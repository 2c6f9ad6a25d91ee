package storetest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// fill queues n tasks in group lab, in batches, outside the timer.
func fill(b *testing.B, s store.Store, n int) {
	b.Helper()
	const batch = 500
	for n > 0 {
		k := min(n, batch)
		specs := make([]tasks.Spec, k)
		for i := range specs {
			specs[i] = spec("lab")
		}
		if _, err := s.CreateTasks(b.Context(), "bench", specs, 0); err != nil {
			b.Fatalf("CreateTasks: %v", err)
		}
		n -= k
	}
}

// BenchClaimFinish measures one task's round trip through the store as a
// shim drives it: claim one task, then finish it. The queue holds b.N
// tasks, so every claim finds work.
func BenchClaimFinish(b *testing.B, s store.Store) {
	fill(b, s, b.N)
	ctx := b.Context()
	p := store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, TTL: time.Minute, Now: t0}
	res := tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0}
	b.ResetTimer()
	for range b.N {
		as, err := s.Claim(ctx, p)
		if err != nil || len(as) != 1 {
			b.Fatalf("Claim = %d tasks, %v; want 1", len(as), err)
		}
		if _, err := s.Finish(ctx, as[0].Lease.LeaseRef, res); err != nil {
			b.Fatalf("Finish: %v", err)
		}
	}
}

// BenchClaimFinishParallel is BenchClaimFinish with GOMAXPROCS hosts
// claiming at once, to measure contention on the queue.
func BenchClaimFinishParallel(b *testing.B, s store.Store) {
	fill(b, s, b.N)
	ctx := b.Context()
	res := tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0}
	var empty atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, TTL: time.Minute, Now: t0}
		for pb.Next() {
			as, err := s.Claim(ctx, p)
			if err != nil {
				b.Errorf("Claim: %v", err)
				return
			}
			if len(as) == 0 {
				// Another claimer holds the last rows locked (SKIP LOCKED).
				empty.Add(1)
				continue
			}
			if _, err := s.Finish(ctx, as[0].Lease.LeaseRef, res); err != nil {
				b.Errorf("Finish: %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(empty.Load())/float64(b.N), "empty/op")
}
