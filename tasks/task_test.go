package tasks

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func intPtr(i int) *int { return &i }

func TestResultValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		r     Result
		field string // "" means valid
	}{
		{"succeeded exit 0", Result{State: Succeeded, ExitCode: intPtr(0)}, ""},
		{"failed exit 1", Result{State: Failed, ExitCode: intPtr(1)}, ""},
		{"failed by signal", Result{State: Failed, Signal: "SIGKILL"}, ""},
		{"timed out", Result{State: TimedOut, Error: "timed out after 10m0s"}, ""},
		{"cancelled", Result{State: Cancelled}, ""},
		{"succeeded exit 1", Result{State: Succeeded, ExitCode: intPtr(1)}, "exit_code"},
		{"succeeded without exit code", Result{State: Succeeded}, "exit_code"},
		{"queued", Result{State: Queued}, "state"},
		{"running", Result{State: Running, ExitCode: intPtr(0)}, "state"},
		{"empty state", Result{}, "state"},
		{"unknown state", Result{State: "done"}, "state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate()
			if tt.field == "" {
				if err != nil {
					t.Errorf("Validate() = %v; want nil", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Validate() = %v; want *Error naming %q", err, tt.field)
			}
			if e.Code != EInvalid || e.Field != tt.field {
				t.Errorf("Validate() code, field = %q, %q; want %q, %q", e.Code, e.Field, EInvalid, tt.field)
			}
		})
	}
}

func TestParseStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Stream
		wantErr bool
	}{
		{"stdout", Stdout, false},
		{"stderr", Stderr, false},
		{"", "", true},
		{"STDOUT", "", true},
		{"stdin", "", true},
		{"both", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseStream(tt.in)
			if got != tt.want {
				t.Errorf("ParseStream(%q) = %q; want %q", tt.in, got, tt.want)
			}
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("ParseStream(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			}
			var e *Error
			if err != nil && (!errors.As(err, &e) || e.Field != "stream") {
				t.Errorf("ParseStream(%q) error = %v; want *Error naming %q", tt.in, err, "stream")
			}
		})
	}
}

func TestTaskJSON(t *testing.T) {
	t.Parallel()
	created := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	started := created.Add(time.Minute)
	tk := Task{
		ID: 42,
		Spec: Spec{
			Group:       "ops",
			Command:     []string{"make", "test"},
			Env:         map[string]string{"CI": "1"},
			Timeout:     Duration(10 * time.Minute),
			Priority:    5,
			Tags:        []string{"gpu", "linux"},
			Labels:      []string{"nightly"},
			MaxAttempts: 2,
		},
		Creator:      "alice",
		State:        Running,
		Attempt:      1,
		Host:         "web-01",
		RetryOf:      7,
		CreatedAt:    created,
		StartedAt:    &started,
		LeaseExpires: &started,
	}

	tests := []struct {
		name     string
		exitCode *int
		wantExit bool
	}{
		{"no exit code", nil, false},
		{"exit code 0", intPtr(0), true},
		{"exit code 2", intPtr(2), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tk
			in.ExitCode = tt.exitCode
			b, err := json.Marshal(in)
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			var top map[string]json.RawMessage
			if err := json.Unmarshal(b, &top); err != nil {
				t.Fatalf("json.Unmarshal into map: %v", err)
			}
			for key, want := range map[string]string{
				"group":        `"ops"`,
				"command":      `["make","test"]`,
				"timeout":      `"10m0s"`,
				"max_attempts": `2`,
				"id":           `42`,
				"state":        `"running"`,
			} {
				if got := string(top[key]); got != want {
					t.Errorf("top-level %q = %s; want %s (in %s)", key, got, want, b)
				}
			}
			if _, ok := top["Spec"]; ok {
				t.Errorf("JSON has a nested \"Spec\" key; want the spec flattened: %s", b)
			}
			for _, key := range []string{"finished_at", "shell", "signal", "error"} {
				if _, ok := top[key]; ok {
					t.Errorf("JSON has %q for an unset field: %s", key, b)
				}
			}
			if _, ok := top["exit_code"]; ok != tt.wantExit {
				t.Errorf("exit_code present = %v; want %v: %s", ok, tt.wantExit, b)
			}

			var back Task
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("json.Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(back, in) {
				t.Errorf("round trip:\ngot  %+v\nwant %+v", back, in)
			}
		})
	}
}
