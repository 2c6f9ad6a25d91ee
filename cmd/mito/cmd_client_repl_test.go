package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/term"

	"github.com/mitolab/mito/tasks"
)

func TestSplitWords(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		want []string
		err  string // a part of the error; "" for none
	}{
		{"", nil, ""},
		{"   \t ", nil, ""},
		{"tasks list", []string{"tasks", "list"}, ""},
		{"  tasks \t list  ", []string{"tasks", "list"}, ""},
		{`submit -- sh -c 'echo $HOME; ls *.txt'`, []string{"submit", "--", "sh", "-c", "echo $HOME; ls *.txt"}, ""},
		{`submit -e "A=two words" x`, []string{"submit", "-e", "A=two words", "x"}, ""},
		{`a"b c"'d e'f`, []string{"ab cd ef"}, ""},
		{`-l '' -l ""`, []string{"-l", "", "-l", ""}, ""},
		{`a\ b c\\d \'e`, []string{"a b", `c\d`, "'e"}, ""},
		// Between double quotes only \ " $ and ` are escaped; other
		// backslashes stay, as in sh.
		{`"a\"b" "c\\d" "\$x" "\n"`, []string{`a"b`, `c\d`, "$x", `\n`}, ""},
		{`'it''s' 'a\b'`, []string{"its", `a\b`}, ""},
		{"héllo 'wörld'", []string{"héllo", "wörld"}, ""},
		{"tasks get #42", []string{"tasks", "get", "#42"}, ""},
		{`echo 'oops`, nil, "unterminated ' quote starting at column 6"},
		{`é "oops`, nil, `unterminated " quote starting at column 3`},
		{`"a\"`, nil, `unterminated " quote`},
		{`trailing\`, nil, "backslash at the end"},
	}
	for _, tt := range tests {
		got, err := splitWords(tt.line)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("splitWords(%q) = %q, %v; want an error with %q", tt.line, got, err, tt.err)
			} else if code := exitCode(err, io.Discard); code != exitUsage {
				t.Errorf("splitWords(%q): error exits %d; want %d", tt.line, code, exitUsage)
			}
		case err != nil || !reflect.DeepEqual(got, tt.want):
			t.Errorf("splitWords(%q) = %q, %v; want %q", tt.line, got, err, tt.want)
		}
	}
}

// runScript runs `mito client -i args...` against h with script as its
// standard input, which is not a terminal, and returns stdout, stderr and
// the exit code.
func runScript(t *testing.T, h http.Handler, script string, args ...string) (string, string, int) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Setenv("MITO_CONFIG_DIR", t.TempDir())
	t.Setenv("MITO_COORDINATOR", srv.URL)
	t.Setenv("MITO_TOKEN", "tok")
	var stdout, stderr bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(append([]string{"client", "-i"}, args...))
	cmd.SetIn(strings.NewReader(script))
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	err := cmd.ExecuteContext(t.Context())
	code := exitCode(err, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestREPLScript(t *testing.T) {
	f := newFake()
	code0 := 0
	f.put(&tasks.Task{ID: 1, State: tasks.Succeeded, ExitCode: &code0})
	f.put(&tasks.Task{ID: 2, State: tasks.Queued})

	tests := []struct {
		name     string
		args     []string
		script   string
		wantOut  []string // in this order
		wantErr  []string // in this order
		notOut   string   // "" for no check
		notErr   string
		wantCode int
	}{{
		name: "an error in the middle does not stop the script",
		script: `# a comment, then an empty line

whoami -q
tasks get 99
  'tasks' "cancel" 2
whoami -o json
whoami
`,
		// A fresh command tree per line: -o json did not stick.
		wantOut:  []string{"ann\n", `"name": "ann"`, "user:"},
		wantErr:  []string{"mito: line 4: task 99 not found\n", "mito: 1 of 5 commands failed, the last at line 4\n"},
		wantCode: exitNotFound,
	}, {
		name:     "help of an unknown command, and a pasted prefix, are errors that say so",
		script:   "help nosuch\nmito client whoami -q\nhelp exit\n",
		wantOut:  []string{"exit, quit"},
		wantErr:  []string{`line 1: help: no command "nosuch"`, "line 2: type commands without the 'mito client' prefix: whoami -q"},
		wantCode: exitUsage,
	}, {
		name:     "the exit status is the last failure's",
		script:   "tasks get 99\nwhoami extra\nwhoami -q\n",
		wantOut:  []string{"ann\n"},
		wantErr:  []string{"line 1: task 99 not found", `line 2: unexpected argument "extra"`, "2 of 3 commands failed, the last at line 2"},
		wantCode: exitUsage,
	}, {
		name:     "a bad line is an error of its own",
		script:   "whoami -q\nsubmit -- echo 'oops\nwhoami -q\n",
		wantOut:  []string{"ann\nann\n"},
		wantErr:  []string{"line 2: unterminated ' quote starting at column 16"},
		wantCode: exitUsage,
	}, {
		name:     "no redirections",
		script:   "whoami -q\r\ntasks get 1 2>/dev/null\n",
		wantOut:  []string{"ann\n"},
		wantErr:  []string{`line 2: "2>/dev/null" is not a task id`},
		wantCode: exitUsage,
	}, {
		name:    "exit stops",
		script:  "whoami -q\nexit\ntasks get 99\n",
		wantOut: []string{"ann\n"},
	}, {
		name:     "a command given with -i runs first",
		args:     []string{"tasks", "get", "98"},
		script:   "whoami -q\n",
		wantOut:  []string{"ann\n"},
		wantErr:  []string{"mito: task 98 not found\n", "1 of 2 commands failed, the last at the command given with -i"},
		wantCode: exitNotFound,
	}, {
		name:     "flags given with -i hold for the session",
		args:     []string{"-q"},
		script:   "whoami\nwhoami -o json\n",
		wantOut:  []string{"ann\n", `"name": "ann"`},
		notOut:   "user:",
		wantCode: exitOK,
	}, {
		name:     "no REPL in the REPL",
		script:   "-i whoami\n",
		wantErr:  []string{"already in interactive mode"},
		wantCode: exitUsage,
	}, {
		name:     "a failed wait exits 1 and says nothing more",
		script:   "whoami -q\ntasks wait -q 2\n",
		wantOut:  []string{"ann\n"},
		notErr:   "failed",
		wantCode: exitFailure,
	}, {
		name:    "help",
		script:  "help\nhelp tasks get\n",
		wantOut: []string{"Available Commands:", "Interactive mode:", "kept only at a prompt", "mito client tasks get ID..."},
	}}
	f.finish[2] = tasks.Failed
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runScript(t, f, tt.script, tt.args...)
			if code != tt.wantCode {
				t.Errorf("got exit %d; want %d (stdout %q, stderr %q)", code, tt.wantCode, out, errOut)
			}
			checkInOrder(t, "stdout", out, tt.wantOut)
			checkInOrder(t, "stderr", errOut, tt.wantErr)
			if tt.notOut != "" && strings.Contains(out, tt.notOut) {
				t.Errorf("stdout %q has %q", out, tt.notOut)
			}
			if tt.notErr != "" && strings.Contains(errOut, tt.notErr) {
				t.Errorf("stderr %q has %q", errOut, tt.notErr)
			}
		})
	}
	if len(f.submitted) != 0 {
		t.Errorf("the coordinator got %d submissions; want none", len(f.submitted))
	}
}

// checkInOrder fails unless got holds each of want, one after another.
func checkInOrder(t *testing.T, what, got string, want []string) {
	t.Helper()
	rest := got
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("%s %q: want %q (in this order: %q)", what, got, w, want)
			return
		}
		rest = rest[i+len(w):]
	}
}

func TestREPLLoginHoldsForTheSession(t *testing.T) {
	f := newFake()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	t.Setenv("MITO_CONFIG_DIR", dir)
	t.Setenv("MITO_COORDINATOR", srv.URL)
	t.Setenv("MITO_TOKEN", "revoked")
	t.Setenv("MITO_PASSWORD", "secret")
	var stdout, stderr bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs([]string{"client", "-i"})
	cmd.SetIn(strings.NewReader("whoami -q\nlogin -u ann\nwhoami -q\n"))
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	code := exitCode(cmd.ExecuteContext(t.Context()), &stderr)
	// The first whoami fails with the environment's token; after the
	// login, the stored token is used.
	if code != exitAuth || strings.HasPrefix(stdout.String(), "ann") {
		t.Errorf("got exit %d, stdout %q; want exit %d from the first whoami", code, stdout.String(), exitAuth)
	}
	checkInOrder(t, "stdout", stdout.String(), []string{"logged in to " + srv.URL + " as ann", "ann\n"})
	checkInOrder(t, "stderr", stderr.String(), []string{"line 1: token expired", "uses the new login, not $MITO_TOKEN"})
	creds, err := loadCredentials(dir)
	if err != nil || creds[srv.URL].Token != "tok" {
		t.Errorf("credentials: got %+v, %v; want the new token stored", creds, err)
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cache", "mito", historyFile)
	h, err := loadHistory(path, 3)
	if err != nil || h.Len() != 0 {
		t.Fatalf("loadHistory of a missing file: got %d lines, %v; want none", h.Len(), err)
	}
	for _, l := range []string{"a", "", "  ", "b", "b", "c", "multi\nline", "d"} {
		if err := h.add(l); err != nil {
			t.Fatalf("add(%q): %v", l, err)
		}
	}
	// Blank lines and repeats are dropped; the oldest line goes when a
	// fourth comes.
	want := []string{"d", "c", "b"} // At(0) is the newest
	var got []string
	for i := range h.Len() {
		got = append(got, h.At(i))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("history: got %q; want %q, newest first", got, want)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "b\nc\nd\n" {
		t.Errorf("file: got %q, %v; want %q", b, err, "b\nc\nd\n")
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: got mode %v (%v); want %v", p, fi.Mode().Perm(), err, mode)
		}
	}

	// Two sessions at once keep each other's lines; each walks its own.
	h1, _ := loadHistory(path, 3)
	h2, _ := loadHistory(path, 3)
	if err := h1.add("e"); err != nil {
		t.Fatal(err)
	}
	if err := h2.add("f"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "d\ne\nf\n" {
		t.Errorf("file after two sessions: got %q; want %q", b, "d\ne\nf\n")
	}
	if h2.Len() != 3 || h2.At(0) != "f" || h2.At(1) != "d" {
		t.Errorf("second session: got %d lines, newest %q; want its own", h2.Len(), h2.At(0))
	}
	h3, err := loadHistory(path, historyMax)
	if err != nil || h3.Len() != 3 || h3.At(2) != "d" {
		t.Errorf("reload: got %d lines, %v", h3.Len(), err)
	}
}

func TestHistoryCap(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), historyFile)
	var lines strings.Builder
	for i := range historyMax + 20 {
		lines.WriteString("tasks get " + strconv.Itoa(i) + "\n")
	}
	if err := os.WriteFile(path, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := loadHistory(path, historyMax)
	if err != nil || h.Len() != historyMax || h.At(historyMax-1) != "tasks get 20" {
		t.Fatalf("load: got %d lines, %v; want the last %d", h.Len(), err, historyMax)
	}
	if err := h.add("whoami"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); len(got) != historyMax || got[0] != "tasks get 21" || got[len(got)-1] != "whoami" {
		t.Errorf("file: got %d lines, %q to %q; want %d, the oldest dropped", len(got), got[0], got[len(got)-1], historyMax)
	}
}

func TestHistoryPath(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/var/cache/ann")
	if p, err := historyPath(); err != nil || p != "/var/cache/ann/mito/client-history" {
		t.Errorf("with XDG_CACHE_HOME: got %q, %v", p, err)
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CACHE_HOME", "relative") // ignored, as the spec says
	if p, err := historyPath(); err != nil || p != filepath.Join(home, ".cache", "mito", "client-history") {
		t.Errorf("without: got %q, %v", p, err)
	}
}

// TestCtrlCClearsTheLine drives term.Terminal as the REPL does, without a
// terminal: Ctrl-C ends the line being typed, which the REPL drops, and
// leaves the rest for the next line; Ctrl-D on an empty line ends input.
func TestCtrlCClearsTheLine(t *testing.T) {
	t.Parallel()
	keys := &ctrlCReader{r: strings.NewReader("tasks li\x03whoami\r\x1b[A\rhalf\x04\x04\r\x04")}
	h := &history{max: 10}
	tm := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{keys, io.Discard}, "mito> ")
	tm.History = termHistory{h}
	type result struct {
		line      string
		cancelled bool
		err       error
	}
	var got []result
	for {
		keys.ctrlC = false
		line, err := tm.ReadLine()
		got = append(got, result{line, keys.ctrlC, err})
		if err != nil {
			break
		}
		if !keys.ctrlC {
			_ = h.add(line) // as the REPL does
		}
	}
	want := []result{
		{"tasks li", true, nil},
		{"whoami", false, nil},
		{"whoami", false, nil}, // Up: the history has whoami, not the cancelled line
		{"half", false, nil},   // Ctrl-D on a line that is not empty deletes
		{"", false, io.EOF},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}
