package main

import (
	"bytes"
	"strings"
	"testing"
)

// runMito runs the whole `mito args...` command tree, as main does, and
// returns stdout, stderr and the exit code.
func runMito(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(strings.NewReader(""))
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	code := exitCode(root.ExecuteContext(t.Context()), &stderr)
	return stdout.String(), stderr.String(), code
}

func TestUnknownCommandsAndFlags(t *testing.T) {
	t.Setenv("MITO_CONFIG_DIR", t.TempDir())
	t.Setenv("MITO_COORDINATOR", "")
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"clinet"}, `unknown command "clinet" for "mito"; did you mean "client"?`},
		{[]string{"client", "foo"}, `unknown command "foo" for "mito client" (see 'mito client --help')`},
		{[]string{"client", "tasks", "foo"}, `unknown command "foo" for "mito client tasks"`},
		{[]string{"client", "tasks", "artifacts", "foo"}, `unknown command "foo" for "mito client tasks artifacts"`},
		{[]string{"inventory", "list", "x"}, `unknown command "list" for "mito inventory"`},
		{[]string{"client", "tasks", "list", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"worker", "--bogus"}, "unknown flag: --bogus (see 'mito worker --help')"},
		{[]string{"inventory", "check", "--bogus", "x"}, "unknown flag: --bogus"},
		{[]string{"worker", "extra"}, `unexpected argument "extra"`},
		{[]string{"coordinator", "extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		out, errOut, code := runMito(t, tt.args...)
		if code != exitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("mito %s: got exit %d, %q; want %d and %q", strings.Join(tt.args, " "), code, errOut, exitUsage, tt.want)
		}
		if out != "" {
			t.Errorf("mito %s: printed %q on stdout; want nothing", strings.Join(tt.args, " "), out)
		}
	}

	// A group without arguments still shows its help, and exits 0.
	for _, args := range [][]string{nil, {"client"}, {"client", "tasks"}, {"inventory"}} {
		out, errOut, code := runMito(t, args...)
		if code != 0 || !strings.Contains(out, "Available Commands:") || errOut != "" {
			t.Errorf("mito %s: got exit %d, stdout %.40q, stderr %q; want the help and exit 0", strings.Join(args, " "), code, out, errOut)
		}
		if strings.Contains(out, "[flags]\n  mito") {
			t.Errorf("mito %s: the usage shows the group as a command: %q", strings.Join(args, " "), out)
		}
	}
}

func TestWorkerCoordinatorFlag(t *testing.T) {
	t.Setenv("MITO_CONFIG_DIR", t.TempDir())
	t.Setenv("MITO_TOKEN", "tok")
	// -c is --coordinator, and the URL is checked before anything else.
	_, errOut, code := runMito(t, "worker", "-c", "127.0.0.1:7800")
	if code != exitUsage || !strings.Contains(errOut, `invalid coordinator URL "127.0.0.1:7800": want http://host:port`) {
		t.Errorf("worker -c host:port: got exit %d, %q; want %d and an invalid URL", code, errOut, exitUsage)
	}
	// Without -c, $MITO_COORDINATOR is used.
	t.Setenv("MITO_COORDINATOR", "lab1:7800")
	if _, errOut, code = runMito(t, "worker"); code != exitUsage || !strings.Contains(errOut, `"lab1:7800"`) {
		t.Errorf("worker with MITO_COORDINATOR: got exit %d, %q; want it used", code, errOut)
	}
	t.Setenv("MITO_COORDINATOR", "")
	if _, errOut, code = runMito(t, "worker"); code != exitUsage || !strings.Contains(errOut, "MITO_COORDINATOR") {
		t.Errorf("worker without a coordinator: got exit %d, %q; want %d naming MITO_COORDINATOR", code, errOut, exitUsage)
	}
	out, _, _ := runMito(t, "worker", "--help")
	if !strings.Contains(out, "-c, --coordinator") || !strings.Contains(out, "personal group") {
		t.Errorf("worker --help does not document -c and the personal group:\n%s", out)
	}
}

func TestClientHelpExitCodes(t *testing.T) {
	out, _, _ := runMito(t, "client", "--help")
	for _, want := range []string{"130 interrupted", "7 'tasks wait --timeout' ran out"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
			t.Errorf("client --help lacks %q", want)
		}
	}
	out, _, _ = runMito(t, "client", "tasks", "wait", "--help")
	if !strings.Contains(out, "7  --timeout ran out") {
		t.Errorf("tasks wait --help does not document exit 7:\n%s", out)
	}
}
