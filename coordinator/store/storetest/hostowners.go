package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// acquire calls AcquireHost and fails the test unless it answers want.
func acquire(t *testing.T, s store.Store, name, owner string, now time.Time, ttl time.Duration, want bool, what string) {
	t.Helper()
	got, err := s.AcquireHost(t.Context(), name, owner, now, ttl)
	ok(t, err, what+": AcquireHost")
	if got != want {
		t.Errorf("%s: AcquireHost(%s, %s) = %v; want %v", what, name, owner, got, want)
	}
}

// wantOwner fails unless GetHost shows owner as the host's coordinator.
func wantOwner(t *testing.T, s store.Store, name, owner, what string) {
	t.Helper()
	h, err := s.GetHost(t.Context(), name)
	ok(t, err, what+": GetHost")
	if h.Coordinator != owner {
		t.Errorf("%s: %s.Coordinator = %q; want %q", what, name, h.Coordinator, owner)
	}
}

func testHostOwnership(t *testing.T, s store.Store) {
	ctx := t.Context()
	const ttl = 10 * time.Second
	const h = "h1"

	// A lease can be taken before the host has a record.
	acquire(t, s, h, "A", t0, ttl, true, "first acquire")
	ok(t, s.PutHost(ctx, tasks.Host{Name: h, Transport: "local", Groups: []string{"lab"}, Slots: 1, State: tasks.HostReady, UpdatedAt: t0}), "PutHost")
	wantOwner(t, s, h, "A", "after the first acquire")

	// Held: another is refused, up to and including the expiry instant;
	// the holder renews.
	acquire(t, s, h, "B", t0.Add(5*time.Second), ttl, false, "acquire of a held host")
	acquire(t, s, h, "A", t0.Add(5*time.Second), ttl, true, "renewal") // now until t0+15s
	acquire(t, s, h, "B", t0.Add(14*time.Second), ttl, false, "acquire before the renewed lease expires")
	acquire(t, s, h, "B", t0.Add(15*time.Second), ttl, false, "acquire at the expiry instant")
	wantOwner(t, s, h, "A", "after refused acquires")

	// PutHost replaces the record, not the lease.
	ok(t, s.PutHost(ctx, tasks.Host{Name: h, Transport: "local", Groups: []string{"lab"}, Slots: 2, State: tasks.HostDraining, UpdatedAt: t0}), "PutHost again")
	wantOwner(t, s, h, "A", "after PutHost")

	// Expired: taken over; the old holder can no longer renew.
	acquire(t, s, h, "B", t0.Add(16*time.Second), ttl, true, "takeover of an expired lease") // until t0+26s
	wantOwner(t, s, h, "B", "after the takeover")
	acquire(t, s, h, "A", t0.Add(16*time.Second), ttl, false, "renewal by the old holder")
	hosts, err := s.ListHosts(ctx)
	ok(t, err, "ListHosts")
	if len(hosts) != 1 || hosts[0].Coordinator != "B" {
		t.Errorf("ListHosts = %+v; want h1 with coordinator B", hosts)
	}

	// Release by a non-holder does nothing; by the holder, frees at once.
	ok(t, s.ReleaseHost(ctx, h, "A"), "ReleaseHost by a non-holder")
	acquire(t, s, h, "A", t0.Add(17*time.Second), ttl, false, "acquire after a non-holder's release")
	ok(t, s.ReleaseHost(ctx, h, "B"), "ReleaseHost by the holder")
	wantOwner(t, s, h, "", "after release")
	ok(t, s.ReleaseHost(ctx, h, "B"), "ReleaseHost again")
	acquire(t, s, h, "A", t0.Add(17*time.Second), ttl, true, "acquire after release")
	wantOwner(t, s, h, "A", "after acquire after release")

	// Leases of different hosts are independent.
	acquire(t, s, "h2", "B", t0.Add(17*time.Second), ttl, true, "acquire of another host")
	acquire(t, s, h, "B", t0.Add(17*time.Second), ttl, false, "acquire of h1 by h2's holder")

	// Bad arguments.
	_, err = s.AcquireHost(ctx, h, "", t0, ttl)
	wantCode(t, err, tasks.EInvalid, "AcquireHost without an owner")
	_, err = s.AcquireHost(ctx, "", "A", t0, ttl)
	wantCode(t, err, tasks.EInvalid, "AcquireHost without a host")
	_, err = s.AcquireHost(ctx, h, "A", t0, 0)
	wantCode(t, err, tasks.EInvalid, "AcquireHost with a zero ttl")
}

// testHostOwnershipConcurrent races coordinators for a host nobody held,
// then for one whose lease expired: each time exactly one must win.
func testHostOwnershipConcurrent(t *testing.T, s store.Store) {
	const n = 8
	const ttl = 10 * time.Second
	race := func(now time.Time, what string) string {
		var wg sync.WaitGroup
		won := make([]bool, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				won[i], errs[i] = s.AcquireHost(t.Context(), "h1", fmt.Sprintf("c%d", i), now, ttl)
			}()
		}
		close(start)
		wg.Wait()
		winner := ""
		for i := range n {
			ok(t, errs[i], what+": AcquireHost")
			if won[i] {
				if winner != "" {
					t.Fatalf("%s: both %s and c%d acquired h1", what, winner, i)
				}
				winner = fmt.Sprintf("c%d", i)
			}
		}
		if winner == "" {
			t.Fatalf("%s: nobody acquired h1", what)
		}
		return winner
	}
	for round := range 5 {
		base := t0.Add(time.Duration(round) * time.Hour)
		race(base, fmt.Sprintf("round %d, a host nobody holds", round))
		second := race(base.Add(ttl+time.Second), fmt.Sprintf("round %d, an expired lease", round))
		// The winner holds it: a late loser is still refused.
		for i := range n {
			if c := fmt.Sprintf("c%d", i); c != second {
				acquire(t, s, "h1", c, base.Add(ttl+2*time.Second), ttl, false, "late acquire")
				break
			}
		}
		ok(t, s.ReleaseHost(t.Context(), "h1", second), "ReleaseHost")
	}
}
