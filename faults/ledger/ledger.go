// Package ledger reads the ledger the fault suite's tasks write and
// counts what went wrong: tasks lost or finished twice, attempts of one
// task that ran at the same time, writes the coordinator accepted from an
// attempt that was no longer current, processes that outlived their
// attempt, and requeues that no fault explains.
//
// Every task of the suite appends lines to one ledger file, shared by all
// hosts (they are on one machine), each line one write:
//
//	<unix time, µs precision> <kind> <task> <attempt> <host>
//
// kind is "start" when the attempt starts, "tick" every 200 ms while it
// runs, "end" when it ends by itself, and "bg" every 200 ms from a child
// it started with setsid, which must die with it. The checker knows
// nothing of mito: it is given the ledger, what the coordinator says of
// each task (Outcome), and when the harness injected which fault.
package ledger

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Line is one ledger line.
type Line struct {
	At      time.Time
	Kind    string // "start", "tick", "end" or "bg"
	Task    int64
	Attempt int
	Host    string
}

// Parse reads a ledger. A line that does not parse is an error naming it:
// the tasks write whole lines, so a torn one means the ledger itself
// cannot be trusted.
func Parse(r io.Reader) ([]Line, error) {
	var out []Line
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		l, err := parseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("ledger line %d: %w", n, err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

func parseLine(s string) (Line, error) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return Line{}, fmt.Errorf("%q: want 5 fields", s)
	}
	sec, frac, _ := strings.Cut(f[0], ".")
	secs, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return Line{}, fmt.Errorf("%q: bad time", s)
	}
	frac = (frac + "000000")[:6]
	us, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return Line{}, fmt.Errorf("%q: bad time", s)
	}
	switch f[1] {
	case "start", "tick", "end", "bg":
	default:
		return Line{}, fmt.Errorf("%q: unknown kind %q", s, f[1])
	}
	task, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return Line{}, fmt.Errorf("%q: bad task", s)
	}
	attempt, err := strconv.Atoi(f[3])
	if err != nil {
		return Line{}, fmt.Errorf("%q: bad attempt", s)
	}
	return Line{At: time.Unix(secs, us*1000), Kind: f[1], Task: task, Attempt: attempt, Host: f[4]}, nil
}

// Outcome is what the coordinator says of one task at the end.
type Outcome struct {
	Task    int64
	State   string // "succeeded", "failed", ...
	Attempt int    // the attempt its state is of
	// Finishes counts the finishes the coordinator accepted for the task
	// (its "task finished" log lines).
	Finishes int
	// LogTicks holds, per attempt, the times of the tick lines found in
	// the stdout the coordinator stored for it (the tasks print each tick
	// they write).
	LogTicks map[int][]time.Time
	// Artifacts holds, per attempt, when the coordinator recorded an
	// artifact of it.
	Artifacts map[int][]time.Time
}

// Fault is one injected fault: on Host ("" for every host), from From
// until To, which the harness sets a lease TTL after the fault healed,
// since its effects last until the leases it cost run out.
type Fault struct {
	Name     string
	Host     string
	From, To time.Time
}

// Report counts what went wrong, by task.
type Report struct {
	Tasks int
	// Lost: tasks not succeeded in the end, or whose success the
	// ledger does not back (the attempt it is of never ended).
	Lost int
	// FinishedTwice: tasks whose finish the coordinator accepted twice.
	FinishedTwice int
	// Overlapping: tasks of which two attempts ran at the same time.
	Overlapping int
	// StaleWrites: tasks of which the coordinator stored output or an
	// artifact of an attempt after a later attempt had started.
	StaleWrites int
	// RequeuesWithoutFault: attempts that ended without a report (a
	// later attempt exists) while no fault touched their host.
	RequeuesWithoutFault int
	// Leaked: attempts of which a process wrote more than LeakSlack after
	// the attempt's main process stopped.
	Leaked int
	// RanTwice: tasks of which two attempts ran to their end, which
	// at-least-once allows when a host was lost after the command ended
	// and before its report: counted, not a failure.
	RanTwice int
	// Requeues counts the attempts that ended without a report.
	Requeues int
	// Recovery holds, for each such attempt, the time from its last line
	// to the start of the next attempt.
	Recovery []time.Duration
	// Problems describes each finding, for a person.
	Problems []string
}

// LeakSlack is how long after an attempt's main process wrote its last
// line a background process of it may still write: the watchdog kills
// them at once, but a tick may be under way.
const LeakSlack = time.Second

