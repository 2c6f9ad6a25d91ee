package storetest

import (
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

func testClaimOrder(t *testing.T, s store.Store) {
	prio := func(p int32) tasks.Spec {
		sp := spec("lab")
		sp.Priority = p
		return sp
	}
	ts := submit(t, s, "alice", prio(0), prio(5), prio(0), prio(5), prio(-1))
	a, b, c, d, e := ts[0].ID, ts[1].ID, ts[2].ID, ts[3].ID, ts[4].ID

	p := store.ClaimParams{Host: "h1", Groups: []string{"lab"}, Max: 2, TTL: 90 * time.Second, Now: t0}
	first := claim(t, s, p)
	wantIDs(t, assignedIDs(first), []tasks.ID{b, d}, "first claim (priority first)")
	p.Max = 10
	second := claim(t, s, p)
	wantIDs(t, assignedIDs(second), []tasks.ID{a, c, e}, "second claim (then oldest first)")
	wantIDs(t, assignedIDs(claim(t, s, p)), nil, "claim of an empty queue")

	tokens := map[string]bool{}
	for _, as := range append(first, second...) {
		task := as.Task
		if task.State != tasks.Running || task.Attempt != 1 || task.Host != "h1" {
			t.Errorf("claimed task %d: state %s attempt %d host %q; want running, 1, h1", task.ID, task.State, task.Attempt, task.Host)
		}
		if as.Lease.Task != task.ID || as.Lease.Attempt != 1 {
			t.Errorf("lease of task %d names task %d attempt %d", task.ID, as.Lease.Task, as.Lease.Attempt)
		}
		if b, err := hex.DecodeString(as.Lease.Token); err != nil || len(b) != 16 {
			t.Errorf("lease token %q is not 128 bits in hex", as.Lease.Token)
		}
		if tokens[as.Lease.Token] {
			t.Errorf("lease token %q given twice", as.Lease.Token)
		}
		tokens[as.Lease.Token] = true
		wantTime(t, as.Lease.Expires, t0.Add(90*time.Second), "Lease.Expires")
		wantTimePtr(t, task.LeaseExpires, ptr(t0.Add(90*time.Second)), "Task.LeaseExpires")
		wantTimePtr(t, task.StartedAt, &t0, "Task.StartedAt")
		if stored := getTask(t, s, task.ID); !reflect.DeepEqual(stored, task) {
			t.Errorf("GetTask(%d) = %+v\nwant what Claim returned: %+v", task.ID, stored, task)
		}
	}
}

func testClaimTags(t *testing.T, s store.Store) {
	tagged := func(tags ...string) tasks.Spec {
		sp := spec("lab")
		sp.Tags = tags
		return sp
	}
	ts := submit(t, s, "alice", tagged("10g"), tagged("10g", "bbr"), tagged(), tagged("x"))
	t10g, tboth, tnone, tx := ts[0].ID, ts[1].ID, ts[2].ID, ts[3].ID

	for _, c := range []struct {
		host string
		tags []string
		want []tasks.ID
	}{
		{"untagged host gets only untagged tasks", nil, []tasks.ID{tnone}},
		{"10g host", []string{"z", "10g"}, []tasks.ID{t10g}},
		{"10g+bbr host", []string{"bbr", "zz", "10g"}, []tasks.ID{tboth}},
		{"nothing left that x-less hosts may run", []string{"10g", "bbr"}, nil},
	} {
		got := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Tags: c.tags, Max: 10})
		wantIDs(t, assignedIDs(got), c.want, c.host)
	}
	if st := getTask(t, s, tx).State; st != tasks.Queued {
		t.Errorf("task tagged x: %s; want still queued", st)
	}
	got := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Tags: []string{"x", "10g"}, Max: 10})
	wantIDs(t, assignedIDs(got), []tasks.ID{tx}, "x host")
}

