package worker

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/worker/watchdog"
)

// leaverScript, on its first attempt, leaves a child that called setsid
// and a double-forked daemon, ignores SIGTERM, writes the pids of all
// three to $D and runs until killed. Its second attempt succeeds at once.
const leaverScript = `
if [ "$MITO_ATTEMPT" -gt 1 ]; then echo second; exit 0; fi
setsid sleep 1000 </dev/null >/dev/null 2>&1 &
echo $! > "$D/setsid"
sh -c 'setsid sh -c "sleep 1001 & echo \$! > \"$D/daemon\"" </dev/null >/dev/null 2>&1 &'
while [ ! -s "$D/daemon" ]; do sleep 0.01; done
trap "" TERM
echo $$ > "$D/main"
while :; do sleep 1; done
`

// reconcileReg is testReg with a run scope, so that the shims keep run
// records.
func reconcileReg() tasks.RegisterResponse {
	reg := testReg()
	reg.RunScope = "c0ffee-test-host"
	return reg
}

// waitPids waits for the pid files the script writes in dir.
func waitPids(t *testing.T, dir string, names ...string) []int {
	t.Helper()
	var pids []int
	waitFor(t, 30*time.Second, "the task writes its pids", func() bool {
		pids = pids[:0]
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(dir, n))
			if err != nil {
				return false
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				return false
			}
			pids = append(pids, pid)
		}
		return true
	})
	return pids
}

func liveOf(pids []int) []int {
	var live []int
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z") {
			live = append(live, pid)
		}
	}
	return live
}

// leaver is a real shim running leaverScript's first attempt.
type leaver struct {
	f           *fakeCoord
	p           *shimProc
	argv        []string
	work, cache string
	id          tasks.ID
	pids        []int // the task's main process, setsid child and daemon
}

