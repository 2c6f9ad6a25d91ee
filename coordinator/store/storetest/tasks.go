package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

func testCreateTasks(t *testing.T, s store.Store) {
	ctx := t.Context()
	full := tasks.Spec{
		Group:       "lab",
		Command:     []string{"iperf3", "-c", "peer one", "--json"},
		Env:         map[string]string{"A": "1", "EMPTY": ""},
		Timeout:     tasks.Duration(90 * time.Second),
		Priority:    -7,
		Tags:        []string{"10g", "bbr"},
		Labels:      []string{"exp 1", "run=3"},
		MaxAttempts: 5,
		Inputs: []tasks.Input{
			{Attachment: "data/train.csv", Path: "data/train.csv"},
			{Task: 42, Artifact: "model.bin", Path: "in/model.bin"},
		},
	}
	shell := tasks.Spec{Group: "other", Shell: "echo $HOME | wc", Timeout: tasks.Duration(time.Hour), MaxAttempts: 1}

	before := time.Now().Add(-time.Second)
	got, err := s.CreateTasks(ctx, "alice", []tasks.Spec{full, shell}, 0)
	ok(t, err, "CreateTasks")
	after := time.Now().Add(time.Second)
	if len(got) != 2 {
		t.Fatalf("CreateTasks returned %d tasks; want 2", len(got))
	}
	if got[0].ID <= 0 || got[1].ID <= got[0].ID {
		t.Errorf("IDs = %d, %d; want positive and increasing in the order given", got[0].ID, got[1].ID)
	}
	for i, sp := range []tasks.Spec{full, shell} {
		task := got[i]
		if !reflect.DeepEqual(task.Spec, sp) {
			t.Errorf("task %d spec = %+v; want %+v", i, task.Spec, sp)
		}
		if task.Creator != "alice" || task.State != tasks.Queued || task.Attempt != 0 || task.Host != "" || task.RetryOf != 0 {
			t.Errorf("task %d = %+v; want queued, attempt 0, by alice, no host", i, task)
		}
		if task.CreatedAt.Before(before) || task.CreatedAt.After(after) || task.CreatedAt.Location() != time.UTC {
			t.Errorf("task %d CreatedAt = %v; want now, in UTC", i, task.CreatedAt)
		}
		if task.StartedAt != nil || task.FinishedAt != nil || task.LeaseExpires != nil || task.ExitCode != nil {
			t.Errorf("task %d has run fields set: %+v", i, task)
		}
		// What CreateTasks returns is exactly what is stored.
		if stored := getTask(t, s, task.ID); !reflect.DeepEqual(stored, task) {
			t.Errorf("GetTask(%d) = %+v\nwant what CreateTasks returned: %+v", task.ID, stored, task)
		}
	}

	retry, err := s.CreateTasks(ctx, "bob", []tasks.Spec{full}, got[0].ID)
	ok(t, err, "CreateTasks retry")
	if retry[0].RetryOf != got[0].ID || retry[0].ID <= got[1].ID {
		t.Errorf("retry = id %d retry_of %d; want a new id retrying %d", retry[0].ID, retry[0].RetryOf, got[0].ID)
	}
	if stored := getTask(t, s, retry[0].ID); stored.RetryOf != got[0].ID || stored.Creator != "bob" {
		t.Errorf("stored retry = retry_of %d creator %s; want %d, bob", stored.RetryOf, stored.Creator, got[0].ID)
	}

	none, err := s.CreateTasks(ctx, "alice", nil, 0)
	ok(t, err, "CreateTasks of nothing")
	if len(none) != 0 {
		t.Errorf("CreateTasks(nil) = %v; want nothing", none)
	}
	_, err = s.GetTask(ctx, 1<<40)
	wantCode(t, err, tasks.ENotFound, "GetTask of a missing task")
}

