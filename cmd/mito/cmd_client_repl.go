package main

// `mito client -i`, the client's interactive mode: one `mito client`
// command per line, typed at a prompt with line editing and history, or
// read from a script on standard input. Each line runs in a fresh command
// tree, because cobra's flags keep their values from one run to the next.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

const (
	// historyFile is the REPL's history, in the cache directory: losing it
	// loses nothing that matters.
	historyFile = "client-history"
	// historyMax is how many lines the history keeps.
	historyMax = 1000
	// promptHostMax is the longest coordinator host the prompt shows; a
	// longer one would leave little room to type.
	promptHostMax = 24
	// scriptLineMax is the longest line a script may have.
	scriptLineMax = 1 << 20
)

// replHelp follows the client's help when `help` is typed in the REPL.
const replHelp = `
Interactive mode: each line is one 'mito client' command without that
prefix. Lines are split into words as a shell splits them, with 'single'
and "double" quotes and backslash escapes, but there are no variables,
globs, pipes or redirections. Empty lines and lines starting with # are
ignored. When the commands come from a script on standard input, the
commands themselves read no standard input.

  help [COMMAND]  this text, or the help of COMMAND
  exit, quit      leave (so does Ctrl-D on an empty line)
  Ctrl-C          clear the line, or interrupt the running command
  Up, Down        walk the history, kept %s
`

// replKey marks the context of a command run by the REPL, whose -i would
// start a REPL in the REPL.
type replKey struct{}

// addInteractiveFlag registers -i/--interactive on cmd, the root of the
// client commands whose options are opts. The flag is persistent so that
// `mito client -i tasks list` parses: it runs that command, then the REPL.
func addInteractiveFlag(cmd *cobra.Command, opts *clientOptions) {
	var interactive bool
	cmd.PersistentFlags().BoolVarP(&interactive, "interactive", "i", false,
		"then read more commands, one a line: at a prompt, or from standard input when it is not a terminal")
	pre := cmd.PersistentPreRunE
	cmd.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		if pre != nil {
			if err := pre(c, args); err != nil {
				return err
			}
		}
		if !interactive {
			return nil
		}
		if c.Context() != nil && c.Context().Value(replKey{}) != nil {
			return usagef("--interactive: already in interactive mode")
		}
		// The REPL follows the command that was found, whichever it is,
		// and this is the one hook every client command runs through.
		var first func() error
		if run := c.RunE; run != nil && c != cmd { // `mito client -i` alone: no help first
			first = func() error { return run(c, args) }
		}
		c.RunE = func(c *cobra.Command, args []string) error {
			return runClientREPL(c.Context(), cmd, opts, first)
		}
		return nil
	}
}

// runClientREPL runs first, if any, and then the REPL. On a terminal the
// exit status is 0 unless a signal ends the session; with a script it is
// that of the last failing command, first included.
func runClientREPL(ctx context.Context, clientCmd *cobra.Command, opts *clientOptions, first func() error) error {
	r, err := newREPL(clientCmd, opts)
	if err != nil {
		return err
	}
	if first != nil {
		err := first()
		if ctx.Err() != nil && !r.onTerminal() {
			return interrupted(ctx, err) // a script stops at an interrupt
		}
		r.outcome.record(err, "", "the command given with -i")
	}
	if r.onTerminal() {
		return r.terminal(ctx)
	}
	return r.script(ctx)
}

// repl runs the lines of one interactive session.
type repl struct {
	// coordinator is the URL resolved when the session started, given to
	// every command so that config.yaml and the environment are read once.
	coordinator string
	// flags are the other client flags given with -i, such as -o json,
	// which hold for the whole session.
	flags []string

	stdin          io.Reader
	stdout, stderr io.Writer
	outcome        outcome
}

// newREPL resolves the session's coordinator and collects the flags that
// hold for it.
func newREPL(clientCmd *cobra.Command, opts *clientOptions) (*repl, error) {
	url, _, err := opts.resolveCoordinator()
	if err != nil {
		return nil, err
	}
	r := &repl{coordinator: coordinatorKey(url), stdin: opts.stdin, stdout: opts.stdout, stderr: opts.stderr}
	r.outcome.stderr = opts.stderr
	clientCmd.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if f.Changed && f.Name != "interactive" && f.Name != "coordinator" {
			r.flags = append(r.flags, "--"+f.Name+"="+f.Value.String())
		}
	})
	return r, nil
}

