package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/mitolab/mito/tasks"
)

func newClientGroupsCmd(gopts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "groups",
		Short: "Create groups and manage their members",
		Long: `Groups own tasks. A member's role decides what they may do in a group:
read (see tasks, logs, artifacts and hosts), write (also submit, cancel and
retry) or admin (also manage members). Every user has a personal group of
their own name.

A group's attachments and its tasks' artifacts take storage on the
coordinator; a global admin may bound it with a quota.`,
		Example: `  mito client groups list
  mito client groups create netlab
  mito client groups add-member netlab bob:write carol:read`,
	}
	cmd.AddCommand(
		newClientGroupsListCmd(gopts),
		newClientGroupsCreateCmd(gopts),
		newClientGroupsGetCmd(gopts),
		newClientGroupsAddMemberCmd(gopts),
		newClientGroupsRemoveMemberCmd(gopts),
		newClientGroupsQuotaCmd(gopts),
	)
	return cmd
}

func newClientGroupsListCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List your groups, your role and the storage used in each",
		Example: `  mito client groups list`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientGroupsList(cmd.Context(), gopts)
		},
	}
}

func runClientGroupsList(ctx context.Context, gopts *clientOptions) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	groups, err := s.ListGroups(ctx)
	if err != nil {
		return err
	}
	if groups == nil {
		groups = []tasks.Group{}
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, groups)
	case gopts.quiet:
		for _, g := range groups {
			fmt.Fprintln(gopts.stdout, g.Name)
		}
		return nil
	}
	tw := newTable(gopts.stdout)
	fmt.Fprintln(tw, "NAME\tROLE\tSTORAGE\tCREATED")
	for _, g := range groups {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, g.Role, fmtStorage(g), fmtTime(g.CreatedAt))
	}
	return tw.Flush()
}

func newClientGroupsCreateCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME",
		Short: "Create a group with you as its admin",
		Example: `  mito client groups create netlab
  mito client groups add-member netlab bob:write`,
		Args: exactArgs(1, "a group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientGroupsCreate(cmd.Context(), gopts, args)
		},
	}
}

func runClientGroupsCreate(ctx context.Context, gopts *clientOptions, args []string) error {
	if err := tasks.ValidName("name", args[0]); err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	g, err := s.CreateGroup(ctx, args[0])
	if err != nil {
		return err
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, g)
	case !gopts.quiet:
		fmt.Fprintf(gopts.stdout, "created group %s\n", g.Name)
	}
	return nil
}

func newClientGroupsGetCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "get NAME",
		Aliases: []string{"show"},
		Short:   "Show a group, its storage and its members",
		Example: `  mito client groups get netlab -o json`,
		Args:    exactArgs(1, "a group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientGroupsGet(cmd.Context(), gopts, args)
		},
	}
}

func runClientGroupsGet(ctx context.Context, gopts *clientOptions, args []string) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	g, err := s.GetGroup(ctx, args[0])
	if err != nil {
		return err
	}
	return printGroup(gopts, g)
}

// printGroup shows a group with its members: -o json the Group, else a
// header and a member table.
func printGroup(gopts *clientOptions, g *tasks.Group) error {
	if gopts.json() {
		return writeJSON(gopts.stdout, g)
	}
	if gopts.quiet {
		return nil
	}
	return printGroupTable(gopts.stdout, g)
}

func printGroupTable(w io.Writer, g *tasks.Group) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "group:\t%s\n", g.Name)
	fmt.Fprintf(tw, "created:\t%s\n", fmtTime(g.CreatedAt))
	fmt.Fprintf(tw, "storage:\t%s\n\n", fmtStorage(*g))
	fmt.Fprintln(tw, "MEMBER\tROLE")
	for _, m := range g.Members {
		fmt.Fprintf(tw, "%s\t%s\n", m.User, m.Role)
	}
	return tw.Flush()
}

func newClientGroupsAddMemberCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "add-member GROUP USER:ROLE...",
		Short: "Add members to a group or change their roles",
		Long: `Add users to a group, or change the role of members, with ROLE one of
read, write or admin. You must be admin of the group. Running it again with
the same arguments changes nothing.`,
		Example: `  mito client groups add-member netlab bob:write carol:read
  mito client groups add-member netlab bob:admin`,
		Args: minArgs(2, "a group and one or more USER:ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientGroupsAddMember(cmd.Context(), gopts, args)
		},
	}
}

// memberRole is one USER:ROLE argument.
type memberRole struct {
	user string
	role tasks.Role
}

