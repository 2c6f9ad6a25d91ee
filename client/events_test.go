package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
)

// sseServer answers GET /api/v1/events with the i-th script on the i-th
// connection (the last one for every later connection). A script is a
// list of raw chunks, each written and flushed in turn.
func sseServer(t *testing.T, scripts ...[]string) (*client.Client, func() []url.Values) {
	t.Helper()
	var (
		mu      sync.Mutex
		queries []url.Values
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/events" || r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("got %s %s", r.Method, r.URL)
		}
		mu.Lock()
		n := len(queries)
		queries = append(queries, r.URL.Query())
		mu.Unlock()
		script := scripts[min(n, len(scripts)-1)]
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for _, chunk := range script {
			if chunk == "HOLD" {
				<-r.Context().Done()
				return
			}
			fmt.Fprint(w, chunk)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	return c, func() []url.Values {
		mu.Lock()
		defer mu.Unlock()
		return queries
	}
}

func taskEvent(id int, state tasks.State, attempt int) string {
	return fmt.Sprintf("event: task\ndata: {\"id\":%d,\"group\":\"lab\",\"state\":%q,\"attempt\":%d}\n\n", id, state, attempt)
}

type change struct {
	ID    tasks.ID
	State tasks.State
}

func TestWatchTasksResumesAfterADroppedStream(t *testing.T) {
	t.Parallel()
	c, queries := sseServer(t,
		// The first connection drops after task 1 started.
		[]string{taskEvent(1, tasks.Queued, 0), ": keepalive\n\n", taskEvent(2, tasks.Queued, 0),
			"event: news\ndata: {}\n\n", // unknown events are ignored
			taskEvent(1, tasks.Running, 1)},
		// The second resends the current states, then goes on.
		[]string{taskEvent(1, tasks.Running, 1), taskEvent(2, tasks.Queued, 0),
			taskEvent(1, tasks.Succeeded, 1), taskEvent(2, tasks.Running, 1),
			// A split line and CRLF endings are read whole.
			"event: task\r\ndata: {\"id\":2,\"state\":", "\"failed\",\"attempt\":1}\r\n\r\n",
			"event: end\ndata: {}\n\n"},
	)
	var got []change
	err := c.WatchTasks(t.Context(), []tasks.ID{1, 2}, "", func(t tasks.Task) error {
		got = append(got, change{t.ID, t.State})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []change{{1, tasks.Queued}, {2, tasks.Queued}, {1, tasks.Running}, {1, tasks.Succeeded}, {2, tasks.Running}, {2, tasks.Failed}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	qs := queries()
	if len(qs) != 2 || !reflect.DeepEqual(qs[0], url.Values{"task": {"1", "2"}}) {
		t.Errorf("connections asked %v; want two, for task=1&task=2", qs)
	}
}

func TestWatchTasksReturnsOnceAllAreFinal(t *testing.T) {
	t.Parallel()
	// The stream stays open, but the watch knows it is done.
	c, _ := sseServer(t, []string{taskEvent(5, tasks.Cancelled, 0), "HOLD"})
	done := make(chan error, 1)
	go func() {
		done <- c.WatchTasks(t.Context(), []tasks.ID{5}, "", func(tasks.Task) error { return nil })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchTasks did not return once its task was final")
	}
}

func TestWatchGroupRunsUntilCancelled(t *testing.T) {
	t.Parallel()
	c, queries := sseServer(t, []string{taskEvent(1, tasks.Queued, 0), taskEvent(1, tasks.Succeeded, 1), "HOLD"})
	ctx, cancel := context.WithCancel(t.Context())
	var got []change
	err := c.WatchTasks(ctx, nil, "lab", func(t tasks.Task) error {
		got = append(got, change{t.ID, t.State})
		if t.State.Final() {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v; want context.Canceled", err)
	}
	if len(got) != 2 {
		t.Errorf("got %v; want queued then succeeded", got)
	}
	if qs := queries(); !reflect.DeepEqual(qs[0], url.Values{"group": {"lab"}}) {
		t.Errorf("asked %v; want group=lab", qs[0])
	}
}

func TestWatchTasksErrors(t *testing.T) {
	t.Parallel()
	// A refusal is final: no reconnection.
	c, got := fake(t, 404, `{"error":{"code":"not_found","message":"no task 9"}}`, nil)
	err := c.WatchTasks(t.Context(), []tasks.ID{9}, "", func(tasks.Task) error { return nil })
	if tasks.ErrorCode(err) != tasks.ENotFound || len(*got) != 1 {
		t.Errorf("got %v after %d requests; want not_found after 1", err, len(*got))
	}

	// fn's error ends the watch; ErrStopWatch ends it quietly.
	c, _ = sseServer(t, []string{taskEvent(1, tasks.Queued, 0), "HOLD"})
	boom := errors.New("boom")
	if err := c.WatchTasks(t.Context(), []tasks.ID{1}, "", func(tasks.Task) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("got %v; want fn's error", err)
	}
	if err := c.WatchTasks(t.Context(), []tasks.ID{1}, "", func(tasks.Task) error { return client.ErrStopWatch }); err != nil {
		t.Errorf("got %v; want nil after ErrStopWatch", err)
	}

	// Either tasks or a group.
	if err := c.WatchTasks(t.Context(), nil, "", nil); tasks.ErrorCode(err) != tasks.EInvalid {
		t.Errorf("no tasks, no group: got %v; want invalid", err)
	}
	if err := c.WatchTasks(t.Context(), []tasks.ID{1}, "lab", nil); tasks.ErrorCode(err) != tasks.EInvalid {
		t.Errorf("tasks and a group: got %v; want invalid", err)
	}

	// A reply that is not an event stream is a plain error, not retried.
	c, got = fake(t, 200, `{}`, http.Header{"Content-Type": {"application/json"}})
	if err := c.WatchTasks(t.Context(), []tasks.ID{1}, "", func(tasks.Task) error { return nil }); err == nil || len(*got) != 1 {
		t.Errorf("JSON instead of events: got %v after %d requests; want an error after 1", err, len(*got))
	}
}

func TestReadLogWait(t *testing.T) {
	t.Parallel()
	c, got := fake(t, 200, "hi", http.Header{"X-Mito-Next-Offset": {"12"}, "X-Mito-Attempt": {"3"}, "X-Mito-Task-State": {"running"}})
	p, err := c.ReadLogWait(t.Context(), 7, 0, tasks.Stdout, 10, 0, 25*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Data) != "hi" || p.Next != 12 || p.Attempt != 3 || p.State != tasks.Running {
		t.Errorf("got %+v; want hi, 12, attempt 3, running", p)
	}
	want := url.Values{"stream": {"stdout"}, "offset": {"10"}, "follow": {"true"}, "wait": {"25s"}}
	if q := (*got)[0].Query; !reflect.DeepEqual(q, want) {
		t.Errorf("asked %v; want %v", q, want)
	}
	// No wait, no follow.
	if _, err := c.ReadLogWait(t.Context(), 7, 0, "", 0, 0, 0); err != nil || len((*got)[1].Query) != 0 {
		t.Errorf("got %v, query %v; want no follow", err, (*got)[1].Query)
	}
}
