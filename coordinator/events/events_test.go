package events

import (
	"context"
	"sync"
	"testing"
)

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
		if got := <-ch; got != ev {
			t.Errorf("subscriber %d: got %+v; want %+v", i, got, ev)
		}
	}
	cancelA()
	cancelA() // twice is harmless
	if _, ok := <-a; ok {
		t.Error("channel still open after cancel")
	}
	if err := bus.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if got := <-b; got != ev {
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
	wg.Wait()
}
