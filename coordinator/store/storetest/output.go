package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

func testLogs(t *testing.T, s store.Store) {
	ctx := t.Context()
	submit(t, s, "alice", spec("lab"))
	a := claimOne(t, s, "h", "lab")
	ref, id := a.Lease.LeaseRef, a.Task.ID
	appendLog := func(st tasks.Stream, off int64, data string) {
		t.Helper()
		ok(t, s.AppendLog(ctx, ref, st, off, []byte(data)), "AppendLog")
	}
	read := func(attempt int, st tasks.Stream, off int64, limit int, want string) {
		t.Helper()
		got, err := s.ReadLog(ctx, id, attempt, st, off, limit)
		ok(t, err, "ReadLog")
		if string(got) != want {
			t.Errorf("ReadLog(attempt %d, %s, off %d, limit %d) = %q; want %q", attempt, st, off, limit, got, want)
		}
	}

	read(1, tasks.Stdout, 0, 0, "")
	appendLog(tasks.Stdout, 6, "world") // chunks may arrive out of order
	appendLog(tasks.Stdout, 0, "hello ")
	appendLog(tasks.Stderr, 0, "oops")
	appendLog(tasks.Stdout, 0, "HELLO ") // a retry of offset 0: the first is kept

	read(1, tasks.Stdout, 0, 0, "hello world")
	read(1, tasks.Stdout, 0, -1, "hello world")
	read(1, tasks.Stdout, 3, 0, "lo world") // starts mid-chunk
	read(1, tasks.Stdout, 8, 0, "rld")      // starts mid-chunk in the second
	read(1, tasks.Stdout, 0, 4, "hell")     // limit inside a chunk
	read(1, tasks.Stdout, 4, 4, "o wo")     // across chunks
	read(1, tasks.Stdout, 6, 5, "world")    // exactly one chunk
	read(1, tasks.Stdout, 11, 0, "")        // at the end
	read(1, tasks.Stdout, 100, 0, "")       // past the end
	read(1, tasks.Stderr, 0, 0, "oops")     // streams are apart
	read(2, tasks.Stdout, 0, 0, "")         // an attempt with no output
	read(1, tasks.Stdout, 0, 1<<20, "hello world")

	// An empty chunk does not take its offset from the real one.
	appendLog(tasks.Stdout, 11, "")
	appendLog(tasks.Stdout, 11, "!")
	read(1, tasks.Stdout, 0, 0, "hello world!")

	// A gap ends the read until it is filled.
	appendLog(tasks.Stdout, 20, "late")
	read(1, tasks.Stdout, 0, 0, "hello world!")
	read(1, tasks.Stdout, 20, 0, "late")
	appendLog(tasks.Stdout, 12, "12345678")
	read(1, tasks.Stdout, 0, 0, "hello world!12345678late")
	read(1, tasks.Stdout, 10, 5, "d!123")

	wantCode(t, s.AppendLog(ctx, ref, tasks.Stdout, -1, []byte("x")), tasks.EInvalid, "AppendLog at a negative offset")
	wantCode(t, s.AppendLog(ctx, ref, "stdin", 0, []byte("x")), tasks.EInvalid, "AppendLog to stdin")
	_, err := s.ReadLog(ctx, id, 1, tasks.Stdout, -1, 0)
	wantCode(t, err, tasks.EInvalid, "ReadLog at a negative offset")

	bad := ref
	bad.Token = "ffffffffffffffffffffffffffffffff"
	err = s.AppendLog(ctx, bad, tasks.Stderr, 4, []byte(" stale"))
	wantCode(t, err, tasks.EStaleLease, "AppendLog with a wrong token")
	wantCode(t, s.AppendLog(ctx, tasks.LeaseRef{Task: 1 << 40, Attempt: 1, Token: ref.Token}, tasks.Stdout, 0, []byte("x")),
		tasks.ENotFound, "AppendLog to a missing task")
	read(1, tasks.Stderr, 0, 0, "oops")

	_, err = s.Finish(ctx, ref, tasks.Result{State: tasks.Succeeded, ExitCode: ptr(0), FinishedAt: t0})
	ok(t, err, "Finish")
	wantCode(t, s.AppendLog(ctx, ref, tasks.Stderr, 4, []byte("more")), tasks.EStaleLease, "AppendLog after Finish")
	read(1, tasks.Stdout, 0, 0, "hello world!12345678late")
	got, err := s.ReadLog(ctx, 1<<40, 1, tasks.Stdout, 0, 0)
	if err != nil || len(got) != 0 {
		t.Errorf("ReadLog of a missing task = %q, %v; want nothing", got, err)
	}
}

