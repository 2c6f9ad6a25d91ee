package coordinator_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/tasks"
)

// sseEvent is one server-sent event as a test reads it.
type sseEvent struct {
	name string
	task tasks.Task
}

// stream opens GET /api/v1/events?query as token and returns its events
// on a channel, closed when the stream ends.
func (e *env) stream(token, query string) <-chan sseEvent {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/v1/events?"+query, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e.t.Fatalf("events?%s: %d %s %q", query, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	ch := make(chan sseEvent, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if ev.name == "task" {
					if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.task); err != nil {
						panic(fmt.Sprintf("bad task event %q: %v", line, err))
					}
				}
			case line == "" && ev.name != "":
				ch <- ev
				ev = sseEvent{}
			}
		}
	}()
	return ch
}

// next returns the next event of a stream, failing the test if none comes.
func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("the event stream ended early")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	panic("unreachable")
}

func nextTask(t *testing.T, ch <-chan sseEvent, id tasks.ID, state tasks.State) tasks.Task {
	t.Helper()
	ev := next(t, ch)
	if ev.name != "task" || ev.task.ID != id || ev.task.State != state {
		t.Fatalf("got event %q task %d %s; want task %d %s", ev.name, ev.task.ID, ev.task.State, id, state)
	}
	return ev.task
}

func TestEventStreamFollowsTaskToItsEnd(t *testing.T) {
	// Recheck is long, so only the bus can make these events come on time.
	e := newEnv(t, coordinator.Config{Recheck: time.Hour})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})

	ch := e.stream(alice, fmt.Sprintf("task=%d", task.ID))
	nextTask(t, ch, task.ID, tasks.Queued)

	w := e.worker(alice, "h", []string{"alice"}, 1)
	as := w.claim(1, 0)
	if len(as) != 1 {
		t.Fatalf("claimed %d; want 1", len(as))
	}
	running := nextTask(t, ch, task.ID, tasks.Running)
	if running.Attempt != 1 || running.Host != "h" {
		t.Errorf("running event: attempt %d host %q; want 1, h", running.Attempt, running.Host)
	}
	// Output is not a state change: no event for it.
	w.appendLog(as[0].Lease.LeaseRef, tasks.Stdout, 0, "hello\n")

	now := time.Now()
	if status, err := w.finish(as[0].Lease.LeaseRef, tasks.Result{State: tasks.Succeeded, ExitCode: exitCode(0), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatalf("finish: %d %s", status, err.Message)
	}
	done := nextTask(t, ch, task.ID, tasks.Succeeded)
	if done.ExitCode == nil || *done.ExitCode != 0 {
		t.Errorf("final event has exit code %v; want 0", done.ExitCode)
	}
	if ev := next(t, ch); ev.name != "end" {
		t.Errorf("after the last final task got %q; want end", ev.name)
	}
	select {
	case ev, ok := <-ch:
		if ok {
			t.Errorf("event %+v after end; want the stream closed", ev)
		}
	case <-time.After(5 * time.Second):
		t.Error("the stream did not end once its task was final")
	}
}

func TestEventStreamOfFinalTasksEndsAtOnce(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	a := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	b := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	e.must(alice, "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", a.ID), nil, nil)
	e.must(alice, "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", b.ID), nil, nil)
	ch := e.stream(alice, fmt.Sprintf("task=%d,%d&task=%d", a.ID, b.ID, a.ID))
	got := map[tasks.ID]tasks.State{}
	for range 2 {
		ev := next(t, ch)
		got[ev.task.ID] = ev.task.State
	}
	if got[a.ID] != tasks.Cancelled || got[b.ID] != tasks.Cancelled {
		t.Errorf("got %v; want both cancelled, once each", got)
	}
	if ev := next(t, ch); ev.name != "end" {
		t.Errorf("got %q; want end", ev.name)
	}
}

