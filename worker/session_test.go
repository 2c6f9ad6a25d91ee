package worker

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// readPgidFile waits for a task to write its process group to file, and
// for its group to have n live processes.
func readPgidFile(t *testing.T, file string, n int) int {
	t.Helper()
	var pgid int
	waitFor(t, 10*time.Second, "task records its process group", func() bool {
		b, _ := os.ReadFile(file)
		pgid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pgid > 0
	})
	waitFor(t, 5*time.Second, "task's processes start", func() bool { return len(groupMembers(t, pgid)) >= n })
	return pgid
}

// TestReregister checks that a worker whose session the coordinator forgot
// (it restarted) registers again, reporting what it runs; that what the
// coordinator stops then dies, and that the rest keeps running, and logs
// and reports in the new session.
func TestReregister(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	dir := t.TempDir()
	goFile := filepath.Join(dir, "go")
	keepPgid, lostPgid := filepath.Join(dir, "keep"), filepath.Join(dir, "lost")
	keep := f.submit(tasks.Spec{
		Shell: `echo $$ > "$PGID_FILE"; echo before; while [ ! -e "$GO_FILE" ]; do sleep 0.05; done; echo after`,
		Env:   map[string]string{"PGID_FILE": keepPgid, "GO_FILE": goFile},
	})
	lost := f.submit(tasks.Spec{
		Shell: `echo $$ > "$PGID_FILE"; sleep 300 & sleep 300`,
		Env:   map[string]string{"PGID_FILE": lostPgid},
	})
	kp := readPgidFile(t, keepPgid, 1)
	lp := readPgidFile(t, lostPgid, 2)
	waitFor(t, 5*time.Second, "first output sent", func() bool {
		logs, _, _ := f.snapshotTask(keep)
		return logs[tasks.Stdout] == "before\n"
	})

	// The coordinator restarts; meanwhile the lease of one task ran out.
	f.restart("session-2", func() { f.tasks[lost].stop = stopLeaseLost })
	waitFor(t, 10*time.Second, "worker registers again", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.registrations) >= 2
	})
	f.mu.Lock()
	second := f.registrations[1]
	keepRef := tasks.LeaseRef{Task: keep, Attempt: 1, Token: f.tasks[keep].token}
	lostRef := tasks.LeaseRef{Task: lost, Attempt: 1, Token: f.tasks[lost].token}
	f.mu.Unlock()
	if len(second.Running) != 2 || !slices.Contains(second.Running, keepRef) || !slices.Contains(second.Running, lostRef) {
		t.Errorf("second registration: running %+v; want %+v and %+v", second.Running, keepRef, lostRef)
	}
	if second.Name != "w1" {
		t.Errorf("second registration: name %q; want w1", second.Name)
	}

	// The stopped task dies and reports nothing; the other runs on.
	assertGroupDead(t, lp)
	time.Sleep(300 * time.Millisecond) // several heartbeats in the new session
	if len(groupMembers(t, kp)) == 0 {
		t.Fatal("the task still current was killed when the worker registered again")
	}
	select {
	case err := <-w.done:
		t.Fatalf("Run returned %v after the coordinator forgot the session; want it to register again", err)
	default:
	}

	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := f.waitResult(t, keep, 10*time.Second)
	if res.State != tasks.Succeeded {
		t.Errorf("state: got %s; want %s (%s)", res.State, tasks.Succeeded, res.Error)
	}
	if logs, _, _ := f.snapshotTask(keep); logs[tasks.Stdout] != "before\nafter\n" {
		t.Errorf("stdout: got %q; want %q", logs[tasks.Stdout], "before\nafter\n")
	}
	f.mu.Lock()
	lostRes, lostFinishes := f.tasks[lost].result, f.tasks[lost].finishes
	f.mu.Unlock()
	if lostRes != nil || lostFinishes != 0 {
		t.Errorf("task whose lease was lost: result %+v after %d finish calls; want none", lostRes, lostFinishes)
	}
	// And it still claims new work.
	if res := f.waitResult(t, f.submit(tasks.Spec{Shell: "true"}), 10*time.Second); res.State != tasks.Succeeded {
		t.Errorf("task after registering again: got %s; want %s", res.State, tasks.Succeeded)
	}
	assertEmptyDir(t, w.workDir)
}

