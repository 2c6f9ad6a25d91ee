package client

// Live task events: the server-sent event stream of GET /api/v1/events.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mitolab/mito/tasks"
)

// Reconnection of WatchTasks: the backoff after a dropped stream, and how
// long a silent stream may last before it counts as dropped (the
// coordinator sends a keepalive every 15 s).
var (
	watchBackoffMin = 500 * time.Millisecond
	watchBackoffMax = 30 * time.Second
	watchIdle       = 45 * time.Second
)

// maxEventLine bounds one line of the event stream (a task as JSON).
const maxEventLine = 16 << 20

// ErrStopWatch may be returned by WatchTasks' fn to end the watch early
// without an error: WatchTasks then returns nil.
var ErrStopWatch = errors.New("stop watching")

// WatchTasks calls fn with each state change of the tasks ids, or of every
// task of group (give one or the other), in order, as the coordinator
// streams them. It first calls fn with the current state of each watched
// task (with group: of the group's queued and running tasks). With ids it
// returns nil once every task is final; with group it runs until ctx ends
// and then returns ctx.Err(). An error from fn ends the watch and is
// returned (ErrStopWatch ends it with nil).
//
// A dropped stream is reopened with backoff; the coordinator sends the
// current states again, and fn is not called again for a task whose state
// and attempt it has already seen, so nothing is lost or repeated. A task
// that passes through states quickly may skip one, but its last state
// always comes. Errors that reopening cannot fix (an unknown task, no
// right to read it) are returned at once.
func (c *Client) WatchTasks(ctx context.Context, ids []tasks.ID, group string, fn func(tasks.Task) error) error {
	if (len(ids) == 0) == (group == "") {
		return tasks.Invalid("task", "watch either some tasks or one group")
	}
	q := url.Values{}
	for _, id := range ids {
		q.Add("task", strconv.FormatInt(int64(id), 10))
	}
	if group != "" {
		q.Set("group", group)
	}
	w := &watcher{
		c:       c,
		path:    "/api/v1/events?" + q.Encode(),
		fn:      fn,
		group:   group != "",
		seen:    make(map[tasks.ID]watched),
		pending: make(map[tasks.ID]bool, len(ids)),
	}
	for _, id := range ids {
		w.pending[id] = true
	}
	backoff := watchBackoffMin
	for {
		got, err := w.stream(ctx)
		switch {
		case errors.Is(err, ErrStopWatch):
			return nil
		case errors.Is(err, errWatchDone):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !retryable(err):
			return err
		}
		if got {
			backoff = watchBackoffMin
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// errWatchDone ends a watch whose tasks are all final.
var errWatchDone = errors.New("every watched task is final")

// stopError ends a watch with its error: one of the caller's fn, or a
// stream that is not what the API says.
type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }
func (e stopError) Unwrap() error { return e.err }

// retryable tells a dropped or refused connection, worth reopening, from
// an answer that will not change.
func retryable(err error) bool {
	var se stopError
	if errors.As(err, &se) {
		return false
	}
	var te *tasks.Error
	if errors.As(err, &te) {
		return te.Code == tasks.EUnavailable || te.Code == tasks.EInternal
	}
	return true // a broken stream
}

type watched struct {
	state   tasks.State
	attempt int
}

type watcher struct {
	c     *Client
	path  string
	group bool // a watch of a group, not of given tasks
	fn    func(tasks.Task) error
	// seen is what fn was last given of each task.
	seen map[tasks.ID]watched
	// pending are the watched tasks (ids mode) not known final yet.
	pending map[tasks.ID]bool
}

// stream reads one connection's events until it ends. It reports whether
// it got any event, so that the caller can reset its backoff.
func (w *watcher) stream(ctx context.Context) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := w.c.request(ctx, http.MethodGet, w.path, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := w.c.send(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return false, stopError{fmt.Errorf("events: coordinator answered %q, not an event stream", ct)}
	}
	// A stream silent for longer than a few keepalives is dead.
	idle := time.AfterFunc(watchIdle, cancel)
	defer idle.Stop()

	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var event, data strings.Builder
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // a stream only ends with "end"
			}
			return got, fmt.Errorf("events: %w", err)
		}
		idle.Reset(watchIdle)
		switch {
		case line == "":
			ev, d := event.String(), data.String()
			event.Reset()
			data.Reset()
			if d == "" && ev == "" {
				continue
			}
			got = true
			if err := w.dispatch(ev, d); err != nil {
				return got, err
			}
		case strings.HasPrefix(line, ":"): // a comment: keepalive
		default:
			name, val, _ := strings.Cut(line, ":")
			val = strings.TrimPrefix(val, " ")
			switch name {
			case "event":
				event.Reset()
				event.WriteString(val)
			case "data":
				if data.Len() > 0 {
					data.WriteByte('\n')
				}
				data.WriteString(val)
			}
		}
	}
}

// readLine reads one line without its "\n" or "\r\n", bounded.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			return "", err
		}
		b = append(b, chunk...)
		if len(b) > maxEventLine {
			return "", fmt.Errorf("event line over %d bytes", maxEventLine)
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}

func (w *watcher) dispatch(event, data string) error {
	switch event {
	case "task":
	case "end":
		if !w.group && len(w.pending) == 0 {
			return errWatchDone
		}
		return nil // not all seen final: reopen, and learn their states again
	default:
		return nil // unknown events are for newer clients
	}
	var t tasks.Task
	if err := json.Unmarshal([]byte(data), &t); err != nil {
		return stopError{fmt.Errorf("events: bad task event: %w", err)}
	}
	cur := watched{t.State, t.Attempt}
	if prev, ok := w.seen[t.ID]; ok && prev == cur {
		return nil // sent again after a reconnection
	}
	w.seen[t.ID] = cur
	if err := w.fn(t); err != nil {
		return stopError{err}
	}
	if t.State.Final() {
		delete(w.pending, t.ID)
		if len(w.pending) == 0 && !w.group {
			return errWatchDone
		}
	}
	if w.group && len(w.seen) > maxSeen {
		// A final task does not change again, and the coordinator resends
		// only those under way: forget the ended ones.
		for id, st := range w.seen {
			if st.state.Final() {
				delete(w.seen, id)
			}
		}
	}
	return nil
}

// maxSeen bounds what a group watch remembers.
const maxSeen = 10000