func TestEventStreamHidesOthersTasks(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	bob := e.user("bob")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	mine := e.submit(bob, tasks.Spec{Group: "bob", Command: []string{"true"}})
	for _, q := range []string{
		fmt.Sprintf("task=%d", task.ID),
		fmt.Sprintf("task=%d&task=%d", mine.ID, task.ID),
		"task=999999",
		"group=alice",
		"group=nosuch",
	} {
		if status, err := e.call(bob, "GET", "/api/v1/events?"+q, nil, nil); status != http.StatusNotFound || err.Code != tasks.ENotFound {
			t.Errorf("bob: events?%s: %d %+v; want 404 not_found", q, status, err)
		}
	}
	for _, q := range []string{"", "task=x", "task=1&group=bob", "group=bob&group=alice", "group=Bad%20Name"} {
		if status, _ := e.call(bob, "GET", "/api/v1/events?"+q, nil, nil); status != http.StatusBadRequest {
			t.Errorf("events?%s: status %d; want 400", q, status)
		}
	}
	if status, _ := e.call("", "GET", fmt.Sprintf("/api/v1/events?task=%d", mine.ID), nil, nil); status != http.StatusUnauthorized {
		t.Errorf("anonymous: status %d; want 401", status)
	}
}

func TestEventStreamOfGroupSeesNewTasks(t *testing.T) {
	e := newEnv(t, coordinator.Config{Recheck: time.Hour})
	alice := e.user("alice")
	e.must(alice, "POST", "/api/v1/groups", map[string]string{"name": "lab"}, nil)
	old := e.submit(alice, tasks.Spec{Group: "lab", Command: []string{"true"}})
	ch := e.stream(alice, "group=lab")
	nextTask(t, ch, old.ID, tasks.Queued) // the current state first

	e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}}) // another group: not shown
	task := e.submit(alice, tasks.Spec{Group: "lab", Command: []string{"true"}})
	nextTask(t, ch, task.ID, tasks.Queued)
	e.must(alice, "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", task.ID), nil, nil)
	nextTask(t, ch, task.ID, tasks.Cancelled)
	e.must(alice, "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", old.ID), nil, nil)
	nextTask(t, ch, old.ID, tasks.Cancelled)
}

// dropBus is a bus that loses every event.
type dropBus struct{}

func (dropBus) Publish(context.Context, events.Event) error { return nil }
func (dropBus) Subscribe() (<-chan events.Event, func()) {
	return make(chan events.Event), func() {}
}

func TestEventStreamSurvivesLostEvents(t *testing.T) {
	e := newEnv(t, coordinator.Config{Events: dropBus{}, Recheck: 50 * time.Millisecond})
	alice := e.user("alice")
	e.must(alice, "POST", "/api/v1/groups", map[string]string{"name": "lab"}, nil)
	task := e.submit(alice, tasks.Spec{Group: "lab", Command: []string{"true"}})
	byTask := e.stream(alice, fmt.Sprintf("task=%d", task.ID))
	byGroup := e.stream(alice, "group=lab")
	nextTask(t, byTask, task.ID, tasks.Queued)
	nextTask(t, byGroup, task.ID, tasks.Queued)

	// A task created and ended between two looks is still shown ended.
	quick := e.submit(alice, tasks.Spec{Group: "lab", Command: []string{"true"}})
	e.must(alice, "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", quick.ID), nil, nil)
	nextTask(t, byGroup, quick.ID, tasks.Cancelled)

	e.must(alice, "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", task.ID), nil, nil)
	nextTask(t, byTask, task.ID, tasks.Cancelled)
	nextTask(t, byGroup, task.ID, tasks.Cancelled)
	if ev := next(t, byTask); ev.name != "end" {
		t.Errorf("got %q; want end", ev.name)
	}
}

// appendLog sends a chunk of output for an attempt.
func (w *worker) appendLog(ref tasks.LeaseRef, stream tasks.Stream, off int64, data string) {
	w.e.t.Helper()
	url := fmt.Sprintf("%s/worker/v1/tasks/%d/log?attempt=%d&stream=%s&offset=%d", w.e.srv.URL, ref.Task, ref.Attempt, stream, off)
	req, _ := http.NewRequest("POST", url, strings.NewReader(data))
	req.Header.Set("X-Mito-Session", w.session)
	req.Header.Set("X-Mito-Lease", ref.Token)
	resp, err := w.e.srv.Client().Do(req)
	if err != nil {
		w.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		w.e.t.Fatalf("append log: %d %q", resp.StatusCode, b)
	}
}

// readLog does GET .../logs?query and returns the body and headers.
func (e *env) readLog(token string, id tasks.ID, query string) (string, http.Header) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/tasks/%d/logs?%s", e.srv.URL, id, query), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Error(err)
		return "", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Errorf("logs?%s: %d %q", query, resp.StatusCode, b)
	}
	return string(b), resp.Header
}

