package main

// -transport ssh: the same tasks through real sshd hosts, plus the time
// from a coordinator's start until every host is ready, with the shim
// uploaded (cold) and already there (warm).

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/transport/ssh"
)

type sshOptions struct {
	hosts      string // host:port,... reached directly
	jump       string // host:port of a jump host, or ""
	inner      string // host:port reached only through jump, or ""
	user       string
	key        string
	knownHosts string
	shim       string
	home       string // the SSH user's home on this machine's filesystem
	starts     int
	startsOut  string
	probe      int
	probeOut   string
}

func sshFlags(s *sshOptions) {
	flag.StringVar(&s.hosts, "ssh-hosts", os.Getenv("MITO_TEST_SSH_HOSTS"), "SSH hosts reached directly, host:port,... (default $MITO_TEST_SSH_HOSTS)")
	flag.StringVar(&s.jump, "ssh-jump", os.Getenv("MITO_TEST_SSH_JUMP"), "an SSH host, host:port, that is also the jump host of -ssh-inner (default $MITO_TEST_SSH_JUMP)")
	flag.StringVar(&s.inner, "ssh-inner", os.Getenv("MITO_TEST_SSH_INNER"), "an SSH host, host:port, reached through -ssh-jump (default $MITO_TEST_SSH_INNER)")
	flag.StringVar(&s.user, "ssh-user", os.Getenv("MITO_TEST_SSH_USER"), "SSH user (default $MITO_TEST_SSH_USER)")
	flag.StringVar(&s.key, "ssh-key", os.Getenv("MITO_TEST_SSH_KEY"), "private key file (default $MITO_TEST_SSH_KEY)")
	flag.StringVar(&s.knownHosts, "ssh-known-hosts", os.Getenv("MITO_TEST_SSH_KNOWN_HOSTS"), "known_hosts file (default $MITO_TEST_SSH_KNOWN_HOSTS)")
	flag.StringVar(&s.shim, "ssh-shim", "bin/mito-shim-linux-"+runtime.GOARCH, "the static shim pushed to the SSH hosts (make build)")
	flag.StringVar(&s.home, "ssh-home", "", "the SSH user's home directory as this machine sees it, where cold starts delete the pushed shim (default: the user's home in the local passwd; the hosts must share this filesystem)")
	flag.IntVar(&s.starts, "starts", 3, "cold starts and warm starts each, alternating")
	flag.StringVar(&s.startsOut, "starts-out", "", "append the start table's rows to this file instead of writing them to stdout")
	flag.IntVar(&s.probe, "probe", 0, "first connect to each host alone this many times, timing the handshake, a command and an upload of the shim (a table of its own)")
	flag.StringVar(&s.probeOut, "probe-out", "", "append the probe table's rows to this file instead of writing them to stdout")
}

// sshHosts returns the inventory hosts of the SSH lab, in the order
// direct hosts, jump, inner; the first n of them if n > 0.
func sshHosts(o options) ([]inventory.Host, error) {
	s := o.ssh
	if s.user == "" || s.key == "" || s.knownHosts == "" {
		return nil, errors.New("-transport ssh needs -ssh-user, -ssh-key and -ssh-known-hosts (or MITO_TEST_SSH_*: start the hosts with .ci/services-up.sh and source its env)")
	}
	host := func(name, hp string) (inventory.Host, error) {
		i := strings.LastIndex(hp, ":")
		port, err := strconv.Atoi(hp[i+1:])
		if i <= 0 || err != nil {
			return inventory.Host{}, fmt.Errorf("%s: want host:port, got %q", name, hp)
		}
		return inventory.Host{
			Name: name, Transport: inventory.TransportSSH, Address: hp[:i], Port: port,
			User: s.user, IdentityFile: s.key, KnownHosts: s.knownHosts, HostKeyPolicy: inventory.PolicyStrict,
			Groups: []string{group}, Slots: o.slots, Artifacts: inventory.ArtifactsAuto,
		}, nil
	}
	var hosts []inventory.Host
	for i, hp := range strings.Split(s.hosts, ",") {
		if hp = strings.TrimSpace(hp); hp == "" {
			continue
		}
		h, err := host(fmt.Sprintf("lo%d", i+1), hp)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, h)
	}
	if s.jump != "" {
		h, err := host("jump", s.jump)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, h)
	}
	if s.inner != "" {
		if s.jump == "" {
			return nil, errors.New("-ssh-inner needs -ssh-jump")
		}
		h, err := host("inner", s.inner)
		if err != nil {
			return nil, err
		}
		h.Jump = "jump"
		hosts = append(hosts, h)
	}
	n := len(hosts)
	if o.hostsSet {
		n = o.hosts
	}
	if n < 1 || n > len(hosts) {
		return nil, fmt.Errorf("-hosts %d: there are %d SSH hosts", n, len(hosts))
	}
	// inner comes after jump, so the first n never hold inner without jump.
	return hosts[:n], nil
}

