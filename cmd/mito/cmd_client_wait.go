package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/mitolab/mito/tasks"
)

type waitOptions struct {
	timeout time.Duration
	// poll is how long each request lets the coordinator hold it; short
	// enough for proxies' idle timeouts, long enough to cost nothing.
	poll time.Duration
}

// Concurrency of tasks wait: enough to follow a sweep closely without
// opening a connection per task.
const (
	waitFetchLimit = 16
	waitPollLimit  = 32
)

func newClientTasksWaitCmd(gopts *clientOptions) *cobra.Command {
	opts := waitOptions{poll: 30 * time.Second}
	cmd := &cobra.Command{
		Use:   "wait ID...",
		Short: "Wait until tasks end; exit 0 only if all succeeded",
		Long: `Wait until every given task has ended, then print how each ended, so
scripts can chain on it. Exit status:

  0  every task succeeded
  1  a task failed, timed out or was cancelled
  3  a task does not exist
  7  --timeout ran out first (the table shows where each task was)
  and the other codes of 'mito client --help' for other errors

On a terminal a progress line shows how many have ended; -q hides it and the
final table; -o json prints the tasks as a JSON array, even for one ID.
The coordinator holds each request until the task ends, so
waiting costs no polling.`,
		Example: `  mito client tasks wait 42
  mito client tasks wait --timeout 2h 42 43 44 && echo all good
  mito client tasks wait $(mito client tasks list -q -l sweep=lr --state queued,running)
  mito client tasks wait 42 -o json | jq -r '.[0].state'`,
		Args: minArgs(1, "one or more task ids"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientTasksWait(cmd.Context(), gopts, opts, args)
		},
	}
	cmd.Flags().DurationVar(&opts.timeout, "timeout", 0, "give up after this `duration`, such as 90s or 2h, and exit 7 (default: wait for ever)")
	cmd.Flags().DurationVar(&opts.poll, "poll", opts.poll, "how long each request may wait")
	_ = cmd.Flags().MarkHidden("poll")
	return cmd
}

// waitState is what tasks wait knows of the tasks it follows.
type waitState struct {
	// changed wakes the progress line; it holds at most one wake-up.
	changed chan struct{}

	mu    sync.Mutex
	tasks map[tasks.ID]tasks.Task
}

func (w *waitState) set(t tasks.Task) {
	w.mu.Lock()
	w.tasks[t.ID] = t
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// progress renders the one-line summary: "waiting: 3/5 done (1 running, 1 queued)".
func (w *waitState) progress() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var done, running, queued int
	for _, t := range w.tasks {
		switch {
		case t.State.Final():
			done++
		case t.State == tasks.Running:
			running++
		default:
			queued++
		}
	}
	return fmt.Sprintf("waiting: %d/%d done (%d running, %d queued)", done, len(w.tasks), running, queued)
}