// Failures is the number of findings that break mito's promises.
func (r Report) Failures() int {
	return r.Lost + r.FinishedTwice + r.Overlapping + r.StaleWrites + r.RequeuesWithoutFault + r.Leaked
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of Recovery, or 0.
func (r Report) Percentile(p float64) time.Duration {
	if len(r.Recovery) == 0 {
		return 0
	}
	d := slices.Clone(r.Recovery)
	slices.Sort(d)
	i := int(float64(len(d))*p/100+0.999999) - 1
	return d[max(0, min(i, len(d)-1))]
}

// attempt is what the ledger shows of one attempt.
type attempt struct {
	n          int
	host       string
	start      time.Time // zero if no start line
	lastMain   time.Time // last start/tick/end line
	last       time.Time // last line of any kind
	ended      bool
	lastBg     time.Time
	hasAnyLine bool
}

// Check counts what went wrong. outcomes must hold every task submitted
// (acknowledged) in the run.
func Check(lines []Line, outcomes []Outcome, faults []Fault) Report {
	byTask := map[int64]map[int]*attempt{}
	for _, l := range lines {
		as := byTask[l.Task]
		if as == nil {
			as = map[int]*attempt{}
			byTask[l.Task] = as
		}
		a := as[l.Attempt]
		if a == nil {
			a = &attempt{n: l.Attempt, host: l.Host}
			as[l.Attempt] = a
		}
		a.hasAnyLine = true
		if l.At.After(a.last) {
			a.last = l.At
		}
		switch l.Kind {
		case "bg":
			if l.At.After(a.lastBg) {
				a.lastBg = l.At
			}
		default:
			if l.Kind == "start" && (a.start.IsZero() || l.At.Before(a.start)) {
				a.start = l.At
			}
			if l.Kind == "end" {
				a.ended = true
			}
			if l.At.After(a.lastMain) {
				a.lastMain = l.At
			}
		}
	}

	r := Report{Tasks: len(outcomes)}
	sorted := slices.Clone(outcomes)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Task < sorted[j].Task })
	for _, o := range sorted {
		as := byTask[o.Task]
		var list []*attempt
		for _, a := range as {
			list = append(list, a)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].n < list[j].n })
		problem := func(format string, args ...any) {
			r.Problems = append(r.Problems, fmt.Sprintf("task %d: ", o.Task)+fmt.Sprintf(format, args...))
		}

		// Lost: not succeeded, or a success the ledger does not back.
		if final := as[o.Attempt]; o.State != "succeeded" || final == nil || !final.ended {
			r.Lost++
			switch {
			case o.State != "succeeded":
				problem("lost: %s at attempt %d", cmpOr(o.State, "unknown"), o.Attempt)
			default:
				problem("lost: succeeded at attempt %d, but that attempt never ended", o.Attempt)
			}
		}
		if o.Finishes > 1 {
			r.FinishedTwice++
			problem("finished %d times", o.Finishes)
		}
		ended := 0
		for _, a := range list {
			if a.ended {
				ended++
			}
		}
		if ended > 1 {
			r.RanTwice++
		}

		// Overlap: an attempt that still wrote after a later one started.
		overlap := false
		for i, a := range list {
			for _, b := range list[i+1:] {
				if !b.start.IsZero() && a.last.After(b.start) {
					overlap = true
					problem("attempts %d and %d overlap: %d wrote %s after %d started", a.n, b.n, a.n, a.last.Sub(b.start).Round(time.Millisecond), b.n)
				}
			}
		}
		if overlap {
			r.Overlapping++
		}

		// Stale writes: output or artifacts stored for an attempt that
		// were made after a later attempt started.
		stale := false
		for _, a := range list {
			for _, b := range list {
				if b.n <= a.n || b.start.IsZero() {
					continue
				}
				for _, at := range o.LogTicks[a.n] {
					if at.After(b.start) {
						stale = true
						problem("stored output of attempt %d printed %s after attempt %d started", a.n, at.Sub(b.start).Round(time.Millisecond), b.n)
						break
					}
				}
				for _, at := range o.Artifacts[a.n] {
					if at.After(b.start) {
						stale = true
						problem("artifact of attempt %d recorded %s after attempt %d started", a.n, at.Sub(b.start).Round(time.Millisecond), b.n)
						break
					}
				}
			}
		}
		if stale {
			r.StaleWrites++
		}

		for i, a := range list {
			// Leaks: a background process that outlived its attempt.
			if !a.lastBg.IsZero() && !a.lastMain.IsZero() && a.lastBg.Sub(a.lastMain) > LeakSlack {
				r.Leaked++
				problem("a process of attempt %d wrote %s after the attempt's last line", a.n, a.lastBg.Sub(a.lastMain).Round(time.Millisecond))
			}
			if i == len(list)-1 {
				continue
			}
			// A requeue: this attempt ended without a report.
			r.Requeues++
			next := list[i+1]
			if !next.start.IsZero() {
				r.Recovery = append(r.Recovery, next.start.Sub(a.last))
			}
			until := next.start
			if until.IsZero() {
				until = a.last.Add(time.Minute)
			}
			if !touched(a, until, faults) {
				r.RequeuesWithoutFault++
				problem("attempt %d on %s (%s to %s) was requeued, and no fault touched its host then", a.n, a.host, a.start.Format("15:04:05.000"), a.last.Format("15:04:05.000"))
			}
		}
	}
	return r
}

// touched reports whether a fault on the attempt's host overlapped the
// time from its start until the next attempt started: one that hit it
// between two ticks, or while it was being killed, counts.
func touched(a *attempt, until time.Time, faults []Fault) bool {
	from := a.start
	if from.IsZero() {
		from = a.last
	}
	for _, f := range faults {
		if (f.Host == "" || f.Host == a.host) && f.From.Before(until) && f.To.After(from) {
			return true
		}
	}
	return false
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