// startKind is a start with the shim deleted from the hosts first (cold),
// or left there (warm).
type startKind string

const (
	cold startKind = "cold"
	warm startKind = "warm"
)

// startRun is one start's figures.
type startRun struct {
	kind    startKind
	ready   time.Duration // Run to every host ready, polled
	uploads int
	hosts   map[string]*hostTimes
}

// hostTimes are the moments of a host's start, from the coordinator's log,
// as durations since Run started.
type hostTimes struct {
	connected, pushed, registered time.Duration
	upload                        time.Duration // the upload's own time, 0 if none
}

func runSSH(o options) error {
	if o.slots < 1 || o.tasks < 1 || o.batch < 1 || o.samples < 0 || o.ssh.starts < 1 {
		return errors.New("-slots, -tasks, -batch and -starts must be positive, -latency-samples not negative")
	}
	hosts, err := sshHosts(o)
	if err != nil {
		return err
	}
	shim, err := filepath.Abs(o.ssh.shim)
	if err != nil {
		return err
	}
	sum, err := fileSHA256(shim)
	if err != nil {
		return fmt.Errorf("shim: %w (run make build)", err)
	}
	home := o.ssh.home
	if home == "" {
		u, err := user.Lookup(o.ssh.user)
		if err != nil {
			return fmt.Errorf("the home of %s (set -ssh-home): %w", o.ssh.user, err)
		}
		home = u.HomeDir
	}
	// The coordinator pushes to ~/.cache/mito/shim-<sha256>; a cold start
	// deletes that file (and only that one) first.
	pushed := filepath.Join(home, ".cache", "mito", "shim-"+sum)

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "mito-bench-ssh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	if o.cpuProfile != "" {
		return errors.New("-cpuprofile is for -transport local")
	}

	if o.ssh.probe > 0 {
		if err := probe(ctx, o, hosts, shim); err != nil {
			return err
		}
	}

	var runs []startRun
	var last *instance
	var closeLast func()
	defer func() {
		if last != nil {
			last.shutdown()
			closeLast()
		}
	}()
	for i := range 2 * o.ssh.starts {
		kind := cold
		if i%2 == 1 {
			kind = warm
		}
		if kind == cold {
			if err := os.Remove(pushed); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("cold start: %w", err)
			}
		}
		sub := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(sub, 0o700); err != nil {
			return err
		}
		st, closeStore, err := openStore(ctx, o, sub)
		if err != nil {
			return err
		}
		in, r, err := startSSH(ctx, o, st, sub, hosts, shim)
		if err != nil {
			closeStore()
			return fmt.Errorf("%s start %d: %w", kind, i/2+1, err)
		}
		r.kind = kind
		if kind == cold {
			if _, err := os.Stat(pushed); err != nil {
				in.shutdown()
				closeStore()
				return fmt.Errorf("cold start: the shim is not at %s after the start (do the hosts share this filesystem? set -ssh-home): %w", pushed, err)
			}
			if r.uploads == 0 {
				in.shutdown()
				closeStore()
				return fmt.Errorf("cold start: no host uploaded the shim; it is not deleted where the hosts look (set -ssh-home)")
			}
		} else if r.uploads != 0 {
			in.shutdown()
			closeStore()
			return fmt.Errorf("warm start: %d hosts uploaded the shim again; want none", r.uploads)
		}
		runs = append(runs, r)
		if o.verbose {
			fmt.Fprintf(os.Stderr, "bench: %s start: all %d hosts ready in %s, %d uploads\n", kind, len(hosts), ms(r.ready), r.uploads)
			for _, h := range hosts {
				t := r.hosts[h.Name]
				fmt.Fprintf(os.Stderr, "bench:   %-6s connected %s, shim there %s (upload %s), registered %s\n",
					h.Name, ms(t.connected), ms(t.pushed), ms(t.upload), ms(t.registered))
			}
		}
		if i == 2*o.ssh.starts-1 {
			last, closeLast = in, closeStore // warm: measure tasks on it
			break
		}
		in.shutdown()
		closeStore()
	}

	res := result{store: o.store, hosts: len(hosts), slots: o.slots, tasks: o.tasks}
	if err := measure(ctx, o, last, &res); err != nil {
		return err
	}
	self1, _ := cpu()
	res.selfCPU, res.child = self1-res.selfCPU, last.childCPU()-res.child
	last.shutdown()

	return printSSH(o, hosts, runs, res)
}

