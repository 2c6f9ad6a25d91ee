package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
)

func init() { register(newClientCmd) }

// clientOptions are the flags every `mito client` command shares, and the
// streams the command writes to.
type clientOptions struct {
	coordinator string
	output      string
	quiet       bool

	stdin          io.Reader
	stdout, stderr io.Writer
}

func newClientCmd() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:   "client",
		Short: "Submit and follow tasks, and manage users and groups",
		Long: `The client commands talk to a mito coordinator over its HTTP API.

The coordinator is the first of: --coordinator, $MITO_COORDINATOR, the
"coordinator:" line of config.yaml, and ` + defaultCoordinator + `.

'mito client login' stores a token per coordinator in credentials.json
(mode 0600); $MITO_TOKEN overrides it. Both files live in $MITO_CONFIG_DIR,
else $XDG_CONFIG_HOME/mito, else ~/.config/mito.

Every command that reads takes -o json for scripts. Exit codes: 0 ok,
1 failure (or, for 'tasks wait', a task that did not succeed), 2 bad usage
or input, 3 not found, 4 not logged in or not allowed, 5 conflict,
6 coordinator unreachable, 7 'tasks wait --timeout' ran out,
130 interrupted.`,
		Example: `  mito client login -u ann
  mito client submit -t gpu python train.py --lr 0.1
  mito client tasks wait 42
  mito client tasks logs 42`,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			opts.stdin = cmd.InOrStdin()
			opts.stdout = cmd.OutOrStdout()
			opts.stderr = cmd.ErrOrStderr()
			switch opts.output {
			case "table", "json":
				return nil
			}
			return usagef("--output %q: want table or json", opts.output)
		},
	}
	f := cmd.PersistentFlags()
	f.StringVarP(&opts.coordinator, "coordinator", "c", "", "coordinator `URL` (default: $MITO_COORDINATOR, config.yaml, "+defaultCoordinator+")")
	f.StringVarP(&opts.output, "output", "o", "table", "output `format`: table or json")
	f.BoolVarP(&opts.quiet, "quiet", "q", false, "print only what scripts need: ids, no progress or notes")
	cmd.SetFlagErrorFunc(flagError)

	cmd.AddCommand(
		newClientLoginCmd(&opts),
		newClientLogoutCmd(&opts),
		newClientWhoamiCmd(&opts),
		newClientSubmitCmd(&opts),
		newClientTasksCmd(&opts),
		newClientUsersCmd(&opts),
		newClientGroupsCmd(&opts),
		newClientAttachmentsCmd(&opts),
		newClientHostsCmd(&opts),
	)
	addLoginHint(cmd)
	addInteractiveFlag(cmd, &opts) // -i: cmd_client_repl.go
	return cmd
}

// addLoginHint makes every command below cmd (but login itself) tell the
// user how to get a working token when the coordinator refuses theirs,
// which is what they need to know after a token expired or was revoked;
// but not when their account is disabled, which logging in cannot mend.
func addLoginHint(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		addLoginHint(c)
	}
	if cmd.RunE == nil || cmd.Name() == "login" {
		return
	}
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return withLoginHint(run(cmd, args))
	}
}

// withLoginHint adds the login hint to an authentication error that needs
// it.
func withLoginHint(err error) error {
	if tasks.ErrorCode(err) != tasks.EUnauthorized {
		return err
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "mito client login"), strings.Contains(msg, "disabled"):
		return err
	case strings.HasSuffix(msg, "log in again"):
		return fmt.Errorf("%w with 'mito client login -u USER'", err)
	}
	return fmt.Errorf("%w (log in with 'mito client login -u USER')", err)
}

// session is a client of the resolved coordinator, with what is known of
// the user whose token it sends.
type session struct {
	*client.Client
	key string // the coordinator's key in credentials.json
	dir string // the config directory
	// user is the stored credential's user, empty when the token came from
	// MITO_TOKEN.
	user string
}

// resolveCoordinator returns the coordinator URL in the order of the help
// text, checked, and the config directory it looked in.
func (o *clientOptions) resolveCoordinator() (url, dir string, err error) {
	if dir, err = configDir(); err != nil {
		return "", "", err
	}
	switch {
	case o.coordinator != "":
		return o.coordinator, dir, checkCoordinatorURL(o.coordinator, "")
	case os.Getenv("MITO_COORDINATOR") != "":
		url = os.Getenv("MITO_COORDINATOR")
		return url, dir, checkCoordinatorURL(url, "$MITO_COORDINATOR")
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return "", "", err
	}
	if cfg.Coordinator != "" {
		return cfg.Coordinator, dir, checkCoordinatorURL(cfg.Coordinator, filepath.Join(dir, configFile))
	}
	return defaultCoordinator, dir, nil
}

