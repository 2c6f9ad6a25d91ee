// Command bench measures mito end to end: no-op tasks per second, and the
// latency from submit to start, through a real coordinator, a real store
// (SQLite in a temporary directory, or a fresh schema of a PostgreSQL
// database) and real local hosts, each a mito-shim child process speaking
// the worker protocol over its stdin/stdout. Tasks are submitted and
// followed with the Go SDK over loopback HTTP, as a user's program would.
//
// With -transport ssh the hosts are real sshd hosts instead (by default
// those of .ci/services-up.sh, from MITO_TEST_SSH_*): the coordinator dials
// each, pushes the static shim and runs it over the SSH session. Before the
// tasks, it starts a coordinator -starts times cold (the pushed shim
// deleted first) and as often warm (the shim left there), alternately, and
// reports the time from Run to every host ready and where it went.
//
// It prints markdown table rows; bench/run.sh runs it for a few
// configurations and docs/benchmarks.md keeps the results.
//
//	go run ./bench -store sqlite -hosts 2 -slots 4 -tasks 2000 -shim bin/mito-shim
//	go run ./bench -transport ssh -slots 2 -tasks 2000 -probe 3 -header
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/coordinator/store/postgres"
	"github.com/mitolab/mito/coordinator/store/sqlite"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
)

const (
	adminPassword = "bench-admin-password"
	// group is the admin's personal group, which every bench host serves.
	group = "admin"
)

type options struct {
	store      string
	pgURL      string
	pgConns    int
	hosts      int
	slots      int
	tasks      int
	batch      int
	samples    int
	gap        time.Duration
	shim       string
	timeout    time.Duration
	header     bool
	cpuProfile string
	stats      bool
	verbose    bool

	transport string
	hostsSet  bool // -hosts was given
	ssh       sshOptions

	artifacts    bool
	artifactSize int64
	artifactRuns int
}

