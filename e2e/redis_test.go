package e2e_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// redisServer is a redis-server child process the test owns, so that it
// can kill it and start it again on the same port.
type redisServer struct {
	t    *testing.T
	addr string
	cmd  *exec.Cmd
	logs *syncBuffer
}

func (r *redisServer) start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	r.logs = &syncBuffer{}
	r.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", r.t.TempDir())
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s did not answer: %v\n%s", r.addr, err, r.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill stops redis-server at once, as a crash would.
func (r *redisServer) kill() {
	if r.cmd == nil || r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

// TestRedisOutage runs two coordinators on one PostgreSQL and one Redis,
// kills Redis in the middle of a run and brings it back: no task is lost or
// run twice, and a group watcher on the other coordinator reports every
// task's end.
func TestRedisOutage(t *testing.T) {
	pg := os.Getenv("MITO_TEST_PG_URL")
	_, errRedis := exec.LookPath("redis-server")
	if pg == "" || errRedis != nil {
		msg := "needs MITO_TEST_PG_URL and redis-server on PATH: run `make test`, or `bash .ci/services-up.sh && source .ci/tmp/env`"
		skipOrFail(t, msg)
	}
	db := freshSchema(t, pg, "e2e_redis")

	rs := &redisServer{t: t, addr: freePort(t)}
	rs.start()
	t.Cleanup(func() {
		rs.kill()
		if t.Failed() {
			t.Logf("redis-server log:\n%s", rs.logs.String())
		}
	})
	redisURL := "redis://" + rs.addr + "/0"
	a := startLab(t, twoLocalHosts, "--db", db, "--redis", redisURL, "--id", "a")
	b := startLab(t, twoLocalHosts, "--db", db, "--redis", redisURL, "--id", "b")
	for name, l := range map[string]*lab{"a": a, "b": b} {
		if !strings.Contains(l.logs.String(), "events=\"redis") {
			t.Fatalf("coordinator %s does not say it uses Redis for events:\n%s", name, l.logs.String())
		}
	}

	// The watcher on B reads its stdout as it comes.
	w := b.start("client", "tasks", "watch", "--group", "admin", "-o", "json")
	var (
		mu       sync.Mutex
		final    = map[tasks.ID]tasks.State{}
		badLines []string
	)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for ln := range w.lines {
			var task tasks.Task
			mu.Lock()
			if err := json.Unmarshal([]byte(ln.text), &task); err != nil || task.ID == 0 {
				badLines = append(badLines, ln.text)
			} else if task.State.Final() {
				final[task.ID] = task.State
			}
			mu.Unlock()
		}
	}()
	time.Sleep(500 * time.Millisecond) // let it connect

	// Each task appends to a file of its own, to count its runs.
	runs := t.TempDir()
	var all []tasks.ID
	marks := map[tasks.ID]string{}
	submitPhase := func(phase int) []tasks.ID {
		t.Helper()
		const n, workers = 50, 8
		out := make([]tasks.ID, n)
		errs := make([]string, n)
		next := make(chan int)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					mark := filepath.Join(runs, fmt.Sprintf("p%d-%02d", phase, i))
					stdout, stderr, code := a.run(nil, "client", "submit", "-o", "json", "--shell", "sleep 0.1; echo run >> "+mark)
					var task tasks.Task
					if err := json.Unmarshal([]byte(stdout), &task); code != 0 || err != nil || task.ID == 0 {
						errs[i] = fmt.Sprintf("submit %d of phase %d: exit %d, stdout %q, stderr %q", i, phase, code, stdout, stderr)
						continue
					}
					out[i] = task.ID
					mu.Lock()
					marks[task.ID] = mark
					mu.Unlock()
				}
			}()
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		for _, e := range errs {
			if e != "" {
				t.Fatal(e)
			}
		}
		return out
	}

	start := time.Now()
	all = append(all, submitPhase(1)...)
	rs.kill()
	t.Logf("phase 1 submitted, redis killed after %s", time.Since(start))
	all = append(all, submitPhase(2)...)
	// Let the tasks of phases 1 and 2 end while Redis is down: the watcher
	// learns of those ends only from B's rechecks of the store.
	waitFinal(t, a, all, 30*time.Second)
	t.Logf("phases 1 and 2 final after %s", time.Since(start))
	rs.start()
	t.Logf("phase 2 submitted, redis restarted after %s", time.Since(start))
	all = append(all, submitPhase(3)...)
	t.Logf("phase 3 submitted after %s", time.Since(start))

	// Every task ends succeeded, on its first attempt, having run once.
	want := make(map[tasks.ID]bool, len(all))
	for _, id := range all {
		want[id] = true
	}
	list := waitFinal(t, a, all, 30*time.Second)
	t.Logf("all tasks final after %s", time.Since(start))
	listed := map[tasks.ID]bool{}
	hosts := map[string]int{}
	for _, task := range list {
		if _, ok := want[task.ID]; !ok {
			continue
		}
		listed[task.ID] = true
		hosts[task.Host]++
		if task.State != tasks.Succeeded || task.Attempt != 1 {
			t.Errorf("task %d: %s on attempt %d (%s); want succeeded on attempt 1", task.ID, task.State, task.Attempt, task.Error)
		}
	}
	if len(listed) != len(want) {
		t.Errorf("tasks list shows %d of the %d tasks submitted", len(listed), len(want))
	}
	t.Logf("tasks per host: %v", hosts)
	for _, id := range all {
		b, err := os.ReadFile(marks[id])
		if got := strings.Count(string(b), "run\n"); err != nil || got != 1 {
			t.Errorf("task %d ran %d times (%v); want once", id, got, err)
		}
	}

	// The watcher on B reports the end of every task, those that ended
	// while Redis was down included.
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		var missing []tasks.ID
		for _, id := range all {
			if final[id] != tasks.Succeeded {
				missing = append(missing, id)
			}
		}
		bad := append([]string(nil), badLines...)
		mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("the watcher printed lines that are not JSON tasks: %q", bad)
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher on coordinator b never reported %d tasks succeeded: %v", len(missing), missing)
		}
		select {
		case <-watchDone:
			t.Fatalf("the watcher ended early; %d tasks not reported: %v", len(missing), missing)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("watcher saw every end after %s", time.Since(start))

	// Both coordinators noticed the outage and the return of Redis, and
	// both are still up.
	deadline = time.Now().Add(10 * time.Second)
	for name, l := range map[string]*lab{"a": a, "b": b} {
		for {
			logs := l.logs.String()
			if strings.Contains(logs, "redis events connection lost") && strings.Contains(logs, "redis events connection restored") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("coordinator %s did not log the loss and return of Redis", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
		l.mustRun(nil, "client", "tasks", "list", "--limit", "1")
	}
}

// waitFinal polls the task list until every task of ids is final and
// returns the list.
func waitFinal(t *testing.T, l *lab, ids []tasks.ID, timeout time.Duration) []tasks.Task {
	t.Helper()
	want := make(map[tasks.ID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	deadline := time.Now().Add(timeout)
	for {
		out := l.mustRun(nil, "client", "tasks", "list", "-o", "json", "--all", "-g", "admin")
		var page struct {
			Tasks []tasks.Task `json:"tasks"`
		}
		if err := json.Unmarshal([]byte(out), &page); err != nil {
			t.Fatalf("tasks list printed %q: %v", out, err)
		}
		done := 0
		for _, task := range page.Tasks {
			if want[task.ID] && task.State.Final() {
				done++
			}
		}
		if done == len(want) {
			return page.Tasks
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tasks final after %s", done, len(want), timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
