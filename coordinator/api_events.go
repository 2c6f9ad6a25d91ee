package coordinator

// Live task events for users: a server-sent event stream of task state
// changes (GET /api/v1/events), and the log events that let a log
// follower's long poll answer as soon as output arrives.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/tasks"
)

// Event kinds (events.Event.Kind).
const (
	eventKindState = "state"
	eventKindLog   = "log"
)

// sseKeepalive is how often an idle event stream sends a comment, so that
// proxies keep the connection and clients can tell a dead one.
const sseKeepalive = 15 * time.Second

// maxWatch bounds the tasks one event stream watches.
const maxWatch = tasks.MaxListLimit

// isStateEvent tells state changes from log events.
func isStateEvent(ev events.Event) bool {
	return ev.Kind == "" || ev.Kind == eventKindState
}

// publishLog announces that a chunk of a task's output was stored and the
// stream now ends at end. Like publish, a failure only delays followers.
func (c *Coordinator) publishLog(ctx context.Context, id tasks.ID, stream tasks.Stream, start, end int64) {
	if end <= start {
		return
	}
	ev := events.Event{Task: id, Kind: eventKindLog, Stream: stream, Offset: end}
	if err := c.cfg.Events.Publish(ctx, ev); err != nil {
		c.log.Warn("publish log event", logTask, id, logErr, err)
	}
}

// sseWriter writes server-sent events and flushes each one.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// err is the first failed write: the caller has gone.
	err error
}

func (s *sseWriter) send(event string, v any) error {
	var buf bytes.Buffer
	buf.WriteString("event: " + event + "\ndata: ")
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // one line, ending in "\n"
		return err
	}
	buf.WriteString("\n")
	return s.write(buf.Bytes())
}

func (s *sseWriter) comment(text string) error {
	return s.write([]byte(": " + text + "\n\n"))
}

func (s *sseWriter) write(b []byte) error {
	if s.err != nil {
		return s.err
	}
	if _, err := s.w.Write(b); err != nil {
		s.err = err
		return err
	}
	if err := s.rc.Flush(); err != nil {
		s.err = err
		return err
	}
	return nil
}

// watchState is what a stream last sent of a task.
type watchState struct {
	state   tasks.State
	attempt int
}

// handleEvents streams task state changes as server-sent events: of the
// tasks named by ?task= until all are final, or of every task of ?group=
// until the caller leaves. It first sends the current state of each
// watched task, so that a client that subscribes after reading a task
// misses nothing; then a task again whenever its state or attempt changes.
// Events only wake it: it always sends what the store says, and re-reads
// the store every Recheck, so a lost event only delays.
func (c *Coordinator) handleEvents(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	ctx := r.Context()
	q := r.URL.Query()
	ids, err := parseWatchIDs(q["task"])
	if err != nil {
		return err
	}
	group := q.Get("group")
	switch {
	case len(ids) == 0 && group == "":
		return tasks.Invalid("task", "give tasks to watch (task=ID, repeatable) or a group (group=NAME)")
	case len(ids) > 0 && group != "":
		return tasks.Invalid("group", "give either tasks or a group, not both")
	case len(q["group"]) > 1:
		return tasks.Invalid("group", "give one group")
	}
	// Subscribe before reading the store, so that no change falls between
	// the read and the subscription.
	evs, cancel := c.cfg.Events.Subscribe()
	defer cancel()

	var initial []tasks.Task
	if group != "" {
		if err := tasks.ValidName("group", group); err != nil {
			return err
		}
		if _, err := c.requireRole(ctx, u, group, tasks.RoleRead); err != nil {
			return err
		}
		if initial, err = c.activeGroupTasks(ctx, group, time.Time{}); err != nil {
			return err
		}
	} else {
		for _, id := range ids {
			t, err := c.readableTaskID(ctx, u, id)
			if err != nil {
				return err
			}
			initial = append(initial, t)
		}
	}

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives any write timeout
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	out := &sseWriter{w: w, rc: rc}

	// From here on the answer has begun: errors end the stream, they are
	// not reported as JSON.
	sent := make(map[tasks.ID]watchState)
	send := func(t tasks.Task) error {
		if group != "" && t.Group != group {
			return nil
		}
		cur := watchState{t.State, t.Attempt}
		if prev, ok := sent[t.ID]; ok && prev == cur {
			return nil
		}
		sent[t.ID] = cur
		return out.send("task", t)
	}
	// pending lists the watched tasks (task mode) or the group's tasks
	// (group mode) that are not final yet.
	pending := make(map[tasks.ID]bool)
	update := func(t tasks.Task) error {
		if t.State.Final() {
			delete(pending, t.ID)
		} else {
			pending[t.ID] = true
		}
		return send(t)
	}
	for _, t := range initial {
		if err := update(t); err != nil {
			return nil
		}
	}
	if err := rc.Flush(); err != nil {
		return nil
	}
	// refresh re-reads one task and sends it if it changed.
	refresh := func(id tasks.ID) error {
		t, err := c.store.GetTask(ctx, id)
		if errors.Is(err, tasks.ErrNotFound) {
			delete(pending, id)
			return nil
		}
		if err != nil {
			return err
		}
		return update(t)
	}
	lastCheck := c.cfg.Now()
	recheck := func() error {
		if group != "" {
			// New tasks created since the last look, and those still under
			// way, then those that ended meanwhile.
			since := lastCheck.Add(-c.cfg.Recheck - time.Second)
			lastCheck = c.cfg.Now()
			ts, err := c.activeGroupTasks(ctx, group, since)
			if err != nil {
				return err
			}
			seen := make(map[tasks.ID]bool, len(ts))
			for _, t := range ts {
				seen[t.ID] = true
				if err := update(t); err != nil {
					return err
				}
			}
			for id := range pending {
				if !seen[id] {
					if err := refresh(id); err != nil {
						return err
					}
				}
			}
			// A final task never changes again: once out of the window
			// the lists cover, it needs no remembering.
			for id, st := range sent {
				if st.state.Final() && !seen[id] {
					delete(sent, id)
				}
			}
			return nil
		}
		for id := range pending {
			if err := refresh(id); err != nil {
				return err
			}
		}
		return nil
	}

	keepalive := time.NewTicker(sseKeepalive)
	defer keepalive.Stop()
	tick := time.NewTicker(c.cfg.Recheck)
	defer tick.Stop()
	for {
		if group == "" && len(pending) == 0 {
			_ = out.send("end", struct{}{})
			return nil
		}
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-keepalive.C:
			err = out.comment("keepalive")
		case <-tick.C:
			err = recheck()
		case ev, ok := <-evs:
			switch {
			case !ok:
				evs = nil // the bus is gone; the recheck timer carries on
			case !isStateEvent(ev):
			case group != "" && ev.Group == group, group == "" && pending[ev.Task]:
				err = refresh(ev.Task)
			}
		}
		if err != nil {
			if ctx.Err() == nil && out.err == nil { // not just a caller that left
				c.log.Warn("event stream", logUser, u.Name, logErr, err)
			}
			return nil
		}
	}
}

