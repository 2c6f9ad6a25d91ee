package main

import (
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// subcommands registers the top-level commands; each cmd_*.go file adds its
// own in an init function, so commands live one to a file.
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "mito",
		Short: "Run tasks on lab testbed machines over SSH",
		Long: `mito runs shell tasks on lab testbed machines reachable over SSH.

A coordinator keeps the queue and an inventory of tagged hosts; it starts a
small worker shim on each host, which claims the tasks of its groups, runs
them and ships their output back. Users submit and follow work with
'mito client'.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	return root
}
