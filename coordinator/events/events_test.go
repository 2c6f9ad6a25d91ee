package events

import (
	"context"
	"sync"
	"testing"
	"time"
)

// waitTime bounds every wait, so that a bug fails a test in seconds rather
// than hanging the test binary until its -timeout.
const waitTime = 5 * time.Second

// recv returns the next value on ch and whether ch is still open, failing
// the test if nothing comes in time.
func recv(t *testing.T, ch <-chan Event) (Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-time.After(waitTime):
		t.Fatalf("nothing on the channel after %v", waitTime)
		return Event{}, false
	}
}

// wait fails the test if wg is not done in time.
func wait(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTime):
		t.Fatalf("goroutines not done after %v", waitTime)
	}
}

func TestLocalDeliversToEverySubscriber(t *testing.T) {
	bus := NewLocal()
	a, cancelA := bus.Subscribe()
	b, cancelB := bus.Subscribe()
	defer cancelB()
	ev := Event{Task: 7, Group: "lab", State: "queued"}
	if err := bus.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	for i, ch := range []<-chan Event{a, b} {
		if got, _ := recv(t, ch); got != ev {
			t.Errorf("subscriber %d: got %+v; want %+v", i, got, ev)
		}
	}
	cancelA()
	cancelA() // twice is harmless
	if _, ok := recv(t, a); ok {
		t.Error("channel still open after cancel")
	}
	if err := bus.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if got, _ := recv(t, b); got != ev {
		t.Errorf("after other cancel: got %+v; want %+v", got, ev)
	}
}

func TestLocalDropsForSlowSubscriberWithoutBlocking(t *testing.T) {
	bus := NewLocal()
	ch, cancel := bus.Subscribe()
	defer cancel()
	for i := 0; i < subBuffer*2; i++ {
		_ = bus.Publish(context.Background(), Event{Task: 1})
	}
	if got := len(ch); got != subBuffer {
		t.Errorf("buffered %d events; want %d", got, subBuffer)
	}
}

func TestLocalConcurrent(t *testing.T) {
	bus := NewLocal()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, cancel := bus.Subscribe()
			cancel()
		}()
		go func() {
			defer wg.Done()
			_ = bus.Publish(context.Background(), Event{Task: 1})
		}()
	}
	wait(t, &wg)
}
