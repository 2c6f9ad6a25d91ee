package main

import (
	"fmt"
	"strings"

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
	root.SetFlagErrorFunc(flagError)
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	requireSubcommands(root)
	return root
}

// flagError makes a flag that cobra could not parse a usage error (exit 2)
// that says where to look for the right ones.
func flagError(cmd *cobra.Command, err error) error {
	return usagef("%v (see '%s --help')", err, cmd.CommandPath())
}

// requireSubcommands makes every command under cmd (and cmd itself) that
// only groups subcommands refuse an argument that names none of them.
// Cobra would print the group's help and exit 0, which hides a typo from
// a script and from its author. Without arguments the help is still
// printed.
func requireSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		requireSubcommands(c)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		return unknownCommand(c, args[0])
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	if !cmd.HasParent() {
		// The RunE above makes groups runnable, which would add a
		// "mito client [flags]" line to their usage; they are still only
		// groups to people.
		cmd.SetUsageTemplate(strings.Replace(cmd.UsageTemplate(),
			"Usage:{{if .Runnable}}", "Usage:{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	}
}

// unknownCommand is the usage error for an argument that names no
// subcommand of cmd; it suggests the nearest names, if any.
func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %s?", strings.Join(quoteAll(s), " or "))
	}
	return usagef("%s (see '%s --help')", msg, cmd.CommandPath())
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
