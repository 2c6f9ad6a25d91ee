package tasks

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// allowedEdges is the diagram in state.go, written out independently of the
// transitions table so that a change to either one is caught.
var allowedEdges = map[[2]State]bool{
	{Queued, Running}:    true,
	{Queued, Cancelled}:  true,
	{Running, Queued}:    true,
	{Running, Succeeded}: true,
	{Running, Failed}:    true,
	{Running, TimedOut}:  true,
	{Running, Cancelled}: true,
}

func TestAllStates(t *testing.T) {
	want := []State{"queued", "running", "succeeded", "failed", "timed_out", "cancelled"}
	if !slices.Equal(AllStates, want) {
		t.Fatalf("AllStates = %q; want %q", AllStates, want)
	}
}

func TestCanTransition(t *testing.T) {
	t.Parallel()
	for _, from := range AllStates {
		for _, to := range AllStates {
			t.Run(string(from)+"->"+string(to), func(t *testing.T) {
				want := allowedEdges[[2]State{from, to}]
				if got := CanTransition(from, to); got != want {
					t.Errorf("CanTransition(%s, %s) = %v; want %v", from, to, got, want)
				}
			})
		}
	}
	for _, s := range AllStates {
		if CanTransition("bogus", s) || CanTransition(s, "bogus") {
			t.Errorf("CanTransition with unknown state and %s = true; want false", s)
		}
	}
}

func TestStateFinal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    State
		want bool
	}{
		{Queued, false},
		{Running, false},
		{Succeeded, true},
		{Failed, true},
		{TimedOut, true},
		{Cancelled, true},
		{"", false},
		{"bogus", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.s), func(t *testing.T) {
			if got := tt.s.Final(); got != tt.want {
				t.Errorf("State(%q).Final() = %v; want %v", tt.s, got, tt.want)
			}
		})
	}
	// A final state has no way out, whatever the table says.
	for _, s := range AllStates {
		if !s.Final() {
			continue
		}
		for _, to := range AllStates {
			if CanTransition(s, to) {
				t.Errorf("final state %s can move to %s", s, to)
			}
		}
	}
}

func TestStateValid(t *testing.T) {
	t.Parallel()
	for _, s := range AllStates {
		if !s.Valid() {
			t.Errorf("State(%q).Valid() = false; want true", s)
		}
	}
	for _, s := range []State{"", "Queued", "timedout", "done"} {
		if s.Valid() {
			t.Errorf("State(%q).Valid() = true; want false", s)
		}
	}
}

func TestParseState(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    State
		wantErr bool
	}{
		{"queued", Queued, false},
		{"running", Running, false},
		{"succeeded", Succeeded, false},
		{"failed", Failed, false},
		{"timed_out", TimedOut, false},
		{"timedout", TimedOut, false},
		{"timed-out", TimedOut, false},
		{"cancelled", Cancelled, false},
		{"", "", true},
		{"done", "", true},
		{"canceled", "", true},
		{"timed out", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseState(tt.in)
			if got != tt.want {
				t.Errorf("ParseState(%q) = %q; want %q", tt.in, got, tt.want)
			}
			if !tt.wantErr {
				if err != nil {
					t.Errorf("ParseState(%q) error = %v; want nil", tt.in, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("ParseState(%q) error = %v; want *Error", tt.in, err)
			}
			if e.Code != EInvalid || e.Field != "state" {
				t.Errorf("ParseState(%q) error code, field = %q, %q; want %q, %q", tt.in, e.Code, e.Field, EInvalid, "state")
			}
			if !strings.HasPrefix(e.Error(), "state: ") {
				t.Errorf("ParseState(%q) error = %q; want prefix %q", tt.in, e.Error(), "state: ")
			}
		})
	}
}