// onTerminal reports whether the session has a person at a terminal, who
// gets a prompt, line editing and history.
func (r *repl) onTerminal() bool { return isTerminal(r.stdin) && isTerminal(r.stdout) }

// prompt shows the coordinator's host when it is short enough.
func (r *repl) prompt() string {
	if u, err := neturl.Parse(r.coordinator); err == nil && u.Host != "" && len(u.Host) <= promptHostMax {
		return "mito " + u.Host + "> "
	}
	return "mito> "
}

// do runs one line's words: a REPL command (help, exit) or a client
// command. quit says that the session should end.
func (r *repl) do(ctx context.Context, words []string, stdin io.Reader) (quit bool, err error) {
	switch words[0] {
	case "exit", "quit":
		if len(words) > 1 {
			return false, usagef("%s takes no arguments", words[0])
		}
		return true, nil
	case "mito":
		rest := words[1:]
		if len(rest) > 0 && rest[0] == "client" {
			rest = rest[1:]
		}
		return false, usagef("type commands without the 'mito client' prefix: %s", strings.Join(rest, " "))
	case "help":
		topic := words[1:]
		if len(topic) > 0 && topic[0] != "exit" && topic[0] != "quit" && topic[0] != "help" {
			if c, rest, err := newRootCmd().Find(append([]string{"client"}, topic...)); err != nil || len(rest) > 0 || c.Name() == "client" {
				return false, usagef("help: no command %q; 'help' lists them", strings.Join(topic, " "))
			}
			return false, r.run(ctx, append(topic[:len(topic):len(topic)], "--help"), stdin)
		}
		if len(topic) == 0 { // the commands first, then the REPL's own
			if err := r.run(ctx, []string{"--help"}, stdin); err != nil {
				return false, err
			}
		}
		where := "only at a prompt"
		if r.onTerminal() {
			where = "in memory only"
			if path, err := historyPath(); err == nil {
				where = "in " + path
			}
		}
		_, err := fmt.Fprintf(r.stdout, replHelp, where)
		return false, err
	}
	return false, r.run(ctx, words, stdin)
}

// run runs `mito client WORDS` in a fresh command tree. Tokens are read
// from MITO_TOKEN or credentials.json by each command, as in one-shot use,
// so a `login` in the session holds for the commands after it.
func (r *repl) run(ctx context.Context, words []string, stdin io.Reader) error {
	root := newRootCmd()
	args := append([]string{"client", "--coordinator=" + r.coordinator}, r.flags...)
	root.SetArgs(append(args, words...))
	root.SetIn(stdin)
	root.SetOut(r.stdout)
	root.SetErr(r.stderr)
	c, err := root.ExecuteContextC(context.WithValue(ctx, replKey{}, true))
	if err == nil && c.Name() == "login" && c.HasParent() && c.Parent().Name() == "client" {
		r.loggedIn(c)
	}
	return err
}

// loggedIn makes a successful login to the session's coordinator hold for
// the rest of the session even when MITO_TOKEN is set, which would
// otherwise win over the token just stored: the person at the prompt
// asked for that login.
func (r *repl) loggedIn(c *cobra.Command) {
	f := c.Flags().Lookup("coordinator")
	if f == nil || coordinatorKey(f.Value.String()) != r.coordinator || os.Getenv("MITO_TOKEN") == "" {
		return
	}
	if err := os.Unsetenv("MITO_TOKEN"); err == nil {
		fmt.Fprintln(r.stderr, "mito: from now on this session uses the new login, not $MITO_TOKEN")
	}
}

