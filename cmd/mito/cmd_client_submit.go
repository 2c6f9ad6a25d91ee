package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
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
	inputs      []string
	shell       string
	file        string
}

// specFlags are the flags that describe one task, which a batch file
// describes instead.
var specFlags = []string{"tag", "label", "timeout", "priority", "max-attempts", "env", "input", "shell"}

// newClientSubmitCmd makes `submit`, both `mito client submit` and its long
// form `mito client tasks submit`.
func newClientSubmitCmd(gopts *clientOptions) *cobra.Command {
	var opts submitOptions
	cmd := &cobra.Command{
		Use:   "submit [flags] COMMAND [ARG...]",
		Short: "Queue a task (or a batch with -f)",
		Long: `Queue a task that runs COMMAND with its arguments, without a shell, on a
host whose tags include every --tag; or a shell script with --shell.

mito's own flags come before COMMAND: everything from COMMAND on is the
task's, flags included, so 'submit python3 train.py --lr 0.1' needs no
'--'. A '--' before COMMAND still works, and is needed when COMMAND itself
starts with '-'.

--input fetches a file into the task's work directory before COMMAND
starts: 'attachment:KEY' (an attachment of the task's group, see 'mito
client attachments') or 'task:ID/NAME' (artifact NAME of task ID, which
must succeed), each optionally '=PATH' for where it lands (default KEY or
NAME; a KEY or NAME holding '=' needs -f and JSON). A task named by --input
may still be queued or running: the new task waits for it, so a pipeline can
be submitted at once. An input missing when the task starts (an attachment
deleted since, a source task that failed) fails it without running COMMAND.

The task belongs to --group, by default your personal group (named after
you). The command prints the task's id; -q prints only the id, -o json the
whole task. When no host you can see serves the group with all the tags,
a note says the task will wait for one.

With -f FILE, queue a batch instead: FILE (or - for stdin) holds a JSON
array of task specs, as in the API ({"group","command","shell","env",
"timeout","priority","tags","labels","max_attempts","inputs"}). A batch is queued
all or none. Specs without a group get --group or your personal group.`,
		Example: `  mito client submit uname -a
  mito client submit -g netlab -t gpu,cuda12 -l sweep=lr --timeout 2h python train.py --lr 0.1
  mito client submit --env RUN=3 --env MODE=fast --shell 'make && ./bench > $MITO_OUTPUT_DIR/out.txt'
  mito client submit --input attachment:data/train.csv --input task:41/model.bin=in/model.bin ./eval.sh
  id=$(mito client submit -q ./experiment.sh)
  mito client submit -- -weird-command-name
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
	// Flags end at COMMAND: `submit ls -la` runs `ls -la`, not `ls` with
	// the label "a".
	f.SetInterspersed(false)
	f.StringVarP(&opts.group, "group", "g", "", "`group` that owns the task (default: your personal group)")
	f.StringSliceVarP(&opts.tags, "tag", "t", nil, "required host `tags`, comma-separated or repeated")
	f.StringArrayVarP(&opts.labels, "label", "l", nil, "a `label` for finding the task later, taken as is (repeat for more)")
	f.StringVar(&opts.timeout, "timeout", "", "kill the task after this `duration`: 90s, 10m, 2h, 2d, or a bare number of seconds (default 1h)")
	f.Int32VarP(&opts.priority, "priority", "p", 0, "queue `priority`: higher runs first")
	f.IntVar(&opts.maxAttempts, "max-attempts", 0, fmt.Sprintf("`times` to start the task when hosts are lost (default %d)", tasks.DefaultMaxAttempts))
	f.StringArrayVarP(&opts.env, "env", "e", nil, "set `NAME=VALUE` in the task's environment (repeatable)")
	f.StringArrayVar(&opts.inputs, "input", nil, "fetch `SPEC` into the work directory first: attachment:KEY[=PATH] or task:ID/NAME[=PATH] (repeatable)")
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
		return spec, usagef("give either a command or --shell, not both")
	case opts.shell == "" && len(args) == 0:
		return spec, usagef("no command: give one after the flags (mito client submit [flags] CMD ARGS...) or use --shell")
	case len(args) > 0:
		spec.Command = args
	}
	if opts.timeout != "" {
		d, err := tasks.ParseDuration(opts.timeout)
		if err != nil {
			return spec, flagValueError("--timeout", err)
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
	for _, s := range opts.inputs {
		in, err := tasks.ParseInput(s)
		if err != nil {
			return spec, flagValueError("--input", err)
		}
		spec.Inputs = append(spec.Inputs, in)
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
	if err := printSubmitted(gopts, []tasks.Task{*t}, false); err != nil {
		return err
	}
	noteUnservedTasks(ctx, gopts, s, []tasks.Task{*t})
	return nil
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
	if err := printSubmitted(gopts, ts, true); err != nil {
		return err
	}
	noteUnservedTasks(ctx, gopts, s, ts)
	return nil
}

// readSpecs reads a batch file: a JSON array of specs, unknown fields
// refused as the coordinator refuses them. Errors name the file and, for
// a problem in one spec, its index in the array.
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
	var items []json.RawMessage
	if err := decodeStrict(b, &items); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			return nil, usagef("%s: must hold a JSON array of task specs, not %s", file, jsonValueKind(te.Value))
		}
		return nil, usagef("%s: must hold a JSON array of task specs: %s", file, jsonErrorText(b, err))
	}
	if len(items) == 0 {
		return nil, usagef("%s: the batch is empty", file)
	}
	specs := make([]tasks.Spec, len(items))
	for i, item := range items {
		if err := decodeStrict(item, &specs[i]); err != nil {
			return nil, usagef("%s: task %d: %s", file, i, jsonErrorText(item, err))
		}
	}
	return specs, nil
}

// decodeStrict decodes b into v refusing unknown fields and anything after
// the value.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// jsonErrorText says what is wrong with the JSON in b for people, without
// Go's type names.
func jsonErrorText(b []byte, err error) string {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		line := 1 + bytes.Count(b[:min(int(syn.Offset), len(b))], []byte("\n"))
		return fmt.Sprintf("malformed JSON on line %d: %s", line, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		want := "a duration (such as \"90s\", \"2h\", \"2d\" or a number of seconds)"
		if typ.Type != reflect.TypeFor[tasks.Duration]() {
			want = jsonTypeKind(typ.Type)
		}
		if typ.Field == "" {
			return fmt.Sprintf("want %s, not %s", want, jsonValueKind(typ.Value))
		}
		return fmt.Sprintf("%s: want %s, not %s", typ.Field, want, jsonValueKind(typ.Value))
	case errors.Is(err, io.EOF):
		return "empty, want JSON"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: it ends too soon"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonValueKind names the kind of JSON value json.UnmarshalTypeError.Value
// describes ("object", "number 3", or a literal).
func jsonValueKind(v string) string {
	switch {
	case v == "object" || v == "array":
		return "an " + v
	case v == "string" || v == "number" || v == "bool":
		return "a " + v
	case strings.HasPrefix(v, "number "):
		return "the " + v
	}
	return v
}

// jsonTypeKind names a Go type the way someone writing JSON thinks of it.
func jsonTypeKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another kind of value"
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

// noteUnservedTasks warns, on stderr and for people only, about tasks no
// known host can run: none the user can see serves the task's group with
// all its tags, so the task stays queued until one does. It is only a
// note, so a failure to list the hosts says nothing.
func noteUnservedTasks(ctx context.Context, gopts *clientOptions, s *session, ts []tasks.Task) {
	if gopts.quiet || gopts.json() {
		return
	}
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		return
	}
	type need struct {
		group string
		tags  []string
		n     int
	}
	var needs []*need
	byKey := map[string]*need{}
	for _, t := range ts {
		key := t.Group + "\x00" + strings.Join(t.Tags, ",")
		if nd := byKey[key]; nd != nil {
			nd.n++
			continue
		}
		nd := &need{t.Group, t.Tags, 1}
		byKey[key] = nd
		needs = append(needs, nd)
	}
	for _, nd := range needs {
		if hostServes(hosts, nd.group, nd.tags) {
			continue
		}
		what := "group " + nd.group
		if len(nd.tags) > 0 {
			what += " with tags " + strings.Join(nd.tags, ",")
		}
		who := "the task"
		if len(ts) > 1 {
			who = plural(nd.n, "task") + " of the batch"
		}
		gopts.notef("note: no host serves %s; %s will wait until one does", what, who)
	}
}

// hostServes reports whether any of hosts serves group and has every tag.
func hostServes(hosts []tasks.Host, group string, tags []string) bool {
	for _, h := range hosts {
		if !slices.Contains(h.Groups, group) {
			continue
		}
		if !slices.ContainsFunc(tags, func(tag string) bool { return !slices.Contains(h.Tags, tag) }) {
			return true
		}
	}
	return false
}