// startLeaver starts a shim with a run scope and a leaverScript task, and
// returns once the task's three processes run.
func startLeaver(t *testing.T) *leaver {
	t.Helper()
	bins, err := shimBinaries()
	if err != nil {
		t.Fatal(err)
	}
	l := &leaver{f: newFake(t, reconcileReg()), argv: bins["mito-shim"], work: t.TempDir(), cache: t.TempDir()}
	d := t.TempDir()
	l.p = startShimIn(t, l.f, l.argv, "", l.work, l.cache)
	l.id = l.f.submit(tasks.Spec{Shell: leaverScript, Env: map[string]string{"D": d}})
	l.pids = waitPids(t, d, "main", "setsid", "daemon")
	t.Cleanup(func() {
		for _, pid := range l.pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return l
}

// record returns the path of the task's first attempt's run record, and
// what its watchdog wrote there, once it has.
func (l *leaver) record(t *testing.T) (string, watchdog.Record) {
	t.Helper()
	path := filepath.Join(l.cache, "mito", "run", "c0ffee-test-host", strconv.FormatInt(int64(l.id), 10)+"-1.run")
	var wr watchdog.Record
	waitFor(t, 10*time.Second, "the watchdog writes its record", func() bool {
		var err error
		wr, err = watchdog.ReadRecord(path)
		return err == nil
	})
	return path, wr
}

// TestShimKilledLeavesNothing SIGKILLs a shim while its task (with a
// setsid child and a double-forked daemon, deaf to SIGTERM) runs: the
// watchdog kills all of it by itself, and the next shim on the host finds
// the record, releases the attempt before it claims, and runs the task's
// next attempt.
func TestShimKilledLeavesNothing(t *testing.T) {
	t.Parallel()
	l := startLeaver(t)
	f, p, id, pids, work, cache := l.f, l.p, l.id, l.pids, l.work, l.cache
	records, _ := filepath.Glob(filepath.Join(cache, "mito", "run", "c0ffee-test-host", "*.run"))
	if len(records) != 1 {
		t.Fatalf("run records %v; want the running attempt's", records)
	}

	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	// The watchdog sees its shim gone and kills the attempt, SIGKILL
	// after the lease grace (a tenth of the 10s lease).
	waitFor(t, 30*time.Second, "the attempt dies without its shim", func() bool { return len(liveOf(pids)) == 0 })

	p2 := startShimIn(t, f, l.argv, "", work, cache)
	res := f.waitResult(t, id, 30*time.Second)
	if res.State != tasks.Succeeded {
		t.Errorf("task after the shim was killed: %s (%s); want its second attempt to succeed", res.State, res.Error)
	}
	f.mu.Lock()
	releases := slices.Clone(f.releases)
	attempt := f.tasks[id].task.Attempt
	f.mu.Unlock()
	if len(releases) != 1 || len(releases[0].Attempts) != 1 || releases[0].Attempts[0].Task != id || releases[0].Attempts[0].Attempt != 1 {
		t.Errorf("releases %+v; want one, of task %d attempt 1", releases, id)
	}
	if attempt != 2 {
		t.Errorf("task ran %d attempts; want 2", attempt)
	}
	assertEmptyDirWithin(t, work, 10*time.Second)
	if left, _ := filepath.Glob(filepath.Join(cache, "mito", "run", "c0ffee-test-host", "*")); len(left) != 0 {
		t.Errorf("run records left: %v", left)
	}
	_ = p2
}

// TestWatchdogKilledLeftoversReaped SIGKILLs the shim and the attempt's
// watchdog together, so that nothing on the host kills the attempt: the
// next shim finds the record with its lock free, and kills what is left
// by the attempt's cgroup or, without one, by the work directory its
// processes carry in their environment.
func TestWatchdogKilledLeftoversReaped(t *testing.T) {
	t.Parallel()
	l := startLeaver(t)
	f, p, id, pids, work, cache := l.f, l.p, l.id, l.pids, l.work, l.cache
	_, wr := l.record(t)
	// Frozen first, the shim cannot see its watchdog die (and kill what
	// is left itself, as it would).
	for _, k := range []struct {
		pid int
		sig syscall.Signal
	}{{p.cmd.Process.Pid, syscall.SIGSTOP}, {wr.Pid, syscall.SIGKILL}, {p.cmd.Process.Pid, syscall.SIGKILL}} {
		if err := syscall.Kill(k.pid, k.sig); err != nil {
			t.Fatal(err)
		}
	}
	<-p.exited
	waitFor(t, 10*time.Second, "the watchdog dies", func() bool { return len(liveOf([]int{wr.Pid})) == 0 })
	if live := liveOf(pids); len(live) != 3 {
		t.Fatalf("live after the watchdog was killed: %v of %v; want all three (nothing killed them)", live, pids)
	}

	startShimIn(t, f, l.argv, "", work, cache)
	if res := f.waitResult(t, id, 30*time.Second); res.State != tasks.Succeeded {
		t.Errorf("task: %s (%s); want its second attempt to succeed", res.State, res.Error)
	}
	if live := liveOf(pids); len(live) != 0 {
		t.Errorf("processes %v of the first attempt still run after the next shim reconciled (cgroup %q)", live, wr.Cgroup)
	}
	f.mu.Lock()
	n := len(f.releases)
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("%d release calls; want 1", n)
	}
	assertEmptyDirWithin(t, work, 10*time.Second)
}

// TestWatchdogKilledShimCleansUp SIGKILLs only an attempt's watchdog:
// the shim, alive, kills what is left of the attempt itself and reports
// it failed, saying why.
func TestWatchdogKilledShimCleansUp(t *testing.T) {
	t.Parallel()
	l := startLeaver(t)
	f, id, pids := l.f, l.id, l.pids
	_, wr := l.record(t)
	if err := syscall.Kill(wr.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res := f.waitResult(t, id, 30*time.Second)
	if res.State != tasks.Failed || !strings.Contains(res.Error, "watchdog died") {
		t.Errorf("task: %s (%s); want failed, saying the watchdog died", res.State, res.Error)
	}
	if live := liveOf(pids); len(live) != 0 {
		t.Errorf("processes %v of the attempt still run after its watchdog died", live)
	}
}