// testTaskInputs checks that a spec's inputs come back whole, in order,
// from every read of a task: the create, a get, a listing and a claim,
// which is how the shim learns what to fetch.
func testTaskInputs(t *testing.T, s store.Store) {
	ctx := t.Context()
	in := spec("lab")
	in.Inputs = []tasks.Input{
		{Task: 7, Artifact: "out/result.json", Path: "prev/result.json"},
		{Attachment: "weights é.bin", Path: "weights é.bin"},
	}
	plain := spec("lab")
	got := submit(t, s, "alice", in, plain)
	if !reflect.DeepEqual(got[0].Inputs, in.Inputs) {
		t.Errorf("CreateTasks inputs = %+v; want %+v", got[0].Inputs, in.Inputs)
	}
	if got[1].Inputs != nil {
		t.Errorf("CreateTasks inputs of a task without any = %#v; want nil", got[1].Inputs)
	}
	if stored := getTask(t, s, got[0].ID); !reflect.DeepEqual(stored.Inputs, in.Inputs) {
		t.Errorf("GetTask inputs = %+v; want %+v", stored.Inputs, in.Inputs)
	}
	listed, err := s.ListTasks(ctx, tasks.Filter{Groups: []string{"lab"}, Limit: 10})
	ok(t, err, "ListTasks")
	for _, l := range listed {
		want := in.Inputs
		if l.ID == got[1].ID {
			want = nil
		}
		if !reflect.DeepEqual(l.Inputs, want) {
			t.Errorf("ListTasks: task %d inputs = %+v; want %+v", l.ID, l.Inputs, want)
		}
	}
	a := claimOne(t, s, "h1", "lab")
	if a.Task.ID != got[0].ID || !reflect.DeepEqual(a.Task.Inputs, in.Inputs) {
		t.Errorf("Claim = task %d with inputs %+v; want task %d with %+v", a.Task.ID, a.Task.Inputs, got[0].ID, in.Inputs)
	}
}

func testCreateTasksAllOrNone(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := submit(t, s, "alice", spec("lab"))
	bad := spec("lab")
	bad.Command = nil // neither command nor shell
	_, err := s.CreateTasks(ctx, "alice", []tasks.Spec{spec("lab"), spec("lab"), bad}, 0)
	wantCode(t, err, tasks.EInvalid, "CreateTasks with a bad spec last")
	all, err := s.ListTasks(ctx, tasks.Filter{})
	ok(t, err, "ListTasks")
	wantIDs(t, ids(all), []tasks.ID{first[0].ID}, "tasks after the refused batch")

	next := submit(t, s, "alice", spec("lab"))
	if next[0].ID <= first[0].ID {
		t.Errorf("ID after a refused batch = %d; want more than %d", next[0].ID, first[0].ID)
	}
}

