package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/mitolab/mito/tasks"
)

func newClientHostsCmd(gopts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "Show the hosts that run your groups' tasks",
		Long: `Show the hosts that serve a group you can read (all of them for a global
admin), with the state of their link: the first place to look when a task
stays queued.`,
		Example: `  mito client hosts list
  mito client hosts get lab-node-3 -o json
  mito client hosts facts --tag 100g
  mito client hosts bootstrap --tag new --dry-run`,
	}
	cmd.AddCommand(newClientHostsListCmd(gopts), newClientHostsGetCmd(gopts),
		newClientHostsFactsCmd(gopts), newClientHostsBootstrapCmd(gopts))
	return cmd
}

func newClientHostsListCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List hosts with their state",
		Example: `  mito client hosts list`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientHostsList(cmd.Context(), gopts)
		},
	}
}

func runClientHostsList(ctx context.Context, gopts *clientOptions) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		return err
	}
	if hosts == nil {
		hosts = []tasks.Host{}
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, hosts)
	case gopts.quiet:
		for _, h := range hosts {
			fmt.Fprintln(gopts.stdout, h.Name)
		}
		return nil
	}
	tw := newTable(gopts.stdout)
	fmt.Fprintln(tw, "NAME\tSTATE\tRUNNING\tSLOTS\tTRANSPORT\tTAGS\tGROUPS\tLAST ERROR")
	for _, h := range hosts {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", h.Name, h.State, h.Running, h.Slots, h.Transport,
			orDash(strings.Join(h.Tags, ",")), orDash(strings.Join(h.Groups, ",")), orDash(truncate(h.LastError, 50)))
	}
	return tw.Flush()
}

func newClientHostsGetCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME...",
		Short: "Show hosts in full",
		Long: `Show hosts in full. With -o json one name prints the host object, several
print an array.`,
		Example: `  mito client hosts get lab-node-3`,
		Args:    minArgs(1, "one or more host names"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientHostsGet(cmd.Context(), gopts, args)
		},
	}
}

func runClientHostsGet(ctx context.Context, gopts *clientOptions, args []string) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	// Go on past a failure, as 'tasks get' does, and print only the hosts
	// found: nothing at all when there are none.
	var (
		hosts []tasks.Host
		errs  []error
	)
	for _, name := range args {
		h, err := s.GetHost(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, namedError("host", name, err))
			continue
		}
		hosts = append(hosts, *h)
	}
	var perr error
	switch {
	case len(hosts) == 0 || gopts.quiet && !gopts.json():
	case gopts.json() && len(args) == 1:
		perr = writeJSON(gopts.stdout, hosts[0])
	case gopts.json():
		perr = writeJSON(gopts.stdout, hosts)
	default:
		perr = printHostDetails(gopts.stdout, hosts)
	}
	return errors.Join(append(errs, perr)...)
}

func printHostDetails(w io.Writer, hosts []tasks.Host) error {
	tw := newTable(w)
	for i, h := range hosts {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		kv := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
		kv("name", h.Name)
		kv("state", string(h.State))
		kv("running", strconv.Itoa(h.Running)+" of "+strconv.Itoa(h.Slots)+" slots")
		kv("transport", h.Transport)
		kv("tags", orDash(strings.Join(h.Tags, ",")))
		kv("groups", orDash(strings.Join(h.Groups, ",")))
		if h.OS != "" || h.Arch != "" {
			kv("platform", strings.Trim(h.OS+"/"+h.Arch, "/"))
		}
		if h.LastError != "" {
			kv("last error", h.LastError)
		}
		kv("updated", fmtTime(h.UpdatedAt))
	}
	return tw.Flush()
}

// hostSelection is how host operations pick hosts: names or one tag.
type hostSelection struct {
	tag string
}

