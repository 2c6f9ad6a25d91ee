package e2e_test

import (
	"bytes"
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

// sshLab describes the real sshd hosts that .ci/services-up.sh starts.
type sshLab struct {
	hosts      []string // host:port of the loopback hosts
	user, key  string
	knownHosts string
	jump       string // host:port of the jump host, or ""
	inner      string // host:port of the host behind it, or ""
	lab        string // the services' directory ($LAB)
}

// needSSH returns the sshd hosts, or skips (fails under MITO_TEST_REQUIRE)
// when they are not running.
func needSSH(t *testing.T) sshLab {
	t.Helper()
	l := sshLab{
		user: os.Getenv("MITO_TEST_SSH_USER"), key: os.Getenv("MITO_TEST_SSH_KEY"),
		knownHosts: os.Getenv("MITO_TEST_SSH_KNOWN_HOSTS"),
		jump:       os.Getenv("MITO_TEST_SSH_JUMP"), inner: os.Getenv("MITO_TEST_SSH_INNER"),
		lab: os.Getenv("LAB"),
	}
	if h := os.Getenv("MITO_TEST_SSH_HOSTS"); h != "" {
		l.hosts = strings.Split(h, ",")
	}
	if len(l.hosts) < 3 || l.user == "" || l.key == "" || l.knownHosts == "" {
		msg := "no sshd hosts: run `make test`, or `bash .ci/services-up.sh && source .ci/tmp/env` first"
		skipOrFail(t, msg)
	}
	return l
}

func splitHostPort(t *testing.T, hp string) (string, int) {
	t.Helper()
	i := strings.LastIndex(hp, ":")
	port, err := strconv.Atoi(hp[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("bad host:port %q", hp)
	}
	return hp[:i], port
}

// inventory writes an inventory of the lab's hosts: h1..h3 on loopback
// (tags a, b, c; h3 refuses TCP forwarding), and jump and inner when the
// network namespaces are up. knownHosts overrides the known_hosts file.
func (s sshLab) inventory(t *testing.T, knownHosts string) (yaml string, names []string) {
	t.Helper()
	if knownHosts == "" {
		knownHosts = s.knownHosts
	}
	var b strings.Builder
	fmt.Fprintf(&b, "defaults:\n  transport: ssh\n  user: %s\n  identity_file: %s\n  known_hosts: %s\n  groups: [admin]\n  slots: 2\nhosts:\n", s.user, s.key, knownHosts)
	for i, hp := range s.hosts[:3] {
		host, port := splitHostPort(t, hp)
		name := fmt.Sprintf("h%d", i+1)
		fmt.Fprintf(&b, "  - {name: %s, address: %s, port: %d, tags: [%c]}\n", name, host, port, 'a'+i)
		names = append(names, name)
	}
	if s.jump != "" && s.inner != "" {
		jh, jp := splitHostPort(t, s.jump)
		ih, ip := splitHostPort(t, s.inner)
		fmt.Fprintf(&b, "  - {name: jump, address: %s, port: %d, tags: [jump]}\n", jh, jp)
		fmt.Fprintf(&b, "  - {name: inner, address: %s, port: %d, jump: jump, tags: [inner]}\n", ih, ip)
		names = append(names, "jump", "inner")
	}
	return b.String(), names
}

// waitHosts waits until the named hosts have the state, and returns all.
func (l *lab) waitHosts(timeout time.Duration, state tasks.HostState, names ...string) map[string]tasks.Host {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var hosts []tasks.Host
		out := l.mustRun(nil, "client", "hosts", "list", "-o", "json")
		if err := json.Unmarshal([]byte(out), &hosts); err != nil {
			l.t.Fatalf("hosts list printed %q: %v", out, err)
		}
		byName := make(map[string]tasks.Host)
		for _, h := range hosts {
			byName[h.Name] = h
		}
		all := true
		for _, n := range names {
			all = all && byName[n].State == state
		}
		if all {
			return byName
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("hosts %v not %s after %s: %+v", names, state, timeout, hosts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// withMarker lists live processes whose command line holds marker.
func withMarker(marker string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(marker)) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			s := string(st)
			if i := strings.LastIndexByte(s, ')'); i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z") {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// shimProcesses lists the live processes that run a pushed shim (shims
// and their tasks' watchdogs) under this run's sshd hosts: not those of
// other runs, or other users, on the same machine.
func shimProcesses() []string {
	var out []string
	for _, d := range labDaemons() {
		for _, p := range descendants(d) {
			if strings.Contains(p.exe, "/.cache/mito/shim-") {
				out = append(out, fmt.Sprintf("%d %s (%s)", p.pid, p.exe, p.comm))
			}
		}
	}
	return out
}

// labDaemons returns the pids of this run's listening sshd, by the
// pidfiles .ci/ssh-hosts.sh wrote under $LAB/ssh.
func labDaemons() []int {
	files, _ := filepath.Glob(filepath.Join(os.Getenv("LAB"), "ssh", "*", "sshd.pid"))
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// daemonOf returns the pid of the listening sshd of host:port, by the
// listen files .ci/ssh-hosts.sh wrote.
func daemonOf(t *testing.T, hostport string) int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(os.Getenv("LAB"), "ssh", "*", "listen"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || strings.Fields(string(b))[0] != hostport {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(must(os.ReadFile(filepath.Join(filepath.Dir(f), "sshd.pid"))))))
		if err == nil {
			return pid
		}
	}
	t.Fatalf("no sshd for %s under $LAB/ssh", hostport)
	return 0
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// proc is a live process.
type proc struct {
	pid, ppid int
	comm, exe string
}

// descendants lists the live processes below pid.
func descendants(pid int) []proc {
	children := map[int][]proc{}
	liveProcs(func(p int, stat []string) {
		ppid, _ := strconv.Atoi(stat[1])
		exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(p), "exe"))
		comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "comm"))
		children[ppid] = append(children[ppid], proc{pid: p, ppid: ppid, comm: strings.TrimSpace(string(comm)), exe: exe})
	})
	var out []proc
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
	}
	return out
}

