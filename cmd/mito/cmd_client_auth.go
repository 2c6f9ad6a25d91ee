package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mitolab/mito/tasks"
)

type loginOptions struct {
	user          string
	expires       string
	passwordStdin bool
}

func newClientLoginCmd(gopts *clientOptions) *cobra.Command {
	var opts loginOptions
	cmd := &cobra.Command{
		Use:   "login -u USER",
		Short: "Log in and store a token for this coordinator",
		Long: `Log in to the coordinator and store the token it gives in credentials.json
(mode 0600), so that later commands need no password.

The password comes from $MITO_PASSWORD, from the first line of standard input
with --password-stdin, or from a prompt that does not echo it. Passwords are
never taken as arguments, which would leave them in shell histories and
process listings.`,
		Example: `  mito client login -u ann
  MITO_PASSWORD=... mito client login -u ann --expires 7d
  mito client --coordinator http://lab1:7800 login -u ann`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientLogin(cmd.Context(), gopts, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.user, "user", "u", "", "user `name` (default: the user last logged in to this coordinator)")
	cmd.Flags().StringVar(&opts.expires, "expires", "", "token lifetime such as 12h or 30d (default: the coordinator's)")
	cmd.Flags().BoolVar(&opts.passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
	return cmd
}

func runClientLogin(ctx context.Context, gopts *clientOptions, opts loginOptions) error {
	expires, err := tasks.ParseDuration(opts.expires)
	if err != nil || expires < 0 {
		return usagef("--expires %q: want a duration such as 12h or 30d", opts.expires)
	}
	s, err := gopts.connect(false)
	if err != nil {
		return err
	}
	user := opts.user
	if user == "" {
		creds, err := loadCredentials(s.dir)
		if err != nil {
			return err
		}
		if user = creds[s.key].User; user == "" {
			return usagef("give the user name with -u USER")
		}
	}
	password, err := gopts.password(opts.passwordStdin, "MITO_PASSWORD", "Password for "+user+": ", false)
	if err != nil {
		return err
	}
	cred, err := s.Login(ctx, user, password, expires)
	if err != nil {
		return err
	}
	if err := saveLogin(s, cred.Token, cred.User.Name, cred.Expires); err != nil {
		return err
	}
	if gopts.json() {
		return writeJSON(gopts.stdout, struct {
			Coordinator string     `json:"coordinator"`
			User        tasks.User `json:"user"`
			Expires     time.Time  `json:"expires,omitzero"`
		}{s.key, cred.User, cred.Expires})
	}
	if !gopts.quiet {
		fmt.Fprintf(gopts.stdout, "logged in to %s as %s", s.key, cred.User.Name)
		if !cred.Expires.IsZero() {
			fmt.Fprintf(gopts.stdout, " until %s", fmtTime(cred.Expires))
		}
		fmt.Fprintln(gopts.stdout)
	}
	return nil
}

// saveLogin stores a token for the session's coordinator.
func saveLogin(s *session, token, user string, expires time.Time) error {
	return updateCredentials(s.dir, func(c credentials) {
		c[s.key] = storedCredential{Token: token, User: user, Expires: expires}
	})
}

func newClientLogoutCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the stored token and forget it",
		Long: `Revoke the token stored for this coordinator, so that a copy of it is
worthless, and remove it from credentials.json. The local copy is removed
even when the coordinator cannot be reached or already refuses the token.`,
		Example: `  mito client logout`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientLogout(cmd.Context(), gopts)
		},
	}
}

func runClientLogout(ctx context.Context, gopts *clientOptions) error {
	s, err := gopts.connect(true)
	if tasks.ErrorCode(err) == tasks.EUnauthorized {
		gopts.notef("not logged in")
		return nil
	}
	if err != nil {
		return err
	}
	revokeErr := s.Logout(ctx)
	if tasks.ErrorCode(revokeErr) == tasks.EUnauthorized {
		revokeErr = nil // already dead: the goal is reached
	}
	if s.user != "" { // the token came from the file, not from MITO_TOKEN
		if err := updateCredentials(s.dir, func(c credentials) { delete(c, s.key) }); err != nil {
			return errors.Join(revokeErr, err)
		}
	}
	if revokeErr != nil {
		return fmt.Errorf("revoke token (the local copy is gone): %w", revokeErr)
	}
	if !gopts.quiet && !gopts.json() {
		fmt.Fprintf(gopts.stdout, "logged out of %s\n", s.key)
	}
	return nil
}

func newClientWhoamiCmd(gopts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the user the token belongs to",
		Long: `Show the user the current token authenticates, checking with the
coordinator that it still works.`,
		Example: `  mito client whoami
  mito client whoami -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientWhoami(cmd.Context(), gopts)
		},
	}
}

func runClientWhoami(ctx context.Context, gopts *clientOptions) error {
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	u, err := s.Whoami(ctx)
	if err != nil {
		return err
	}
	if gopts.json() {
		return writeJSON(gopts.stdout, u)
	}
	if gopts.quiet {
		fmt.Fprintln(gopts.stdout, u.Name)
		return nil
	}
	tw := newTable(gopts.stdout)
	fmt.Fprintf(tw, "user:\t%s\n", u.Name)
	fmt.Fprintf(tw, "coordinator:\t%s\n", s.key)
	fmt.Fprintf(tw, "admin:\t%t\n", u.Admin)
	if u.Disabled {
		fmt.Fprintf(tw, "disabled:\t%t\n", u.Disabled)
	}
	fmt.Fprintf(tw, "created:\t%s\n", fmtTime(u.CreatedAt))
	return tw.Flush()
}

// password gets a password without it ever being an argument: from the
// environment variable env, from the first line of stdin, or from a
// prompt on the terminal (twice when confirm, for a new password).
func (o *clientOptions) password(fromStdin bool, env, prompt string, confirm bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(o.stdin).ReadString('\n')
		if line = strings.TrimRight(line, "\r\n"); line == "" {
			if err != nil {
				return "", usagef("--password-stdin: read password: %v", err)
			}
			return "", usagef("--password-stdin: the first line is empty")
		}
		return line, nil
	}
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	in, ok := o.stdin.(*os.File)
	if !ok || !isTerminal(in) {
		return "", usagef("no password: set %s, or use --password-stdin or a terminal (a script run by 'mito client -i' has neither)", env)
	}
	read := func(prompt string) (string, error) {
		fmt.Fprint(o.stderr, prompt)
		b, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(o.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	p, err := read(prompt)
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", usagef("empty password")
	}
	if confirm {
		again, err := read("Again: ")
		if err != nil {
			return "", err
		}
		if again != p {
			return "", usagef("the passwords differ")
		}
	}
	return p, nil
}
