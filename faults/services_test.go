package faults_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The suite's own services. Each is started by the test that uses it,
// on ports and names of its own, and stopped in its cleanup, so that the
// suite runs beside other tests on the same machine and touches only
// what it made.

// skipOrFail skips a test whose services are missing, or fails it when
// MITO_TEST_REQUIRE says they must be there (as in CI).
func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("MITO_TEST_REQUIRE") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// must runs a command and fails the test with its output if it fails.
func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListen waits until addr accepts connections.
func waitListen(t *testing.T, addr, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s: %v", what, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sshLab is what every SSH host of the suite shares: the user tasks run
// as, the coordinator's key and a known_hosts file pinning the hosts.
type sshLab struct {
	user       string
	key        string
	knownHosts string
	dir        string
}

// sshHost is one sshd the suite started.
type sshHost struct {
	name string // in the inventory
	addr string
	port int
	dir  string
	ns   string // its network namespace, or ""
}

// needSSH returns the shared parts of the suite's SSH hosts: the user and
// key that .ci/services-up.sh set up (MITO_TEST_SSH_USER, _KEY), which
// the suite's own sshd let in. It needs root, to start sshd.
func needSSH(t *testing.T) *sshLab {
	t.Helper()
	l := &sshLab{user: os.Getenv("MITO_TEST_SSH_USER"), key: os.Getenv("MITO_TEST_SSH_KEY")}
	if l.user == "" || l.key == "" || os.Getuid() != 0 {
		skipOrFail(t, "the fault suite needs root and the SSH user and key of .ci/services-up.sh: run `make test` or `make faults`")
	}
	if _, err := user.Lookup(l.user); err != nil {
		skipOrFail(t, fmt.Sprintf("no user %s: run .ci/services-up.sh", l.user))
	}
	l.dir = t.TempDir()
	l.knownHosts = filepath.Join(l.dir, "known_hosts")
	if err := os.WriteFile(l.knownHosts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return l
}

// sshdConfig is the config of the suite's sshd hosts: key login as the
// test user only, from from (a CIDR).
func (l *sshLab) sshdConfig(dir, listen, from string) string {
	return fmt.Sprintf(`ListenAddress %s
AddressFamily inet
HostKey %s/host_key
PidFile %s/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers %s@%s
StrictModes yes
AllowAgentForwarding no
X11Forwarding no
PermitUserEnvironment no
MaxStartups 100:30:200
MaxSessions 64
UseDNS no
LogLevel VERBOSE
Subsystem sftp internal-sftp
`, listen, dir, dir, l.user, from)
}

// startHost starts an sshd for name on 127.0.0.1, or, with netns, on a
// host of its own in a new network namespace (joined to this one by a
// veth the suite can cut).
func (l *sshLab) startHost(t *testing.T, name string, netns bool) *sshHost {
	t.Helper()
	h := &sshHost{name: name, dir: filepath.Join(l.dir, name)}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	must(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", filepath.Join(h.dir, "host_key"))
	from := "127.0.0.0/8"
	if netns {
		h.ns = fmt.Sprintf("mitof%d%s", os.Getpid()%100000, name)
		if len(h.ns) > 15 { // a link name's limit, and the veth is named after it
			h.ns = h.ns[:15]
		}
		sub := os.Getpid()%250 + 1
		h.addr, h.port = fmt.Sprintf("10.251.%d.2", sub), 22
		from = fmt.Sprintf("10.251.%d.1/32", sub)
		l.netnsUp(t, h, sub)
	} else {
		h.addr, h.port = "127.0.0.1", freePort(t)
	}
	listen := net.JoinHostPort(h.addr, strconv.Itoa(h.port))
	cfg := filepath.Join(h.dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(l.sshdConfig(h.dir, listen, from)), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, "/usr/sbin/sshd", "-t", "-f", cfg)
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	argv := []string{"/usr/sbin/sshd", "-f", cfg, "-E", filepath.Join(h.dir, "sshd.log")}
	if netns {
		argv = append([]string{"ip", "netns", "exec", h.ns}, argv...)
	}
	must(t, argv[0], argv[1:]...)
	t.Cleanup(func() { h.stop() })
	waitListen(t, listen, "sshd of "+name)
	pub, err := os.ReadFile(filepath.Join(h.dir, "host_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	entry := fmt.Sprintf("[%s]:%d %s %s\n", h.addr, h.port, f[0], f[1])
	kh, err := os.OpenFile(l.knownHosts, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer kh.Close()
	if _, err := kh.WriteString(entry); err != nil {
		t.Fatal(err)
	}
	return h
}

// netnsUp makes h's network namespace and the veth to it, 10.251.sub.1
// here and .2 there, and checks the route goes there, never to a real
// network.
func (l *sshLab) netnsUp(t *testing.T, h *sshHost, sub int) {
	t.Helper()
	veth := h.ns
	_ = exec.Command("ip", "netns", "del", h.ns).Run()
	_ = exec.Command("ip", "link", "del", veth).Run()
	must(t, "ip", "netns", "add", h.ns)
	t.Cleanup(func() { netnsDown(h.ns, veth) })
	must(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
	must(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	must(t, "ip", "addr", "add", fmt.Sprintf("10.251.%d.1/30", sub), "dev", veth)
	must(t, "ip", "link", "set", veth, "up")
	must(t, "ip", "-n", h.ns, "addr", "add", fmt.Sprintf("10.251.%d.2/30", sub), "dev", "eth0")
	must(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
	if out := must(t, "ip", "route", "get", h.addr); !strings.Contains(out, "dev "+veth+" ") {
		t.Fatalf("the route to %s does not go through %s: %s", h.addr, veth, out)
	}
}

// netnsDown kills what runs in a namespace and deletes it and its veth.
func netnsDown(ns, veth string) {
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_ = exec.Command("ip", "link", "del", veth).Run()
	_ = exec.Command("ip", "netns", "del", ns).Run()
}

// setLink brings the host's side of a netns host's link down or up: a
// partition, in both directions, that nothing routes around.
func (h *sshHost) setLink(t *testing.T, up bool) {
	state := "down"
	if up {
		state = "up"
	}
	if out, err := exec.Command("ip", "-n", h.ns, "link", "set", "eth0", state).CombinedOutput(); err != nil {
		t.Errorf("set %s's link %s: %v\n%s", h.name, state, err, out)
	}
}

// daemon returns the pid of h's listening sshd.
func (h *sshHost) daemon() int {
	b, err := os.ReadFile(filepath.Join(h.dir, "sshd.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// stop kills h's sshd and every session under it.
func (h *sshHost) stop() {
	d := h.daemon()
	if d <= 0 {
		return
	}
	for _, p := range descendants(d) {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	_ = syscall.Kill(d, syscall.SIGKILL)
}

// proc is a process below an sshd.
type proc struct {
	pid, ppid int
	comm      string
	exe       string
}

// descendants lists the processes below pid, parents before children.
func descendants(pid int) []proc {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]proc{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		j := bytes.IndexByte(b, '(')
		if i < 0 || j < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		children[ppid] = append(children[ppid], proc{pid: p, ppid: ppid, comm: string(b[j+1 : i]), exe: exe})
	}
	var out []proc
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		kids := children[p]
		sort.Slice(kids, func(a, b int) bool { return kids[a].pid < kids[b].pid })
		for _, c := range kids {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
	}
	return out
}

// shims lists the live shims under h's sshd (not their watchdogs, which
// run the same binary under another name).
func (h *sshHost) shims() []proc {
	var out []proc
	for _, p := range descendants(h.daemon()) {
		if strings.Contains(p.exe, "/.cache/mito/shim-") && p.comm != "mito-watchdog" {
			out = append(out, p)
		}
	}
	return out
}

// connections lists the sshd processes that serve h's SSH connections:
// the listener's children (the privileged monitor of each connection)
// and theirs (the unprivileged process that holds the session), which
// killed together cut the connection as a network failure would.
func (h *sshHost) connections() []proc {
	var out []proc
	for _, p := range descendants(h.daemon()) {
		if p.comm == "sshd" {
			out = append(out, p)
		}
	}
	return out
}

// postgres is a PostgreSQL server of the suite's own.
type postgres struct {
	bin, dir string
	port     int
}

// startPostgres initialises and starts a PostgreSQL cluster under /tmp
// (its user cannot reach a test's temporary directory) and creates the
// database mito.
func startPostgres(t *testing.T) *postgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		skipOrFail(t, "no PostgreSQL server binaries under /usr/lib/postgresql: run .ci/services-up.sh")
	}
	sort.Strings(bins)
	p := &postgres{bin: filepath.Dir(bins[len(bins)-1]), port: freePort(t)}
	dir, err := os.MkdirTemp("", "mito-faults-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	must(t, "chown", "postgres:postgres", dir)
	t.Cleanup(func() {
		_ = p.asPostgres("pg_ctl", "-D", p.dir+"/data", "-m", "immediate", "stop")
		os.RemoveAll(p.dir)
	})
	if err := p.asPostgres("initdb", "-D", dir+"/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatal(err)
	}
	p.start(t)
	must(t, "psql", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres", "-qc", "CREATE DATABASE mito")
	return p
}

func (p *postgres) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/mito?sslmode=disable", p.port)
}

// asPostgres runs one of PostgreSQL's programs as its user.
func (p *postgres) asPostgres(prog string, args ...string) error {
	line := shellQuote(filepath.Join(p.bin, prog))
	for _, a := range args {
		line += " " + shellQuote(a)
	}
	cmd := exec.Command("su", "-s", "/bin/sh", "postgres", "-c", "exec "+line)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", prog, err, out)
	}
	return nil
}

func (p *postgres) start(t *testing.T) {
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", p.port, p.dir)
	if err := p.asPostgres("pg_ctl", "-D", p.dir+"/data", "-l", p.dir+"/log", "-w", "-o", opts, "start"); err != nil {
		t.Error(err)
	}
}

func (p *postgres) stop(t *testing.T) {
	if err := p.asPostgres("pg_ctl", "-D", p.dir+"/data", "-m", "fast", "-w", "stop"); err != nil {
		t.Error(err)
	}
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// redis is a Redis server of the suite's own.
type redis struct {
	dir  string
	port int
}

func startRedis(t *testing.T) *redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		skipOrFail(t, "no redis-server: run .ci/services-up.sh")
	}
	r := &redis{dir: t.TempDir(), port: freePort(t)}
	r.start(t)
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *redis) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *redis) start(t *testing.T) {
	must(t, "redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--save", "", "--appendonly", "no",
		"--daemonize", "yes", "--dir", r.dir, "--pidfile", r.dir+"/redis.pid", "--logfile", r.dir+"/redis.log")
	waitListen(t, fmt.Sprintf("127.0.0.1:%d", r.port), "redis")
}

// stop kills Redis and waits until its port is closed.
func (r *redis) stop() {
	b, err := os.ReadFile(r.dir + "/redis.pid")
	if err != nil {
		return
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	_ = os.Remove(r.dir + "/redis.pid")
	for i := 0; i < 500; i++ {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
}

// cpuHog keeps every CPU busy until ctx ends: twice as many spinning
// processes as CPUs, at the machine's normal priority.
func cpuHog(ctx context.Context, t *testing.T) {
	n := 2 * runtime.NumCPU()
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Error(err)
			break
		}
		cmds = append(cmds, cmd)
	}
	<-ctx.Done()
	for _, c := range cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}
