package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

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
  mito client hosts get lab-node-3 -o json`,
	}
	cmd.AddCommand(newClientHostsListCmd(gopts), newClientHostsGetCmd(gopts))
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
