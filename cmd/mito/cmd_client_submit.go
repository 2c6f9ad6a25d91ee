package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/tasks"
)

type submitOptions struct {
	group       string
	tags        []string
	labels      []string
	timeout     string
	priority    int32
	maxAttempts int
	env         []string
	shell       string
	file        string
}

// specFlags are the flags that describe one task, which a batch file
// describes instead.
var specFlags = []string{"tag", "label", "timeout", "priority", "max-attempts", "env", "shell"}

// newClientSubmitCmd makes `submit`, both `mito client submit` and its long
// form `mito client tasks submit`.
func newClientSubmitCmd(gopts *clientOptions) *cobra.Command {
	var opts submitOptions
	cmd := &cobra.Command{
		Use:   "submit [flags] -- COMMAND [ARG...]",
		Short: "Queue a task (or a batch with -f)",
		Long: `Queue a task that runs COMMAND with its arguments, without a shell, on a
host whose tags include every --tag; or a shell script with --shell.

The task belongs to --group, by default your personal group (named after
you). The command prints the task's id; -q prints only the id, -o json the
whole task.

With -f FILE, queue a batch instead: FILE (or - for stdin) holds a JSON
array of task specs, as in the API ({"group","command","shell","env",
"timeout","priority","tags","labels","max_attempts"}). A batch is queued
all or none. Specs without a group get --group or your personal group.`,
		Example: `  mito client submit -- uname -a
  mito client submit -g netlab -t gpu,cuda12 -l sweep=lr --timeout 2h -- python train.py --lr 0.1
  mito client submit --env RUN=3 --env MODE=fast --shell 'make && ./bench > $MITO_OUTPUT_DIR/out.txt'
  id=$(mito client submit -q -- ./experiment.sh)
  mito client tasks submit -f sweep.json`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.file != "" {
				for _, name := range specFlags {
					if cmd.Flags().Changed(name) {
						return usagef("--%s cannot be used with -f: put it in the file", name)
					}
				}
				if len(args) > 0 {
					return usagef("a command cannot be given with -f")
				}
				return runClientSubmitBatch(cmd.Context(), gopts, opts)
			}
			return runClientSubmit(cmd.Context(), gopts, opts, args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.group, "group", "g", "", "`group` that owns the task (default: your personal group)")
	f.StringSliceVarP(&opts.tags, "tag", "t", nil, "required host `tags`, comma-separated or repeated")
	f.StringSliceVarP(&opts.labels, "label", "l", nil, "`labels` for finding the task later, comma-separated or repeated")
	f.StringVar(&opts.timeout, "timeout", "", "kill the task after this `duration`, such as 90s, 10m, 2h, 1d (default 1h)")
	f.Int32VarP(&opts.priority, "priority", "p", 0, "queue `priority`: higher runs first")
	f.IntVar(&opts.maxAttempts, "max-attempts", 0, fmt.Sprintf("`times` to start the task when hosts are lost (default %d)", tasks.DefaultMaxAttempts))
	f.StringArrayVarP(&opts.env, "env", "e", nil, "set `NAME=VALUE` in the task's environment (repeatable)")
	f.StringVar(&opts.shell, "shell", "", "run this `script` with /bin/sh -c instead of a command")
	f.StringVarP(&opts.file, "file", "f", "", "submit the JSON array of specs in `FILE` (- for stdin) as one batch")
	return cmd
}

// specFromFlags builds the spec the flags and arguments describe. It leaves
// an empty group to the caller, who knows the user's personal group.
func specFromFlags(opts submitOptions, args []string) (tasks.Spec, error) {
	spec := tasks.Spec{
		Group:       opts.group,
		Shell:       opts.shell,
		Priority:    opts.priority,
		MaxAttempts: opts.maxAttempts,
	}
	if len(opts.tags) > 0 {
		spec.Tags = opts.tags
	}
	if len(opts.labels) > 0 {
		spec.Labels = opts.labels
	}
	switch {
	case opts.shell != "" && len(args) > 0:
		return spec, usagef("give either a command after -- or --shell, not both")
	case opts.shell == "" && len(args) == 0:
		return spec, usagef("no command: give one after -- (mito client submit -- CMD ARGS...) or use --shell")
	case len(args) > 0:
		spec.Command = args
	}
	if opts.timeout != "" {
		d, err := tasks.ParseDuration(opts.timeout)
		if err != nil {
			return spec, usagef("--timeout: %v", err)
		}
		if d <= 0 {
			return spec, usagef("--timeout %q: must be positive", opts.timeout)
		}
		spec.Timeout = tasks.Duration(d)
	}
	if opts.maxAttempts < 0 {
		return spec, usagef("--max-attempts %d: must be positive", opts.maxAttempts)
	}
	for _, kv := range opts.env {
		name, value, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return spec, usagef("--env %q: want NAME=VALUE", kv)
		case name == "":
			return spec, usagef("--env %q: the name is empty", kv)
		case strings.HasPrefix(name, "MITO_"):
			return spec, usagef("--env %q: names starting with MITO_ are reserved", kv)
		}
		if spec.Env == nil {
			spec.Env = map[string]string{}
		}
		spec.Env[name] = value // a later --env wins, as in a shell
	}
	return spec, nil
}

