// Package eventstest is the conformance suite every events.Bus must pass.
// Each implementation runs it from its own tests with a constructor that
// returns a fresh, isolated bus (for a shared service: a channel of its own).
package eventstest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/tasks"
)

// waitTime bounds every wait for an event that must arrive. It is generous
// because a networked bus under the race detector can be slow; a passing
// run never waits this long.
const waitTime = 10 * time.Second

// Every wait in the suite is bounded, so that a bus that blocks fails its
// test in seconds instead of hanging the whole test binary until its
// -timeout.

// quietTime is how long a subscriber is watched for events that must not
// arrive (duplicates).
const quietTime = 200 * time.Millisecond

// Run runs the suite. newBus must return a new bus for each call and arrange
// (with t.Cleanup) for it to be closed.
func Run(t *testing.T, newBus func(t *testing.T) events.Bus) {
	t.Run("DeliversToEverySubscriberOnce", func(t *testing.T) { testDelivers(t, newBus(t)) })
	t.Run("CancelClosesChannel", func(t *testing.T) { testCancel(t, newBus(t)) })
	t.Run("SlowSubscriberDoesNotBlock", func(t *testing.T) { testSlow(t, newBus(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newBus(t)) })
}

// Receive returns the next event on ch, failing the test if none arrives in
// time or the channel is closed.
func Receive(t *testing.T, ch <-chan events.Event) events.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed; want an event")
		}
		return ev
	case <-time.After(waitTime):
		t.Fatalf("no event after %v", waitTime)
		return events.Event{}
	}
}

// Quiet fails the test if ch yields an event within a short time.
func Quiet(t *testing.T, ch <-chan events.Event) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Errorf("got unexpected event %+v", ev)
		}
	case <-time.After(quietTime):
	}
}

// Wait fails the test if wg is not done within d.
func Wait(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: not done after %v", what, d)
	}
}

func event(id int) events.Event {
	return events.Event{Task: tasks.ID(id), Group: "lab", State: "queued", Host: fmt.Sprintf("h%d", id)}
}

func testDelivers(t *testing.T, bus events.Bus) {
	ctx := context.Background()
	a, cancelA := bus.Subscribe()
	defer cancelA()
	b, cancelB := bus.Subscribe()
	defer cancelB()
	want := []events.Event{event(1), event(2), event(3)}
	for _, ev := range want {
		if err := bus.Publish(ctx, ev); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	for name, ch := range map[string]<-chan events.Event{"a": a, "b": b} {
		seen := map[events.Event]int{}
		for range want {
			seen[Receive(t, ch)]++
		}
		for _, ev := range want {
			if seen[ev] != 1 {
				t.Errorf("subscriber %s: got %+v %d times; want once", name, ev, seen[ev])
			}
		}
		Quiet(t, ch)
	}
}

func testCancel(t *testing.T, bus events.Bus) {
	ctx := context.Background()
	a, cancelA := bus.Subscribe()
	b, cancelB := bus.Subscribe()
	defer cancelB()
	cancelA()
	cancelA() // twice is harmless
	select {
	case _, ok := <-a:
		if ok {
			t.Error("got an event after cancel; want a closed channel")
		}
	case <-time.After(waitTime):
		t.Fatal("channel still open after cancel")
	}
	ev := event(4)
	if err := bus.Publish(ctx, ev); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if got := Receive(t, b); got != ev {
		t.Errorf("other subscriber after cancel: got %+v; want %+v", got, ev)
	}
}

func testSlow(t *testing.T, bus events.Bus) {
	const flood = 2000 // well above any sane per-subscriber buffer
	ctx := context.Background()
	slow, cancelSlow := bus.Subscribe() // never read until the end
	defer cancelSlow()
	fast, cancelFast := bus.Subscribe()
	defer cancelFast()

	marker := event(flood + 1)
	gotMarker := make(chan struct{})
	go func() {
		defer close(gotMarker)
		for ev := range fast {
			if ev == marker {
				return
			}
		}
	}()

	done := make(chan error, 1)
	go func() {
		for i := 0; i < flood; i++ {
			if err := bus.Publish(ctx, event(i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
	case <-time.After(waitTime):
		t.Fatalf("%d publishes with a stalled subscriber did not finish in %v", flood, waitTime)
	}

	// The reading subscriber may itself have dropped some of the flood, so
	// the marker is sent until it gets through.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitTime)
	for {
		if err := bus.Publish(ctx, marker); err != nil {
			t.Fatalf("publish marker: %v", err)
		}
		select {
		case <-gotMarker:
			if len(slow) == 0 {
				t.Error("stalled subscriber got nothing; want its buffer filled")
			}
			return
		case <-tick.C:
		case <-deadline:
			t.Fatalf("reading subscriber got no marker in %v", waitTime)
		}
	}
}

func testConcurrent(t *testing.T, bus events.Bus) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			ch, cancel := bus.Subscribe()
			go cancel() // cancel may race with delivery
			for range ch {
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if err := bus.Publish(ctx, event(j)); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	Wait(t, &wg, waitTime, "concurrent subscribers and publishers")
}
