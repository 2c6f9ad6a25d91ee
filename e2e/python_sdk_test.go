package e2e_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const oneLocalHost = `
hosts:
  - name: alpha
    transport: local
    groups: [admin]
    slots: 4
`

// TestPythonSDK runs the Python SDK's tests (sdk/python/tests) against a
// lab: the unit tests, and the live ones, which submit tasks, move
// artifacts and attachments and check errors through the real API. The
// SDK finds the coordinator in MITO_COORDINATOR and the admin's token in
// the credentials file the CLI wrote when the lab logged in.
func TestPythonSDK(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		skipOrFail(t, "python3 not found: install Python 3.9 or later to test the Python SDK")
	}
	l := startLab(t, oneLocalHost)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-m", "unittest", "discover", "-s", "sdk/python/tests", "-v")
	cmd.Dir = root
	for _, kv := range os.Environ() {
		// The SDK must find the lab's token on its own, not a caller's.
		if !strings.HasPrefix(kv, "MITO_TOKEN=") && !strings.HasPrefix(kv, "MITO_COORDINATOR=") && !strings.HasPrefix(kv, "MITO_CONFIG_DIR=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"MITO_SDK_LIVE=1",
		"MITO_COORDINATOR="+l.url,
		"MITO_CONFIG_DIR="+l.cfgDir,
		"MITO_SDK_USER=admin",
		"MITO_SDK_PASSWORD="+adminPassword,
		// No __pycache__ left in the source tree.
		"PYTHONDONTWRITEBYTECODE=1",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("python3 -m unittest: %v\n%s", err, out.String())
	}
	// A live test that skipped would pass unnoticed: each must have run.
	for _, name := range []string{"test_login", "test_task_with_artifact", "test_cancel", "test_attachment_as_input", "test_quota", "test_not_found"} {
		re := regexp.MustCompile(regexp.QuoteMeta(name) + ` \(test_live\.TestLive[^)]*\) \.\.\. ok`)
		if !re.MatchString(out.String()) {
			t.Errorf("live test %s did not pass:\n%s", name, out.String())
		}
	}
	if testing.Verbose() {
		t.Logf("python3 -m unittest:\n%s", out.String())
	}
}