// startSSH starts a coordinator on the SSH hosts and waits until all are
// ready. It returns the running instance and the start's figures.
func startSSH(ctx context.Context, o options, st store.Store, dir string, hosts []inventory.Host, shim string) (*instance, startRun, error) {
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	rec := &recorder{}
	rec.on.Store(true)
	log := slog.New(&recordingHandler{
		inner: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}),
		rec:   rec,
	})
	in, err := start(ctx, st, dir, coordinator.Config{
		Hosts:  hosts,
		Logger: log,
		Shims:  map[string]string{"linux/" + runtime.GOARCH: shim},
		// Only what the inventory says: no ~/.ssh/config, no agent.
		SSH: ssh.Config{SSHConfig: "none", Agent: "none"},
	})
	if err != nil {
		return nil, startRun{}, err
	}
	in.childCPU = func() time.Duration { return remoteCPU(o.ssh.user) }
	ready, err := waitStoreReady(ctx, st, len(hosts))
	rec.on.Store(false)
	if err != nil {
		in.shutdown()
		return nil, startRun{}, err
	}
	r := startRun{ready: ready.Sub(in.runStart), hosts: map[string]*hostTimes{}}
	rec.mu.Lock()
	for _, e := range rec.events {
		ht := r.hosts[e.host]
		if ht == nil {
			ht = &hostTimes{}
			r.hosts[e.host] = ht
		}
		at := e.at.Sub(in.runStart)
		switch e.msg {
		case "connected":
			ht.connected = at
		case "shim uploaded":
			r.uploads++
			ht.pushed, ht.upload = at, e.took
		case "shim already on host":
			ht.pushed = at
		case "worker registered":
			ht.registered = at
		}
	}
	rec.mu.Unlock()
	for _, h := range hosts {
		if ht := r.hosts[h.Name]; ht == nil || ht.connected == 0 || ht.pushed == 0 || ht.registered == 0 {
			in.shutdown()
			return nil, r, fmt.Errorf("host %s: the log lacks a step of its start: %+v", h.Name, ht)
		}
	}
	return in, r, nil
}