func (o *hostSelection) check(args []string, needOne bool) error {
	switch {
	case o.tag != "" && len(args) > 0:
		return usagef("give host names or --tag, not both")
	case o.tag != "":
		if err := tasks.ValidName("tag", o.tag); err != nil {
			return flagValueError("--tag", err)
		}
	case needOne && len(args) == 0:
		return usagef("want one or more host names, or --tag TAG")
	}
	return nil
}

func newClientHostsFactsCmd(gopts *clientOptions) *cobra.Command {
	var opts hostSelection
	cmd := &cobra.Command{
		Use:   "facts [HOST...|--tag TAG]",
		Short: "Show what the hosts' machines are: OS, CPUs, memory, network",
		Long: `Read the hosts' machines now and show, for each: OS, kernel, architecture,
CPUs, memory, free disk (of the tasks' work directory, $TMPDIR or /tmp), the
clock offset from the coordinator (the host's clock minus the
coordinator's, with its uncertainty), the TCP congestion control algorithms
(the default, then the available ones), the default qdisc, and how the
watchdog of each task holds what the task starts (a cgroup v2 where the
SSH user may create one, else as their subreaper); then each host's
interfaces with their state, speed, MTU and addresses.

Without HOST or --tag it reads every inventory host you can see. The
coordinator reaches each host as it does to run tasks (over SSH, or on its
own machine for local hosts), eight at a time; a host it cannot reach is
reported, and makes the command exit 1 after showing the others.

With -o json one HOST prints its facts object, several (or --tag) print
an array of {"host", "facts", "error"}.`,
		Example: `  mito client hosts facts
  mito client hosts facts lab-node-1 lab-node-2
  mito client hosts facts --tag 100g -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opts.check(args, false); err != nil {
				return err
			}
			return runClientHostsFacts(cmd.Context(), gopts, opts, args)
		},
	}
	cmd.Flags().StringVarP(&opts.tag, "tag", "t", "", "the hosts with this `TAG`")
	return cmd
}

func runClientHostsFacts(ctx context.Context, gopts *clientOptions, opts hostSelection, args []string) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var results []tasks.HostFactsResult
	var errs []error
	if len(args) == 0 {
		if results, err = s.HostsFacts(ctx, opts.tag); err != nil {
			return err
		}
		for _, r := range results {
			if r.Error != "" {
				errs = append(errs, fmt.Errorf("host %s: %s", r.Host, r.Error))
			}
		}
	} else {
		results = make([]tasks.HostFactsResult, len(args))
		callErrs := make([]error, len(args))
		var g errgroup.Group
		g.SetLimit(8)
		for i, name := range args {
			g.Go(func() error {
				results[i].Host = name
				f, err := s.HostFacts(ctx, name)
				if err != nil {
					results[i].Error, callErrs[i] = err.Error(), namedError("host", name, err)
					return nil
				}
				results[i].Facts = f
				return nil
			})
		}
		_ = g.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = callErrs
	}
	var perr error
	switch {
	case gopts.json() && len(args) == 1:
		if results[0].Facts != nil {
			perr = writeJSON(gopts.stdout, results[0].Facts)
		}
	case gopts.json():
		if results == nil {
			results = []tasks.HostFactsResult{}
		}
		perr = writeJSON(gopts.stdout, results)
	case len(results) == 0:
		gopts.notef("no hosts")
	default:
		perr = printFacts(gopts.stdout, results)
	}
	return errors.Join(append(errs, perr)...)
}

// printFacts prints one line per host, then one per interface. Hosts
// without facts are left out: their errors follow on stderr.
func printFacts(w io.Writer, results []tasks.HostFactsResult) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "HOST\tOS\tKERNEL\tARCH\tCPUS\tMEM\tDISK-FREE\tCLOCK-OFFSET\tCC(default/available)\tQDISC\tTASKS-HELD-BY")
	for _, r := range results {
		f := r.Facts
		if f == nil {
			continue
		}
		osName := f.OS
		if f.Distro != "" {
			osName = f.Distro
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Host, orDash(osName), orDash(f.Kernel), orDash(f.Arch),
			positive(int64(f.CPUs), strconv.FormatInt), positive(f.MemoryBytes, sizeOf), positive(f.DiskFreeBytes, sizeOf),
			fmtClockOffset(f), fmtCC(f.CongestionControl), orDash(f.DefaultQdisc), orDash(f.Containment))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "HOST\tINTERFACE\tSTATE\tSPEED\tMTU\tADDRESSES")
	for _, r := range results {
		if r.Facts == nil {
			continue
		}
		for _, i := range r.Facts.Interfaces {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Host, i.Name, orDash(i.State), fmtSpeed(i.SpeedMbps),
				positive(int64(i.MTU), strconv.FormatInt), orDash(strings.Join(i.Addresses, ",")))
		}
	}
	return tw.Flush()
}

// positive formats n, or "-" for a fact that was not read.
func positive(n int64, f func(int64, int) string) string {
	if n <= 0 {
		return "-"
	}
	return f(n, 10)
}

func sizeOf(n int64, _ int) string { return fmtSize(n) }

func fmtSpeed(mbps int) string {
	switch {
	case mbps <= 0:
		return "-"
	case mbps >= 1000 && mbps%1000 == 0:
		return strconv.Itoa(mbps/1000) + "Gb/s"
	}
	return strconv.Itoa(mbps) + "Mb/s"
}

// fmtClockOffset prints "+1.2ms±0.3ms", rounded to what the measure can
// tell.
func fmtClockOffset(f *tasks.HostFacts) string {
	for _, m := range f.Missing {
		if m == "clock_offset" {
			return "-"
		}
	}
	off, unc := time.Duration(f.ClockOffset), time.Duration(f.ClockUncertainty)
	round := time.Microsecond // the largest power of ten within a tenth of unc
	for round*10 <= unc/10 && round < time.Second {
		round *= 10
	}
	sign := "+"
	if off < 0 {
		sign, off = "-", -off
	}
	return sign + off.Round(round).String() + "±" + unc.Round(round).String()
}

func fmtCC(cc tasks.CongestionControl) string {
	if cc.Default == "" && len(cc.Available) == 0 {
		return "-"
	}
	return orDash(cc.Default) + "/" + orDash(strings.Join(cc.Available, ","))
}

type bootstrapOptions struct {
	hostSelection
	dryRun bool
}

func newClientHostsBootstrapCmd(gopts *clientOptions) *cobra.Command {
	var opts bootstrapOptions
	cmd := &cobra.Command{
		Use:   "bootstrap HOST...|--tag TAG [--dry-run]",
		Short: "Run the inventory's bootstrap steps on hosts (global admin)",
		Long: `Run the bootstrap steps the inventory gives the hosts, in order, stopping a
host at its first failed step; several hosts are done at once. Only a global
admin may: the steps run on the hosts as their SSH user.

A "run:" step goes to the host's shell as written, so it must be safe to
run again: 'command -v iperf3 || sudo apt-get install -y iperf3'. It shows
"ok" when it succeeds, as the coordinator cannot tell what it changed.
A "copy:" step writes the file atomically and shows "changed", or
"unchanged" when the coordinator wrote the same content there before and
the file's size, mode and time are still what it left (after a coordinator
restart the file is written again).

Each step may take up to 10 minutes, after which it fails "timed out after
10m0s". A run step's output is read for 2 seconds after its command exits,
so start daemons with their output redirected:
'nohup iperf3 -s >/dev/null 2>&1 &'.

--dry-run connects and looks but changes nothing: run steps show
"would-run", copy steps "would-copy" or "unchanged".

Each step prints a line: HOST [STEP/STEPS] KIND WHAT STATUS; the error and
the end of the output of a failed step follow, then a summary. The command
exits 1 when a host failed. Hosts given by name are done one after the
other, stopping at a host the coordinator refuses; --tag does eight at once.`,
		Example: `  mito client hosts bootstrap --tag new --dry-run
  mito client hosts bootstrap lab-node-4 lab-node-5
  mito client hosts bootstrap --tag new -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opts.check(args, true); err != nil {
				return err
			}
			return runClientHostsBootstrap(cmd.Context(), gopts, opts, args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.tag, "tag", "t", "", "the hosts with this `TAG`")
	f.BoolVarP(&opts.dryRun, "dry-run", "n", false, "show what would be done, change nothing")
	return cmd
}