func testClaimGroups(t *testing.T, s store.Store) {
	ts := submit(t, s, "alice", spec("lab"), spec("other"), spec("third"), spec("lab"))
	lab1, other, third, lab2 := ts[0].ID, ts[1].ID, ts[2].ID, ts[3].ID

	wantIDs(t, assignedIDs(claim(t, s, store.ClaimParams{Host: "h", Max: 10})), nil, "host with no groups")
	wantIDs(t, assignedIDs(claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"nolab"}, Max: 10})), nil, "host of another group")
	got := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"third", "lab"}, Max: 10})
	wantIDs(t, assignedIDs(got), []tasks.ID{lab1, third, lab2}, "host of lab and third")
	if st := getTask(t, s, other).State; st != tasks.Queued {
		t.Errorf("task of group other: %s; want still queued", st)
	}
}

func testClaimMax(t *testing.T, s store.Store) {
	submit(t, s, "alice", spec("lab"), spec("lab"), spec("lab"), spec("lab"), spec("lab"))
	p := store.ClaimParams{Host: "h", Groups: []string{"lab"}}
	for _, c := range []struct{ max, want int }{{0, 0}, {-1, 0}, {2, 2}, {1, 1}, {10, 2}, {10, 0}} {
		p.Max = c.max
		if got := claim(t, s, p); len(got) != c.want {
			t.Errorf("Claim with Max %d: %d tasks; want %d", c.max, len(got), c.want)
		}
	}
}

