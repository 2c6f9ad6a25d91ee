package e2e_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// s3Lab starts a coordinator whose artifacts are in the test S3 server,
// with one local host sending its artifacts as mode says.
func s3Lab(t *testing.T, mode string) *lab {
	t.Helper()
	s3 := os.Getenv("MITO_TEST_S3_ENDPOINT")
	if s3 == "" {
		msg := "needs MITO_TEST_S3_*: run `make test`, or `bash .ci/services-up.sh && source .ci/tmp/env`"
		skipOrFail(t, msg)
	}
	t.Setenv("MITO_S3_ACCESS_KEY", os.Getenv("MITO_TEST_S3_ACCESS_KEY"))
	t.Setenv("MITO_S3_SECRET_KEY", os.Getenv("MITO_TEST_S3_SECRET_KEY"))
	bucket := fmt.Sprintf("mito-e2e-%s-%d", mode, time.Now().UnixNano())
	return startLab(t, "hosts:\n  - {name: h, transport: local, groups: [admin], artifacts: "+mode+"}\n",
		"--s3-endpoint", s3, "--s3-bucket", bucket)
}

// shipArtifact runs a task that writes a 20 MiB artifact, downloads it
// and checks its sha256 against the one the task computed.
func shipArtifact(t *testing.T, l *lab) {
	t.Helper()
	tid := l.submit("sh", "-c", `head -c 20971520 /dev/urandom > "$MITO_OUTPUT_DIR/blob"; sha256sum "$MITO_OUTPUT_DIR/blob" | cut -d" " -f1`)
	if task := l.waitFor(tid, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Fatalf("task %s: %s", task.State, task.Error)
	}
	want := strings.TrimSpace(l.mustRun(nil, "client", "tasks", "logs", id(tid)))
	dir := t.TempDir()
	l.mustRun(nil, "client", "tasks", "artifacts", "download", "-o", dir, id(tid))
	f, err := os.Open(filepath.Join(dir, "blob"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != want || n != 20<<20 {
		t.Errorf("downloaded blob: %d bytes, sha256 %s; the task wrote 20 MiB with %s", n, got, want)
	}
	// The recorded checksum is the shim's (direct) or the coordinator's
	// (relayed): either way, that of the bytes.
	if out := l.mustRun(nil, "client", "tasks", "artifacts", "list", "-o", "json", id(tid)); !strings.Contains(out, want) {
		t.Errorf("artifacts list does not show sha256 %s:\n%s", want, out)
	}
}

// TestS3DirectArtifacts: a host with `artifacts: direct` sends its
// artifacts straight to S3 by presigned URL; none cross the link.
func TestS3DirectArtifacts(t *testing.T) {
	l := s3Lab(t, "direct")
	shipArtifact(t, l)
	logs := l.logs.String()
	if !strings.Contains(logs, "artifact uploaded directly") || !strings.Contains(logs, "artifact committed") {
		t.Errorf("the coordinator log shows no direct upload")
	}
	if strings.Contains(logs, "X-Amz-Signature") || strings.Contains(logs, os.Getenv("MITO_TEST_S3_SECRET_KEY")) {
		t.Errorf("the coordinator log shows a presigned URL or the secret key")
	}
	if strings.Contains(logs, "through the coordinator") {
		t.Errorf("the shim fell back to the relay")
	}
}

// TestS3RelayedArtifacts: a host with `artifacts: relay` streams its
// artifacts through its link even though S3 could take them directly.
func TestS3RelayedArtifacts(t *testing.T) {
	l := s3Lab(t, "relay")
	shipArtifact(t, l)
	logs := l.logs.String()
	if !strings.Contains(logs, "artifacts=relay") {
		t.Errorf("the shim did not register in relay mode")
	}
	if strings.Contains(logs, "artifact uploaded directly") || strings.Contains(logs, "artifact committed") {
		t.Errorf("a host forced to relay uploaded directly")
	}
}