func runClientHostsBootstrap(ctx context.Context, gopts *clientOptions, opts bootstrapOptions, args []string) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var rep tasks.BootstrapReport
	if opts.tag != "" {
		gopts.notef("bootstrapping the hosts with tag %s%s…", opts.tag, dryRunNote(opts.dryRun))
		r, err := s.BootstrapTag(ctx, opts.tag, opts.dryRun)
		if err != nil {
			return err
		}
		rep = *r
	} else {
		gopts.notef("bootstrapping %s%s…", strings.Join(args, ", "), dryRunNote(opts.dryRun))
		// One host after the other, so that a refusal (a mistyped name,
		// a missing admin flag) stops before the next host is touched.
		for _, name := range args {
			r, err := s.Bootstrap(ctx, name, opts.dryRun)
			if err != nil {
				return namedError("host", name, err)
			}
			rep.Hosts = append(rep.Hosts, r.Hosts...)
		}
		rep.Summary = tasks.Summarize(rep.Hosts)
	}
	var perr error
	if gopts.json() {
		perr = writeJSON(gopts.stdout, rep)
	} else {
		perr = printBootstrap(gopts.stdout, rep, opts.dryRun)
	}
	if perr != nil {
		return perr
	}
	if rep.Summary.Failed > 0 {
		var failed []string
		for _, h := range rep.Hosts {
			if !h.OK {
				failed = append(failed, h.Host)
			}
		}
		return fmt.Errorf("bootstrap failed on %d of %d hosts: %s", rep.Summary.Failed, rep.Summary.Hosts, strings.Join(failed, ", "))
	}
	return nil
}

