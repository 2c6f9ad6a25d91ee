package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// timedLine is a line of a running command's stdout and when it came.
type timedLine struct {
	text string
	at   time.Time
}

// running is a mito command whose stdout the test reads as it runs.
type running struct {
	cmd   *exec.Cmd
	lines chan timedLine // closed at EOF
}

// start runs the mito binary as the lab's user without waiting for it.
func (l *lab) start(args ...string) *running {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	l.t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "mito"), args...)
	cmd.Env = append(os.Environ(), "MITO_CONFIG_DIR="+l.cfgDir, "MITO_COORDINATOR="+l.url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	l.t.Cleanup(func() {
		if l.t.Failed() {
			l.t.Logf("mito %s stderr:\n%s", strings.Join(args, " "), stderr.String())
		}
	})
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	r := &running{cmd: cmd, lines: make(chan timedLine, 1000)}
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- timedLine{sc.Text(), time.Now()}
		}
	}()
	return r
}

// all collects every line until EOF, then the exit code.
func (r *running) all(t *testing.T) ([]timedLine, int) {
	t.Helper()
	var got []timedLine
	timeout := time.After(90 * time.Second)
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				err := r.cmd.Wait()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				return got, code
			}
			got = append(got, l)
		case <-timeout:
			t.Fatalf("command did not end; got %v so far", got)
		}
	}
}

// next returns the next line, failing the test if none comes in time.
func (r *running) next(t *testing.T) timedLine {
	t.Helper()
	select {
	case l, ok := <-r.lines:
		if !ok {
			t.Fatal("the command's output ended early")
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("no line within 30s")
	}
	panic("unreachable")
}

func TestWatchAndFollow(t *testing.T) {
	l := startLab(t, twoLocalHosts)

	t.Run("logs -f prints output as it is written", func(t *testing.T) {
		tid := l.submit("--shell", `for i in 1 2 3 4 5; do echo "line $i"; sleep 0.5; done`)
		l.waitFor(tid, 30*time.Second, tasks.Running)
		r := l.start("client", "tasks", "logs", "-f", id(tid))
		lines, code := r.all(t)
		var text []string
		for _, ln := range lines {
			text = append(text, ln.text)
		}
		if code != 0 || strings.Join(text, ",") != "line 1,line 2,line 3,line 4,line 5" {
			t.Fatalf("logs -f printed %q, exit %d; want the five lines, exit 0", text, code)
		}
		// Written 0.5s apart, they must not all come at the end.
		if spread := lines[4].at.Sub(lines[0].at); spread < time.Second {
			t.Errorf("the first and last lines came %s apart; want them printed as written, about 2s apart", spread)
		}
		if got := l.get(tid); got.State != tasks.Succeeded {
			t.Errorf("logs -f returned while the task is %s; want it to follow to the end", got.State)
		}
	})

	t.Run("watch prints each change and exits with the outcome", func(t *testing.T) {
		ok := l.submit("--shell", "sleep 2")
		bad := l.submit("--shell", "sleep 2; exit 3")
		r := l.start("client", "tasks", "watch", id(ok), id(bad))
		first := r.next(t)
		lines, code := r.all(t)
		lines = append([]timedLine{first}, lines...)
		last := map[string]string{}
		for _, ln := range lines {
			f := strings.Fields(ln.text)
			if len(f) < 4 {
				t.Fatalf("line %q does not read TIME ID STATE HOST", ln.text)
			}
			if prev, seen := last[f[1]]; seen && prev == f[2] {
				t.Errorf("state %s of task %s printed twice", f[2], f[1])
			}
			last[f[1]] = f[2]
		}
		if last[id(ok)] != "succeeded" || last[id(bad)] != "failed" || code != 1 {
			t.Fatalf("watch printed %v, exit %d; want task %d succeeded, %d failed, exit 1", lines, code, ok, bad)
		}
		if !strings.Contains(lines[len(lines)-1].text, "(exit ") {
			t.Errorf("last line %q lacks the exit code", lines[len(lines)-1].text)
		}
		// The first state came as soon as the watch began, the ends seconds later.
		if spread := lines[len(lines)-1].at.Sub(first.at); spread < time.Second {
			t.Errorf("lines came %s apart; want them printed as the tasks changed", spread)
		}
	})

	t.Run("watch --group shows new tasks until interrupted", func(t *testing.T) {
		r := l.start("client", "tasks", "watch", "--group", "admin", "-o", "json")
		time.Sleep(500 * time.Millisecond) // let it connect; it shows only what is under way
		tid := l.submit("--shell", "true")
		var states []tasks.State
		for len(states) == 0 || !states[len(states)-1].Final() {
			var task tasks.Task
			ln := r.next(t)
			if err := json.Unmarshal([]byte(ln.text), &task); err != nil {
				t.Fatalf("line %q is not a JSON task: %v", ln.text, err)
			}
			if task.ID == tid {
				states = append(states, task.State)
			}
		}
		if states[len(states)-1] != tasks.Succeeded {
			t.Errorf("task %d went %v; want it to end succeeded", tid, states)
		}
		_ = r.cmd.Process.Signal(syscall.SIGINT)
		if _, code := r.all(t); code != 130 {
			t.Errorf("watch --group exit %d after SIGINT; want 130", code)
		}
	})
}
