package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/tasks"
)

func newClientTasksCmd(gopts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "Submit, list, follow, cancel and retry tasks",
		Long: `Submit, list, follow, cancel and retry tasks, and read their output and
artifacts. Commands that take several ids act on each and report every
failure.`,
		Example: `  mito client tasks list --state running,queued
  mito client tasks get 42 -o json
  mito client tasks wait 42 43 44
  mito client tasks logs 42 --stderr`,
	}
	cmd.AddCommand(
		newClientSubmitCmd(gopts),
		newClientTasksGetCmd(gopts),
		newClientTasksListCmd(gopts),
		newClientTasksCancelCmd(gopts),
		newClientTasksRetryCmd(gopts),
		newClientTasksLogsCmd(gopts),
		newClientTasksWaitCmd(gopts),
		newClientTasksWatchCmd(gopts),
		newClientArtifactsCmd(gopts),
	)
	return cmd
}

func newClientTasksGetCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID...",
		Short: "Show tasks",
		Long: `Show tasks in full. With -o json one id prints the task object (with
"state" and "exit_code"), several print an array of them.`,
		Example: `  mito client tasks get 42
  mito client tasks get 42 -o json | jq -r .state`,
		Args: minArgs(1, "one or more task ids"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientTasksGet(cmd.Context(), gopts, args)
		},
	}
}

func runClientTasksGet(ctx context.Context, gopts *clientOptions, args []string) error {
	// A queued task whose task inputs' sources have not ended is not
	// claimable yet; people are told why it does not start.
	waiting := map[tasks.ID][]tasks.Task{}
	sources := map[tasks.ID]*tasks.Task{}
	return eachTask(ctx, gopts, args, func(s *session, id tasks.ID) (*tasks.Task, error) {
		t, err := s.GetTask(ctx, id)
		if err != nil || gopts.json() || t.State != tasks.Queued {
			return t, err
		}
		for i, in := range t.Inputs {
			src := in.Task
			if src == 0 || slices.ContainsFunc(t.Inputs[:i], func(o tasks.Input) bool { return o.Task == src }) {
				continue // an attachment, or a source already looked at
			}
			st, seen := sources[src]
			if !seen {
				// One that cannot be read says nothing: the claim does not
				// wait for a task that does not exist, and the fetch
				// names an input that cannot be had.
				st, _ = s.GetTask(ctx, src)
				sources[src] = st
			}
			if st != nil && !st.State.Final() {
				waiting[id] = append(waiting[id], *st)
			}
		}
		return t, nil
	}, func(w io.Writer, ts []tasks.Task) error {
		return printTaskDetailsWaiting(w, ts, waiting)
	})
}

func newClientTasksCancelCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID...",
		Short: "Cancel tasks",
		Long: `Cancel tasks: a queued task never starts, a running one has its whole
process group killed. A running task may still show "running" until its
host confirms; 'tasks wait' tells when it is final. Cancelling a task that
already ended is a conflict (exit 5).`,
		Example: `  mito client tasks cancel 42
  mito client tasks list -q --state queued -l sweep=lr | xargs mito client tasks cancel`,
		Args: minArgs(1, "one or more task ids"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientTasksCancel(cmd.Context(), gopts, args)
		},
	}
}

func runClientTasksCancel(ctx context.Context, gopts *clientOptions, args []string) error {
	return eachTask(ctx, gopts, args, func(s *session, id tasks.ID) (*tasks.Task, error) {
		t, err := s.CancelTask(ctx, id)
		if err == nil && !gopts.quiet && !gopts.json() {
			if t.State == tasks.Cancelled {
				fmt.Fprintf(gopts.stdout, "cancelled task %d\n", id)
			} else {
				fmt.Fprintf(gopts.stdout, "cancelled task %d; it is %s for now\n", id, t.State)
			}
		}
		return t, err
	}, nil)
}

func newClientTasksRetryCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "retry ID...",
		Short: "Queue a new run of tasks",
		Long: `Queue a new task with the spec of each given task. The new task records
the old one as "retry_of"; the old one keeps its history. -q prints only the
new ids.`,
		Example: `  mito client tasks retry 42
  mito client tasks list -q --state failed -l sweep=lr | xargs mito client tasks retry`,
		Args: minArgs(1, "one or more task ids"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientTasksRetry(cmd.Context(), gopts, args)
		},
	}
}

func runClientTasksRetry(ctx context.Context, gopts *clientOptions, args []string) error {
	return eachTask(ctx, gopts, args, func(s *session, id tasks.ID) (*tasks.Task, error) {
		t, err := s.RetryTask(ctx, id)
		switch {
		case err != nil || gopts.json():
		case gopts.quiet:
			fmt.Fprintln(gopts.stdout, t.ID)
		default:
			fmt.Fprintf(gopts.stdout, "retried task %d as task %d\n", id, t.ID)
		}
		return t, err
	}, nil)
}

// eachTask runs do for every id, going on past failures so that one bad id
// does not hide the others' results, and prints the tasks it got: with -o
// json the task for one id or an array for several, else with table (when
// not nil). Only the tasks it got are printed: nothing at all, not even
// an empty array, when there are none. It returns every failure, joined.
func eachTask(ctx context.Context, gopts *clientOptions, args []string,
	do func(*session, tasks.ID) (*tasks.Task, error), table func(io.Writer, []tasks.Task) error) error {
	ids, err := parseIDs(args)
	if err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var (
		got  []tasks.Task
		errs []error
	)
	for _, id := range ids {
		t, err := do(s, id)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, taskError(id, err))
			continue
		}
		got = append(got, *t)
	}
	var perr error
	switch {
	case len(got) == 0:
	case gopts.json() && len(ids) == 1:
		perr = writeJSON(gopts.stdout, got[0])
	case gopts.json():
		perr = writeJSON(gopts.stdout, got)
	case table != nil && len(got) > 0:
		perr = table(gopts.stdout, got)
	}
	return errors.Join(append(errs, perr)...)
}

// printTaskDetails prints tasks as key/value blocks, for people.
func printTaskDetails(w io.Writer, ts []tasks.Task) error {
	return printTaskDetailsWaiting(w, ts, nil)
}

// printTaskDetailsWaiting is printTaskDetails, saying also which sources
// of its inputs each task of waiting still waits for.
func printTaskDetailsWaiting(w io.Writer, ts []tasks.Task, waiting map[tasks.ID][]tasks.Task) error {
	tw := newTable(w)
	for i, t := range ts {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		kv := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
		kv("id", strconv.FormatInt(int64(t.ID), 10))
		kv("state", string(t.State))
		if srcs := waiting[t.ID]; len(srcs) > 0 {
			var s []string
			for _, src := range srcs {
				s = append(s, fmt.Sprintf("task %d (%s)", src.ID, src.State))
			}
			kv("waiting for", strings.Join(s, ", "))
		}
		kv("exit", exitText(t))
		if t.Error != "" {
			kv("error", t.Error)
		}
		kv("group", t.Group)
		kv("creator", t.Creator)
		if t.Shell != "" {
			kv("shell", t.Shell)
		} else {
			kv("command", commandText(t.Command))
		}
		if len(t.Env) > 0 {
			env := make([]string, 0, len(t.Env))
			for k, v := range t.Env {
				env = append(env, k+"="+v)
			}
			slices.Sort(env)
			kv("env", strings.Join(env, " "))
		}
		if len(t.Inputs) > 0 {
			ins := make([]string, len(t.Inputs))
			for i, in := range t.Inputs {
				ins[i] = in.String()
			}
			kv("inputs", strings.Join(ins, " "))
		}
		kv("tags", orDash(strings.Join(t.Tags, ",")))
		kv("labels", orDash(strings.Join(t.Labels, ",")))
		kv("priority", strconv.Itoa(int(t.Priority)))
		kv("timeout", time.Duration(t.Timeout).String())
		kv("attempt", attemptText(t))
		kv("host", orDash(t.Host))
		if t.RetryOf != 0 {
			kv("retry of", strconv.FormatInt(int64(t.RetryOf), 10))
		}
		kv("created", fmtTime(t.CreatedAt))
		kv("started", fmtTimePtr(t.StartedAt))
		kv("finished", fmtTimePtr(t.FinishedAt))
		if t.StdoutTruncated || t.StderrTruncated {
			var s []string
			if t.StdoutTruncated {
				s = append(s, "stdout")
			}
			if t.StderrTruncated {
				s = append(s, "stderr")
			}
			kv("truncated", strings.Join(s, ","))
		}
	}
	return tw.Flush()
}

