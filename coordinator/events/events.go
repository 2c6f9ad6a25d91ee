// Package events carries notifications of task changes between the parts of
// a coordinator: a submission wakes hosts waiting to claim, a cancel wakes
// the heartbeat of the host running the task, a finish wakes clients
// waiting on it. Events are hints, never the source of truth: every waiter
// re-reads the store when woken and also on a timer, so a lost event only
// delays, it never loses work.
package events

import (
	"context"
	"sync"

	"github.com/mitolab/mito/tasks"
)

// Event says that a task changed: its state (Kind empty or "state"), or
// its output (Kind "log": a chunk of Stream was stored, and the stream now
// ends at Offset; State and Group are then empty).
type Event struct {
	Task  tasks.ID    `json:"task"`
	Group string      `json:"group"`
	State tasks.State `json:"state"`
	Host  string      `json:"host,omitempty"`
	// Kind is "" or "state" for a state change, "log" for new output.
	Kind string `json:"kind,omitempty"`
	// Stream is the output stream of a log event.
	Stream tasks.Stream `json:"stream,omitempty"`
	// Offset is where the stream ends after a log event's chunk.
	Offset int64 `json:"offset,omitempty"`
}

// Bus delivers events to every subscriber. Implementations may drop events
// for a slow subscriber; subscribers must tolerate that.
type Bus interface {
	// Publish sends ev to all current subscribers.
	Publish(ctx context.Context, ev Event) error
	// Subscribe returns a channel of events and a function that ends the
	// subscription and closes the channel.
	Subscribe() (<-chan Event, func())
}

// subBuffer is how many events a subscriber may lag behind before events
// are dropped for it.
const subBuffer = 256

// Local is the in-process Bus, the embedded default.
type Local struct {
	mu     sync.Mutex
	subs   map[int]chan Event
	nextID int
}

// NewLocal returns an in-process bus.
func NewLocal() *Local { return &Local{subs: make(map[int]chan Event)} }

// Publish delivers ev to every subscriber that has room for it.
func (l *Local) Publish(_ context.Context, ev Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ch := range l.subs {
		select {
		case ch <- ev:
		default: // a slow subscriber re-reads the store on its timer
		}
	}
	return nil
}

// Subscribe registers a subscriber.
func (l *Local) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, subBuffer)
	l.mu.Lock()
	id := l.nextID
	l.nextID++
	l.subs[id] = ch
	l.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs, id)
			l.mu.Unlock()
			close(ch)
		})
	}
}