func TestLogFollowAnswersWhenOutputArrives(t *testing.T) {
	e := newEnv(t, coordinator.Config{Recheck: time.Hour})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "h", []string{"alice"}, 1)
	as := w.claim(1, 0)
	if len(as) != 1 {
		t.Fatalf("claimed %d; want 1", len(as))
	}
	ref := as[0].Lease.LeaseRef

	type answer struct {
		body string
		h    http.Header
		took time.Duration
	}
	follow := func(query string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			start := time.Now()
			body, h := e.readLog(alice, task.ID, query)
			ch <- answer{body, h, time.Since(start)}
		}()
		return ch
	}

	// Waiting on stdout: stderr output does not answer it, stdout does.
	got := follow("follow=true&wait=20s")
	time.Sleep(200 * time.Millisecond)
	w.appendLog(ref, tasks.Stderr, 0, "noise\n")
	time.Sleep(200 * time.Millisecond)
	w.appendLog(ref, tasks.Stdout, 0, "first\n")
	a := <-got
	if a.body != "first\n" || a.h.Get("X-Mito-Next-Offset") != "6" || a.h.Get("X-Mito-Task-State") != "running" {
		t.Errorf("follow answered %q, next %s, state %s; want first line, 6, running", a.body, a.h.Get("X-Mito-Next-Offset"), a.h.Get("X-Mito-Task-State"))
	}
	if a.took < 300*time.Millisecond || a.took > 5*time.Second {
		t.Errorf("follow took %s; want it to answer when the chunk came (about 400ms)", a.took)
	}

	// Bytes already there come at once.
	if body, _ := e.readLog(alice, task.ID, "follow=true&wait=20s"); body != "first\n" {
		t.Errorf("follow from 0: %q", body)
	}

	// A wait with nothing coming answers empty when it runs out.
	start := time.Now()
	body, h := e.readLog(alice, task.ID, "follow=true&wait=300ms&offset=6")
	if took := time.Since(start); body != "" || h.Get("X-Mito-Next-Offset") != "6" || took < 250*time.Millisecond || took > 5*time.Second {
		t.Errorf("follow with nothing new: %q next %s after %s; want empty, 6, after about 300ms", body, h.Get("X-Mito-Next-Offset"), took)
	}

	// The task ending answers a waiting follower, with the final state.
	got = follow("follow=true&wait=20s&offset=6")
	time.Sleep(200 * time.Millisecond)
	now := time.Now()
	if status, err := w.finish(ref, tasks.Result{State: tasks.Failed, ExitCode: exitCode(2), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatalf("finish: %d %s", status, err.Message)
	}
	a = <-got
	if a.body != "" || a.h.Get("X-Mito-Task-State") != "failed" || a.took > 5*time.Second {
		t.Errorf("follow at the end answered %q state %s after %s; want empty, failed, at once", a.body, a.h.Get("X-Mito-Task-State"), a.took)
	}
	// A final task's follow does not wait.
	start = time.Now()
	if body, _ := e.readLog(alice, task.ID, "follow=true&wait=20s&offset=6"); body != "" || time.Since(start) > 5*time.Second {
		t.Errorf("follow of a final task: %q after %s", body, time.Since(start))
	}
	if status, _ := e.call(alice, "GET", fmt.Sprintf("/api/v1/tasks/%d/logs?follow=maybe", task.ID), nil, nil); status != http.StatusBadRequest {
		t.Errorf("follow=maybe: status %d; want 400", status)
	}
	if status, _ := e.call(alice, "GET", fmt.Sprintf("/api/v1/tasks/%d/logs?follow=true&wait=soon", task.ID), nil, nil); status != http.StatusBadRequest {
		t.Errorf("wait=soon: status %d; want 400", status)
	}
}

func TestLogFollowOfQueuedTaskAnswersWhenItStarts(t *testing.T) {
	e := newEnv(t, coordinator.Config{Recheck: time.Hour})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	type answer struct {
		h    http.Header
		took time.Duration
	}
	got := make(chan answer, 1)
	go func() {
		start := time.Now()
		_, h := e.readLog(alice, task.ID, "follow=true&wait=20s")
		got <- answer{h, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond)
	w := e.worker(alice, "h", []string{"alice"}, 1)
	if as := w.claim(1, 0); len(as) != 1 {
		t.Fatalf("claimed %d; want 1", len(as))
	}
	a := <-got
	if a.took > 5*time.Second || a.h.Get("X-Mito-Task-State") != "running" {
		t.Errorf("follow of a queued task answered state %s after %s; want running, when it started", a.h.Get("X-Mito-Task-State"), a.took)
	}
}