// TestReregisterRetries checks that a worker that cannot register again
// (the coordinator is still down) keeps trying, and that Run only ends when
// the registration is refused.
func TestReregisterRetries(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: tickScript})
	pgid := readPgidN(t, w.workDir, 1)
	f.mu.Lock()
	f.failRegister = 3
	f.mu.Unlock()
	f.restart("session-2", nil)
	waitFor(t, 15*time.Second, "worker registers again", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.registrations) >= 2 && f.failRegister == 0
	})
	if len(groupMembers(t, pgid)) == 0 {
		t.Fatal("the task was killed while the worker registered again")
	}
	f.with(id, func(ft *fakeTask) { ft.stop = "cancelled" })
	if res := f.waitResult(t, id, 10*time.Second); res.State != tasks.Cancelled {
		t.Errorf("state: got %s; want %s", res.State, tasks.Cancelled)
	}
}

// TestLeaseTimes checks how an attempt whose lease cannot be renewed is
// killed: the kill (SIGTERM, then SIGKILL a lease grace later) starts a
// margin before the lease runs out that holds the lease grace and some
// slack, and the heartbeats fit in what is left.
func TestLeaseTimes(t *testing.T) {
	t.Parallel()
	const s, ms = time.Second, time.Millisecond
	tests := []struct {
		ttl, grace, hb, wait                 time.Duration
		leaseGrace, margin, wantHB, wantWait time.Duration
	}{
		// The coordinator's defaults: killing 24s after the last renewal,
		// SIGKILL 3s later.
		{ttl: 30 * s, grace: 5 * s, hb: 10 * s, wait: 20 * s, leaseGrace: 3 * s, margin: 6 * s, wantHB: 24 * s / 5, wantWait: 6 * s},
		// A grace as long as the lease does not eat it.
		{ttl: 6 * s, grace: 5 * s, hb: 2 * s, wait: 20 * s, leaseGrace: 600 * ms, margin: 1600 * ms, wantHB: 880 * ms, wantWait: 1100 * ms},
		{ttl: 10 * s, grace: 5 * s, hb: 3 * s, wait: 20 * s, leaseGrace: s, margin: 2 * s, wantHB: 1600 * ms, wantWait: 2 * s},
		// Tiny numbers: the slack is a quarter of the ttl.
		{ttl: 2 * s, grace: 1 * s, hb: 100 * ms, wait: 2 * s, leaseGrace: 200 * ms, margin: 700 * ms, wantHB: 100 * ms, wantWait: 325 * ms},
		{ttl: 4 * s, grace: 10 * s, hb: s, wait: 2 * s, leaseGrace: 400 * ms, margin: 1400 * ms, wantHB: 520 * ms, wantWait: 650 * ms},
		// A long lease: a tenth of it as slack.
		{ttl: 100 * s, grace: 5 * s, hb: 10 * s, wait: 20 * s, leaseGrace: 5 * s, margin: 15 * s, wantHB: 10 * s, wantWait: 20 * s},
	}
	for _, tt := range tests {
		leaseGrace, margin, hb, wait := leaseTimes(tt.ttl, tt.grace, tt.hb, tt.wait)
		if leaseGrace != tt.leaseGrace || margin != tt.margin || hb != tt.wantHB || wait != tt.wantWait {
			t.Errorf("leaseTimes(ttl %s, grace %s, heartbeat %s, wait %s) = lease grace %s, margin %s, heartbeat %s, wait %s; want %s, %s, %s, %s",
				tt.ttl, tt.grace, tt.hb, tt.wait, leaseGrace, margin, hb, wait, tt.leaseGrace, tt.margin, tt.wantHB, tt.wantWait)
		}
		if margin < leaseGrace+tt.ttl/10 {
			t.Errorf("ttl %s: margin %s leaves less than a tenth of the ttl after the %s lease grace", tt.ttl, margin, leaseGrace)
		}
		// Two heartbeat waits (one renews, the next one's answer says the
		// renewal after it worked) leave more than half the budget for
		// round trips.
		if budget := tt.ttl - margin; 2*hb > budget/2 {
			t.Errorf("ttl %s, grace %s: heartbeat %s; want two of them within half the %s budget", tt.ttl, tt.grace, hb, budget)
		}
	}
}