func testListTasksFilters(t *testing.T, s store.Store) {
	ctx := t.Context()
	mk := func(group string, tags, labels []string) tasks.Spec {
		sp := spec(group)
		sp.Tags, sp.Labels = tags, labels
		return sp
	}
	b1 := submit(t, s, "alice",
		mk("lab", []string{"10g"}, []string{"exp1"}),
		mk("lab", []string{"10g", "bbr"}, []string{"exp1", "exp2"}),
		mk("other", nil, nil))
	// The second batch must be created strictly later, to test Since and Until.
	for time.Now().Truncate(time.Microsecond).Before(b1[0].CreatedAt.Add(2 * time.Millisecond)) {
		time.Sleep(time.Millisecond)
	}
	b2 := submit(t, s, "bob",
		mk("lab", nil, []string{"exp2"}),
		mk("other", []string{"bbr"}, nil))
	if !b2[0].CreatedAt.After(b1[0].CreatedAt) {
		t.Fatalf("second batch created at %v, not after the first at %v", b2[0].CreatedAt, b1[0].CreatedAt)
	}
	t1, t2, t3, t4, t5 := b1[0].ID, b1[1].ID, b1[2].ID, b2[0].ID, b2[1].ID

	a := claim(t, s, store.ClaimParams{Host: "h1", Groups: []string{"lab"}, Tags: []string{"10g", "bbr"}, Max: 1})
	if len(a) != 1 || a[0].Task.ID != t1 {
		t.Fatalf("Claim = %v; want task %d", assignedIDs(a), t1)
	}
	_, err := s.CancelTask(ctx, t3, t0)
	ok(t, err, "CancelTask")

	for _, c := range []struct {
		name string
		f    tasks.Filter
		want []tasks.ID
	}{
		{"none", tasks.Filter{}, []tasks.ID{t5, t4, t3, t2, t1}},
		{"group", tasks.Filter{Groups: []string{"lab"}}, []tasks.ID{t4, t2, t1}},
		{"groups", tasks.Filter{Groups: []string{"other", "lab"}}, []tasks.ID{t5, t4, t3, t2, t1}},
		{"missing group", tasks.Filter{Groups: []string{"nolab"}}, nil},
		{"state", tasks.Filter{States: []tasks.State{tasks.Running}}, []tasks.ID{t1}},
		{"states", tasks.Filter{States: []tasks.State{tasks.Queued, tasks.Cancelled}}, []tasks.ID{t5, t4, t3, t2}},
		{"tag", tasks.Filter{Tags: []string{"10g"}}, []tasks.ID{t2, t1}},
		{"tags all", tasks.Filter{Tags: []string{"bbr", "10g"}}, []tasks.ID{t2}},
		{"tag bbr", tasks.Filter{Tags: []string{"bbr"}}, []tasks.ID{t5, t2}},
		{"label", tasks.Filter{Labels: []string{"exp1"}}, []tasks.ID{t2, t1}},
		{"labels all", tasks.Filter{Labels: []string{"exp1", "exp2"}}, []tasks.ID{t2}},
		{"label exp2", tasks.Filter{Labels: []string{"exp2"}}, []tasks.ID{t4, t2}},
		{"creator", tasks.Filter{Creator: "bob"}, []tasks.ID{t5, t4}},
		{"host", tasks.Filter{Host: "h1"}, []tasks.ID{t1}},
		{"since is inclusive", tasks.Filter{Since: b2[0].CreatedAt}, []tasks.ID{t5, t4}},
		{"until is exclusive", tasks.Filter{Until: b2[0].CreatedAt}, []tasks.ID{t3, t2, t1}},
		{"since and until", tasks.Filter{Since: b1[0].CreatedAt, Until: b1[0].CreatedAt.Add(time.Microsecond)}, []tasks.ID{t3, t2, t1}},
		{"before", tasks.Filter{Before: t4}, []tasks.ID{t3, t2, t1}},
		{"limit", tasks.Filter{Limit: 2}, []tasks.ID{t5, t4}},
		{"page 2", tasks.Filter{Limit: 2, Before: t4}, []tasks.ID{t3, t2}},
		{"page 3", tasks.Filter{Limit: 2, Before: t2}, []tasks.ID{t1}},
		{"combined", tasks.Filter{Groups: []string{"lab"}, Creator: "alice", Tags: []string{"10g"}, States: []tasks.State{tasks.Queued}}, []tasks.ID{t2}},
	} {
		got, err := s.ListTasks(ctx, c.f)
		ok(t, err, "ListTasks "+c.name)
		wantIDs(t, ids(got), c.want, "ListTasks "+c.name)
	}

	// Listed tasks are whole.
	got, err := s.ListTasks(ctx, tasks.Filter{Host: "h1"})
	ok(t, err, "ListTasks")
	if len(got) == 1 && !reflect.DeepEqual(got[0], a[0].Task) {
		t.Errorf("listed task = %+v\nwant %+v", got[0], a[0].Task)
	}
}

func testListTasksLimits(t *testing.T, s store.Store) {
	ctx := t.Context()
	specs := make([]tasks.Spec, tasks.MaxListLimit+1)
	for i := range specs {
		specs[i] = spec("lab")
	}
	all := submit(t, s, "alice", specs...)
	last := all[len(all)-1].ID

	got, err := s.ListTasks(ctx, tasks.Filter{})
	ok(t, err, "ListTasks")
	if len(got) != tasks.DefaultListLimit || got[0].ID != last {
		t.Errorf("ListTasks with no limit: %d tasks from %d; want %d from %d", len(got), got[0].ID, tasks.DefaultListLimit, last)
	}
	got, err = s.ListTasks(ctx, tasks.Filter{Limit: 5 * tasks.MaxListLimit})
	ok(t, err, "ListTasks")
	if len(got) != tasks.MaxListLimit {
		t.Errorf("ListTasks with limit %d: %d tasks; want the cap %d", 5*tasks.MaxListLimit, len(got), tasks.MaxListLimit)
	}
	got, err = s.ListTasks(ctx, tasks.Filter{Limit: 1})
	ok(t, err, "ListTasks")
	wantIDs(t, ids(got), []tasks.ID{last}, "ListTasks limit 1")
}