// activeGroupTasks lists a group's tasks that are queued or running, and
// (when since is set) those created since then whatever their state.
func (c *Coordinator) activeGroupTasks(ctx context.Context, group string, since time.Time) ([]tasks.Task, error) {
	ts, err := c.store.ListTasks(ctx, tasks.Filter{Groups: []string{group}, States: activeStates(), Limit: tasks.MaxListLimit})
	if err != nil || since.IsZero() {
		return ts, err
	}
	recent, err := c.store.ListTasks(ctx, tasks.Filter{Groups: []string{group}, Since: since, Limit: tasks.MaxListLimit})
	if err != nil {
		return nil, err
	}
	return append(ts, recent...), nil
}

// activeStates are the states a task can still leave.
func activeStates() []tasks.State {
	var out []tasks.State
	for _, s := range tasks.AllStates {
		if !s.Final() {
			out = append(out, s)
		}
	}
	return out
}

// readableTaskID is readableTask for an id that is not in the path.
func (c *Coordinator) readableTaskID(ctx context.Context, u tasks.User, id tasks.ID) (tasks.Task, error) {
	t, err := c.store.GetTask(ctx, id)
	if errors.Is(err, tasks.ErrNotFound) {
		return t, tasks.Errorf(tasks.ENotFound, "no task %d", id)
	}
	if err != nil {
		return t, err
	}
	if _, err := c.requireRole(ctx, u, t.Group, tasks.RoleRead); err != nil {
		if errors.Is(err, tasks.ErrNotFound) {
			return t, tasks.Errorf(tasks.ENotFound, "no task %d", id)
		}
		return t, err
	}
	return t, nil
}

// parseWatchIDs reads the task= values, each an id or a comma list.
func parseWatchIDs(vals []string) ([]tasks.ID, error) {
	var ids []tasks.ID
	seen := make(map[tasks.ID]bool)
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				return nil, tasks.Invalid("task", "%q is not a task id", s)
			}
			if id := tasks.ID(n); !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	if len(ids) > maxWatch {
		return nil, tasks.Invalid("task", "%d tasks given; one stream watches at most %d", len(ids), maxWatch)
	}
	return ids, nil
}

// waitLog waits, for a log follower, until the attempt's stream has bytes
// past off, the task is final or moves to another attempt, or wait runs
// out. It returns the bytes read and the task as last read; the task is
// read before the log, so a final task with no bytes has no more to come.
func (c *Coordinator) waitLog(ctx context.Context, t tasks.Task, attempt int, stream tasks.Stream, off int64, limit int, wait time.Duration) ([]byte, tasks.Task, error) {
	var data []byte
	first := true
	err := c.waitFor(ctx, wait, func(ev events.Event) bool {
		if ev.Task != t.ID {
			return false
		}
		if ev.Kind == eventKindLog {
			return ev.Stream == stream && ev.Offset > off
		}
		return isStateEvent(ev)
	}, func() (bool, error) {
		if !first {
			cur, err := c.store.GetTask(ctx, t.ID)
			if err != nil {
				return false, err
			}
			t = cur
		}
		first = false
		var err error
		data, err = c.store.ReadLog(ctx, t.ID, attempt, stream, off, limit)
		if err != nil {
			return false, err
		}
		return len(data) > 0 || t.State.Final() || t.Attempt != attempt, nil
	})
	return data, t, err
}