func testClaimConcurrent(t *testing.T, s store.Store) {
	const nTasks, nClaimers = 200, 8
	specs := make([]tasks.Spec, nTasks)
	for i := range specs {
		specs[i] = spec("lab")
		specs[i].Priority = int32(i % 3)
	}
	submit(t, s, "alice", specs...)

	var mu sync.Mutex
	claimed := map[tasks.ID]string{}
	var wg sync.WaitGroup
	for w := range nClaimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host := fmt.Sprintf("h%d", w)
			for i := 0; ; i++ {
				got, err := s.Claim(t.Context(), store.ClaimParams{Host: host, Groups: []string{"lab"}, Max: 1 + (w+i)%3, TTL: time.Minute, Now: t0})
				if err != nil {
					t.Errorf("Claim by %s: %v", host, err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, a := range got {
					if prev, dup := claimed[a.Task.ID]; dup {
						t.Errorf("task %d claimed by %s and by %s", a.Task.ID, prev, host)
					}
					claimed[a.Task.ID] = host
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(claimed) != nTasks {
		t.Errorf("%d tasks claimed; want all %d", len(claimed), nTasks)
	}
	left, err := s.ListTasks(t.Context(), tasks.Filter{States: []tasks.State{tasks.Queued}})
	ok(t, err, "ListTasks")
	if len(left) != 0 {
		t.Errorf("%d tasks still queued after the claimers ran dry", len(left))
	}
	running, err := s.ListTasks(t.Context(), tasks.Filter{States: []tasks.State{tasks.Running}, Limit: tasks.MaxListLimit})
	ok(t, err, "ListTasks")
	for _, task := range running {
		if task.Attempt != 1 || task.Host != claimed[task.ID] {
			t.Errorf("task %d: attempt %d on %s; want attempt 1 on %s", task.ID, task.Attempt, task.Host, claimed[task.ID])
		}
	}
}

func testRenew(t *testing.T, s store.Store) {
	ctx := t.Context()
	submit(t, s, "alice", spec("lab"), spec("lab"), spec("lab"))
	as := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 3, TTL: time.Minute, Now: t0})
	if len(as) != 3 {
		t.Fatalf("claimed %d; want 3", len(as))
	}
	good, other, third := as[0].Lease.LeaseRef, as[1].Lease.LeaseRef, as[2].Lease.LeaseRef
	wrongToken := other
	wrongToken.Token = as[2].Lease.Token
	wrongAttempt := third
	wrongAttempt.Attempt = 2
	missing := tasks.LeaseRef{Task: 1 << 40, Attempt: 1, Token: good.Token}

	stale, err := s.Renew(ctx, []tasks.LeaseRef{good, wrongToken, wrongAttempt, missing}, t0.Add(30*time.Second), 5*time.Minute)
	ok(t, err, "Renew")
	if want := []tasks.LeaseRef{wrongToken, wrongAttempt, missing}; !sameRefs(stale, want) {
		t.Errorf("Renew stale = %+v; want %+v", stale, want)
	}
	wantTimePtr(t, getTask(t, s, good.Task).LeaseExpires, ptr(t0.Add(30*time.Second+5*time.Minute)), "renewed LeaseExpires")
	wantTimePtr(t, getTask(t, s, other.Task).LeaseExpires, ptr(t0.Add(time.Minute)), "LeaseExpires after a stale renew")
	wantTimePtr(t, getTask(t, s, third.Task).LeaseExpires, ptr(t0.Add(time.Minute)), "LeaseExpires after a stale renew")

	_, err = s.Finish(ctx, good, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0.Add(time.Minute)})
	ok(t, err, "Finish")
	stale, err = s.Renew(ctx, []tasks.LeaseRef{good, other}, t0.Add(time.Minute), time.Minute)
	ok(t, err, "Renew")
	if want := []tasks.LeaseRef{good}; !sameRefs(stale, want) {
		t.Errorf("Renew after Finish: stale = %+v; want %+v", stale, want)
	}
	if task := getTask(t, s, good.Task); task.LeaseExpires != nil || task.State != tasks.Succeeded {
		t.Errorf("Renew revived a finished task: %+v", task)
	}
	stale, err = s.Renew(ctx, nil, t0, time.Minute)
	if err != nil || len(stale) != 0 {
		t.Errorf("Renew(nil) = %v, %v; want nothing", stale, err)
	}
}

// sameRefs compares lease refs as sets.
func sameRefs(a, b []tasks.LeaseRef) bool {
	key := func(r tasks.LeaseRef) string { return fmt.Sprintf("%d/%d/%s", r.Task, r.Attempt, r.Token) }
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i, r := range a {
		ka[i] = key(r)
	}
	for i, r := range b {
		kb[i] = key(r)
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}

func testFinishFencing(t *testing.T, s store.Store) {
	ctx := t.Context()
	submit(t, s, "alice", spec("lab"), spec("lab"), spec("lab"))
	a := claimOne(t, s, "h", "lab")
	ref := a.Lease.LeaseRef
	res := tasks.Result{State: tasks.Failed, ExitCode: ptr(3), Error: "exit status 3",
		StartedAt: t0, FinishedAt: t0.Add(10 * time.Second), StdoutTruncated: true}

	_, err := s.Finish(ctx, ref, tasks.Result{State: tasks.Running})
	wantCode(t, err, tasks.EInvalid, "Finish with a running result")
	_, err = s.Finish(ctx, ref, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(1)})
	wantCode(t, err, tasks.EInvalid, "Finish succeeded with exit code 1")
	if task := getTask(t, s, ref.Task); task.State != tasks.Running {
		t.Fatalf("after refused results, task is %s; want running", task.State)
	}

	bad := ref
	bad.Token = "00000000000000000000000000000000"
	_, err = s.Finish(ctx, bad, res)
	wantCode(t, err, tasks.EStaleLease, "Finish with a wrong token")
	mention(t, err, "wrong token", fmt.Sprint(ref.Task), "attempt 1")
	bad = ref
	bad.Attempt = 2
	_, err = s.Finish(ctx, bad, res)
	wantCode(t, err, tasks.EStaleLease, "Finish with a wrong attempt")
	mention(t, err, "wrong attempt", fmt.Sprint(ref.Task), "attempt 2")
	_, err = s.Finish(ctx, tasks.LeaseRef{Task: 1 << 40, Attempt: 1, Token: ref.Token}, res)
	wantCode(t, err, tasks.ENotFound, "Finish of a missing task")

	got, err := s.Finish(ctx, ref, res)
	ok(t, err, "Finish")
	if got.State != tasks.Failed || got.ExitCode == nil || *got.ExitCode != 3 || got.Error != "exit status 3" ||
		!got.StdoutTruncated || got.StderrTruncated || got.Signal != "" || got.Attempt != 1 || got.Host != "h" {
		t.Errorf("finished task = %+v; want failed with exit 3, its error and stdout truncated", got)
	}
	wantTimePtr(t, got.FinishedAt, ptr(t0.Add(10*time.Second)), "FinishedAt")
	wantTimePtr(t, got.LeaseExpires, nil, "LeaseExpires after Finish")
	if stored := getTask(t, s, ref.Task); !reflect.DeepEqual(stored, got) {
		t.Errorf("GetTask = %+v\nwant what Finish returned: %+v", stored, got)
	}
	_, err = s.Finish(ctx, ref, res)
	wantCode(t, err, tasks.EStaleLease, "Finish twice")

	// A signal and no exit code.
	b := claimOne(t, s, "h", "lab")
	got, err = s.Finish(ctx, b.Lease.LeaseRef, tasks.Result{State: tasks.TimedOut, Signal: "SIGKILL", Error: "timed out after 1h0m0s", FinishedAt: t0})
	ok(t, err, "Finish timed out")
	if got.State != tasks.TimedOut || got.ExitCode != nil || got.Signal != "SIGKILL" {
		t.Errorf("timed out task = %+v; want timed_out, no exit code, SIGKILL", got)
	}

	// A cancelled attempt cannot be finished.
	c := claimOne(t, s, "h", "lab")
	_, err = s.CancelTask(ctx, c.Task.ID, t0)
	ok(t, err, "CancelTask")
	_, err = s.Finish(ctx, c.Lease.LeaseRef, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0})
	wantCode(t, err, tasks.EStaleLease, "Finish after cancel")
	mention(t, err, "Finish after cancel", "cancelled")
	if st := getTask(t, s, c.Task.ID).State; st != tasks.Cancelled {
		t.Errorf("after a refused Finish, task is %s; want cancelled", st)
	}
}