// TestKillEndsWithinLease checks that an attempt that cannot be renewed is
// dead before its lease runs out on the coordinator, counting from when the
// coordinator granted it (not when its claim answer came back) and
// including the kill grace of a task that ignores SIGTERM.
func TestKillEndsWithinLease(t *testing.T) {
	t.Parallel()
	reg := testReg()
	reg.LeaseTTL = tasks.Duration(4 * time.Second)
	reg.KillGrace = tasks.Duration(time.Second)
	f := newFake(t, reg)
	f.failHeartbeats = true
	f.claimDelay = 1500 * time.Millisecond // a slow link
	// Queued first, so that the first claim gets it at once and its slow
	// answer still comes within the claim's time limit.
	id := f.submit(tasks.Spec{Shell: `echo $$ > "$MITO_OUTPUT_DIR/../pgid"; trap "" TERM; sleep 300 & sleep 300`})
	w := startWorker(t, f, nil)
	pgid := readPgid(t, w.workDir)
	for len(groupMembers(t, pgid)) > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	dead := time.Now()
	f.mu.Lock()
	granted := f.tasks[id].granted
	f.mu.Unlock()
	if d := dead.Sub(granted); d > 4*time.Second {
		t.Errorf("attempt died %s after its lease was granted; want within the 4s lease", d.Round(time.Millisecond))
	}
	assertEmptyDir(t, w.workDir)
}

// TestLeaseLostStopAbandons checks that a Stop because the lease was lost
// kills the attempt and stops its writes: it reports nothing.
func TestLeaseLostStopAbandons(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: tickScript})
	pgid := readPgidN(t, w.workDir, 1)
	f.with(id, func(ft *fakeTask) { ft.stop = stopLeaseLost })
	assertEmptyDirWithin(t, w.workDir, 5*time.Second)
	assertGroupDead(t, pgid)
	time.Sleep(300 * time.Millisecond) // a late write would come now
	f.mu.Lock()
	ft := f.tasks[id]
	res, finishes := ft.result, ft.finishes
	f.mu.Unlock()
	if res != nil || finishes != 0 {
		t.Errorf("result: got %+v after %d finish calls; want no finish call for a lost lease", res, finishes)
	}
}

// TestLogGiveUpMarksTruncated checks that a stream whose upload gave up is
// reported as truncated.
func TestLogGiveUpMarksTruncated(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	f.failLogs = map[tasks.Stream]bool{tasks.Stderr: true}
	startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: `echo out; echo err >&2`})
	res := f.waitResult(t, id, 10*time.Second)
	if res.State != tasks.Succeeded {
		t.Errorf("state: got %s; want %s", res.State, tasks.Succeeded)
	}
	if res.StdoutTruncated || !res.StderrTruncated {
		t.Errorf("truncated: got stdout %v, stderr %v; want false, true", res.StdoutTruncated, res.StderrTruncated)
	}
	if logs, _, _ := f.snapshotTask(id); logs[tasks.Stdout] != "out\n" {
		t.Errorf("stdout: got %q; want %q", logs[tasks.Stdout], "out\n")
	}
}
