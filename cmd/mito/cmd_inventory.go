package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/inventory"
)

func init() { register(newInventoryCmd) }

// errInventoryInvalid ends a command whose inventory problems are already
// printed, one per line. It wraps errTasksFailed so that exitCode prints
// nothing more and exits 1, as a linter does.
var errInventoryInvalid = fmt.Errorf("inventory has errors: %w", errTasksFailed)

type inventoryOptions struct {
	output string
	tag    string
}

func newInventoryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "Check an inventory file and list its hosts, offline",
		Long: `Work with a YAML inventory of hosts without a coordinator.

The file format is described in the documentation of package inventory and
shown by the files in examples/inventories.`,
	}
	cmd.AddCommand(newInventoryCheckCmd(), newInventoryHostsCmd())
	return cmd
}

func newInventoryCheckCmd() *cobra.Command {
	var opts inventoryOptions
	cmd := &cobra.Command{
		Use:   "check FILE...",
		Short: "Validate inventory files",
		Long: `Validate inventory files offline. Every problem is printed on its own
line as FILE:LINE: FIELD: MESSAGE; the exit status is 1 when any file has
one. With -o json, prints for each file its resolved hosts or its errors.`,
		Example: `  mito inventory check examples/inventories/*.yaml`,
		Args:    minArgs(1, "one or more inventory files"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInventoryCheck(cmd.OutOrStdout(), cmd.ErrOrStderr(), opts, args)
		},
	}
	cmd.Flags().StringVarP(&opts.output, "output", "o", "text", "output `format`: text or json")
	return cmd
}

func newInventoryHostsCmd() *cobra.Command {
	var opts inventoryOptions
	cmd := &cobra.Command{
		Use:   "hosts FILE",
		Short: "List an inventory's hosts with their inherited settings applied",
		Example: `  mito inventory hosts lab.yaml
  mito inventory hosts lab.yaml --tag 10g -o json`,
		Args: exactArgs(1, "one inventory file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInventoryHosts(cmd.OutOrStdout(), cmd.ErrOrStderr(), opts, args[0])
		},
	}
	cmd.Flags().StringVarP(&opts.output, "output", "o", "table", "output `format`: table or json")
	cmd.Flags().StringVar(&opts.tag, "tag", "", "list only hosts with `TAG`")
	return cmd
}

// inventoryReport is one file's result in `check -o json`.
type inventoryReport struct {
	File   string                  `json:"file"`
	OK     bool                    `json:"ok"`
	Hosts  []inventory.Host        `json:"hosts,omitempty"`
	Errors []*inventory.FieldError `json:"errors,omitempty"`
}

func runInventoryCheck(stdout, stderr io.Writer, opts inventoryOptions, files []string) error {
	if opts.output != "text" && opts.output != "json" {
		return usagef("--output %q: want text or json", opts.output)
	}
	reports := make([]inventoryReport, 0, len(files))
	failed := false
	for _, file := range files {
		r := inventoryReport{File: file}
		inv, err := inventory.Load(file)
		if err == nil {
			r.OK, r.Hosts = true, inv.Hosts
		} else {
			failed = true
			r.Errors = inventoryProblems(file, err)
		}
		reports = append(reports, r)
		if opts.output == "text" {
			if r.OK {
				fmt.Fprintf(stdout, "%s: ok (%s)\n", file, plural(len(r.Hosts), "host"))
			} else {
				printInventoryProblems(stderr, r.Errors)
			}
		}
	}
	if opts.output == "json" {
		if err := writeJSON(stdout, reports); err != nil {
			return err
		}
	}
	if failed {
		return errInventoryInvalid
	}
	return nil
}

func runInventoryHosts(stdout, stderr io.Writer, opts inventoryOptions, file string) error {
	if opts.output != "table" && opts.output != "json" {
		return usagef("--output %q: want table or json", opts.output)
	}
	inv, err := inventory.Load(file)
	if err != nil {
		var list *inventory.Errors
		if errors.As(err, &list) {
			printInventoryProblems(stderr, list.List)
			return errInventoryInvalid
		}
		return err
	}
	hosts := inv.Select(opts.tag)
	if opts.output == "json" {
		if hosts == nil {
			hosts = []inventory.Host{}
		}
		return writeJSON(stdout, hosts)
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "NAME\tTRANSPORT\tADDRESS\tJUMP\tHOST_GROUP\tSLOTS\tGROUPS\tTAGS")
	for _, h := range hosts {
		addr := ""
		if h.Transport == inventory.TransportSSH {
			addr = h.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", h.Name, h.Transport, orDash(addr), orDash(h.Jump),
			orDash(h.HostGroup), h.Slots, strings.Join(h.Groups, ","), orDash(strings.Join(h.Tags, ",")))
	}
	return tw.Flush()
}

// inventoryProblems turns a Load error into the list to print: the
// located problems of an invalid file, or the one error that kept it from
// being read.
func inventoryProblems(file string, err error) []*inventory.FieldError {
	var list *inventory.Errors
	if errors.As(err, &list) {
		return list.List
	}
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error() // the line starts with the file name already
	}
	return []*inventory.FieldError{{File: file, Msg: msg}}
}

func printInventoryProblems(w io.Writer, problems []*inventory.FieldError) {
	for _, p := range problems {
		fmt.Fprintln(w, p.Error())
	}
}

// plural formats "1 host", "2 hosts".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