func testRequeueExpired(t *testing.T, s store.Store) {
	ctx := t.Context()
	submit(t, s, "alice", spec("lab"))
	a := claim(t, s, store.ClaimParams{Host: "h1", Groups: []string{"lab"}, Max: 1, TTL: time.Minute, Now: t0})[0]
	ref1 := a.Lease.LeaseRef

	for _, at := range []time.Time{t0.Add(30 * time.Second), a.Lease.Expires} {
		got, err := s.RequeueExpired(ctx, at)
		ok(t, err, "RequeueExpired")
		if len(got) != 0 {
			t.Errorf("RequeueExpired(%v) with the lease expiring at %v: requeued %v", at, a.Lease.Expires, ids(got))
		}
	}
	got, err := s.RequeueExpired(ctx, t0.Add(2*time.Minute))
	ok(t, err, "RequeueExpired")
	if len(got) != 1 || got[0].ID != ref1.Task || got[0].State != tasks.Queued || got[0].Attempt != 1 ||
		got[0].LeaseExpires != nil || got[0].FinishedAt != nil {
		t.Fatalf("RequeueExpired = %+v; want task %d queued, attempt 1, no lease", got, ref1.Task)
	}
	if stored := getTask(t, s, ref1.Task); !reflect.DeepEqual(stored, got[0]) {
		t.Errorf("GetTask = %+v\nwant what RequeueExpired returned: %+v", stored, got[0])
	}

	// The lost attempt can no longer write.
	_, err = s.Finish(ctx, ref1, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0})
	wantCode(t, err, tasks.EStaleLease, "Finish of the requeued attempt")
	wantCode(t, s.AppendLog(ctx, ref1, tasks.Stdout, 0, []byte("late")), tasks.EStaleLease, "AppendLog of the requeued attempt")

	b := claim(t, s, store.ClaimParams{Host: "h2", Groups: []string{"lab"}, Max: 1, TTL: time.Minute, Now: t0.Add(3 * time.Minute)})
	if len(b) != 1 || b[0].Task.Attempt != 2 || b[0].Lease.Attempt != 2 || b[0].Task.Host != "h2" || b[0].Lease.Token == ref1.Token {
		t.Fatalf("claim after requeue = %+v; want attempt 2 on h2 with a new token", b)
	}
	ref2 := b[0].Lease.LeaseRef

	// Attempt 1 stays refused, also with the right attempt's number.
	_, err = s.Finish(ctx, ref1, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0})
	wantCode(t, err, tasks.EStaleLease, "late Finish of attempt 1")
	mention(t, err, "late Finish of attempt 1", "attempt 1")
	wantCode(t, s.AppendLog(ctx, ref1, tasks.Stdout, 0, []byte("late")), tasks.EStaleLease, "late AppendLog of attempt 1")
	old := ref1
	old.Attempt = 2
	_, err = s.Finish(ctx, old, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0})
	wantCode(t, err, tasks.EStaleLease, "Finish with attempt 2 and attempt 1's token")
	if stale, err := s.Renew(ctx, []tasks.LeaseRef{ref1, ref2}, t0.Add(3*time.Minute), time.Minute); err != nil || !sameRefs(stale, []tasks.LeaseRef{ref1}) {
		t.Errorf("Renew = %+v, %v; want only attempt 1 stale", stale, err)
	}
	log, err := s.ReadLog(ctx, ref1.Task, 1, tasks.Stdout, 0, 0)
	ok(t, err, "ReadLog")
	if len(log) != 0 {
		t.Errorf("refused AppendLog wrote %q", log)
	}

	done, err := s.Finish(ctx, ref2, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0.Add(4 * time.Minute)})
	ok(t, err, "Finish of attempt 2")
	if done.State != tasks.Succeeded || done.Attempt != 2 {
		t.Errorf("finished = %s attempt %d; want succeeded attempt 2", done.State, done.Attempt)
	}
}