func main() {
	var o options
	flag.StringVar(&o.store, "store", "sqlite", "store: sqlite or postgres")
	flag.StringVar(&o.pgURL, "pg", os.Getenv("MITO_TEST_PG_URL"), "PostgreSQL URL for -store postgres (default $MITO_TEST_PG_URL); the bench works in a fresh schema and drops it")
	flag.IntVar(&o.pgConns, "pg-conns", 0, "PostgreSQL connection pool size (default: the store's, the larger of 4 and the number of CPUs)")
	flag.IntVar(&o.hosts, "hosts", 2, "number of local hosts (shim processes); with -transport ssh, the first N of the SSH hosts (default all)")
	flag.IntVar(&o.slots, "slots", 4, "slots per host")
	flag.IntVar(&o.tasks, "tasks", 2000, "no-op tasks in the throughput run")
	flag.IntVar(&o.batch, "batch", 500, "tasks per SubmitBatch call in the throughput run")
	flag.IntVar(&o.samples, "latency-samples", 200, "tasks submitted one at a time, on idle hosts, for the latency run (0 skips it)")
	flag.DurationVar(&o.gap, "latency-gap", 50*time.Millisecond, "pause between latency samples, so that every shim is back in its claim long poll")
	flag.StringVar(&o.shim, "shim", "bin/mito-shim", "the mito-shim binary (make build)")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after this long")
	flag.BoolVar(&o.header, "header", false, "print the markdown table header before the row")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the in-process coordinator (and the bench client) to this file")
	flag.BoolVar(&o.stats, "stats", false, "write to stderr how many store calls of each kind a task cost, and their mean time")
	flag.BoolVar(&o.verbose, "v", false, "log the coordinator at info level to stderr (default: warnings only)")
	flag.StringVar(&o.transport, "transport", "local", "hosts: local (shim child processes) or ssh (real sshd hosts; see the -ssh-* flags)")
	sshFlags(&o.ssh)
	flag.BoolVar(&o.artifacts, "artifacts", false, "measure artifact throughput instead: a plain minio-go PutObject against a task's artifact sent direct and relayed, to the S3 server of MITO_TEST_S3_*")
	flag.Int64Var(&o.artifactSize, "artifact-size", 256<<20, "with -artifacts, the size of the file in bytes")
	flag.IntVar(&o.artifactRuns, "artifact-runs", 3, "with -artifacts, uploads of each kind (the median counts)")
	flag.Parse()
	flag.Visit(func(f *flag.Flag) { o.hostsSet = o.hostsSet || f.Name == "hosts" })
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// result is one row of the table.
type result struct {
	store          string
	hosts, slots   int
	tasks          int
	elapsed        time.Duration // first submit to last finish
	claim          []time.Duration
	done           []time.Duration
	selfCPU, child time.Duration // user+system CPU of this process, and of the shims and their tasks
}

func run(o options) error {
	if o.artifacts {
		return runArtifacts(o)
	}
	switch o.transport {
	case "local":
	case "ssh":
		return runSSH(o)
	default:
		return fmt.Errorf("-transport: want local or ssh, got %q", o.transport)
	}
	if o.hosts < 1 || o.slots < 1 || o.tasks < 1 || o.batch < 1 || o.samples < 0 {
		return errors.New("-hosts, -slots, -tasks and -batch must be positive, -latency-samples not negative")
	}
	shim, err := filepath.Abs(o.shim)
	if err != nil {
		return err
	}
	if _, err := os.Stat(shim); err != nil {
		return fmt.Errorf("shim: %w (run make build)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "mito-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	st, closeStore, err := openStore(ctx, o, dir)
	if err != nil {
		return err
	}
	defer closeStore()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	r, err := bench(ctx, o, st, dir, shim)
	if err != nil {
		return err
	}
	if o.header {
		fmt.Println("| store | hosts×slots | tasks | tasks/s | submit→start p50 | p99 | max | submit→done p50 (client) | p99 | CPU coordinator+client | CPU shims+tasks |")
		fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	}
	fmt.Printf("| %s | %d×%d | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n",
		r.store, r.hosts, r.slots, r.tasks, float64(r.tasks)/r.elapsed.Seconds(),
		ms(pct(r.claim, 50)), ms(pct(r.claim, 99)), ms(pct(r.claim, 100)),
		ms(pct(r.done, 50)), ms(pct(r.done, 99)),
		secs(r.selfCPU), secs(r.child))
	return nil
}

// openStore opens the store o asks for, and returns what closes it (and,
// for PostgreSQL, drops the bench's schema).
func openStore(ctx context.Context, o options, dir string) (store.Store, func(), error) {
	switch o.store {
	case "sqlite":
		st, err := sqlite.Open(ctx, filepath.Join(dir, "mito.db"))
		if err != nil {
			return nil, nil, fmt.Errorf("open SQLite store: %w", err)
		}
		return st, func() { st.Close() }, nil
	case "postgres":
		if o.pgURL == "" {
			return nil, nil, errors.New("-store postgres needs -pg or MITO_TEST_PG_URL")
		}
		var b [6]byte
		_, _ = rand.Read(b[:])
		schema := "mito_bench_" + hex.EncodeToString(b[:])
		drop := func() {
			// The bench's context may be done by now.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, o.pgURL)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: drop schema %s: %v\n", schema, err)
				return
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
				fmt.Fprintf(os.Stderr, "bench: drop schema %s: %v\n", schema, err)
			}
		}
		opts := []postgres.Option{postgres.WithSchema(schema)}
		if o.pgConns > 0 {
			opts = append(opts, postgres.WithMaxConns(int32(o.pgConns)))
		}
		st, err := postgres.Open(ctx, o.pgURL, opts...)
		if err != nil {
			drop()
			return nil, nil, fmt.Errorf("open PostgreSQL store: %w", err)
		}
		return st, func() { st.Close(); drop() }, nil
	}
	return nil, nil, fmt.Errorf("-store: want sqlite or postgres, got %q", o.store)
}

// bench runs a coordinator with local hosts, measures, and stops it all.
func bench(ctx context.Context, o options, st store.Store, dir, shim string) (result, error) {
	res := result{store: o.store, hosts: o.hosts, slots: o.slots, tasks: o.tasks}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	var hosts []inventory.Host
	for i := range o.hosts {
		hosts = append(hosts, inventory.Host{
			Name: fmt.Sprintf("bench%d", i+1), Transport: inventory.TransportLocal,
			Groups: []string{group}, Slots: o.slots, Artifacts: inventory.ArtifactsAuto,
		})
	}
	in, err := start(ctx, st, dir, coordinator.Config{
		Hosts:       hosts,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		ShimCommand: []string{shim, "-work-dir", filepath.Join(dir, "work")},
	})
	if err != nil {
		return res, err
	}
	defer in.shutdown()
	if err := waitHostsReady(ctx, in.cl, o.hosts); err != nil {
		return res, err
	}
	if err := measure(ctx, o, in, &res); err != nil {
		return res, err
	}
	in.shutdown() // every shim has exited, so its CPU counts as the children's
	self1, child1 := cpu()
	res.selfCPU, res.child = self1-res.selfCPU, child1-res.child
	return res, nil
}

// instance is a running coordinator with its HTTP server and a client
// logged in as the admin.
type instance struct {
	cl       *client.Client
	counted  *countingStore
	runStart time.Time // when Run was called
	// childCPU, if set, returns the CPU time of the hosts' processes
	// instead of this process's waited-for children.
	childCPU func() time.Duration
	shutdown func() // stops Run (waiting for every host link to end) and the server; idempotent
}

// start starts a coordinator on st with cfg's hosts, logs in, and only
// then calls Run, so that runStart is the moment the hosts start to
// connect.
func start(ctx context.Context, st store.Store, dir string, cfg coordinator.Config) (*instance, error) {
	if cfg.Artifacts == nil {
		arts, err := artifacts.NewDir(filepath.Join(dir, "artifacts"))
		if err != nil {
			return nil, err
		}
		cfg.Artifacts = arts
	}
	counted := newCountingStore(st)
	cfg.Store = counted
	c := coordinator.New(cfg)
	if _, err := c.EnsureAdmin(ctx, adminPassword, filepath.Join(dir, "admin-password")); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	// Long polls watch reqCtx, so that shutdown does not wait for them.
	reqCtx, stopRequests := context.WithCancel(context.WithoutCancel(ctx))
	srv := &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan error, 1)
	running, stopped := false, false
	in := &instance{counted: counted}
	in.shutdown = func() {
		if stopped {
			return
		}
		stopped = true
		stopRun()
		if running {
			<-ran
		}
		stopRequests()
		_ = srv.Close()
		<-served
	}

	url := "http://" + ln.Addr().String()
	anon, err := client.New(url)
	if err == nil {
		var cred *client.Credential
		if cred, err = anon.Login(ctx, "admin", adminPassword, 0); err != nil {
			err = fmt.Errorf("log in: %w", err)
		} else {
			in.cl, err = client.New(url, client.WithToken(cred.Token))
		}
	}
	if err != nil {
		in.shutdown()
		return nil, err
	}
	running = true
	in.runStart = time.Now()
	go func() { ran <- c.Run(runCtx) }()
	return in, nil
}

// measure runs the warm-up, the throughput run and the latency run on a
// coordinator whose hosts are ready, filling in res. It leaves in
// res.selfCPU and res.child the CPU times before the measured part, for
// the caller to subtract.
func measure(ctx context.Context, o options, in *instance, res *result) error {
	// One task per slot first, so that the measured runs do not include
	// the first exec of every shim and the store's first statements.
	if _, err := throughput(ctx, in.cl, res.hosts*res.slots, o.batch); err != nil {
		return fmt.Errorf("warm up: %w", err)
	}
	res.selfCPU, res.child = cpu()
	if in.childCPU != nil {
		res.child = in.childCPU()
	}
	calls0 := in.counted.snapshot()
	var err error
	if res.elapsed, err = throughput(ctx, in.cl, res.tasks, o.batch); err != nil {
		return err
	}
	calls1 := in.counted.snapshot()
	if res.claim, res.done, err = latency(ctx, in.cl, o.samples, o.gap); err != nil {
		return err
	}
	if o.stats {
		report(os.Stderr, fmt.Sprintf("the throughput run, %s %s %d×%d", o.transport, o.store, res.hosts, res.slots), calls0, calls1, res.tasks)
		if o.samples > 0 {
			report(os.Stderr, "the latency run", calls1, in.counted.snapshot(), o.samples)
		}
	}
	return nil
}

// waitHostsReady waits until n hosts have registered.
func waitHostsReady(ctx context.Context, cl *client.Client, n int) error {
	for {
		hs, err := cl.ListHosts(ctx)
		if err != nil {
			return fmt.Errorf("list hosts: %w", err)
		}
		ready := 0
		for _, h := range hs {
			if h.State == tasks.HostReady {
				ready++
			}
		}
		if ready == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for hosts: %d of %d ready: %w", ready, n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func noop() tasks.Spec { return tasks.Spec{Group: group, Command: []string{"true"}} }

// throughput submits n no-op tasks in batches, waits until none is queued
// or running, checks that every one succeeded, and returns the time from
// the first submit to the last finish.
func throughput(ctx context.Context, cl *client.Client, n, batch int) (time.Duration, error) {
	var ids []tasks.ID
	start := time.Now()
	for left := n; left > 0; {
		k := min(left, batch)
		specs := make([]tasks.Spec, k)
		for i := range specs {
			specs[i] = noop()
		}
		ts, err := cl.SubmitBatch(ctx, specs)
		if err != nil {
			return 0, fmt.Errorf("submit: %w", err)
		}
		for _, t := range ts {
			ids = append(ids, t.ID)
		}
		left -= k
	}
	lo, hi := slices.Min(ids), slices.Max(ids)

	// Poll for the newest unfinished task; tasks run oldest first, so it is
	// normally among the last to go.
	for {
		open, _, err := cl.ListTasks(ctx, tasks.Filter{States: []tasks.State{tasks.Queued, tasks.Running}, Limit: 1})
		if err != nil {
			return 0, fmt.Errorf("list tasks: %w", err)
		}
		if len(open) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for %d tasks: %w", n, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}

	// Read them all back: every one must have succeeded, and the last
	// finish ends the measured time.
	var last time.Time
	seen, before := 0, hi+1
	var bad []string
	for before > lo {
		page, next, err := cl.ListTasks(ctx, tasks.Filter{Before: before, Limit: tasks.MaxListLimit})
		if err != nil {
			return 0, fmt.Errorf("list tasks: %w", err)
		}
		for _, t := range page {
			if t.ID < lo {
				continue
			}
			seen++
			if t.State != tasks.Succeeded {
				bad = append(bad, fmt.Sprintf("task %d is %s (%s)", t.ID, t.State, t.Error))
			}
			if t.FinishedAt != nil && t.FinishedAt.After(last) {
				last = *t.FinishedAt
			}
		}
		if next == 0 {
			break
		}
		before = next
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
		}
		return 0, fmt.Errorf("%d of %d tasks did not succeed: %s", len(bad), n, strings.Join(bad, "; "))
	}
	if seen != n {
		return 0, fmt.Errorf("found %d of the %d tasks submitted", seen, n)
	}
	return last.Sub(start), nil
}

// latency submits n tasks one at a time, each after the previous one has
// finished and a pause, and returns for each the store's time from
// creation to claim (submit→start) and the time the client saw from
// sending the submit to hearing the task was final (submit→done).
func latency(ctx context.Context, cl *client.Client, n int, gap time.Duration) (claim, done []time.Duration, err error) {
	for range n {
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(gap):
		}
		t0 := time.Now()
		t, err := cl.Submit(ctx, noop())
		if err != nil {
			return nil, nil, fmt.Errorf("submit: %w", err)
		}
		for !t.State.Final() {
			if t, err = cl.WaitTask(ctx, t.ID, 20*time.Second); err != nil {
				return nil, nil, fmt.Errorf("wait for task %d: %w", t.ID, err)
			}
		}
		done = append(done, time.Since(t0))
		if t.State != tasks.Succeeded || t.StartedAt == nil {
			return nil, nil, fmt.Errorf("task %d is %s (%s); want succeeded", t.ID, t.State, t.Error)
		}
		claim = append(claim, t.StartedAt.Sub(t.CreatedAt))
	}
	return claim, done, nil
}

// pct returns the p-th percentile (nearest rank) of ds; 100 is the maximum.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return -1
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(i, 0)]
}

func ms(d time.Duration) string {
	if d < 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// cpu returns the user+system CPU time of this process, and of its waited-for
// children (the shims, which wait for their tasks).
func cpu() (self, children time.Duration) {
	var ru syscall.Rusage
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = tv(ru.Utime) + tv(ru.Stime)
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		children = tv(ru.Utime) + tv(ru.Stime)
	}
	return self, children
}