// waitStoreReady polls the store until n hosts are ready, and returns
// when it saw them so.
func waitStoreReady(ctx context.Context, st store.Store, n int) (time.Time, error) {
	for {
		hs, err := st.ListHosts(ctx)
		if err != nil {
			return time.Time{}, fmt.Errorf("list hosts: %w", err)
		}
		ready := 0
		var states []string
		for _, h := range hs {
			if h.State == tasks.HostReady {
				ready++
			}
			states = append(states, fmt.Sprintf("%s %s %s", h.Name, h.State, h.LastError))
		}
		if ready == n {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("wait for hosts: %d of %d ready (%s): %w", ready, n, strings.Join(states, "; "), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func printSSH(o options, hosts []inventory.Host, runs []startRun, r result) error {
	starts := os.Stdout
	if o.ssh.startsOut != "" {
		f, err := os.OpenFile(o.ssh.startsOut, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		starts = f
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	if o.header {
		fmt.Fprintln(starts, "| hosts | start | all ready: median | max | uploads per start | per host, median (max): connect | uname + stat | upload | exec + register |")
		fmt.Fprintln(starts, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	}
	for _, kind := range []startKind{cold, warm} {
		var ready, conn, check, upload, reg []time.Duration
		var uploads []string
		for _, s := range runs {
			if s.kind != kind {
				continue
			}
			ready = append(ready, s.ready)
			uploads = append(uploads, fmt.Sprint(s.uploads))
			for _, h := range s.hosts {
				conn = append(conn, h.connected)
				check = append(check, h.pushed-h.upload-h.connected)
				if h.upload > 0 {
					upload = append(upload, h.upload)
				}
				reg = append(reg, h.registered-h.pushed)
			}
		}
		both := func(ds []time.Duration) string {
			if len(ds) == 0 {
				return "–"
			}
			return fmt.Sprintf("%s (%s)", ms(pct(ds, 50)), ms(pct(ds, 100)))
		}
		fmt.Fprintf(starts, "| %d (%s) | %s ×%d | %s | %s | %s | %s | %s | %s | %s |\n",
			len(hosts), strings.Join(names, ", "), kind, len(ready), ms(pct(ready, 50)), ms(pct(ready, 100)),
			strings.Join(uploads, ", "), both(conn), both(check), both(upload), both(reg))
	}

	if o.header {
		fmt.Println("| store | hosts×slots | tasks | tasks/s | submit→start p50 | p99 | max | submit→done p50 (client) | p99 | CPU coordinator+client | CPU sshd+shims+tasks |")
		fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	}
	fmt.Printf("| %s | %d×%d | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n",
		r.store, r.hosts, r.slots, r.tasks, float64(r.tasks)/r.elapsed.Seconds(),
		ms(pct(r.claim, 50)), ms(pct(r.claim, 99)), ms(pct(r.claim, 100)),
		ms(pct(r.done, 50)), ms(pct(r.done, 99)),
		secs(r.selfCPU), secs(r.child))
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// remoteCPU returns the user+system CPU time, including waited-for
// children, of the processes on this machine that serve the SSH hosts:
// those of user name (sshd's session processes, the shims, which wait for
// their tasks) and sshd's privileged monitors for that user. The hosts
// share this machine, so that is what their side of the run costs.
// Processes that ended are missed; the bench's sessions all live through
// the measured part.
func remoteCPU(name string) time.Duration {
	u, err := user.Lookup(name)
	if err != nil {
		return 0
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	entries, _ := os.ReadDir("/proc")
	var ticks uint64
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p := filepath.Join("/proc", e.Name())
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		if st.Uid != uint32(uid) {
			cmd, _ := os.ReadFile(filepath.Join(p, "cmdline"))
			if !strings.HasPrefix(string(cmd), "sshd: "+name+" [priv]") {
				continue
			}
		}
		stat, err := os.ReadFile(filepath.Join(p, "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 15 {
			continue
		}
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseUint(f[i], 10, 64)
			ticks += v
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}

// recorder keeps the log records that mark the steps of a host's start.
type recorder struct {
	on     atomic.Bool // record (and see debug records) only while hosts start
	mu     sync.Mutex
	events []event
}

type event struct {
	at        time.Time
	msg, host string
	took      time.Duration
}

// recordingHandler passes records on to inner and notes, while its
// recorder is on, those of a host's start: "connected" (the SSH client's,
// at debug level), "shim uploaded" or "shim already on host", and "worker
// registered".
type recordingHandler struct {
	inner slog.Handler
	rec   *recorder
	host  string // from WithAttrs
}

func (h *recordingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.rec.on.Load() || h.inner.Enabled(ctx, l)
}

func (h *recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.rec.on.Load() {
		switch r.Message {
		case "connected", "shim uploaded", "shim already on host", "worker registered":
			e := event{msg: r.Message, host: h.host}
			r.Attrs(func(a slog.Attr) bool {
				switch a.Key {
				case "host":
					e.host = a.Value.String()
				case "took":
					if a.Value.Kind() == slog.KindDuration {
						e.took = a.Value.Duration()
					}
				}
				return true
			})
			e.at = r.Time
			h.rec.mu.Lock()
			h.rec.events = append(h.rec.events, e)
			h.rec.mu.Unlock()
		}
	}
	if h.inner.Enabled(ctx, r.Level) {
		return h.inner.Handle(ctx, r)
	}
	return nil
}

func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(as)
	for _, a := range as {
		if a.Key == "host" {
			c.host = a.Value.String()
		}
	}
	return &c
}

func (h *recordingHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	return &c
}

// probe connects to each host alone, o.ssh.probe times, and times the
// steps a host's start takes: the SSH handshake with authentication (for
// a host behind a jump host, both hops), one command on a new session, and
// an SFTP upload of the shim (to a file of its own, removed after).
func probe(ctx context.Context, o options, hosts []inventory.Host, shim string) error {
	f, err := os.Open(shim)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	out := os.Stdout
	if o.ssh.probeOut != "" {
		pf, err := os.OpenFile(o.ssh.probeOut, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer pf.Close()
		out = pf
	}
	byName := map[string]inventory.Host{}
	for _, h := range hosts {
		byName[h.Name] = h
	}
	target := func(h inventory.Host) ssh.Target {
		return ssh.Target{Name: h.Name, Address: h.Address, Port: h.Port, User: h.User,
			IdentityFiles: []string{h.IdentityFile}, KnownHosts: []string{h.KnownHosts}, Policy: h.HostKeyPolicy}
	}
	cfg := ssh.Config{SSHConfig: "none", Agent: "none"}
	fmt.Fprintf(out, "| host | hops | SSH dial (TCP, handshake, auth): median | max | `true` on a new session: median | max | SFTP upload of the shim (%.1f MiB): median | max |\n", float64(fi.Size())/(1<<20))
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, h := range hosts {
		t := target(h)
		hops := 1
		if h.Jump != "" {
			jt := target(byName[h.Jump])
			t.Jump, hops = &jt, 2
		}
		var dial, run, upload []time.Duration
		for range o.ssh.probe {
			t0 := time.Now()
			cl, err := ssh.Dial(ctx, t, cfg)
			if err != nil {
				return fmt.Errorf("probe: %w", err)
			}
			t1 := time.Now()
			_, err = cl.Run(ctx, "true")
			t2 := time.Now()
			var rnd [8]byte
			_, _ = rand.Read(rnd[:])
			dst := ".cache/mito/bench-probe-" + hex.EncodeToString(rnd[:])
			if err == nil {
				if _, err = f.Seek(0, io.SeekStart); err == nil {
					err = cl.Upload(ctx, f, fi.Size(), dst, 0o644)
				}
			}
			t3 := time.Now()
			if err == nil {
				_, err = cl.Run(ctx, "rm -f "+dst) // hex: nothing for the shell to expand
			}
			cl.Close()
			if err != nil {
				return fmt.Errorf("probe %s: %w", h.Name, err)
			}
			dial, run, upload = append(dial, t1.Sub(t0)), append(run, t2.Sub(t1)), append(upload, t3.Sub(t2))
		}
		fmt.Fprintf(out, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", h.Name, hops,
			ms(pct(dial, 50)), ms(pct(dial, 100)), ms(pct(run, 50)), ms(pct(run, 100)), ms(pct(upload, 50)), ms(pct(upload, 100)))
	}
	return nil
}