func testMaxAttemptsExhausted(t *testing.T, s store.Store) {
	ctx := t.Context()
	once, twice := spec("lab"), spec("lab")
	once.MaxAttempts, twice.MaxAttempts = 1, 2
	ts := submit(t, s, "alice", once, twice)

	claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 2, TTL: time.Minute, Now: t0})
	lost := t0.Add(2 * time.Minute)
	got, err := s.RequeueExpired(ctx, lost)
	ok(t, err, "RequeueExpired")
	if len(got) != 2 || got[0].ID != ts[0].ID || got[1].ID != ts[1].ID {
		t.Fatalf("RequeueExpired = %v; want %d, %d", ids(got), ts[0].ID, ts[1].ID)
	}
	failed, requeued := got[0], got[1]
	if failed.State != tasks.Failed || failed.LeaseExpires != nil {
		t.Errorf("task with 1 attempt: %s; want failed, no lease", failed.State)
	}
	mention(t, fmt.Errorf("%s", failed.Error), "Error of the failed task", "host lost", "attempt 1")
	wantTimePtr(t, failed.FinishedAt, &lost, "FinishedAt of the failed task")
	if requeued.State != tasks.Queued {
		t.Errorf("task with 2 attempts: %s; want queued", requeued.State)
	}

	again := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 2, TTL: time.Minute, Now: lost})
	wantIDs(t, assignedIDs(again), []tasks.ID{ts[1].ID}, "claim after requeue")
	lost2 := lost.Add(2 * time.Minute)
	got, err = s.RequeueExpired(ctx, lost2)
	ok(t, err, "RequeueExpired")
	if len(got) != 1 || got[0].State != tasks.Failed || got[0].Attempt != 2 {
		t.Fatalf("RequeueExpired = %+v; want task %d failed after attempt 2", got, ts[1].ID)
	}
	mention(t, fmt.Errorf("%s", got[0].Error), "Error of the failed task", "host lost", "attempt 2")
	wantTimePtr(t, got[0].FinishedAt, &lost2, "FinishedAt")
	wantIDs(t, assignedIDs(claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 2})), nil, "claim of failed tasks")
}