// script runs the lines of standard input, without prompt or editing,
// until its end, exit or quit. A failing command does not stop it, an
// interrupt does.
func (r *repl) script(ctx context.Context) error {
	sc := bufio.NewScanner(r.stdin)
	sc.Buffer(nil, scriptLineMax)
	noInput := strings.NewReader("")
	for n := 1; sc.Scan(); n++ {
		where := fmt.Sprintf("line %d", n)
		words, err := parseLine(strings.TrimSuffix(sc.Text(), "\r"))
		if err != nil {
			r.outcome.record(err, where, where)
			continue
		}
		if len(words) == 0 {
			continue
		}
		quit, err := r.do(ctx, words, noInput)
		if ctx.Err() != nil {
			return interrupted(ctx, err) // printed once, by main
		}
		r.outcome.record(err, where, where)
		if quit {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read commands: %w", err)
	}
	return r.outcome.err()
}

// interrupted is the error that ends a script when ctx was cancelled
// while a command ran: the command's own error, if it has one.
func interrupted(ctx context.Context, err error) error {
	if err == nil {
		return ctx.Err()
	}
	return err
}

// outcome counts a session's commands and keeps its last failure, which
// gives the session's exit status.
type outcome struct {
	stderr      io.Writer
	run, failed int
	last        error
	where       string
}

// record counts a command's result and prints its error as the one-shot
// CLI does, after prefix ("line 4") when there is one. where says which
// command it was, for the summary.
func (o *outcome) record(err error, prefix, where string) {
	o.run++
	if err == nil {
		return
	}
	if strings.HasPrefix(err.Error(), "unknown command ") {
		err = usageError{err.Error()} // keeps its exit code once wrapped
	}
	o.failed++
	o.last, o.where = err, where
	if prefix != "" {
		err = fmt.Errorf("%s: %w", prefix, err)
	}
	exitCode(err, o.stderr)
}

// err is nil when every command succeeded; else it has the exit code of
// the last failure, whose message has been printed already.
func (o *outcome) err() error {
	if o.last == nil {
		return nil
	}
	return &sessionError{run: o.run, failed: o.failed, where: o.where, err: o.last}
}

// sessionError ends a script some of whose commands failed, with the exit
// code of the last of them.
type sessionError struct {
	run, failed int
	where       string
	err         error
}

func (e *sessionError) Error() string {
	return fmt.Sprintf("%d of %d commands failed, the last at %s", e.failed, e.run, e.where)
}

func (e *sessionError) Unwrap() error { return e.err }

// parseLine returns the words of a line; none for a blank line or a
// comment.
func parseLine(line string) ([]string, error) {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return nil, nil
	}
	return splitWords(line)
}

// splitWords splits a line into words as a POSIX shell does, quotes and
// backslashes included, so that commands copied from a shell work; it
// expands nothing, since nothing would expand in a REPL that has no
// variables or files of its own.
func splitWords(line string) ([]string, error) {
	var (
		words  []string
		word   strings.Builder
		inWord bool // also true for a word that is an empty quoted string
	)
	column := func(i int) int { return utf8.RuneCountInString(line[:i]) + 1 }
	for i := 0; i < len(line); i++ {
		switch c := line[i]; c {
		case ' ', '\t', '\n', '\r':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		case '\\':
			inWord = true
			if i+1 == len(line) {
				return nil, usagef("backslash at the end of the line escapes nothing")
			}
			i++
			word.WriteByte(line[i])
		case '\'':
			inWord = true
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, usagef("unterminated ' quote starting at column %d", column(i))
			}
			word.WriteString(line[i+1 : i+1+end])
			i += end + 1
		case '"':
			inWord = true
			start := i
			for i++; ; i++ {
				if i == len(line) {
					return nil, usagef(`unterminated " quote starting at column %d`, column(start))
				}
				c := line[i]
				if c == '"' {
					break
				}
				// Between double quotes a backslash escapes only what
				// would be special there.
				if c == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
					i++
					c = line[i]
				}
				word.WriteByte(c)
			}
		default:
			inWord = true
			word.WriteByte(c)
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words, nil
}