// parseMemberRoles parses USER:ROLE arguments, all before anything is
// changed, so that a typo in the last one does not leave half a change.
func parseMemberRoles(args []string) ([]memberRole, error) {
	out := make([]memberRole, 0, len(args))
	for _, a := range args {
		user, role, ok := strings.Cut(a, ":")
		if !ok {
			return nil, usagef("%q: want USER:ROLE, with ROLE read, write or admin", a)
		}
		if err := tasks.ValidName("user", user); err != nil {
			return nil, usagef("%q: %v", a, err)
		}
		r, err := tasks.ParseRole(role)
		if err != nil {
			return nil, usagef("%q: %v", a, err)
		}
		out = append(out, memberRole{user, r})
	}
	return out, nil
}

func runClientGroupsAddMember(ctx context.Context, gopts *clientOptions, args []string) error {
	members, err := parseMemberRoles(args[1:])
	if err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var (
		g    *tasks.Group
		errs []error
	)
	for _, m := range members {
		ng, err := s.SetMember(ctx, args[0], m.user, m.role)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%s: %w", m.user, m.role, err))
			continue
		}
		g = ng
	}
	if g != nil {
		if err := printGroup(gopts, g); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func newClientGroupsRemoveMemberCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "remove-member GROUP USER...",
		Short: "Remove members from a group",
		Long: `Remove users from a group. You must be admin of the group. Their tasks in
the group stay with the group.`,
		Example: `  mito client groups remove-member netlab bob`,
		Args:    minArgs(2, "a group and one or more users"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientGroupsRemoveMember(cmd.Context(), gopts, args)
		},
	}
}

func runClientGroupsRemoveMember(ctx context.Context, gopts *clientOptions, args []string) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var errs []error
	for _, user := range args[1:] {
		if err := s.RemoveMember(ctx, args[0], user); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", user, err))
			continue
		}
		if !gopts.quiet && !gopts.json() {
			fmt.Fprintf(gopts.stdout, "removed %s from %s\n", user, args[0])
		}
	}
	return errors.Join(errs...)
}

// fmtStorage prints a group's usage against its quota: "1.2 GiB of 10 GiB",
// or "1.2 GiB (no quota)".
func fmtStorage(g tasks.Group) string {
	used := humanize.IBytes(uint64(max(g.UsedBytes, 0)))
	if g.QuotaBytes <= 0 {
		return used + " (no quota)"
	}
	return used + " of " + humanize.IBytes(uint64(g.QuotaBytes))
}

func newClientGroupsQuotaCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "quota GROUP SIZE",
		Short: "Set a group's storage quota (global admins)",
		Long: `Bound the storage a group's attachments and its tasks' artifacts may take
together. SIZE is a number of bytes with an optional unit: 10GiB, 1.5TiB and
500MiB count in powers of 1024; 10GB and 500MB in powers of 1000. 0 or
"none" removes the limit.

Only global administrators may set a quota, so that a group's own admins
cannot lift it. A quota under the current usage is allowed: nothing is
deleted, but every later upload to the group is refused until it is back
under the quota.`,
		Example: `  mito client groups quota netlab 10GiB
  mito client groups quota netlab 500MB
  mito client groups quota netlab none`,
		Args: exactArgs(2, "a group and a size"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientGroupsQuota(cmd.Context(), gopts, args)
		},
	}
}

// parseQuota parses SIZE of groups quota.
func parseQuota(s string) (int64, error) {
	if strings.EqualFold(s, "none") {
		return 0, nil
	}
	n, err := humanize.ParseBytes(s)
	if _, ferr := strconv.ParseFloat(s, 64); ferr == nil {
		// A bare number is bytes and must be whole: "1.5" is surely not
		// the 1-byte quota ParseBytes would make of it.
		var u uint64
		u, err = strconv.ParseUint(s, 10, 64)
		n = u
	}
	if err != nil || n > math.MaxInt64 {
		return 0, usagef("SIZE %q: want a size such as 10GiB or 500MB, a whole number of bytes, or 0 or none for no limit", s)
	}
	return int64(n), nil
}

func runClientGroupsQuota(ctx context.Context, gopts *clientOptions, args []string) error {
	group := args[0]
	if err := tasks.ValidName("group", group); err != nil {
		return usagef("%v", err)
	}
	bytes, err := parseQuota(args[1])
	if err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	g, err := s.SetGroupQuota(ctx, group, bytes)
	if err != nil {
		return namedError("group", group, err)
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, g)
	case !gopts.quiet:
		fmt.Fprintf(gopts.stdout, "group %s: %s\n", g.Name, fmtStorage(*g))
	}
	if g.QuotaBytes > 0 && g.UsedBytes > g.QuotaBytes {
		gopts.notef("group %s is over its new quota: every upload to it is refused until attachments or artifacts are deleted", g.Name)
	}
	return nil
}