// attemptText says which start of a task this is. Only a task that has
// not ended may start again, and only when its host is lost, so a final
// task shows just the number: "1 of 3" would promise retries that do not
// happen.
func attemptText(t tasks.Task) string {
	n := strconv.Itoa(t.Attempt)
	switch {
	case t.State.Final() || t.MaxAttempts <= 1:
		return n
	case t.Attempt == 0:
		return fmt.Sprintf("0, not started (up to %d starts if hosts are lost)", t.MaxAttempts)
	}
	return fmt.Sprintf("%s (up to %d if hosts are lost)", n, t.MaxAttempts)
}

// printTaskTable prints one line per task, for listings.
func printTaskTable(w io.Writer, ts []tasks.Task) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tEXIT\tGROUP\tCREATOR\tHOST\tCREATED\tCOMMAND")
	for _, t := range ts {
		cmd := commandText(t.Command)
		if t.Shell != "" {
			cmd = "sh -c " + quoteArg(t.Shell)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.State, exitText(t),
			t.Group, t.Creator, orDash(t.Host), fmtTime(t.CreatedAt), truncate(cmd, 60))
	}
	return tw.Flush()
}

// exitText says how a task's process ended: its exit code, its signal, or
// "-" while it has not.
func exitText(t tasks.Task) string {
	switch {
	case t.ExitCode != nil:
		return strconv.Itoa(*t.ExitCode)
	case t.Signal != "":
		return t.Signal
	}
	return "-"
}

// commandText renders an argv as a shell would need it typed, so that what
// people see can be pasted.
func commandText(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = quoteArg(a)
	}
	return strings.Join(q, " ")
}

func quoteArg(a string) string {
	if a != "" && strings.IndexFunc(a, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%", r))
	}) < 0 {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}

// truncate shortens s to n runes for a table cell, on one line.
func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

type listOptions struct {
	groups  []string
	states  []string
	tags    []string
	labels  []string
	creator string
	host    string
	since   string
	until   string
	before  int64
	limit   int
	all     bool
}

func newClientTasksListCmd(gopts *clientOptions) *cobra.Command {
	var opts listOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tasks, newest first",
		Long: `List the tasks of the groups you can read, newest first, one page at a
time (--limit, default 100). Filters combine with AND; --tag and --label
match tasks that have all the given ones. --since and --until take a time
(RFC 3339, or a date) or a duration back from now (2h, 7d).

When there are more tasks, a note says how to get the next page; --all
fetches every page. -q prints only the ids, -o json an object
{"tasks": [...], "next": ID} where next is the --before of the next page,
0 at the end.`,
		Example: `  mito client tasks list
  mito client tasks list --state queued,running -g netlab
  mito client tasks list --label sweep=lr --since 2d --all -o json
  mito client tasks list -q --state failed --since 1h`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientTasksList(cmd.Context(), gopts, opts)
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&opts.groups, "group", "g", nil, "only these `groups`")
	f.StringSliceVarP(&opts.states, "state", "s", nil, "only these `states`: queued, running, succeeded, failed, timed_out, cancelled")
	f.StringSliceVarP(&opts.tags, "tag", "t", nil, "only tasks requiring all these `tags`")
	f.StringArrayVarP(&opts.labels, "label", "l", nil, "only tasks with this `label` (repeat: all of them)")
	f.StringVar(&opts.creator, "creator", "", "only tasks submitted by `user`")
	f.StringVar(&opts.host, "host", "", "only tasks run on `host`")
	f.StringVar(&opts.since, "since", "", "only tasks created at or after `time` (RFC 3339, date, or duration ago like 2h)")
	f.StringVar(&opts.until, "until", "", "only tasks created before `time`")
	f.Int64Var(&opts.before, "before", 0, "only tasks with an id below `ID` (the next page)")
	f.IntVar(&opts.limit, "limit", 0, fmt.Sprintf("tasks per page (default %d, at most %d)", tasks.DefaultListLimit, tasks.MaxListLimit))
	f.BoolVarP(&opts.all, "all", "A", false, "fetch every page")
	return cmd
}