func runClientTasksWait(ctx context.Context, gopts *clientOptions, opts waitOptions, args []string) error {
	ids, err := parseIDs(args)
	if err != nil {
		return err
	}
	ids = dedupIDs(ids)
	if opts.timeout < 0 || opts.poll <= 0 {
		return usagef("--timeout and --poll must be positive")
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	waitCtx, cancel := ctx, context.CancelFunc(func() {})
	if opts.timeout > 0 {
		waitCtx, cancel = context.WithTimeout(ctx, opts.timeout)
	}
	defer cancel()

	st := &waitState{changed: make(chan struct{}, 1), tasks: make(map[tasks.ID]tasks.Task, len(ids))}
	// First learn every task's state, so that a wrong id fails at once and
	// the progress line counts all of them from the start.
	g, gctx := errgroup.WithContext(waitCtx)
	g.SetLimit(waitFetchLimit)
	for _, id := range ids {
		g.Go(func() error {
			t, err := s.GetTask(gctx, id)
			if err != nil {
				return taskError(id, err)
			}
			st.set(*t)
			return nil
		})
	}
	err = g.Wait()

	stopProgress := func() {}
	if err == nil && !gopts.quiet && isTerminal(gopts.stderr) {
		stopProgress = startProgress(gopts.stderr, st)
	}
	if err == nil {
		g, gctx = errgroup.WithContext(waitCtx)
		g.SetLimit(waitPollLimit)
		for _, id := range ids {
			g.Go(func() error { return followTask(gctx, s, st, id, opts.poll) })
		}
		err = g.Wait()
	}
	stopProgress()

	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil && waitCtx.Err() == nil:
		return err
	}
	final := make([]tasks.Task, len(ids))
	var notDone, failed int
	for i, id := range ids {
		final[i] = st.tasks[id]
		switch {
		case !final[i].State.Final():
			notDone++
		case final[i].State != tasks.Succeeded:
			failed++
		}
	}
	if err != nil && len(st.tasks) < len(ids) {
		// Timed out before even knowing every task: nothing to show.
		return timeoutError{fmt.Sprintf("gave up after %s, before learning the state of every task", opts.timeout)}
	}
	switch {
	case gopts.json():
		// Always an array, however many IDs: a script's jq need not
		// depend on the length of its own argument list.
		err = writeJSON(gopts.stdout, final)
	case !gopts.quiet:
		err = printWaitTable(gopts.stdout, final)
	default:
		err = nil
	}
	if err != nil {
		return err
	}
	switch {
	case notDone > 0:
		return timeoutError{fmt.Sprintf("gave up after %s: %d of %d tasks still not finished", opts.timeout, notDone, len(ids))}
	case failed > 0:
		return errTasksFailed
	}
	return nil
}

// followTask long-polls one task until it is final. A coordinator that
// cannot be reached (restarting, say) is retried with backoff: a long wait
// should survive it.
func followTask(ctx context.Context, s *session, st *waitState, id tasks.ID, poll time.Duration) error {
	st.mu.Lock()
	t := st.tasks[id]
	st.mu.Unlock()
	backoff := time.Second
	for !t.State.Final() {
		nt, err := s.WaitTask(ctx, id, poll)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case tasks.ErrorCode(err) == tasks.EUnavailable:
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		case err != nil:
			return taskError(id, err)
		}
		backoff = time.Second
		t = *nt
		st.set(t)
	}
	return nil
}

// startProgress redraws the progress line on w whenever a task changes,
// until the returned function is called; that one erases the line and
// returns once the drawing goroutine has ended.
func startProgress(w io.Writer, st *waitState) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		last := st.progress()
		fmt.Fprint(w, "\r\x1b[K"+last)
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\x1b[K")
				return
			case <-st.changed:
				if line := st.progress(); line != last {
					last = line
					fmt.Fprint(w, "\r\x1b[K"+line)
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

func printWaitTable(w io.Writer, ts []tasks.Task) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tEXIT\tHOST\tDURATION\tERROR")
	cut := tasks.ID(0) // a task whose error the table cuts short
	for _, t := range ts {
		if utf8.RuneCountInString(strings.Join(strings.Fields(t.Error), " ")) > waitErrorWidth {
			cut = t.ID
		}
		dur := "-"
		if t.StartedAt != nil && t.FinishedAt != nil {
			dur = t.FinishedAt.Sub(*t.StartedAt).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.State, exitText(t), orDash(t.Host), dur,
			orDash(truncate(t.Error, waitErrorWidth)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if cut != 0 {
		_, err := fmt.Fprintf(w, "(errors cut short; the whole of one: mito client tasks get %d)\n", cut)
		return err
	}
	return nil
}

// waitErrorWidth is how much of an error the wait table shows.
const waitErrorWidth = 60

func dedupIDs(ids []tasks.ID) []tasks.ID {
	seen := make(map[tasks.ID]bool, len(ids))
	out := ids[:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
