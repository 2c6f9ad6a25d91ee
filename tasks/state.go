package tasks

// State is where a task is in its life. The transitions are:
//
//	                  claim                 exit 0
//	┌────────┐ ───────────────▶ ┌─────────┐ ──────────▶ succeeded
//	│ queued │                  │ running │ ──────────▶ failed      (exit ≠ 0, signal, lease lost
//	└────────┘ ◀─────────────── └─────────┘                          on the last attempt)
//	   │    lease lost, attempt+1    │  ──────────────▶ timed_out   (outlived its timeout)
//	   │                             │
//	   └──────── cancel ─────────────┴────────────────▶ cancelled
//
// A task in a final state never changes again; retrying one creates a new task.
type State string

// The task states; their spellings are stored and sent on the wire.
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	TimedOut  State = "timed_out"
	Cancelled State = "cancelled"
)

// AllStates lists every state, in life order, for validation and help texts.
var AllStates = []State{Queued, Running, Succeeded, Failed, TimedOut, Cancelled}

// transitions is the one table of legal state changes.
var transitions = map[State][]State{
	Queued:  {Running, Cancelled},
	Running: {Queued, Succeeded, Failed, TimedOut, Cancelled},
}

// CanTransition reports whether a task may move from one state to another.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Final reports whether s is an end state, from which nothing moves.
func (s State) Final() bool { return len(transitions[s]) == 0 && s.Valid() }

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	for _, k := range AllStates {
		if s == k {
			return true
		}
	}
	return false
}

// ParseState parses a state name as typed by a user or sent on the wire.
func ParseState(s string) (State, error) {
	st := State(s)
	if s == "timedout" || s == "timed-out" {
		st = TimedOut
	}
	if !st.Valid() {
		return "", Invalid("state", "unknown state %q (want one of queued, running, succeeded, failed, timed_out, cancelled)", s)
	}
	return st, nil
}
