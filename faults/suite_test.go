package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/faults/ledger"
	"github.com/mitolab/mito/internal/testbin"
	"github.com/mitolab/mito/tasks"
)

// bin holds the binaries built once for the suite.
var bin string

func TestMain(m *testing.M) {
	dir, err := testbin.Build("../cmd", "mito-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sizes are a run's numbers: the short version in make test, the full
// one in make faults.
type sizes struct {
	ttl, grace        time.Duration // the coordinator's lease TTL and kill grace
	taskMin, taskMax  time.Duration // how long a task runs
	shimTasks, nTasks int           // tasks of a shim fault scenario, of the others
	slots             int           // per host
	killEvery         time.Duration // between two shim or connection kills
	serviceDown       time.Duration // how long PostgreSQL or Redis stays down
	stall             time.Duration // no task final for this long fails the run
	settle            time.Duration // after the last task, before the ledger is read
	stores            []string
	shortOnly         bool // run only the scenarios marked short
	hostLeaseTTL      string
	partitionHost     bool
}

func suiteSizes() sizes {
	sz := sizesFor(os.Getenv("MITO_FAULTS"))
	if st := os.Getenv("MITO_FAULTS_STORES"); st != "" {
		sz.stores = strings.Split(st, ",")
	}
	return sz
}

// sizesFor returns the sizes of the full suite ("full") or the short one.
func sizesFor(mode string) sizes {
	if mode == "full" {
		s := sizes{ttl: 6 * time.Second, grace: 5 * time.Second, taskMin: 6 * time.Second, taskMax: 15 * time.Second,
			shimTasks: 60, nTasks: 240, slots: 4, killEvery: 5 * time.Second, serviceDown: 20 * time.Second,
			stall: 3 * time.Minute, settle: 3 * time.Second, stores: []string{"sqlite", "postgres"}}
		if n, err := strconv.Atoi(os.Getenv("MITO_FAULTS_N")); err == nil && n > 0 {
			s.nTasks, s.shimTasks = n, min(n, s.shimTasks)
		}
		return s
	}
	return sizes{ttl: 3 * time.Second, grace: time.Second, taskMin: 2 * time.Second, taskMax: 5 * time.Second,
		shimTasks: 12, nTasks: 12, slots: 2, killEvery: 2 * time.Second, serviceDown: 6 * time.Second,
		stall: 3 * time.Minute, settle: 2 * time.Second, stores: []string{"sqlite"}, shortOnly: true}
}

// scenario is one kind of fault.
type scenario struct {
	name  string
	short bool // in the short version of make test
	// stores it runs on; nil means every store of the run.
	stores []string
	// shim marks the scenarios of the first table rows, run with
	// fewer tasks.
	shim bool
	// What the lab needs besides three loopback hosts.
	partition, redis, twoCoordinators bool
	inject                            func(ctx context.Context, r *run)
}

var scenarios = []scenario{
	{name: "shim SIGKILL", short: true, shim: true, inject: injectShimKill},
	{name: "shim SIGSTOP past the lease", short: true, shim: true, inject: injectShimStop},
	{name: "SSH connection killed", short: true, inject: injectConnKill},
	{name: "coordinator SIGKILL + restart, twice", inject: injectCoordinatorRestart},
	{name: "PostgreSQL stopped", stores: []string{"postgres"}, inject: injectPostgresStop},
	{name: "Redis stopped", redis: true, inject: injectRedisStop},
	{name: "two coordinators, one SIGKILLed", stores: []string{"postgres"}, twoCoordinators: true, inject: injectCoordinatorCrash},
	{name: "host partitioned", partition: true, inject: injectPartition},
	{name: "CPU hog", inject: injectCPUHog},
}

// result is one row of the table.
type result struct {
	Scenario string
	Store    string
	Tasks    int
	Report   ledger.Report
	Faults   int
	Took     time.Duration
}

var (
	resultsMu sync.Mutex
	results   []result
)

// TestFaults runs every scenario on every store, one after another (a
// CPU hog beside another scenario would be a fault of its own).
func TestFaults(t *testing.T) {
	sz := suiteSizes()
	for _, sc := range scenarios {
		if sz.shortOnly && !sc.short {
			continue
		}
		for _, st := range sz.stores {
			if sc.stores != nil && !contains(sc.stores, st) {
				continue
			}
			t.Run(sc.name+"/"+st, func(t *testing.T) {
				res := runScenario(t, sz, sc, st)
				resultsMu.Lock()
				results = append(results, res)
				resultsMu.Unlock()
			})
		}
	}
	if doc := os.Getenv("MITO_FAULTS_DOC"); doc != "" && !t.Failed() {
		if err := writeTable(doc, sz); err != nil {
			t.Error(err)
		}
	}
}

// coord is one coordinator process of a run.
type coord struct {
	name string
	args []string
	url  string
	cmd  *exec.Cmd
	logs *lockedBuffer // of every start
	dead chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const adminPassword = "faults-admin-password"

func (c *coord) start(t *testing.T) {
	t.Helper()
	c.cmd = exec.Command(filepath.Join(bin, "mito"), c.args...)
	c.cmd.Env = append(os.Environ(), "MITO_ADMIN_PASSWORD="+adminPassword)
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.dead = make(chan struct{})
	cmd, dead := c.cmd, c.dead
	go func() { _ = cmd.Wait(); close(dead) }()
	for {
		resp, err := http.Get(c.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-dead:
			t.Fatalf("coordinator %s exited: %v\n%s", c.name, cmd.ProcessState, c.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill SIGKILLs the coordinator, as a crash.
func (c *coord) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.dead
}

// stop stops the coordinator with SIGTERM, as a service manager would.
func (c *coord) stop() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.dead:
	case <-time.After(time.Minute):
		c.kill()
	}
}

// run is one scenario on one store.
type run struct {
	t      *testing.T
	sz     sizes
	sc     scenario
	hosts  []*sshHost
	coords []*coord
	pg     *postgres
	redis  *redis
	rng    *rand.Rand

	mu     sync.Mutex
	faults []ledger.Fault
}

// addFault records a fault on host ("" for all) from from; its effects
// last until the leases it cost run out, a TTL after it healed at to.
func (r *run) addFault(name, host string, from, to time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, ledger.Fault{Name: name, Host: host, From: from, To: to.Add(r.sz.ttl)})
}

// sleep waits d or until ctx ends; it reports whether it slept fully.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// taskScript is what every task runs (bash, for $EPOCHREALTIME: no
// process per timestamp). It writes the ledger, prints each tick it
// writes (the stored output is checked against the ledger), leaves a
// background ticker in a session of its own that must die with it, and
// writes an artifact.
const taskScript = `
led() { printf '%s %s %s %s %s\n' "$1" "$2" "$MITO_TASK_ID" "$MITO_ATTEMPT" "$FAULT_HOST" >> "$LEDGER"; }
led "$EPOCHREALTIME" start
setsid bash -c 'while :; do printf "%s bg %s %s %s\n" "$EPOCHREALTIME" "$MITO_TASK_ID" "$MITO_ATTEMPT" "$FAULT_HOST" >> "$LEDGER"; sleep 0.2; done' </dev/null >/dev/null 2>&1 &
now=${EPOCHREALTIME/./}
end=$(( now + DUR_MS * 1000 ))
while [ "$now" -lt "$end" ]; do
	t=$EPOCHREALTIME
	led "$t" tick
	echo "tick $t"
	sleep 0.2
	now=${EPOCHREALTIME/./}
done
echo "attempt $MITO_ATTEMPT" > "$MITO_OUTPUT_DIR/who"
led "$EPOCHREALTIME" end
`

// runScenario runs one scenario and fails the test for each finding.
func runScenario(t *testing.T, sz sizes, sc scenario, store string) result {
	ssh := needSSH(t)
	r := &run{t: t, sz: sz, sc: sc, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	names := []string{"h1", "h2", "h3"}
	for _, n := range names {
		r.hosts = append(r.hosts, ssh.startHost(t, n, false))
	}
	if sc.partition {
		r.hosts = append(r.hosts, ssh.startHost(t, "part", true))
	}

	// The ledger: one file the tasks of every host append to, which the
	// SSH user may write.
	ldir, err := os.MkdirTemp("", "mito-faults-ledger-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(ldir) })
	if err := os.Chmod(ldir, 0o777); err != nil {
		t.Fatal(err)
	}
	ledgerPath := filepath.Join(ldir, "ledger")
	if err := os.WriteFile(ledgerPath, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ledgerPath, 0o666); err != nil {
		t.Fatal(err)
	}

	var inv strings.Builder
	fmt.Fprintf(&inv, "defaults:\n  transport: ssh\n  user: %s\n  identity_file: %s\n  known_hosts: %s\n  groups: [admin]\n  slots: %d\nhosts:\n",
		ssh.user, ssh.key, ssh.knownHosts, sz.slots)
	for _, h := range r.hosts {
		fmt.Fprintf(&inv, "  - {name: %s, address: %s, port: %d, env: {FAULT_HOST: %s}}\n", h.name, h.addr, h.port, h.name)
	}
	dir := t.TempDir()
	invPath := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(invPath, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	var extra []string
	if store == "postgres" {
		r.pg = startPostgres(t)
		extra = append(extra, "--db", r.pg.url())
	}
	if sc.redis {
		r.redis = startRedis(t)
		extra = append(extra, "--redis", r.redis.url())
	}
	n := 1
	if sc.twoCoordinators {
		n = 2
	}
	for i := range n {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		c := &coord{name: fmt.Sprintf("coord-%c", 'a'+i), url: "http://" + addr, logs: &lockedBuffer{}}
		c.args = append([]string{"coordinator", "--listen", addr, "--data-dir", filepath.Join(dir, c.name), "--inventory", invPath,
			"--lease-ttl", sz.ttl.String(), "--kill-grace", sz.grace.String(), "--id", c.name, "--log-level", "debug", "--ssh-config", "none"}, extra...)
		c.start(t)
		r.coords = append(r.coords, c)
		t.Cleanup(func() {
			c.stop()
			if t.Failed() {
				os.WriteFile(filepath.Join(os.TempDir(), fmt.Sprintf("mito-faults-%s.log", c.name)), []byte(c.logs.String()), 0o644)
				t.Logf("%s's log is in %s", c.name, filepath.Join(os.TempDir(), fmt.Sprintf("mito-faults-%s.log", c.name)))
			}
		})
	}
	cl := r.client(r.coords[0])
	r.waitHostsReady(cl)

	ntasks := sz.nTasks
	if sc.shim {
		ntasks = sz.shimTasks
	}
	specs := make([]tasks.Spec, ntasks)
	for i := range specs {
		dur := sz.taskMin + time.Duration(r.rng.Int64N(int64(sz.taskMax-sz.taskMin)+1))
		specs[i] = tasks.Spec{Group: "admin", Command: []string{"bash", "-c", taskScript},
			Env:         map[string]string{"LEDGER": ledgerPath, "DUR_MS": strconv.FormatInt(dur.Milliseconds(), 10)},
			Timeout:     tasks.Duration(10 * time.Minute),
			MaxAttempts: 100, // a requeue is counted, never a failure
		}
	}
	start := time.Now()
	submitted, err := cl.SubmitBatch(t.Context(), specs)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	injected := make(chan struct{})
	go func() {
		defer close(injected)
		sc.inject(ctx, r)
	}()
	r.waitFinal(submitted)
	cancel()
	<-injected // healed: every fault undone
	took := time.Since(start)
	time.Sleep(sz.settle) // what leaked writes now

	outcomes := r.outcomes(submitted)
	f, err := os.Open(ledgerPath)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := ledger.Parse(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	faults := append([]ledger.Fault(nil), r.faults...)
	r.mu.Unlock()
	rep := ledger.Check(lines, outcomes, faults)
	for _, p := range rep.Problems {
		t.Error(p)
	}
	t.Logf("%s on %s: %d tasks in %s, %d faults: lost %d, finished twice %d, overlapping %d, stale writes %d, requeues without a fault %d, leaked %d; %d requeues, recovery p50 %s p95 %s; ran twice %d",
		sc.name, store, rep.Tasks, took.Round(time.Second), len(faults), rep.Lost, rep.FinishedTwice, rep.Overlapping, rep.StaleWrites,
		rep.RequeuesWithoutFault, rep.Leaked, rep.Requeues, rep.Percentile(50).Round(time.Millisecond), rep.Percentile(95).Round(time.Millisecond), rep.RanTwice)
	return result{Scenario: sc.name, Store: store, Tasks: rep.Tasks, Report: rep, Faults: len(faults), Took: took}
}

// client logs in to c as admin.
func (r *run) client(c *coord) *client.Client {
	r.t.Helper()
	cl, err := client.New(c.url)
	if err != nil {
		r.t.Fatal(err)
	}
	cred, err := cl.Login(r.t.Context(), "admin", adminPassword, time.Hour)
	if err != nil {
		r.t.Fatal(err)
	}
	cl, err = client.New(c.url, client.WithToken(cred.Token))
	if err != nil {
		r.t.Fatal(err)
	}
	return cl
}

// live returns a client of a coordinator that runs, trying each.
func (r *run) live() *client.Client {
	for {
		for _, c := range r.coords {
			select {
			case <-c.dead:
				continue
			default:
			}
			cl, err := client.New(c.url)
			if err != nil {
				continue
			}
			cred, err := cl.Login(r.t.Context(), "admin", adminPassword, time.Hour)
			if err != nil {
				continue
			}
			if cl, err = client.New(c.url, client.WithToken(cred.Token)); err == nil {
				return cl
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (r *run) waitHostsReady(cl *client.Client) {
	r.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		hosts, err := cl.ListHosts(r.t.Context())
		ready := 0
		for _, h := range hosts {
			if h.State == tasks.HostReady {
				ready++
			}
		}
		if err == nil && ready == len(r.hosts) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("hosts not ready after 2m: %+v (%v)", hosts, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFinal waits until every task is final. It fails when none became
// final for the stall limit: the run is bounded by progress, not by how
// long it takes on a loaded machine.
func (r *run) waitFinal(ts []tasks.Task) {
	r.t.Helper()
	final := map[tasks.ID]bool{}
	last := time.Now()
	for len(final) < len(ts) {
		cl := r.live()
		for _, task := range ts {
			if final[task.ID] {
				continue
			}
			got, err := cl.GetTask(r.t.Context(), task.ID)
			if err != nil {
				break // a coordinator went down under us; try again
			}
			if got.State.Final() {
				final[task.ID] = true
				last = time.Now()
			}
		}
		if time.Since(last) > r.sz.stall {
			r.t.Fatalf("%d of %d tasks final, and none for %s", len(final), len(ts), r.sz.stall)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

var finishedRE = regexp.MustCompile(`msg="task finished" task=(\d+)`)

// outcomes reads what the coordinators say of each task: its state, its
// stored output and artifacts per attempt, and how many finishes their
// logs show accepted.
func (r *run) outcomes(ts []tasks.Task) []ledger.Outcome {
	r.t.Helper()
	finishes := map[int64]int{}
	for _, c := range r.coords {
		for _, m := range finishedRE.FindAllStringSubmatch(c.logs.String(), -1) {
			id, _ := strconv.ParseInt(m[1], 10, 64)
			finishes[id]++
		}
	}
	cl := r.live()
	var out []ledger.Outcome
	for _, task := range ts {
		got, err := cl.GetTask(r.t.Context(), task.ID)
		if err != nil {
			r.t.Fatalf("get task %d: %v", task.ID, err)
		}
		o := ledger.Outcome{Task: int64(got.ID), State: string(got.State), Attempt: got.Attempt, Finishes: finishes[int64(got.ID)],
			LogTicks: map[int][]time.Time{}, Artifacts: map[int][]time.Time{}}
		for a := 1; a <= got.Attempt; a++ {
			b, _, err := cl.ReadLog(r.t.Context(), got.ID, a, tasks.Stdout, 0, 0)
			if err != nil {
				r.t.Fatalf("read log of task %d attempt %d: %v", got.ID, a, err)
			}
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				if ts, ok := strings.CutPrefix(sc.Text(), "tick "); ok {
					if l, err := ledger.Parse(strings.NewReader(ts + " tick 0 0 x\n")); err == nil && len(l) == 1 {
						o.LogTicks[a] = append(o.LogTicks[a], l[0].At)
					}
				}
			}
		}
		arts, err := cl.ListArtifacts(r.t.Context(), got.ID)
		if err != nil {
			r.t.Fatalf("list artifacts of task %d: %v", got.ID, err)
		}
		for _, a := range arts {
			o.Artifacts[a.Attempt] = append(o.Artifacts[a.Attempt], a.CreatedAt)
		}
		out = append(out, o)
	}
	return out
}

// writeTable rewrites the table between the markers of doc with the
// results of this run.
func writeTable(doc string, sz sizes) error {
	b, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	const begin, end = "<!-- faults:begin -->", "<!-- faults:end -->"
	i, j := bytes.Index(b, []byte(begin)), bytes.Index(b, []byte(end))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s … %s markers", doc, begin, end)
	}
	var t strings.Builder
	fmt.Fprintf(&t, "%s\n", begin)
	fmt.Fprintf(&t, "Measured %s with `make faults` (lease TTL %s, kill grace %s, tasks of %s to %s, %d slots per host, Go %s, %d CPUs):\n\n",
		time.Now().UTC().Format("2006-01-02"), sz.ttl, sz.grace, sz.taskMin, sz.taskMax, sz.slots, runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(&t, "| fault | store | tasks | faults | lost | finished twice | overlapping runs | stale writes accepted | requeues without a fault | leaked processes | requeues | recovery p50 | p95 | ran twice (at-least-once) | took |\n")
	fmt.Fprintf(&t, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	resultsMu.Lock()
	for _, res := range results {
		rep := res.Report
		fmt.Fprintf(&t, "| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s | %d | %s |\n",
			res.Scenario, res.Store, res.Tasks, res.Faults, rep.Lost, rep.FinishedTwice, rep.Overlapping, rep.StaleWrites,
			rep.RequeuesWithoutFault, rep.Leaked, rep.Requeues, fmtDur(rep.Percentile(50)), fmtDur(rep.Percentile(95)), rep.RanTwice, res.Took.Round(time.Second))
	}
	resultsMu.Unlock()
	fmt.Fprintf(&t, "%s", end)
	out := append(append(append([]byte{}, b[:i]...), t.String()...), b[j+len(end):]...)
	return os.WriteFile(doc, out, 0o644)
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return d.Round(100 * time.Millisecond).String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