// terminal is the REPL on a terminal. The terminal is in raw mode only
// while a line is read, so commands write to it as they always do:
// progress lines, password prompts and "\n" all work. The session ignores
// the cancellation of ctx by the first Ctrl-C (main's doing): here Ctrl-C
// only interrupts the running command.
func (r *repl) terminal(ctx context.Context) error {
	in, out := r.stdin.(*os.File), r.stdout.(*os.File)
	ctx = context.WithoutCancel(ctx)
	tty := &ttySession{fd: int(in.Fd()), outFd: int(out.Fd()), keys: &ctrlCReader{r: in}}
	tty.t = term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{tty.keys, out}, r.prompt())

	hist := &history{max: historyMax}
	path, err := historyPath()
	if err == nil {
		hist, err = loadHistory(path, historyMax)
	}
	if err != nil {
		fmt.Fprintf(r.stderr, "mito: history not kept: %v\n", err)
		hist = &history{max: historyMax}
	}
	tty.t.History = termHistory{hist}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { tty.handleSignals(sigs, done) })
	defer func() {
		signal.Stop(sigs)
		close(done)
		wg.Wait()
	}()

	historyWarned := false
	for {
		line, cancelled, err := tty.readLine()
		switch {
		case errors.Is(err, io.EOF):
			fmt.Fprintln(out) // the shell's prompt goes on a line of its own
			return nil
		case err != nil:
			return fmt.Errorf("read command: %w", err)
		case cancelled:
			continue
		}
		if err := hist.add(line); err != nil && !historyWarned {
			fmt.Fprintf(r.stderr, "mito: history not kept: %v\n", err)
			historyWarned = true
		}
		words, err := parseLine(line)
		if err != nil {
			exitCode(err, r.stderr)
			continue
		}
		if len(words) == 0 {
			continue
		}
		cmdCtx, cancel := context.WithCancel(ctx)
		tty.running(cancel)
		quit, err := r.do(cmdCtx, words, in)
		stopped := tty.running(nil)
		cancel()
		if stopped {
			return interrupted(cmdCtx, err) // printed once, by main
		}
		exitCode(err, r.stderr)
		if quit {
			return nil
		}
	}
}

// ttySession is the state of a terminal REPL that its signal handler
// shares.
type ttySession struct {
	fd, outFd int
	t         *term.Terminal
	keys      *ctrlCReader

	// mu guards the fields below.
	mu sync.Mutex
	// raw is the state to restore while a line is read in raw mode.
	raw *term.State
	// cancel interrupts the running command, if any.
	cancel context.CancelFunc
	// stopped is set by a SIGTERM or SIGHUP during a command, after which
	// the session ends.
	stopped bool
}

// readLine reads a line in raw mode, which it always restores, and says
// whether Ctrl-C cancelled the line.
func (s *ttySession) readLine() (line string, cancelled bool, err error) {
	// A terminal that does not know its size (a bare pty) says 0x0;
	// term.Terminal then keeps its 80x24.
	if w, h, err := term.GetSize(s.outFd); err == nil && w > 0 && h > 0 {
		_ = s.t.SetSize(w, h)
	}
	s.mu.Lock()
	state, err := term.MakeRaw(s.fd)
	if err != nil {
		s.mu.Unlock()
		return "", false, err
	}
	s.raw = state
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		_ = term.Restore(s.fd, state)
		s.raw = nil
		s.mu.Unlock()
	}()
	s.keys.ctrlC = false
	line, err = s.t.ReadLine()
	if errors.Is(err, term.ErrPasteIndicator) {
		err = nil
	}
	return line, s.keys.ctrlC, err
}

// running records the cancel function of the command that starts, or nil
// when it ended, and reports whether a signal asked the session to stop.
func (s *ttySession) running(cancel context.CancelFunc) (stopped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel = cancel
	return s.stopped
}

// handleSignals interrupts the running command on SIGINT (a Ctrl-C while
// a command runs, as the terminal is not in raw mode then). SIGTERM and
// SIGHUP also end the session: after the command, or at once, restoring
// the terminal first, when a line is being read: that read cannot be
// interrupted otherwise.
func (s *ttySession) handleSignals(sigs <-chan os.Signal, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case sig := <-sigs:
			s.mu.Lock()
			switch {
			case s.cancel != nil:
				s.cancel()
				s.stopped = s.stopped || sig != os.Interrupt
			case sig != os.Interrupt:
				if s.raw != nil {
					_ = term.Restore(s.fd, s.raw)
				}
				os.Exit(exitInterrupted) // with mu held, so raw mode stays off
			}
			s.mu.Unlock()
		}
	}
}