// checkCoordinatorURL refuses a coordinator URL that is not an http or
// https URL with a host, such as a bare host:port, before it is used as a
// key for credentials or dialled. from says where the URL came from when
// it was not a flag.
func checkCoordinatorURL(raw, from string) error {
	u, err := neturl.Parse(raw)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return nil
	}
	if from != "" {
		from = " (from " + from + ")"
	}
	return usagef("invalid coordinator URL %q%s: want http://host:port or https://host:port", raw, from)
}

// connect returns a session with the coordinator. With auth it also needs
// a token, and says how to get one when there is none or it has expired,
// without a round trip that would only tell the same less clearly.
func (o *clientOptions) connect(auth bool) (*session, error) {
	url, dir, err := o.resolveCoordinator()
	if err != nil {
		return nil, err
	}
	s := &session{key: coordinatorKey(url), dir: dir}
	token := os.Getenv("MITO_TOKEN")
	if token == "" && auth {
		creds, err := loadCredentials(dir)
		if err != nil {
			return nil, err
		}
		cred, ok := creds[s.key]
		switch {
		case !ok || cred.Token == "":
			return nil, &tasks.Error{Code: tasks.EUnauthorized, Message: fmt.Sprintf(
				"not logged in to %s: run 'mito client login -u USER' or set MITO_TOKEN", s.key)}
		case cred.expired(time.Now()):
			return nil, &tasks.Error{Code: tasks.EUnauthorized, Message: fmt.Sprintf(
				"login to %s as %s expired at %s: run 'mito client login'", s.key, cred.User, cred.Expires.Local().Format(time.DateTime))}
		}
		token, s.user = cred.Token, cred.User
	}
	var copts []client.Option
	if auth && token != "" {
		copts = append(copts, client.WithToken(token))
	}
	if s.Client, err = client.New(url, copts...); err != nil {
		return nil, usagef("%v", err)
	}
	return s, nil
}

// userName returns the name of the user the session acts as, asking the
// coordinator when the token came from the environment.
func (s *session) userName(ctx context.Context) (string, error) {
	if s.user == "" {
		u, err := s.Whoami(ctx)
		if err != nil {
			return "", err
		}
		s.user = u.Name
	}
	return s.user, nil
}

// Output helpers.

func (o *clientOptions) json() bool { return o.output == "json" }

// writeJSON prints v indented, the form every -o json output takes.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns the tabwriter all tables use; flush it when done.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0) }

// notef prints a note for people on stderr, unless -q.
func (o *clientOptions) notef(format string, args ...any) {
	if !o.quiet {
		fmt.Fprintf(o.stderr, format+"\n", args...)
	}
}

// isTerminal reports whether f is a terminal, for prompts and progress lines.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// fmtTime prints a time for tables, in local time; "-" for none.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

// orDash prints "-" for an empty table cell so columns stay aligned.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Argument helpers; they return usage errors, so bad calls exit 2.

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("want %s, got %d argument(s)", what, len(args))
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("want %s", what)
		}
		return nil
	}
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// parseIDs parses task ids as typed by people, allowing a leading '#'.
func parseIDs(args []string) ([]tasks.ID, error) {
	ids := make([]tasks.ID, 0, len(args))
	for _, a := range args {
		n, err := strconv.ParseInt(strings.TrimPrefix(a, "#"), 10, 64)
		if err != nil || n <= 0 {
			return nil, usagef("%q is not a task id", a)
		}
		ids = append(ids, tasks.ID(n))
	}
	return ids, nil
}

// taskError says which task err is about, unless its message (from the
// coordinator, say) already does: "task 5: task 5 is already cancelled"
// says it twice.
func taskError(id tasks.ID, err error) error {
	if mentionsTask(err.Error(), id) {
		return err
	}
	return fmt.Errorf("task %d: %w", id, err)
}

// namedError says which user, host or group (kind) err is about, unless
// its message already names it: "user bob: no user named "bob"" says it
// twice.
func namedError(kind, name string, err error) error {
	if msg := err.Error(); strings.Contains(msg, strconv.Quote(name)) || strings.Contains(msg, kind+" "+name) {
		return err
	}
	return fmt.Errorf("%s %s: %w", kind, name, err)
}

// mentionsTask reports whether msg names task id as "task ID" or "task #ID".
func mentionsTask(msg string, id tasks.ID) bool {
	n := strconv.FormatInt(int64(id), 10)
	for _, word := range []string{"task " + n, "task #" + n} {
		for rest := msg; ; {
			i := strings.Index(rest, word)
			if i < 0 {
				break
			}
			after := rest[i+len(word):]
			if after == "" || after[0] < '0' || after[0] > '9' {
				return true
			}
			rest = after
		}
	}
	return false
}

// flagValueError is the usage error for a bad value of flag, whose check
// returned err. A *tasks.Error's message starts with its field ("state:
// unknown state"), which the flag name replaces rather than repeats.
func flagValueError(flag string, err error) error {
	msg := err.Error()
	var te *tasks.Error
	if errors.As(err, &te) && te.Field != "" {
		msg = strings.TrimPrefix(msg, te.Field+": ")
	}
	return usagef("%s: %s", flag, msg)
}
