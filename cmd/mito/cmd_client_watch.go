package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/tasks"
)

type watchOptions struct {
	group string
}

func newClientTasksWatchCmd(gopts *clientOptions) *cobra.Command {
	var opts watchOptions
	cmd := &cobra.Command{
		Use:   "watch ID...|--group GROUP",
		Short: "Print tasks' state changes as they happen",
		Long: `Print a line whenever one of the given tasks (or, with --group, any task
of the group) changes state:

  TIME      ID  STATE      HOST  (exit N)

It starts with the current state of each task (with --group, of the group's
queued and running tasks). With ids it exits once every task has ended:
0 if all succeeded, 1 otherwise, like 'tasks wait'. With --group it runs
until interrupted. -o json prints one JSON task object per line instead
(NDJSON); -q prints nothing, for the exit status alone.

The coordinator pushes the changes; a dropped connection is reopened and
nothing is missed. A task that changes state very quickly may skip one,
but its last state always shows.`,
		Example: `  mito client tasks watch 42 43
  mito client tasks watch --group netlab
  mito client tasks watch 42 -o json | jq -r .state`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case opts.group == "" && len(args) == 0:
				return usagef("give one or more task ids, or --group")
			case opts.group != "" && len(args) > 0:
				return usagef("give task ids or --group, not both")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientTasksWatch(cmd.Context(), gopts, opts, args)
		},
	}
	cmd.Flags().StringVarP(&opts.group, "group", "g", "", "watch every task of this `group`")
	return cmd
}

func runClientTasksWatch(ctx context.Context, gopts *clientOptions, opts watchOptions, args []string) error {
	var ids []tasks.ID
	if opts.group != "" {
		if err := tasks.ValidName("group", opts.group); err != nil {
			return flagValueError("--group", err)
		}
	} else {
		var err error
		if ids, err = parseIDs(args); err != nil {
			return err
		}
		ids = dedupIDs(ids)
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(gopts.stdout)
	enc.SetEscapeHTML(false)
	failed := false
	err = s.WatchTasks(ctx, ids, opts.group, func(t tasks.Task) error {
		if t.State.Final() && t.State != tasks.Succeeded {
			failed = true
		}
		switch {
		case gopts.quiet:
			return nil
		case gopts.json():
			return enc.Encode(t)
		}
		return printWatchLine(gopts.stdout, time.Now(), t)
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if len(ids) == 1 {
			return taskError(ids[0], err)
		}
		return err
	}
	if failed {
		return errTasksFailed
	}
	return nil
}

// printWatchLine prints one state change: "15:04:05  42  running  host-a".
func printWatchLine(w io.Writer, now time.Time, t tasks.Task) error {
	line := fmt.Sprintf("%s  %-6d  %-9s  %s", now.Format(time.TimeOnly), t.ID, t.State, orDash(t.Host))
	if t.State.Final() {
		switch {
		case t.ExitCode != nil:
			line += fmt.Sprintf("  (exit %d)", *t.ExitCode)
		case t.Signal != "":
			line += "  (" + t.Signal + ")"
		}
		if t.Error != "" && t.State != tasks.Succeeded {
			line += "  " + truncate(t.Error, 60)
		}
	}
	_, err := fmt.Fprintln(w, line)
	return err
}
