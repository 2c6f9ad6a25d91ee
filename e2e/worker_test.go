package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// TestStandaloneWorker runs `mito worker` over TCP, as on a host that can
// dial the coordinator, authenticated by the token `mito client login`
// stored.
func TestStandaloneWorker(t *testing.T) {
	l := startLab(t, "hosts: []\n")
	var logs bytes.Buffer
	w := exec.Command(filepath.Join(bin, "mito"), "worker", "--coordinator", l.url, "--name", "tcp-host", "-g", "admin", "-t", "remote", "--slots", "2", "--work-dir", t.TempDir())
	w.Env = append(os.Environ(), "MITO_CONFIG_DIR="+l.cfgDir)
	w.Stdout, w.Stderr = &logs, &logs
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = w.Process.Signal(syscall.SIGTERM)
		_ = w.Wait()
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	}()

	tid := l.submit("-t", "remote", "--", "sh", "-c", "echo from-worker")
	task := l.waitFor(tid, 30*time.Second, tasks.Succeeded, tasks.Failed)
	if task.State != tasks.Succeeded || task.Host != "tcp-host" {
		t.Fatalf("task %s on %q; want succeeded on tcp-host", task.State, task.Host)
	}
	if out := l.mustRun(nil, "client", "tasks", "logs", id(tid)); out != "from-worker\n" {
		t.Errorf("logs = %q; want %q", out, "from-worker\n")
	}
}

// TestDataDirIsLocked keeps a second coordinator off a data directory in
// use: it would drive the same hosts and share the SQLite file.
func TestDataDirIsLocked(t *testing.T) {
	l := startLab(t, "hosts: []\n")
	out, errOut, code := l.run(nil, "coordinator", "--data-dir", l.data, "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "in use by another coordinator") {
		t.Errorf("second coordinator on %s: exit %d, stdout %q, stderr %q; want a refusal", l.data, code, out, errOut)
	}
}

// TestInventoryGroupsAreCreated lets a fresh coordinator serve the groups
// its inventory names, without a manual `groups create`.
func TestInventoryGroupsAreCreated(t *testing.T) {
	l := startLab(t, "hosts:\n  - {name: h, transport: local, groups: [netlab]}\n")
	tid := l.submit("-g", "netlab", "--", "true")
	if task := l.waitFor(tid, 30*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Errorf("task in the inventory's group: %s; want succeeded", task.State)
	}
}

// TestPostgresAndS3 runs the coordinator on the production backends: its
// state in PostgreSQL, the artifacts in a real S3 server, events on Redis.
func TestPostgresAndS3(t *testing.T) {
	pg, s3 := os.Getenv("MITO_TEST_PG_URL"), os.Getenv("MITO_TEST_S3_ENDPOINT")
	if pg == "" || s3 == "" {
		msg := "needs MITO_TEST_PG_URL and MITO_TEST_S3_*: run `make test`, or `bash .ci/services-up.sh && source .ci/tmp/env`"
		skipOrFail(t, msg)
	}
	db := freshSchema(t, pg, "e2e")
	t.Setenv("MITO_S3_ACCESS_KEY", os.Getenv("MITO_TEST_S3_ACCESS_KEY"))
	t.Setenv("MITO_S3_SECRET_KEY", os.Getenv("MITO_TEST_S3_SECRET_KEY"))
	bucket := fmt.Sprintf("mito-e2e-%d", time.Now().UnixNano())
	args := []string{"--db", db, "--s3-endpoint", s3, "--s3-bucket", bucket}
	if r := os.Getenv("MITO_TEST_REDIS_URL"); r != "" {
		args = append(args, "--redis", r)
	}
	l := startLab(t, "hosts:\n  - {name: h, transport: local, groups: [admin]}\n", args...)
	if os.Getenv("MITO_TEST_REDIS_URL") != "" && !strings.Contains(l.logs.String(), "events=\"redis") {
		t.Errorf("the coordinator does not say it uses Redis for events")
	}
	if logs := l.logs.String(); strings.Contains(logs, os.Getenv("MITO_TEST_S3_SECRET_KEY")) {
		t.Error("the coordinator logged the S3 secret key")
	}
	tid := l.submit("sh", "-c", `head -c 3000000 /dev/urandom > "$MITO_OUTPUT_DIR/blob"; sha256sum "$MITO_OUTPUT_DIR/blob" | cut -d" " -f1`)
	if task := l.waitFor(tid, 30*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Fatalf("task %s: %s", task.State, task.Error)
	}
	want := strings.TrimSpace(l.mustRun(nil, "client", "tasks", "logs", id(tid)))
	dir := t.TempDir()
	l.mustRun(nil, "client", "tasks", "artifacts", "download", "-o", dir, id(tid))
	b, err := os.ReadFile(filepath.Join(dir, "blob"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != want {
		t.Errorf("downloaded blob has sha256 %s; the task wrote %s", got, want)
	}
	if _, err := os.Stat(filepath.Join(l.data, "artifacts")); err == nil {
		t.Errorf("artifacts went to the data directory, not to S3")
	}
}