func dryRunNote(dry bool) string {
	if dry {
		return " (dry run)"
	}
	return ""
}

// stepOutputLines is how much of a failed step's output the table shows;
// -o json has all that the coordinator kept.
const stepOutputLines = 10

func printBootstrap(w io.Writer, rep tasks.BootstrapReport, dry bool) error {
	tw := newTable(w)
	for _, h := range rep.Hosts {
		if h.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t%s\tfailed\n", h.Host, truncate(h.Error, 100))
		}
		if len(h.Steps) == 0 && h.Error == "" {
			fmt.Fprintf(tw, "%s\t-\t-\t(no bootstrap steps)\tok\n", h.Host)
		}
		for _, st := range h.Steps {
			fmt.Fprintf(tw, "%s\t[%d/%d]\t%s\t%s\t%s\n", h.Host, st.Index, len(h.Steps), st.Kind, truncate(st.What, 60), st.Status)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, h := range rep.Hosts {
		for _, st := range h.Steps {
			if st.Status != tasks.StepFailed {
				continue
			}
			fmt.Fprintf(w, "\n%s [%d/%d] %s: %s\n", h.Host, st.Index, len(h.Steps), st.Kind, st.Error)
			out := strings.Split(strings.TrimRight(st.Output, "\n"), "\n")
			if len(out) > stepOutputLines {
				fmt.Fprintf(w, "  … (%d more lines; -o json shows them)\n", len(out)-stepOutputLines)
				out = out[len(out)-stepOutputLines:]
			}
			for _, l := range out {
				if l != "" {
					fmt.Fprintf(w, "  | %s\n", l)
				}
			}
		}
	}
	sum := rep.Summary
	changed := "changed"
	if dry {
		changed = "would change"
	}
	hosts := "hosts"
	if sum.Hosts == 1 {
		hosts = "host"
	}
	_, err := fmt.Fprintf(w, "\n%d %s: %d ok, %d failed, %d %s\n", sum.Hosts, hosts, sum.OK, sum.Failed, sum.Changed, changed)
	return err
}
