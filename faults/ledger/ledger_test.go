package ledger

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// at returns t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// run writes the ledger lines of one attempt that ran from ms to ms+dur,
// ticking every 200 ms with a background ticker, and ended by itself if
// ended.
func run(task int64, attempt int, host string, from, dur int, ended bool) []Line {
	ls := []Line{{At: at(from), Kind: "start", Task: task, Attempt: attempt, Host: host}}
	for t := from + 200; t < from+dur; t += 200 {
		ls = append(ls, Line{At: at(t), Kind: "tick", Task: task, Attempt: attempt, Host: host})
		ls = append(ls, Line{At: at(t + 50), Kind: "bg", Task: task, Attempt: attempt, Host: host})
	}
	if ended {
		ls = append(ls, Line{At: at(from + dur), Kind: "end", Task: task, Attempt: attempt, Host: host})
	}
	return ls
}

func ok(task int64, attempt int) Outcome {
	return Outcome{Task: task, State: "succeeded", Attempt: attempt, Finishes: 1}
}

func TestParse(t *testing.T) {
	got, err := Parse(strings.NewReader("1765015200.123456 start 7 1 h1\n1765015200.5 tick 7 1 h1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].At != time.Unix(1765015200, 123456000) || got[0].Kind != "start" || got[0].Task != 7 || got[0].Attempt != 1 || got[0].Host != "h1" {
		t.Errorf("Parse = %+v", got)
	}
	if got[1].At != time.Unix(1765015200, 500000000) {
		t.Errorf("a time with fewer digits: %v", got[1].At)
	}
	for _, bad := range []string{"1765015200.1 start 7 1", "x start 7 1 h", "1.0 jump 7 1 h", "1.0 start x 1 h", "1.0 start 7 y h"} {
		if _, err := Parse(strings.NewReader("1.0 start 1 1 h\n" + bad + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("Parse(%q) = %v; want an error naming line 2", bad, err)
		}
	}
}

// TestCheck plants each kind of failure in an otherwise clean run and
// checks that it is counted, and only it.
func TestCheck(t *testing.T) {
	fault := []Fault{{Name: "shim SIGKILL", Host: "h1", From: at(1000), To: at(1100)}}
	tests := []struct {
		name     string
		lines    [][]Line
		outcomes []Outcome
		faults   []Fault
		want     Report // the counts only
		problem  string // a word of the problem reported
	}{
		{
			name:     "clean",
			lines:    [][]Line{run(1, 1, "h1", 0, 2000, true), run(2, 1, "h2", 0, 3000, true)},
			outcomes: []Outcome{ok(1, 1), ok(2, 1)},
		},
		{
			name: "requeued by a fault, recovered",
			// Killed at 1000 (last tick 800); attempt 2 starts at 1500.
			lines:    [][]Line{run(1, 1, "h1", 0, 900, false), run(1, 2, "h2", 1500, 2000, true)},
			outcomes: []Outcome{ok(1, 2)},
			faults:   fault,
			want:     Report{Requeues: 1},
		},
		{
			name:     "lost: never finished",
			lines:    [][]Line{run(1, 1, "h1", 0, 900, false)},
			outcomes: []Outcome{{Task: 1, State: "running", Attempt: 1, Finishes: 0}},
			want:     Report{Lost: 1},
			problem:  "lost",
		},
		{
			name:     "lost: a success the ledger does not back",
			lines:    [][]Line{run(1, 1, "h1", 0, 900, false)},
			outcomes: []Outcome{ok(1, 1)},
			want:     Report{Lost: 1},
			problem:  "never ended",
		},
		{
			name:     "lost: no ledger at all",
			outcomes: []Outcome{ok(1, 1)},
			want:     Report{Lost: 1},
			problem:  "lost",
		},
		{
			name:     "finished twice",
			lines:    [][]Line{run(1, 1, "h1", 0, 2000, true)},
			outcomes: []Outcome{{Task: 1, State: "succeeded", Attempt: 1, Finishes: 2}},
			want:     Report{FinishedTwice: 1},
			problem:  "finished 2 times",
		},
		{
			name: "overlap",
			// Attempt 1 still ticks until 2000; attempt 2 started at 1500.
			lines:    [][]Line{run(1, 1, "h1", 0, 2100, false), run(1, 2, "h2", 1500, 2000, true)},
			outcomes: []Outcome{ok(1, 2)},
			faults:   fault,
			want:     Report{Overlapping: 1, Requeues: 1},
			problem:  "overlap",
		},
		{
			name:  "stale write: output",
			lines: [][]Line{run(1, 1, "h1", 0, 900, false), run(1, 2, "h2", 1500, 2000, true)},
			outcomes: []Outcome{{Task: 1, State: "succeeded", Attempt: 2, Finishes: 1,
				LogTicks: map[int][]time.Time{1: {at(200), at(1600)}}}},
			faults:  fault,
			want:    Report{StaleWrites: 1, Requeues: 1},
			problem: "stored output of attempt 1",
		},
		{
			name:  "stale write: artifact",
			lines: [][]Line{run(1, 1, "h1", 0, 900, false), run(1, 2, "h2", 1500, 2000, true)},
			outcomes: []Outcome{{Task: 1, State: "succeeded", Attempt: 2, Finishes: 1,
				Artifacts: map[int][]time.Time{1: {at(1700)}, 2: {at(3600)}}}},
			faults:  fault,
			want:    Report{StaleWrites: 1, Requeues: 1},
			problem: "artifact of attempt 1",
		},
		{
			name: "leak: a background process outlives its attempt",
			lines: [][]Line{run(1, 1, "h1", 0, 1000, true),
				{{At: at(2500), Kind: "bg", Task: 1, Attempt: 1, Host: "h1"}}},
			outcomes: []Outcome{ok(1, 1)},
			want:     Report{Leaked: 1},
			problem:  "after the attempt's last line",
		},
		{
			name:     "requeue without a fault",
			lines:    [][]Line{run(1, 1, "h1", 0, 900, false), run(1, 2, "h2", 1500, 2000, true)},
			outcomes: []Outcome{ok(1, 2)},
			faults:   []Fault{{Name: "elsewhere", Host: "h3", From: at(1000), To: at(1100)}},
			want:     Report{RequeuesWithoutFault: 1, Requeues: 1},
			problem:  "no fault touched",
		},
		{
			name:     "ran twice (at-least-once), not a failure",
			lines:    [][]Line{run(1, 1, "h1", 0, 900, true), run(1, 2, "h2", 1500, 2000, true)},
			outcomes: []Outcome{ok(1, 2)},
			faults:   fault,
			want:     Report{RanTwice: 1, Requeues: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lines []Line
			for _, ls := range tt.lines {
				lines = append(lines, ls...)
			}
			got := Check(lines, tt.outcomes, tt.faults)
			counts := func(r Report) string {
				return fmt.Sprintf("lost %d, finished twice %d, overlapping %d, stale %d, requeues without fault %d, leaked %d, ran twice %d, requeues %d",
					r.Lost, r.FinishedTwice, r.Overlapping, r.StaleWrites, r.RequeuesWithoutFault, r.Leaked, r.RanTwice, r.Requeues)
			}
			if counts(got) != counts(tt.want) {
				t.Errorf("Check counted %s\nwant %s\nproblems: %q", counts(got), counts(tt.want), got.Problems)
			}
			if tt.problem != "" && !strings.Contains(strings.Join(got.Problems, "\n"), tt.problem) {
				t.Errorf("problems %q; want one that says %q", got.Problems, tt.problem)
			}
			if tt.want.Failures() == 0 && len(got.Problems) != 0 {
				t.Errorf("problems %q in a run with none", got.Problems)
			}
		})
	}
}

func TestRecovery(t *testing.T) {
	lines := append(run(1, 1, "h1", 0, 900, false), run(1, 2, "h2", 1500, 2000, true)...)
	lines = append(lines, append(run(2, 1, "h1", 0, 700, false), run(2, 2, "h2", 3000, 1000, true)...)...)
	r := Check(lines, []Outcome{ok(1, 2), ok(2, 2)}, []Fault{{Host: "h1", From: at(900), To: at(1000)}})
	// Attempt 1 of task 1 wrote last at 850 (bg), of task 2 at 650.
	if len(r.Recovery) != 2 || r.Percentile(50) != 650*time.Millisecond || r.Percentile(95) != 2350*time.Millisecond {
		t.Errorf("recovery %v, p50 %v, p95 %v; want 650ms and 2.35s", r.Recovery, r.Percentile(50), r.Percentile(95))
	}
}