// checkSpec validates spec as the coordinator will, so that a mistake is
// reported before anything is sent. It checks a copy: the coordinator, not
// the client, fills the defaults.
func checkSpec(spec tasks.Spec) error {
	cp := spec
	return cp.Normalize()
}

func runClientSubmit(ctx context.Context, gopts *clientOptions, opts submitOptions, args []string) error {
	spec, err := specFromFlags(opts, args)
	if err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	if spec.Group == "" {
		if spec.Group, err = s.userName(ctx); err != nil {
			return err
		}
	}
	if err := checkSpec(spec); err != nil {
		return err
	}
	t, err := s.Submit(ctx, spec)
	if err != nil {
		return err
	}
	return printSubmitted(gopts, []tasks.Task{*t}, false)
}

func runClientSubmitBatch(ctx context.Context, gopts *clientOptions, opts submitOptions) error {
	specs, err := readSpecs(gopts.stdin, opts.file)
	if err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	for i := range specs {
		if specs[i].Group == "" {
			if opts.group == "" {
				if opts.group, err = s.userName(ctx); err != nil {
					return err
				}
			}
			specs[i].Group = opts.group
		}
		if err := checkSpec(specs[i]); err != nil {
			return fmt.Errorf("%s: task %d: %w", opts.file, i, err)
		}
	}
	ts, err := s.SubmitBatch(ctx, specs)
	if err != nil {
		return err
	}
	return printSubmitted(gopts, ts, true)
}

// readSpecs reads a batch file: a JSON array of specs, unknown fields
// refused as the coordinator refuses them.
func readSpecs(stdin io.Reader, file string) ([]tasks.Spec, error) {
	var (
		b   []byte
		err error
	)
	if file == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, usagef("read batch: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var specs []tasks.Spec
	if err := dec.Decode(&specs); err != nil {
		return nil, usagef("%s: want a JSON array of task specs: %v", file, err)
	}
	if len(specs) == 0 {
		return nil, usagef("%s: the batch is empty", file)
	}
	return specs, nil
}

// printSubmitted reports queued tasks: their ids for people and -q, the
// tasks for -o json (an array for a batch, as the batch is one).
func printSubmitted(gopts *clientOptions, ts []tasks.Task, batch bool) error {
	switch {
	case gopts.json() && batch:
		return writeJSON(gopts.stdout, ts)
	case gopts.json():
		return writeJSON(gopts.stdout, ts[0])
	}
	for _, t := range ts {
		if gopts.quiet {
			fmt.Fprintln(gopts.stdout, t.ID)
		} else {
			fmt.Fprintf(gopts.stdout, "submitted task %d\n", t.ID)
		}
	}
	return nil
}
