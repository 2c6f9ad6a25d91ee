package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

const twoLocalHosts = `
hosts:
  - name: alpha
    transport: local
    tags: [cpu, fast]
    groups: [admin]
    slots: 2
    env:
      LAB_SITE: e2e
  - name: beta
    transport: local
    tags: [cpu]
    groups: [admin]
    slots: 2
`

func id(t tasks.ID) string { return strconv.FormatInt(int64(t), 10) }

func TestCoreLoop(t *testing.T) {
	l := startLab(t, twoLocalHosts)
	tmp := t.TempDir()

	t.Run("hosts come up", func(t *testing.T) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			var hosts []tasks.Host
			out := l.mustRun(nil, "client", "hosts", "list", "-o", "json")
			if err := json.Unmarshal([]byte(out), &hosts); err != nil {
				t.Fatalf("hosts list -o json printed %q: %v", out, err)
			}
			ready := 0
			for _, h := range hosts {
				if h.State == tasks.HostReady {
					ready++
				}
			}
			if ready == 2 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("hosts not ready after 20s: %+v", hosts)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("success with artifacts, env and logs", func(t *testing.T) {
		tid := l.submit("-t", "fast", "--shell", `echo "site=$LAB_SITE task=$MITO_TASK_ID attempt=$MITO_ATTEMPT"
echo "a,b" > "$MITO_OUTPUT_DIR/result.csv"
mkdir -p "$MITO_OUTPUT_DIR/sub" && echo nested > "$MITO_OUTPUT_DIR/sub/y.txt"
ln -s /etc/passwd "$MITO_OUTPUT_DIR/escape"
echo oops >&2`)
		l.mustRun(nil, "client", "tasks", "wait", "-q", id(tid))
		task := l.get(tid)
		if task.State != tasks.Succeeded || task.ExitCode == nil || *task.ExitCode != 0 || task.Host != "alpha" {
			t.Fatalf("task = %s exit %v on %s; want succeeded, 0, on alpha (the only fast host)", task.State, task.ExitCode, task.Host)
		}
		logs := l.mustRun(nil, "client", "tasks", "logs", id(tid))
		if want := "site=e2e task=" + id(tid) + " attempt=1"; !strings.Contains(logs, want) {
			t.Errorf("stdout %q lacks %q", logs, want)
		}
		if errs := l.mustRun(nil, "client", "tasks", "logs", "--stderr", id(tid)); !strings.Contains(errs, "oops") {
			t.Errorf("stderr %q lacks oops", errs)
		}
		out := l.mustRun(nil, "client", "tasks", "artifacts", "list", "-o", "json", id(tid))
		var arts []tasks.Artifact
		if err := json.Unmarshal([]byte(out), &arts); err != nil {
			t.Fatalf("artifacts list printed %q: %v", out, err)
		}
		var names []string
		for _, a := range arts {
			names = append(names, a.Name)
		}
		if strings.Join(names, ",") != "result.csv,sub/y.txt" {
			t.Errorf("artifacts %v; want result.csv and sub/y.txt (the symlink is not uploaded)", names)
		}
		dl := filepath.Join(tmp, "dl")
		l.mustRun(nil, "client", "tasks", "artifacts", "download", "-o", dl, id(tid))
		for name, want := range map[string]string{"result.csv": "a,b\n", "sub/y.txt": "nested\n"} {
			got, err := os.ReadFile(filepath.Join(dl, name))
			if err != nil || string(got) != want {
				t.Errorf("downloaded %s = %q, %v; want %q", name, got, err, want)
			}
		}
	})

	t.Run("exit 3 fails with exit code 3", func(t *testing.T) {
		tid := l.submit("--", "sh", "-c", "exit 3")
		if _, _, code := l.run(nil, "client", "tasks", "wait", "-q", id(tid)); code != 1 {
			t.Errorf("tasks wait exit code %d; want 1 for a failed task", code)
		}
		task := l.get(tid)
		if task.State != tasks.Failed || task.ExitCode == nil || *task.ExitCode != 3 {
			t.Errorf("task = %s exit %v; want failed with 3", task.State, task.ExitCode)
		}
	})

	t.Run("timeout kills the whole process group", func(t *testing.T) {
		pidFile := filepath.Join(tmp, "timeout.pid")
		tid := l.submit("--timeout", "2s", "--env", "PID_FILE="+pidFile, "--shell", `echo $$ > "$PID_FILE"; sleep 300 & sleep 301; wait`)
		pgid := readPID(t, pidFile, 20*time.Second)
		task := l.waitFor(tid, 30*time.Second, tasks.TimedOut, tasks.Failed, tasks.Succeeded)
		if task.State != tasks.TimedOut {
			t.Fatalf("state %s; want timed_out", task.State)
		}
		// Timeout 2s + kill grace 1s + 2s.
		if took := task.FinishedAt.Sub(*task.StartedAt); took > 5*time.Second {
			t.Errorf("ran %s; want at most timeout + grace + 2s = 5s", took)
		}
		if live := liveInGroup(pgid); len(live) > 0 {
			t.Errorf("processes %v of the task's group %d survive", live, pgid)
		}
	})

	t.Run("cancel kills a running task", func(t *testing.T) {
		pidFile := filepath.Join(tmp, "cancel.pid")
		tid := l.submit("--env", "PID_FILE="+pidFile, "--shell", `echo $$ > "$PID_FILE"; sleep 300`)
		pgid := readPID(t, pidFile, 20*time.Second)
		l.waitFor(tid, 10*time.Second, tasks.Running)
		l.mustRun(nil, "client", "tasks", "cancel", id(tid))
		if task := l.get(tid); task.State != tasks.Cancelled {
			t.Errorf("state after cancel %s; want cancelled", task.State)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(liveInGroup(pgid)) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("processes %v still alive 10s after cancel", liveInGroup(pgid))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("retry makes a new task", func(t *testing.T) {
		tid := l.submit("--", "sh", "-c", "exit 3")
		l.waitFor(tid, 20*time.Second, tasks.Failed)
		out := l.mustRun(nil, "client", "tasks", "retry", "-o", "json", id(tid))
		var retried tasks.Task
		if err := json.Unmarshal([]byte(out), &retried); err != nil {
			t.Fatalf("retry printed %q: %v", out, err)
		}
		if retried.RetryOf != tid || retried.ID == tid {
			t.Errorf("retry = task %d retry_of %d; want a new task retrying %d", retried.ID, retried.RetryOf, tid)
		}
	})

	t.Run("unmatched tags stay queued", func(t *testing.T) {
		tid := l.submit("-t", "gpu", "--", "true")
		time.Sleep(500 * time.Millisecond)
		if task := l.get(tid); task.State != tasks.Queued {
			t.Errorf("task needing gpu is %s; want queued (no host has gpu)", task.State)
		}
	})

	t.Run("stop leaves no shim behind", func(t *testing.T) {
		l.stop()
		if code := l.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("coordinator exit code %d after SIGTERM; want 0", code)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			left := processesRunning(filepath.Join(bin, "mito-shim"))
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shim processes %v still running after the coordinator stopped", left)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// processesRunning lists live processes whose executable is path.
func processesRunning(path string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && exe == path {
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
				s := string(st)
				if i := strings.LastIndexByte(s, ')'); i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z") {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}