// filterFromFlags builds the filter the list flags describe, as of now.
func filterFromFlags(opts listOptions, now time.Time) (tasks.Filter, error) {
	f := tasks.Filter{
		Groups:  opts.groups,
		Tags:    opts.tags,
		Labels:  opts.labels,
		Creator: opts.creator,
		Host:    opts.host,
		Before:  tasks.ID(opts.before),
		Limit:   opts.limit,
	}
	for _, s := range opts.states {
		st, err := tasks.ParseState(strings.TrimSpace(s))
		if err != nil {
			return f, flagValueError("--state", err)
		}
		f.States = append(f.States, st)
	}
	var err error
	if f.Since, err = parseTimeFlag(opts.since, now); err != nil {
		return f, usagef("--since: %v", err)
	}
	if f.Until, err = parseTimeFlag(opts.until, now); err != nil {
		return f, usagef("--until: %v", err)
	}
	switch {
	case opts.limit < 0 || opts.limit > tasks.MaxListLimit:
		return f, usagef("--limit %d: want 1 to %d", opts.limit, tasks.MaxListLimit)
	case opts.before < 0:
		return f, usagef("--before %d: want a task id", opts.before)
	case !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until):
		return f, usagef("--since is not before --until")
	}
	return f, nil
}

// parseTimeFlag parses an RFC 3339 time, a date (local midnight), or a
// duration back from now, which is what people type most.
func parseTimeFlag(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateTime, s, time.Local); err == nil {
		return t, nil
	}
	d, err := tasks.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is not a time (2026-01-02T15:04:05Z, 2026-01-02) or a duration ago (2h, 7d)", s)
	}
	return now.Add(-d), nil
}

func runClientTasksList(ctx context.Context, gopts *clientOptions, opts listOptions) error {
	filter, err := filterFromFlags(opts, time.Now())
	if err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var all []tasks.Task
	for {
		page, next, err := s.ListTasks(ctx, filter)
		if err != nil {
			return err
		}
		all = append(all, page...)
		if !opts.all || next == 0 {
			filter.Before = next
			break
		}
		if filter.Before != 0 && next >= filter.Before {
			return fmt.Errorf("list tasks: the coordinator's next page (%d) does not go back from %d", next, filter.Before)
		}
		filter.Before = next
	}
	if all == nil {
		all = []tasks.Task{}
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, struct {
			Tasks []tasks.Task `json:"tasks"`
			Next  tasks.ID     `json:"next"`
		}{all, filter.Before})
	case gopts.quiet:
		for _, t := range all {
			fmt.Fprintln(gopts.stdout, t.ID)
		}
		return nil
	}
	if len(all) == 0 {
		gopts.notef("no tasks")
		return nil
	}
	if err := printTaskTable(gopts.stdout, all); err != nil {
		return err
	}
	if filter.Before != 0 {
		gopts.notef("more tasks: add --before %d for the next page, or --all", filter.Before)
	}
	return nil
}

type logsOptions struct {
	stderr  bool
	attempt int
	follow  bool
}

// A log follower's long poll: how long each read may wait on the
// coordinator for output, and the least time between two reads that found
// nothing.
const (
	logFollowWait   = 25 * time.Second
	logFollowMinGap = 200 * time.Millisecond
)