func TestSSHHosts(t *testing.T) {
	s := needSSH(t)
	inv, names := s.inventory(t, "")
	l := startLab(t, inv)
	l.waitHosts(60*time.Second, tasks.HostReady, names...)

	t.Run("tasks run on each host by tag", func(t *testing.T) {
		want := map[string]string{"a": "h1", "b": "h2", "c": "h3"}
		if len(names) == 5 {
			want["jump"], want["inner"] = "jump", "inner"
		}
		ids := map[string]tasks.ID{}
		for tag := range want {
			ids[tag] = l.submit("-t", tag, "sh", "-c", "hostname; id -un")
		}
		for tag, host := range want {
			task := l.waitFor(ids[tag], 60*time.Second, tasks.Succeeded, tasks.Failed)
			if task.State != tasks.Succeeded || task.Host != host {
				t.Errorf("task tagged %s: %s on %s; want succeeded on %s (%s)", tag, task.State, task.Host, host, task.Error)
			}
			if out := l.mustRun(nil, "client", "tasks", "logs", id(ids[tag])); !strings.HasSuffix(out, s.user+"\n") {
				t.Errorf("task on %s printed %q; want it to run as %s", host, out, s.user)
			}
		}
		if len(names) == 5 {
			out := l.mustRun(nil, "client", "tasks", "logs", id(ids["inner"]))
			if !strings.HasPrefix(out, "mitoinner") {
				t.Logf("inner host's hostname: %q", out)
			}
		}
	})

	t.Run("hostile strings arrive byte-exact and run nothing", func(t *testing.T) {
		const pwned = "/tmp/mito-e2e-pwned"
		os.Remove(pwned)
		big := strings.Repeat("x'\"$`\\", 64<<10/6)
		hostile := []string{
			"'; touch " + pwned + " #",
			"$(touch " + pwned + ")",
			"`touch " + pwned + "`",
			"line1\nline2\r\n\ttab",
			"\"quoted\" 'single' \\back",
			big,
		}
		script := `for a in "$@"; do printf '%s\0' "$a"; done > "$MITO_OUTPUT_DIR/argv"; printf '%s' "$HOSTILE" > "$MITO_OUTPUT_DIR/env"`
		args := []string{"-t", "a", "-l", hostile[0], "-l", hostile[3], "-l", big, "--env", "HOSTILE=" + hostile[1] + hostile[2] + big, "sh", "-c", script, "sh"}
		args = append(args, hostile...)
		tid := l.submit(args...)
		task := l.waitFor(tid, 60*time.Second, tasks.Succeeded, tasks.Failed)
		if task.State != tasks.Succeeded {
			t.Fatalf("task %s: %s", task.State, task.Error)
		}
		dir := t.TempDir()
		l.mustRun(nil, "client", "tasks", "artifacts", "download", "-o", dir, id(tid))
		gotArgv, _ := os.ReadFile(filepath.Join(dir, "argv"))
		if want := strings.Join(hostile, "\x00") + "\x00"; string(gotArgv) != want {
			t.Errorf("argv arrived changed: %d bytes; want %d", len(gotArgv), len(want))
		}
		gotEnv, _ := os.ReadFile(filepath.Join(dir, "env"))
		if want := hostile[1] + hostile[2] + big; string(gotEnv) != want {
			t.Errorf("env arrived changed: %d bytes; want %d", len(gotEnv), len(want))
		}
		if !contains(task.Labels, hostile[0]) || !contains(task.Labels, hostile[3]) || !contains(task.Labels, big) {
			t.Errorf("labels %q; want the hostile ones byte-exact", task.Labels)
		}
		if _, err := os.Stat(pwned); err == nil {
			t.Errorf("%s exists: a shell ran part of the task's data", pwned)
		}
	})

	t.Run("a killed connection never loses or doubles a task", func(t *testing.T) {
		pidFile := filepath.Join(s.lab, "ssh", "h3", "sshd.pid")
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Skipf("no sshd pidfile for the second host: %v", err)
		}
		daemon, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		tid := l.submit("-t", "b", "sh", "-c", "sleep 2; echo done")
		l.waitFor(tid, 30*time.Second, tasks.Running)
		// Kill the sshd processes that serve this coordinator's shim on
		// the host (not the listener, and not the connections of other
		// tests running at the same time): the session dies under it.
		killed := 0
		for _, pid := range shimSSHDs(daemon) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
		if killed == 0 {
			t.Fatal("found no sshd connection to kill")
		}
		task := l.waitFor(tid, 90*time.Second, tasks.Succeeded, tasks.Failed)
		if task.State != tasks.Succeeded || task.Attempt > 2 {
			t.Errorf("after the connection was killed: %s on attempt %d (%s); want succeeded on attempt 1 or 2", task.State, task.Attempt, task.Error)
		}
		if out := l.mustRun(nil, "client", "tasks", "logs", id(tid)); out != "done\n" {
			t.Errorf("logs %q; want one run's output", out)
		}
		// Back, but degraded (with the failure shown) until the link has held a while.
		if h := l.waitHosts(60*time.Second, tasks.HostDegraded, "h2")["h2"]; h.LastError == "" {
			t.Errorf("degraded host h2 shows no last error")
		}
	})

	t.Run("stop leaves nothing running on the hosts", func(t *testing.T) {
		// Two running tasks, one deaf to SIGTERM: stopping the coordinator
		// must kill both and remove their work directories.
		marker := fmt.Sprintf("mito-e2e-marker-%d", time.Now().UnixNano())
		deaf := l.submit("-t", "a", "sh", "-c", `echo "$MITO_WORK_DIR"; trap "" TERM; while :; do sleep 1; done`, marker+"-deaf")
		plain := l.submit("-t", "a", "sh", "-c", `echo "$MITO_WORK_DIR"; sleep 300`, marker+"-plain")
		var dirs []string
		for _, tid := range []tasks.ID{deaf, plain} {
			l.waitFor(tid, 30*time.Second, tasks.Running)
			deadline := time.Now().Add(10 * time.Second)
			for {
				out := strings.TrimSpace(l.mustRun(nil, "client", "tasks", "logs", id(tid)))
				if out != "" {
					dirs = append(dirs, out)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("task %d printed no work directory", tid)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		if len(withMarker(marker)) != 2 {
			t.Fatalf("processes with the marker before stopping: %v; want the 2 tasks", withMarker(marker))
		}
		l.stop()
		deadline := time.Now().Add(15 * time.Second)
		for len(withMarker(marker)) > 0 || len(shimProcesses()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("still running after the coordinator stopped: tasks %v, shims %v", withMarker(marker), shimProcesses())
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("work directory %s is left on the host", d)
			}
		}
	})

	t.Run("a second connect uploads nothing", func(t *testing.T) {
		l2 := startLab(t, inv)
		l2.waitHosts(60*time.Second, tasks.HostReady, names...)
		logs := l2.logs.String()
		if n := strings.Count(logs, "shim uploaded"); n != 0 {
			t.Errorf("%d shims uploaded on the second start; want 0", n)
		}
		if n := strings.Count(logs, "shim already on host"); n < len(names) {
			t.Errorf("%d hosts found their shim; want %d", n, len(names))
		}
	})
}

// TestSSHHostKeyMismatch gives the coordinator a known_hosts file in
// which the first host has another key: it must not run anything there,
// and say which host and which keys.
func TestSSHHostKeyMismatch(t *testing.T) {
	s := needSSH(t)
	known, err := os.ReadFile(s.knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	host, port := splitHostPort(t, s.hosts[0])
	pattern := fmt.Sprintf("[%s]:%d ", host, port)
	if port == 22 {
		pattern = host + " "
	}
	// Another valid ed25519 key, not the host's.
	const otherKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbmRo5N13tYnkzOr1Lv8bOq4ZbuKS8n4E0uT3bTQHLc"
	var out bytes.Buffer
	for _, line := range strings.Split(string(known), "\n") {
		if strings.HasPrefix(line, pattern) {
			line = pattern + otherKey
		}
		out.WriteString(line + "\n")
	}
	wrong := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(wrong, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, _ := s.inventory(t, wrong)
	// The sshd log of the first host shows every login; none may happen.
	sshdLog := filepath.Join(s.lab, "ssh", "h2", "sshd.log")
	before, _ := os.ReadFile(sshdLog)
	l := startLab(t, inv)
	hosts := l.waitHosts(60*time.Second, tasks.HostUnreachable, "h1")
	msg := hosts["h1"].LastError
	for _, want := range []string{"h1", "SHA256:", "mismatch"} {
		if !strings.Contains(strings.ToLower(msg), strings.ToLower(want)) {
			t.Errorf("last error %q does not mention %q", msg, want)
		}
	}
	if strings.Count(msg, "SHA256:") < 2 {
		t.Errorf("last error %q; want both fingerprints", msg)
	}
	if after, err := os.ReadFile(sshdLog); err != nil {
		t.Errorf("read the sshd log: %v", err)
	} else if n := bytes.Count(after[min(len(before), len(after)):], []byte("Accepted publickey")); n > 0 {
		t.Errorf("the coordinator logged in to h1 %d times despite the wrong host key", n)
	}
	l.waitHosts(60*time.Second, tasks.HostReady, "h2", "h3")
}

// shimSSHDs lists the sshd processes between the listener daemon and the
// shims running below it.
func shimSSHDs(daemon int) []int {
	procs := descendants(daemon)
	byPid := map[int]proc{}
	for _, p := range procs {
		byPid[p.pid] = p
	}
	seen := map[int]bool{}
	var out []int
	for _, p := range procs {
		if !strings.Contains(p.exe, "/.cache/mito/shim-") || p.comm == "mito-watchdog" {
			continue
		}
		for cur, ok := byPid[p.ppid]; ok; cur, ok = byPid[cur.ppid] {
			if cur.comm == "sshd" && !seen[cur.pid] {
				seen[cur.pid] = true
				out = append(out, cur.pid)
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