// keyCtrlC is what the terminal sends for Ctrl-C in raw mode.
const keyCtrlC = 3

// ctrlCReader turns Ctrl-C into Enter, noting it, so that the terminal
// ends the line and the REPL drops it: term.Terminal would take Ctrl-C
// for the end of input instead, as it does Ctrl-D. It returns the Ctrl-C
// on its own, so that every byte before it has been read by the time it
// ends a line, and the line it ends is the one being typed.
type ctrlCReader struct {
	r       io.Reader
	buf     [256]byte
	pending []byte
	err     error
	// ctrlC is set when a Ctrl-C was read; the REPL clears it before each
	// line.
	ctrlC bool
}

func (c *ctrlCReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(c.pending) == 0 {
		if c.err != nil {
			err := c.err
			c.err = nil
			return 0, err
		}
		n, err := c.r.Read(c.buf[:])
		c.pending, c.err = c.buf[:n], err
		if n == 0 {
			c.err = nil
			return 0, err
		}
	}
	if c.pending[0] == keyCtrlC {
		c.pending = c.pending[1:]
		c.ctrlC = true
		p[0] = '\r'
		return 1, nil
	}
	n := len(c.pending)
	if i := bytes.IndexByte(c.pending, keyCtrlC); i >= 0 {
		n = i
	}
	n = copy(p, c.pending[:n])
	c.pending = c.pending[n:]
	return n, nil
}

// historyPath is $XDG_CACHE_HOME/mito/client-history, else
// ~/.cache/mito/client-history.
func historyPath() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "mito", historyFile), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find cache directory: %w (set XDG_CACHE_HOME)", err)
	}
	return filepath.Join(home, ".cache", "mito", historyFile), nil
}

// history is the REPL's past lines, oldest first, at most max of them.
// Each line is saved at once, so that a session that is killed keeps its
// history, and merged into the file as it is then, so that two sessions
// at once do not drop each other's lines. The file is private (0600):
// lines may name hosts and users.
type history struct {
	path  string // "" keeps the history in memory only
	max   int
	lines []string
}

// loadHistory reads the history at path; a missing file is an empty
// history.
func loadHistory(path string, max int) (*history, error) {
	h := &history{path: path, max: max}
	lines, err := readHistory(path, max)
	if err != nil {
		return nil, err
	}
	h.lines = lines
	return h, nil
}

// readHistory returns the last max non-empty lines of the file at path.
func readHistory(path string, max int) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return capLines(lines, max), nil
}

// capLines returns the last max of lines, in a slice of their own.
func capLines(lines []string, max int) []string {
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	return append([]string(nil), lines...)
}

// add appends a line, unless it is blank or repeats the last one, and
// saves it.
func (h *history) add(line string) error {
	if strings.TrimSpace(line) == "" || strings.ContainsAny(line, "\r\n") ||
		(len(h.lines) > 0 && h.lines[len(h.lines)-1] == line) {
		return nil
	}
	h.lines = append(h.lines, line)
	if len(h.lines) > h.max {
		h.lines = capLines(h.lines, h.max)
	}
	if h.path == "" {
		return nil
	}
	saved, err := readHistory(h.path, h.max)
	if err != nil {
		return err
	}
	if len(saved) == 0 || saved[len(saved)-1] != line {
		saved = append(saved, line)
	}
	return writeHistory(h.path, capLines(saved, h.max))
}

// Len and At give term.Terminal the lines for Up and Down, newest first.
func (h *history) Len() int        { return len(h.lines) }
func (h *history) At(i int) string { return h.lines[len(h.lines)-1-i] }

// writeHistory replaces the file at path atomically, created 0600 in a
// directory created 0700, like credentials.json.
func writeHistory(path string, lines []string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	f, err := os.CreateTemp(dir, ".client-history-*.tmp") // CreateTemp makes it 0600
	if err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("save history: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	return nil
}

// termHistory lends the history to term.Terminal for Up and Down, but
// not for adding: the REPL adds a line itself once it knows that Ctrl-C
// did not cancel it.
type termHistory struct{ h *history }

func (t termHistory) Add(string)      {}
func (t termHistory) Len() int        { return t.h.Len() }
func (t termHistory) At(i int) string { return t.h.At(i) }