// logChunk is how much of a log one request asks for: big enough that a
// capped log takes a handful of requests, small enough to print promptly.
const logChunk = 1 << 20

func newClientTasksLogsCmd(gopts *clientOptions) *cobra.Command {
	var opts logsOptions
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Print a task's output",
		Long: `Print what a task wrote to stdout (or with --stderr, to stderr), as raw
bytes, from the latest attempt or the one --attempt names. With --follow,
keep printing as a running task writes, until it ends.

-o json prints {"task","attempt","stream","data","next_offset"} with the
output as a string (bytes that are not UTF-8 are replaced); "attempt" is
the attempt printed, 0 for a task that has not started.`,
		Example: `  mito client tasks logs 42
  mito client tasks logs 42 --stderr --attempt 1
  mito client tasks logs 42 -f`,
		Args: exactArgs(1, "one task id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientTasksLogs(cmd.Context(), gopts, opts, args)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.stderr, "stderr", false, "print stderr instead of stdout")
	f.IntVar(&opts.attempt, "attempt", 0, "print this `attempt` (default: the latest)")
	f.BoolVarP(&opts.follow, "follow", "f", false, "keep printing until the task ends")
	return cmd
}

func runClientTasksLogs(ctx context.Context, gopts *clientOptions, opts logsOptions, args []string) error {
	ids, err := parseIDs(args)
	if err != nil {
		return err
	}
	if opts.attempt < 0 {
		return usagef("--attempt %d: want 1 or more", opts.attempt)
	}
	id := ids[0]
	stream := tasks.Stdout
	if opts.stderr {
		stream = tasks.Stderr
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var (
		buf    strings.Builder // the log, for -o json
		out    = gopts.stdout
		offset int64
		final  bool
	)
	attempt := opts.attempt
	if gopts.json() {
		out = &buf
		if attempt == 0 {
			// -o json says which attempt it printed, so read the latest
			// by its number, which also keeps a follower on it. A task
			// that has not started yet has none, and an empty log.
			t, err := s.GetTask(ctx, id)
			if err != nil {
				return err
			}
			attempt = t.Attempt
		}
	}
	var wait time.Duration
	if opts.follow {
		wait = logFollowWait
	}
	for {
		asked := time.Now()
		p, err := s.ReadLogWait(ctx, id, attempt, stream, offset, logChunk, wait)
		if err != nil {
			return err
		}
		if len(p.Data) > 0 {
			if _, err := out.Write(p.Data); err != nil {
				return err
			}
		}
		if gopts.json() && attempt == 0 && p.Attempt > 0 {
			attempt = p.Attempt // it has started since
		}
		if p.Next > offset {
			offset = p.Next
			continue
		}
		if !opts.follow || final {
			break
		}
		if p.State != "" {
			// The coordinator read the state before the log, and held the
			// read until output came or the task ended: a final state
			// with nothing new means the log is complete.
			if p.State.Final() {
				break
			}
			// An early empty answer (the task moved to another attempt)
			// is read again at once; a coordinator that answers every
			// follow at once is not let to make this a busy loop.
			if time.Since(asked) < logFollowMinGap {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(logFollowMinGap):
				}
			}
			continue
		}
		// A coordinator that does not say the state: wait until the task
		// ends or a while passes, then read again; once it has ended, one
		// more read drains the rest.
		t, err := s.WaitTask(ctx, id, 2*time.Second)
		if err != nil {
			return err
		}
		final = t.State.Final()
		if gopts.json() && attempt == 0 && t.Attempt > 0 {
			attempt = t.Attempt // it has started since
		}
	}
	if gopts.json() {
		return writeJSON(gopts.stdout, struct {
			Task       tasks.ID     `json:"task"`
			Attempt    int          `json:"attempt"`
			Stream     tasks.Stream `json:"stream"`
			Data       string       `json:"data"`
			NextOffset int64        `json:"next_offset"`
		}{id, attempt, stream, buf.String(), offset})
	}
	return nil
}