func testCancel(t *testing.T, s store.Store) {
	ctx := t.Context()
	ts := submit(t, s, "alice", spec("lab"), spec("lab"), spec("lab"))
	queued := ts[2].ID
	r := claimOne(t, s, "h", "lab")
	done := claimOne(t, s, "h", "lab")
	_, err := s.Finish(ctx, done.Lease.LeaseRef, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0})
	ok(t, err, "Finish")

	at := t0.Add(time.Hour)
	got, err := s.CancelTask(ctx, queued, at)
	ok(t, err, "CancelTask queued")
	if got.State != tasks.Cancelled || got.Error != "cancelled" {
		t.Errorf("cancelled queued task = %+v; want cancelled with error \"cancelled\"", got)
	}
	wantTimePtr(t, got.FinishedAt, &at, "FinishedAt")
	if stored := getTask(t, s, queued); !reflect.DeepEqual(stored, got) {
		t.Errorf("GetTask = %+v\nwant what CancelTask returned: %+v", stored, got)
	}
	wantIDs(t, assignedIDs(claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 5})), nil, "claim after cancel")

	got, err = s.CancelTask(ctx, r.Task.ID, at)
	ok(t, err, "CancelTask running")
	if got.State != tasks.Cancelled || got.LeaseExpires != nil || got.Host != "h" || got.Attempt != 1 {
		t.Errorf("cancelled running task = %+v; want cancelled, lease ended, host and attempt kept", got)
	}
	if stale, err := s.Renew(ctx, []tasks.LeaseRef{r.Lease.LeaseRef}, at, time.Minute); err != nil || len(stale) != 1 {
		t.Errorf("Renew of a cancelled attempt = %v, %v; want it stale", stale, err)
	}
	wantCode(t, s.AppendLog(ctx, r.Lease.LeaseRef, tasks.Stdout, 0, []byte("x")), tasks.EStaleLease, "AppendLog after cancel")

	_, err = s.CancelTask(ctx, queued, at)
	wantCode(t, err, tasks.EConflict, "CancelTask twice")
	mention(t, err, "CancelTask twice", "cancelled")
	_, err = s.CancelTask(ctx, done.Task.ID, at)
	wantCode(t, err, tasks.EConflict, "CancelTask of a succeeded task")
	mention(t, err, "CancelTask of a succeeded task", "succeeded")
	if st := getTask(t, s, done.Task.ID).State; st != tasks.Succeeded {
		t.Errorf("after a refused cancel, task is %s; want succeeded", st)
	}
	_, err = s.CancelTask(ctx, 1<<40, at)
	wantCode(t, err, tasks.ENotFound, "CancelTask of a missing task")
}

