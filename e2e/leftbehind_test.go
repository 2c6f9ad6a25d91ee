package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// leaverScript, on its first attempt, starts `setsid sleep 1000 &` and a
// double-forked daemon in a session of its own, writes their pids and its
// own to $D/<task>.*, and sleeps. Its later attempts succeed at once.
const leaverScript = `
if [ "$MITO_ATTEMPT" -gt 1 ]; then echo again; exit 0; fi
p=$D/$MITO_TASK_ID
setsid sleep 1000 </dev/null >/dev/null 2>&1 &
echo $! > "$p.setsid"
sh -c 'setsid sh -c "sleep 1001 & echo \$! > \"$0.daemon\"" </dev/null >/dev/null 2>&1 &' "$p"
while [ ! -s "$p.daemon" ]; do sleep 0.05; done
echo $$ > "$p.main"
sleep 1000
`

// TestSSHLeftBehindDies runs, on an SSH host whose tasks' watchdogs hold
// them as their subreaper and on one with a cgroup delegated to the SSH
// user, a task that leaves a setsid child and a double-forked daemon:
// nothing of it may outlive its timeout, nor a SIGKILL of its shim. What
// `hosts facts` says of each host is checked on the way.
func TestSSHLeftBehindDies(t *testing.T) {
	s := needSSH(t)
	inv, names := s.inventory(t, "")
	l := startLab(t, inv)
	l.waitHosts(60*time.Second, tasks.HostReady, names...)

	type target struct{ host, tag, hostport string }
	modes := map[string]target{"subreaper": {"h1", "a", s.hosts[0]}}
	switch cg := os.Getenv("MITO_TEST_SSH_CGROUP"); {
	case cg == s.hosts[2]:
		modes["cgroup"] = target{"h3", "c", s.hosts[2]}
	case os.Getenv("MITO_TEST_REQUIRE") != "":
		t.Errorf("no SSH host with a delegated cgroup (MITO_TEST_SSH_CGROUP=%q): .ci/ssh-hosts.sh makes one where there is a cgroup v2", cg)
	}
	for mode, tg := range modes {
		var f tasks.HostFacts
		if err := json.Unmarshal([]byte(l.mustRun(nil, "client", "hosts", "facts", "-o", "json", tg.host)), &f); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(f.Containment, mode) {
			t.Errorf("facts of %s say tasks are held by %q; want %s", tg.host, f.Containment, mode)
		}
	}

	// The pids go where the SSH user may write and the test may read.
	d, err := os.MkdirTemp("", "mito-e2e-leftbehind-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	pids := func(t *testing.T, id tasks.ID) []int {
		t.Helper()
		var out []int
		deadline := time.Now().Add(60 * time.Second)
		for _, kind := range []string{"main", "setsid", "daemon"} {
			for {
				b, err := os.ReadFile(filepath.Join(d, fmt.Sprintf("%d.%s", id, kind)))
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 0 {
					out = append(out, pid)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("task %d wrote no %s pid", id, kind)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		t.Cleanup(func() {
			for _, pid := range out {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		return out
	}
	live := func(ps []int) []int {
		var out []int
		for _, pid := range ps {
			st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
			if err != nil {
				continue
			}
			if i := strings.LastIndexByte(string(st), ')'); i >= 0 && !strings.HasPrefix(strings.TrimSpace(string(st[i+1:])), "Z") {
				out = append(out, pid)
			}
		}
		return out
	}

	for mode, tg := range modes {
		t.Run(mode+"/timeout", func(t *testing.T) {
			id := l.submit("-t", tg.tag, "--timeout", "3s", "--env", "D="+d, "--", "sh", "-c", leaverScript)
			ps := pids(t, id)
			task := l.waitFor(id, 60*time.Second, tasks.TimedOut, tasks.Succeeded, tasks.Failed)
			if task.State != tasks.TimedOut {
				t.Errorf("task %s (%s); want timed out", task.State, task.Error)
			}
			// The watchdog reports the attempt only once all of it is dead.
			if left := live(ps); len(left) > 0 {
				t.Errorf("processes %v of %v outlived the timeout", left, ps)
			}
		})
		t.Run(mode+"/shim killed", func(t *testing.T) {
			id := l.submit("-t", tg.tag, "--env", "D="+d, "--", "sh", "-c", leaverScript)
			ps := pids(t, id)
			daemon := daemonOf(t, tg.hostport)
			killed := 0
			for _, p := range descendants(daemon) {
				if strings.Contains(p.exe, "/.cache/mito/shim-") && p.comm != "mito-watchdog" {
					if syscall.Kill(p.pid, syscall.SIGKILL) == nil {
						killed++
					}
				}
			}
			if killed == 0 {
				t.Fatalf("no shim under the sshd of %s", tg.host)
			}
			deadline := time.Now().Add(60 * time.Second)
			for len(live(ps)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("processes %v of %v still run 60s after their shim was killed", live(ps), ps)
				}
				time.Sleep(50 * time.Millisecond)
			}
			task := l.waitFor(id, 60*time.Second, tasks.Succeeded, tasks.Failed)
			if task.State != tasks.Succeeded || task.Attempt != 2 {
				t.Errorf("task %s at attempt %d (%s); want its second attempt to succeed", task.State, task.Attempt, task.Error)
			}
		})
	}
}
