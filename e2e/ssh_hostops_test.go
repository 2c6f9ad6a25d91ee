package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// TestSSHFactsAndBootstrap reads facts and runs bootstrap steps over real
// SSH, through the CLI. The loopback sshd hosts are this machine, so what
// the steps do can be checked on the local file system.
func TestSSHFactsAndBootstrap(t *testing.T) {
	s := needSSH(t)
	u, err := user.Lookup(s.user)
	if err != nil {
		t.Skipf("the SSH user %s is not a local user: %v", s.user, err)
	}
	// The loopback hosts share the SSH user's home: a directory of our own.
	rel := fmt.Sprintf(".cache/mito-e2e-bootstrap-%d", time.Now().UnixNano())
	t.Cleanup(func() { os.RemoveAll(filepath.Join(u.HomeDir, rel)) })
	src := filepath.Join(t.TempDir(), "payload.conf")
	if err := os.WriteFile(src, []byte("net.ipv4.tcp_congestion_control = bbr\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h1, p1 := splitHostPort(t, s.hosts[0])
	h2, p2 := splitHostPort(t, s.hosts[1])
	inv := fmt.Sprintf(`defaults:
  transport: ssh
  user: %s
  identity_file: %s
  known_hosts: %s
  groups: [admin]
hosts:
  - name: h1
    address: %s
    port: %d
    tags: [boot]
    bootstrap:
      - run: echo "in $(pwd)"; echo to-stderr >&2; mkdir -p %[8]s && echo x >> %[8]s/runs
      - copy: {src: %[9]s, dst: "~/%[8]s/h1/payload.conf", mode: "0640"}
  - name: h2
    address: %[6]s
    port: %[7]d
    tags: [bad]
    bootstrap:
      - run: echo before; exit 4
      - copy: {src: %[9]s, dst: "~/%[8]s/h2/payload.conf"}
`, s.user, s.key, s.knownHosts, h1, p1, h2, p2, rel, src)
	l := startLab(t, inv)

	// Facts: the hosts are this machine, seen over SSH.
	out := l.mustRun(nil, "client", "hosts", "facts", "-o", "json")
	var all []tasks.HostFactsResult
	if err := json.Unmarshal([]byte(out), &all); err != nil || len(all) != 2 {
		t.Fatalf("hosts facts printed %q (%v); want two hosts", out, err)
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	for _, r := range all {
		f := r.Facts
		if f == nil {
			t.Errorf("%s: no facts: %s", r.Host, r.Error)
			continue
		}
		if f.Kernel != strings.TrimSpace(string(kernel)) || f.CPUs <= 0 || f.MemoryBytes <= 0 || len(f.CongestionControl.Available) == 0 || len(f.Interfaces) == 0 {
			t.Errorf("%s: facts %+v; want this machine's", r.Host, f)
		}
		if off := time.Duration(f.ClockOffset); off < -time.Second || off > time.Second {
			t.Errorf("%s: clock offset %v to this very machine", r.Host, off)
		}
	}
	if out := l.mustRun(nil, "client", "hosts", "facts", "h1"); !strings.Contains(out, "h1") || !strings.Contains(out, "INTERFACE") {
		t.Errorf("hosts facts h1 printed %q", out)
	}

	bootstrap := func(wantCode int, args ...string) tasks.BootstrapReport {
		t.Helper()
		out, errOut, code := l.run(nil, append([]string{"client", "hosts", "bootstrap", "-o", "json"}, args...)...)
		var rep tasks.BootstrapReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != wantCode || len(rep.Hosts) != 1 {
			t.Fatalf("bootstrap %v: exit %d, %q, %q; want exit %d and one host", args, code, out, errOut, wantCode)
		}
		return rep
	}
	statuses := func(r tasks.BootstrapResult) string {
		var s []string
		for _, st := range r.Steps {
			s = append(s, string(st.Status))
		}
		return strings.Join(s, ",")
	}
	dst := filepath.Join(u.HomeDir, rel, "h1", "payload.conf")

	rep := bootstrap(0, "--tag", "boot", "--dry-run")
	if got := statuses(rep.Hosts[0]); got != "would-run,would-copy" {
		t.Errorf("dry run: got %s", got)
	}
	if _, err := os.Stat(filepath.Join(u.HomeDir, rel)); !os.IsNotExist(err) {
		t.Errorf("the dry run changed the host: %v", err)
	}

	rep = bootstrap(0, "--tag", "boot")
	if got := statuses(rep.Hosts[0]); got != "ok,changed" {
		t.Errorf("first run: got %s (%+v)", got, rep.Hosts[0])
	}
	if o := rep.Hosts[0].Steps[0].Output; !strings.Contains(o, "in "+u.HomeDir) || !strings.Contains(o, "to-stderr") {
		t.Errorf("run step output %q; want stdout and stderr, run in %s", o, u.HomeDir)
	}
	b, err := os.ReadFile(dst)
	fi, err2 := os.Stat(dst)
	if err != nil || err2 != nil || string(b) != "net.ipv4.tcp_congestion_control = bbr\n" || fi.Mode().Perm() != 0o640 {
		t.Errorf("copied file: %q, %v, %v, %v", b, err, err2, fi)
	}

	rep = bootstrap(0, "h1")
	if got := statuses(rep.Hosts[0]); got != "ok,unchanged" {
		t.Errorf("second run: got %s", got)
	}
	if b, _ := os.ReadFile(filepath.Join(u.HomeDir, rel, "runs")); string(b) != "x\nx\n" {
		t.Errorf("runs: %q; want the run step run twice", b)
	}

	rep = bootstrap(1, "h2")
	r := rep.Hosts[0]
	if r.OK || statuses(r) != "failed,skipped" || !strings.Contains(r.Steps[0].Error, "status 4") || r.Steps[0].Output != "before\n" {
		t.Errorf("failing host: got %+v", r)
	}
	if _, err := os.Stat(filepath.Join(u.HomeDir, rel, "h2")); !os.IsNotExist(err) {
		t.Errorf("a step after a failed one ran: %v", err)
	}
}
