package main

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// parseSubmit runs the real submit command's flag parsing on args and
// returns the spec it describes.
func parseSubmit(t *testing.T, args ...string) (tasks.Spec, error) {
	t.Helper()
	var gopts clientOptions
	cmd := newClientSubmitCmd(&gopts)
	if err := cmd.ParseFlags(args); err != nil {
		return tasks.Spec{}, err
	}
	var opts submitOptions
	f := cmd.Flags()
	opts.group, _ = f.GetString("group")
	opts.tags, _ = f.GetStringSlice("tag")
	opts.labels, _ = f.GetStringArray("label")
	opts.timeout, _ = f.GetString("timeout")
	opts.priority, _ = f.GetInt32("priority")
	opts.maxAttempts, _ = f.GetInt("max-attempts")
	opts.env, _ = f.GetStringArray("env")
	opts.inputs, _ = f.GetStringArray("input")
	opts.shell, _ = f.GetString("shell")
	return specFromFlags(opts, f.Args())
}

func TestSpecFromFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    tasks.Spec
		wantErr string // substring of the usage error; "" for none
	}{
		{name: "command after --", args: []string{"--", "echo", "-n", "hi"},
			want: tasks.Spec{Command: []string{"echo", "-n", "hi"}}},
		{name: "flags end at the command", args: []string{"-t", "gpu", "ls", "-la", "/tmp", "--", "-t", "x"},
			want: tasks.Spec{Tags: []string{"gpu"}, Command: []string{"ls", "-la", "/tmp", "--", "-t", "x"}}},
		{name: "everything",
			args: []string{"-g", "netlab", "-t", "gpu,cuda", "-t", "big", "-l", "sweep=lr", "--timeout", "10m",
				"--priority", "5", "--max-attempts", "2", "--env", "A=1", "-e", "B=x=y", "--env", "C=", "--", "python", "t.py"},
			want: tasks.Spec{Group: "netlab", Command: []string{"python", "t.py"}, Tags: []string{"gpu", "cuda", "big"},
				Labels: []string{"sweep=lr"}, Timeout: tasks.Duration(10 * time.Minute), Priority: 5, MaxAttempts: 2,
				Env: map[string]string{"A": "1", "B": "x=y", "C": ""}}},
		{name: "env with commas stays one value", args: []string{"--env", "L=a,b", "--", "true"},
			want: tasks.Spec{Command: []string{"true"}, Env: map[string]string{"L": "a,b"}}},
		{name: "later env wins", args: []string{"--env", "A=1", "--env", "A=2", "--", "true"},
			want: tasks.Spec{Command: []string{"true"}, Env: map[string]string{"A": "2"}}},
		{name: "shell", args: []string{"--shell", "echo $HOME | wc -c", "--timeout", "1d"},
			want: tasks.Spec{Shell: "echo $HOME | wc -c", Timeout: tasks.Duration(24 * time.Hour)}},
		{name: "inputs", args: []string{"--input", "attachment:data/a.csv", "--input", "task:41/out/m.bin=in/m.bin", "--", "true"},
			want: tasks.Spec{Command: []string{"true"}, Inputs: []tasks.Input{
				{Attachment: "data/a.csv", Path: "data/a.csv"},
				{Task: 41, Artifact: "out/m.bin", Path: "in/m.bin"},
			}}},
		{name: "input without source", args: []string{"--input", "data.csv", "--", "true"}, wantErr: `--input: "data.csv": want attachment:KEY[=PATH] or task:ID/NAME[=PATH]`},
		{name: "input with bad task", args: []string{"--input", "task:x/out", "--", "true"}, wantErr: `--input: "task:x/out"`},
		{name: "input escaping", args: []string{"--input", "attachment:a=../a", "--", "true"}, wantErr: `--input: "../a"`},
		{name: "env without =", args: []string{"--env", "A", "--", "true"}, wantErr: `--env "A": want NAME=VALUE`},
		{name: "env with empty name", args: []string{"--env", "=1", "--", "true"}, wantErr: "the name is empty"},
		{name: "env reserved", args: []string{"--env", "MITO_TASK_ID=1", "--", "true"}, wantErr: "reserved"},
		{name: "no command", args: nil, wantErr: "no command"},
		{name: "command and shell", args: []string{"--shell", "x", "--", "y"}, wantErr: "not both"},
		{name: "bad timeout", args: []string{"--timeout", "soon", "--", "true"}, wantErr: "--timeout"},
		{name: "negative timeout", args: []string{"--timeout", "-1m", "--", "true"}, wantErr: "must be positive"},
		{name: "negative attempts", args: []string{"--max-attempts", "-1", "--", "true"}, wantErr: "--max-attempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseSubmit(t, tt.args...)
			if tt.wantErr != "" {
				var ue usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v; want a usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v; want none", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestCheckSpecDoesNotFillDefaults(t *testing.T) {
	t.Parallel()
	spec := tasks.Spec{Group: "ann", Command: []string{"true"}, Tags: []string{"b", "a"}}
	if err := checkSpec(spec); err != nil {
		t.Fatal(err)
	}
	if spec.Timeout != 0 || spec.MaxAttempts != 0 || spec.Tags[0] != "b" {
		t.Errorf("checkSpec changed the spec to %+v; the coordinator fills defaults", spec)
	}
	spec.Group = "bad group"
	if err := checkSpec(spec); tasks.ErrorCode(err) != tasks.EInvalid {
		t.Errorf("got %v; want an invalid error for the group", err)
	}
}

func TestReadSpecs(t *testing.T) {
	t.Parallel()
	specs, err := readSpecs(strings.NewReader(`[{"command":["a"]},{"group":"g","shell":"b","timeout":"5m"}]`), "-")
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[1].Group != "g" || specs[1].Timeout != tasks.Duration(5*time.Minute) {
		t.Errorf("got %+v", specs)
	}
	for _, tt := range []struct{ in, want string }{
		{`[]`, "-: the batch is empty"},
		{`{"command":["a"]}`, "-: must hold a JSON array of task specs, not an object"},
		{`[{"command":["a"]},{"comand":["a"]}]`, `-: task 1: unknown field "comand"`},
		{`[{"command":"a"}]`, "-: task 0: command: want an array, not a string"},
		{`[{"command":["a"],"timeout":"soon"}]`, "-: task 0: timeout: want a duration"},
		{`[{"command":["a"]}] [`, "-: must hold a JSON array of task specs: unexpected data after the JSON value"},
		{"[\n{\"command\":[\"a\"]},\n}", "-: must hold a JSON array of task specs: malformed JSON on line 3"},
		{`not json`, "-: must hold a JSON array of task specs: malformed JSON on line 1"},
	} {
		_, err := readSpecs(strings.NewReader(tt.in), "-")
		var ue usageError
		if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "Go value") {
			t.Errorf("readSpecs(%s): got %v; want a usage error starting %q", tt.in, err, tt.want)
		}
	}
}

func TestFilterFromFlags(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f, err := filterFromFlags(listOptions{states: []string{"queued", "timed-out"}, since: "2h", until: "2026-03-01T11:30:00Z", limit: 10}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.States, []tasks.State{tasks.Queued, tasks.TimedOut}) {
		t.Errorf("got states %v", f.States)
	}
	if want := now.Add(-2 * time.Hour); !f.Since.Equal(want) {
		t.Errorf("got since %v; want %v", f.Since, want)
	}
	if want := now.Add(-30 * time.Minute); !f.Until.Equal(want) {
		t.Errorf("got until %v; want %v", f.Until, want)
	}
	if _, err := filterFromFlags(listOptions{states: []string{"bogus"}}, now); err == nil || !strings.HasPrefix(err.Error(), `--state: unknown state "bogus"`) {
		t.Errorf("bad state: got %v; want it named once, after --state", err)
	}
	for _, bad := range []listOptions{
		{states: []string{"done"}},
		{since: "yesterday"},
		{since: "1h", until: "2h"},
		{limit: tasks.MaxListLimit + 1},
	} {
		if _, err := filterFromFlags(bad, now); err == nil {
			t.Errorf("filterFromFlags(%+v): got no error; want one", bad)
		}
	}
}

func TestParseMemberRoles(t *testing.T) {
	t.Parallel()
	got, err := parseMemberRoles([]string{"bob:write", "carol:ADMIN"})
	if err != nil {
		t.Fatal(err)
	}
	want := []memberRole{{"bob", tasks.RoleWrite}, {"carol", tasks.RoleAdmin}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	for _, bad := range []string{"bob", "bob:owner", ":read", "b b:read"} {
		if _, err := parseMemberRoles([]string{"ok:read", bad}); err == nil {
			t.Errorf("parseMemberRoles(%q): got no error; want one", bad)
		}
	}
}

func TestTaskDetailsShowInputs(t *testing.T) {
	t.Parallel()
	task := tasks.Task{ID: 7, Spec: tasks.Spec{Group: "lab", Command: []string{"true"}, Inputs: []tasks.Input{
		{Attachment: "data.csv", Path: "data.csv"},
		{Task: 41, Artifact: "m.bin", Path: "in/m.bin"},
	}}}
	var b strings.Builder
	if err := printTaskDetails(&b, []tasks.Task{task}); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^inputs:\s+attachment:data\.csv task:41/m\.bin=in/m\.bin$`).MatchString(b.String()) {
		t.Errorf("details do not list the inputs as --input takes them:\n%s", b.String())
	}
	b.Reset()
	task.Inputs = nil
	if err := printTaskDetails(&b, []tasks.Task{task}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "inputs") {
		t.Errorf("details of a task without inputs mention them:\n%s", b.String())
	}
}