func testReleaseLeases(t *testing.T, s store.Store) {
	ctx := t.Context()
	once, twice := spec("lab"), spec("lab")
	once.MaxAttempts, twice.MaxAttempts = 1, 2
	ts := submit(t, s, "alice", once, twice, spec("lab"), spec("lab"))
	as := claim(t, s, store.ClaimParams{Host: "h1", Groups: []string{"lab"}, Max: 3, TTL: time.Minute, Now: t0})
	other := claim(t, s, store.ClaimParams{Host: "h2", Groups: []string{"lab"}, Max: 1, TTL: time.Minute, Now: t0})
	if len(as) != 3 || len(other) != 1 {
		t.Fatalf("claimed %d and %d; want 3 and 1", len(as), len(other))
	}
	refOnce, refTwice, refKept := as[0].Lease.LeaseRef, as[1].Lease.LeaseRef, as[2].Lease.LeaseRef
	stale := refKept
	stale.Token = tokenLike(refKept.Token)
	at := t0.Add(10 * time.Second)
	got, err := s.ReleaseLeases(ctx, "h1", []tasks.LeaseRef{refTwice, refOnce, stale, other[0].Lease.LeaseRef}, "its shim died", at)
	ok(t, err, "ReleaseLeases")
	if len(got) != 2 || got[0].ID != ts[0].ID || got[1].ID != ts[1].ID {
		t.Fatalf("ReleaseLeases = %v; want tasks %d and %d, not the stale token's nor the other host's", ids(got), ts[0].ID, ts[1].ID)
	}
	failed, requeued := got[0], got[1]
	if failed.State != tasks.Failed || failed.LeaseExpires != nil {
		t.Errorf("task with 1 attempt: %s; want failed, no lease", failed.State)
	}
	mention(t, fmt.Errorf("%s", failed.Error), "Error of the failed task", "host lost", "its shim died", "attempt 1")
	wantTimePtr(t, failed.FinishedAt, &at, "FinishedAt of the failed task")
	if requeued.State != tasks.Queued || requeued.LeaseExpires != nil || requeued.Error != "" {
		t.Errorf("task with 2 attempts: %+v; want queued, no lease, no error", requeued)
	}
	for _, task := range got {
		if stored := getTask(t, s, task.ID); !reflect.DeepEqual(stored, task) {
			t.Errorf("GetTask = %+v\nwant what ReleaseLeases returned: %+v", stored, task)
		}
	}
	for _, ref := range []tasks.LeaseRef{refKept, other[0].Lease.LeaseRef} {
		if task := getTask(t, s, ref.Task); task.State != tasks.Running {
			t.Errorf("task %d: %s; want still running", ref.Task, task.State)
		}
	}
	// The released attempt's writes are refused; a second release changes
	// nothing.
	_, err = s.Finish(ctx, refTwice, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: at})
	wantCode(t, err, tasks.EStaleLease, "Finish of a released attempt")
	got, err = s.ReleaseLeases(ctx, "h1", []tasks.LeaseRef{refTwice}, "again", at)
	ok(t, err, "ReleaseLeases again")
	if len(got) != 0 {
		t.Errorf("second ReleaseLeases = %v; want nothing", ids(got))
	}
	if got, err := s.ReleaseLeases(ctx, "h1", nil, "nothing", at); err != nil || len(got) != 0 {
		t.Errorf("ReleaseLeases of nothing = %v, %v", got, err)
	}
	again := claim(t, s, store.ClaimParams{Host: "h3", Groups: []string{"lab"}, Max: 5, TTL: time.Minute, Now: at})
	if len(again) != 1 || again[0].Task.ID != refTwice.Task || again[0].Task.Attempt != 2 {
		t.Errorf("claim after release = %+v; want task %d at attempt 2", again, refTwice.Task)
	}
}

// tokenLike returns a token of the same form as tok but not equal to it.
func tokenLike(tok string) string {
	for {
		if n := store.NewLeaseToken(); n != tok {
			return n
		}
	}
}

func testClusterID(t *testing.T, s store.Store) {
	const n = 8
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id, err := s.ClusterID(t.Context())
			if err != nil {
				t.Errorf("ClusterID: %v", err)
			}
			got[i] = id
		})
	}
	wg.Wait()
	if b, err := hex.DecodeString(got[0]); err != nil || len(b) != 8 {
		t.Errorf("ClusterID = %q; want 64 bits in hex", got[0])
	}
	for _, id := range got {
		if id != got[0] {
			t.Fatalf("concurrent ClusterID calls gave %q; want one id", got)
		}
	}
	if again, err := s.ClusterID(t.Context()); err != nil || again != got[0] {
		t.Errorf("ClusterID later = %q, %v; want %q", again, err, got[0])
	}
}