func testArtifacts(t *testing.T, s store.Store) {
	ctx := t.Context()
	ts := submit(t, s, "alice", spec("lab"))
	id := ts[0].ID
	a := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, TTL: time.Minute, Now: t0})[0]
	ref1 := a.Lease.LeaseRef

	ok(t, s.AddArtifact(ctx, ref1, tasks.Artifact{Name: "out/b.txt", Size: 3, SHA256: "b1", CreatedAt: t0}), "AddArtifact b")
	ok(t, s.AddArtifact(ctx, ref1, tasks.Artifact{Name: "a.txt", Size: 1, SHA256: "a1", CreatedAt: t0}), "AddArtifact a")
	ok(t, s.AddArtifact(ctx, ref1, tasks.Artifact{Name: "a.txt", Size: 5, SHA256: "a2", CreatedAt: t0.Add(time.Second)}), "AddArtifact a again")
	bad := ref1
	bad.Token = "ffffffffffffffffffffffffffffffff"
	wantCode(t, s.AddArtifact(ctx, bad, tasks.Artifact{Name: "evil", Size: 1, SHA256: "e", CreatedAt: t0}), tasks.EStaleLease, "AddArtifact with a wrong token")
	wantCode(t, s.AddArtifact(ctx, tasks.LeaseRef{Task: 1 << 40, Attempt: 1, Token: ref1.Token}, tasks.Artifact{Name: "x", CreatedAt: t0}),
		tasks.ENotFound, "AddArtifact to a missing task")

	// The attempt is lost; its artifacts stay, and it can add no more.
	_, err := s.RequeueExpired(ctx, t0.Add(time.Hour))
	ok(t, err, "RequeueExpired")
	wantCode(t, s.AddArtifact(ctx, ref1, tasks.Artifact{Name: "late", Size: 1, SHA256: "l", CreatedAt: t0}), tasks.EStaleLease, "AddArtifact of a lost attempt")
	b := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: 1, TTL: time.Minute, Now: t0.Add(time.Hour)})[0]
	ok(t, s.AddArtifact(ctx, b.Lease.LeaseRef, tasks.Artifact{Name: "a.txt", Size: 7, SHA256: "a3", CreatedAt: t0}), "AddArtifact attempt 2")

	got, err := s.ListArtifacts(ctx, id)
	ok(t, err, "ListArtifacts")
	want := []tasks.Artifact{
		{Task: id, Attempt: 1, Name: "a.txt", Size: 5, SHA256: "a2", CreatedAt: us(t0.Add(time.Second))},
		{Task: id, Attempt: 1, Name: "out/b.txt", Size: 3, SHA256: "b1", CreatedAt: us(t0)},
		{Task: id, Attempt: 2, Name: "a.txt", Size: 7, SHA256: "a3", CreatedAt: us(t0)},
	}
	if len(got) != len(want) {
		t.Fatalf("ListArtifacts = %+v\nwant %+v", got, want)
	}
	for i := range want {
		g := got[i]
		wantTime(t, g.CreatedAt, want[i].CreatedAt, "artifact CreatedAt")
		g.CreatedAt = want[i].CreatedAt
		if !reflect.DeepEqual(g, want[i]) {
			t.Errorf("artifact %d = %+v; want %+v", i, g, want[i])
		}
	}
	got, err = s.ListArtifacts(ctx, 1<<40)
	if err != nil || len(got) != 0 {
		t.Errorf("ListArtifacts of a missing task = %v, %v; want nothing", got, err)
	}
}

func testHosts(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetHost(ctx, "h1")
	wantCode(t, err, tasks.ENotFound, "GetHost of a missing host")

	h2 := tasks.Host{Name: "h2", Transport: "worker", Groups: []string{"lab"}, Slots: 1, State: tasks.HostConnecting, UpdatedAt: t0}
	h1 := tasks.Host{Name: "h1", Transport: "ssh", Tags: []string{"10g", "bbr"}, Groups: []string{"lab", "other"}, Slots: 4,
		State: tasks.HostReady, OS: "linux", Arch: "amd64", UpdatedAt: t0}
	ok(t, s.PutHost(ctx, h2), "PutHost h2")
	ok(t, s.PutHost(ctx, h1), "PutHost h1")

	submit(t, s, "alice", spec("lab"), spec("lab"), spec("lab"), spec("lab"))
	claim(t, s, store.ClaimParams{Host: "h1", Groups: []string{"lab"}, Max: 2})
	a := claimOne(t, s, "h2", "lab")
	_, err = s.Finish(ctx, a.Lease.LeaseRef, tasks.Result{State: tasks.Failed, ExitCode: ptr(1), FinishedAt: t0})
	ok(t, err, "Finish")

	hosts, err := s.ListHosts(ctx)
	ok(t, err, "ListHosts")
	if len(hosts) != 2 || hosts[0].Name != "h1" || hosts[1].Name != "h2" {
		t.Fatalf("ListHosts = %+v; want h1, h2", hosts)
	}
	h1.Running, h2.Running = 2, 0
	for i, want := range []tasks.Host{h1, h2} {
		got := hosts[i]
		wantTime(t, got.UpdatedAt, want.UpdatedAt, "UpdatedAt")
		got.UpdatedAt = want.UpdatedAt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ListHosts[%d] = %+v\nwant %+v", i, got, want)
		}
	}

	// A new record replaces the old one whole.
	h1.Tags, h1.Groups, h1.State, h1.LastError, h1.Slots = []string{"25g"}, []string{"third"}, tasks.HostDraining, "dial: timeout", 2
	h1.OS, h1.Arch = "", ""
	ok(t, s.PutHost(ctx, h1), "PutHost h1 again")
	got, err := s.GetHost(ctx, "h1")
	ok(t, err, "GetHost")
	got.UpdatedAt = h1.UpdatedAt
	if !reflect.DeepEqual(got, h1) {
		t.Errorf("GetHost after PutHost = %+v\nwant %+v", got, h1)
	}
	got, err = s.GetHost(ctx, "h2")
	ok(t, err, "GetHost")
	if got.Running != 0 {
		t.Errorf("h2.Running = %d; want 0, its task has finished", got.Running)
	}
}
