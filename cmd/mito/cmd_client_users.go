package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/tasks"
)

func newClientUsersCmd(gopts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage accounts (global admins) and your password",
		Long: `Manage accounts. All but passwd need a global admin; passwd changes your
own password.

New passwords come from $MITO_NEW_PASSWORD, from the first line of standard
input with --password-stdin, or from a prompt that asks twice.`,
		Example: `  mito client users list
  mito client users create bob
  mito client users passwd`,
	}
	cmd.AddCommand(
		newClientUsersListCmd(gopts),
		newClientUsersCreateCmd(gopts),
		newClientUsersDisableCmd(gopts),
		newClientUsersEnableCmd(gopts),
		newClientUsersResetPasswordCmd(gopts),
		newClientUsersPasswdCmd(gopts),
	)
	return cmd
}

func newClientUsersListCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List all accounts",
		Example: `  mito client users list -o json`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientUsersList(cmd.Context(), gopts)
		},
	}
}

func runClientUsersList(ctx context.Context, gopts *clientOptions) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	users, err := s.ListUsers(ctx)
	if err != nil {
		return err
	}
	if users == nil {
		users = []tasks.User{}
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, users)
	case gopts.quiet:
		for _, u := range users {
			fmt.Fprintln(gopts.stdout, u.Name)
		}
		return nil
	}
	return printUsers(gopts.stdout, users)
}

func printUsers(w io.Writer, users []tasks.User) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tADMIN\tDISABLED\tCREATED")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%t\t%t\t%s\n", u.Name, u.Admin, u.Disabled, fmtTime(u.CreatedAt))
	}
	return tw.Flush()
}

// printUser reports one account after a change.
func printUser(gopts *clientOptions, u *tasks.User, verb string) error {
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, u)
	case !gopts.quiet:
		fmt.Fprintf(gopts.stdout, "%s user %s\n", verb, u.Name)
	}
	return nil
}

type userCreateOptions struct {
	admin         bool
	passwordStdin bool
}

func newClientUsersCreateCmd(gopts *clientOptions) *cobra.Command {
	var opts userCreateOptions
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an account and its personal group",
		Long: `Create an account. The coordinator also creates the user's personal group,
named after them, in which they are admin. --admin makes a global admin, who
manages users but gains no role in groups.`,
		Example: `  mito client users create bob
  pwgen -s 20 1 | mito client users create bob --password-stdin`,
		Args: exactArgs(1, "a user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientUsersCreate(cmd.Context(), gopts, opts, args)
		},
	}
	cmd.Flags().BoolVar(&opts.admin, "admin", false, "make a global administrator")
	cmd.Flags().BoolVar(&opts.passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
	return cmd
}

func runClientUsersCreate(ctx context.Context, gopts *clientOptions, opts userCreateOptions, args []string) error {
	if err := tasks.ValidName("name", args[0]); err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	if err := requireAdmin(ctx, s, "create users"); err != nil {
		return err
	}
	pw, err := gopts.password(opts.passwordStdin, "MITO_NEW_PASSWORD", "Password for "+args[0]+": ", true)
	if err != nil {
		return err
	}
	u, err := s.CreateUser(ctx, args[0], pw, opts.admin)
	if err != nil {
		return err
	}
	return printUser(gopts, u, "created")
}

func newClientUsersDisableCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "disable NAME...",
		Short: "Lock accounts out and revoke their tokens",
		Long: `Lock accounts out at once: they can no longer log in and their tokens
stop working. Their tasks and groups stay.`,
		Example: `  mito client users disable bob`,
		Args:    minArgs(1, "one or more user names"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientUsersSetDisabled(cmd.Context(), gopts, args, true)
		},
	}
}

func newClientUsersEnableCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "enable NAME...",
		Short:   "Let disabled accounts log in again",
		Example: `  mito client users enable bob`,
		Args:    minArgs(1, "one or more user names"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientUsersSetDisabled(cmd.Context(), gopts, args, false)
		},
	}
}

func runClientUsersSetDisabled(ctx context.Context, gopts *clientOptions, names []string, disable bool) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		var u *tasks.User
		verb := "enabled"
		if disable {
			u, err = s.DisableUser(ctx, name)
			verb = "disabled"
		} else {
			u, err = s.EnableUser(ctx, name)
		}
		if err == nil {
			err = printUser(gopts, u, verb)
		}
		if err != nil {
			errs = append(errs, namedError("user", name, err))
		}
	}
	return errors.Join(errs...)
}

func newClientUsersResetPasswordCmd(gopts *clientOptions) *cobra.Command {
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "reset-password NAME",
		Short: "Set another user's password",
		Long: `Set a user's password without knowing the old one, for a user who forgot
it, and revoke their tokens. Users change their own with 'users passwd'.`,
		Example: `  mito client users reset-password bob
  MITO_NEW_PASSWORD=... mito client users reset-password bob`,
		Args: exactArgs(1, "a user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientUsersResetPassword(cmd.Context(), gopts, fromStdin, args)
		},
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
	return cmd
}

func runClientUsersResetPassword(ctx context.Context, gopts *clientOptions, fromStdin bool, args []string) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	if err := requireAdmin(ctx, s, "reset passwords"); err != nil {
		return err
	}
	pw, err := gopts.password(fromStdin, "MITO_NEW_PASSWORD", "New password for "+args[0]+": ", true)
	if err != nil {
		return err
	}
	if err := s.ResetPassword(ctx, args[0], pw); err != nil {
		return err
	}
	if !gopts.quiet && !gopts.json() {
		fmt.Fprintf(gopts.stdout, "reset the password of %s; their tokens are revoked\n", args[0])
	}
	return nil
}

func newClientUsersPasswdCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "passwd",
		Short: "Change your own password",
		Long: `Change your own password. The coordinator revokes all your tokens, on
every machine; this one logs in again with the new password and stores the
new token.

The current password comes from $MITO_PASSWORD or a prompt, the new one from
$MITO_NEW_PASSWORD or a prompt that asks twice.`,
		Example: `  mito client users passwd`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientUsersPasswd(cmd.Context(), gopts)
		},
	}
}

func runClientUsersPasswd(ctx context.Context, gopts *clientOptions) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	user, err := s.userName(ctx)
	if err != nil {
		return err
	}
	old, err := gopts.password(false, "MITO_PASSWORD", "Current password for "+user+": ", false)
	if err != nil {
		return err
	}
	pw, err := gopts.password(false, "MITO_NEW_PASSWORD", "New password: ", true)
	if err != nil {
		return err
	}
	if err := s.ChangePassword(ctx, old, pw); err != nil {
		return err
	}
	cred, err := s.Login(ctx, user, pw, 0)
	if err != nil {
		return fmt.Errorf("password changed, but logging in again failed (run 'mito client login'): %w", err)
	}
	if err := saveLogin(s, cred.Token, cred.User.Name, cred.Expires); err != nil {
		return err
	}
	if !gopts.quiet && !gopts.json() {
		fmt.Fprintln(gopts.stdout, "password changed; your other logins have ended")
	}
	return nil
}

// requireAdmin checks that the session's user is a global admin before a
// command asks for a password only a global admin may set, so that no one
// types one in vain. The coordinator checks again.
func requireAdmin(ctx context.Context, s *session, what string) error {
	u, err := s.Whoami(ctx)
	if err != nil {
		return err
	}
	if !u.Admin {
		return &tasks.Error{Code: tasks.EForbidden, Message: fmt.Sprintf(
			"only a global admin may %s, and %s is not one", what, u.Name)}
	}
	return nil
}
