package tasks

import "time"

// ID identifies a task. IDs are small integers so that people can type them.
type ID int64

// Task is a submitted Spec and everything that has happened to it since.
type Task struct {
	ID ID `json:"id"`
	Spec
	Creator string `json:"creator"`
	State   State  `json:"state"`
	// Attempt counts starts: 0 while never started, 1 for the first run, and
	// one more each time a lost host sends the task back to the queue.
	Attempt int `json:"attempt"`
	// Host runs (or last ran) the task.
	Host string `json:"host,omitempty"`
	// RetryOf is the task this one was created from by a retry.
	RetryOf ID `json:"retry_of,omitempty"`

	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// LeaseExpires is when the running attempt's lease runs out unless renewed.
	LeaseExpires *time.Time `json:"lease_expires,omitempty"`

	// ExitCode is set when the process exited by itself.
	ExitCode *int `json:"exit_code,omitempty"`
	// Signal names the signal that ended the process ("SIGKILL"), if one did.
	Signal string `json:"signal,omitempty"`
	// Error says, for people, why a task did not succeed when the exit code
	// alone does not ("timed out after 10m0s", "host lost").
	Error           string `json:"error,omitempty"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
}

// LeaseRef names one attempt of a task and proves the right to write for
// it. Every shim write carries one; a write whose token is not the task's
// current one is refused with EStaleLease.
type LeaseRef struct {
	Task    ID     `json:"task"`
	Attempt int    `json:"attempt"`
	Token   string `json:"token"`
}

// Lease is a claim on a task: the attempt may run until Expires, and is
// renewed by heartbeats while it runs.
type Lease struct {
	LeaseRef
	Expires time.Time `json:"expires"`
}

// Result is what a shim reports when an attempt ends.
type Result struct {
	// State is the attempt's end: Succeeded, Failed, TimedOut or Cancelled.
	State    State  `json:"state"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Signal   string `json:"signal,omitempty"`
	Error    string `json:"error,omitempty"`

	StartedAt       time.Time `json:"started_at"`
	FinishedAt      time.Time `json:"finished_at"`
	StdoutTruncated bool      `json:"stdout_truncated,omitempty"`
	StderrTruncated bool      `json:"stderr_truncated,omitempty"`
}

// Validate checks a result as sent by a shim.
func (r *Result) Validate() error {
	switch r.State {
	case Succeeded, Failed, TimedOut, Cancelled:
	default:
		return Invalid("state", "%q is not an end state", r.State)
	}
	if r.State == Succeeded && (r.ExitCode == nil || *r.ExitCode != 0) {
		return Invalid("exit_code", "a succeeded task must have exit code 0")
	}
	return nil
}

// Stream names one of a task's two output streams.
type Stream string

// The output streams of a task.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// ParseStream parses "stdout" or "stderr".
func ParseStream(s string) (Stream, error) {
	switch Stream(s) {
	case Stdout, Stderr:
		return Stream(s), nil
	}
	return "", Invalid("stream", "%q is not stdout or stderr", s)
}

// DefaultLogCap is how many bytes of each stream an attempt keeps; output
// past it is dropped and the task is marked truncated.
const DefaultLogCap = 16 << 20

// Artifact is a file a task wrote under $MITO_OUTPUT_DIR, kept after it ended.
type Artifact struct {
	Task    ID  `json:"task"`
	Attempt int `json:"attempt"`
	// Name is the file's path relative to the output directory, with '/'.
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
}

// Filter selects tasks in a listing. Empty fields do not filter.
type Filter struct {
	// Groups limits the listing to these groups; the coordinator always sets
	// it to the groups the caller may read.
	Groups  []string `json:"groups,omitempty"`
	States  []State  `json:"states,omitempty"`
	Tags    []string `json:"tags,omitempty"`   // all must be present
	Labels  []string `json:"labels,omitempty"` // all must be present
	Creator string   `json:"creator,omitempty"`
	Host    string   `json:"host,omitempty"`
	// Since and Until bound the creation time: Since ≤ created_at < Until.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// Before pages backwards: only tasks with ID < Before. Listings are
	// newest first.
	Before ID `json:"before,omitempty"`
	// Limit bounds the page; 0 means DefaultListLimit.
	Limit int `json:"limit,omitempty"`
}

// Listing limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)
