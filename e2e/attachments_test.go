package e2e_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mitolab/mito/tasks"
)

// TestS3Attachments drives attachments and quotas through the CLI against
// a coordinator whose artifact store is the test S3 server.
func TestS3Attachments(t *testing.T) {
	l := s3Lab(t, "direct")
	dir := t.TempDir()
	blob := make([]byte, 5<<20)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "blob.bin")
	if err := os.WriteFile(src, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x", sha256.Sum256(blob))

	l.mustRun(nil, "client", "attachments", "upload", src, "data/blob.bin")
	var as []tasks.Attachment
	out := l.mustRun(nil, "client", "attachments", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &as); err != nil || len(as) != 1 || as[0].Key != "data/blob.bin" || as[0].Size != 5<<20 || as[0].SHA256 != want {
		t.Fatalf("list printed %q (%v); want data/blob.bin of 5 MiB with sha256 %s", out, err, want)
	}

	got := filepath.Join(dir, "copy.bin")
	l.mustRun(nil, "client", "attachments", "download", "data/blob.bin", "-o", got)
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if sum := fmt.Sprintf("%x", sha256.Sum256(b)); sum != want {
		t.Errorf("downloaded %d bytes with sha256 %s; uploaded 5 MiB with %s", len(b), sum, want)
	}

	// A quota of 6 MiB takes no second 5 MiB file.
	l.mustRun(nil, "client", "groups", "quota", "admin", "6MiB")
	if g := groupOf(l, "admin"); g.QuotaBytes != 6<<20 || g.UsedBytes != 5<<20 {
		t.Errorf("group admin: quota %d, used %d; want 6 MiB, 5 MiB", g.QuotaBytes, g.UsedBytes)
	}
	if out := l.mustRun(nil, "client", "groups", "get", "admin"); !strings.Contains(out, "5.0 MiB of 6.0 MiB") {
		t.Errorf("groups get shows no usage against the quota:\n%s", out)
	}
	_, errOut, code := l.run(nil, "client", "attachments", "upload", src, "data/second.bin")
	if code == 0 || !strings.Contains(errOut, "quota") {
		t.Errorf("upload over the quota: exit %d, %q; want a failure naming the quota", code, errOut)
	}
	out = l.mustRun(nil, "client", "attachments", "list", "-q")
	if out != "data/blob.bin\n" {
		t.Errorf("list after the refused upload: %q; want only data/blob.bin", out)
	}

	l.mustRun(nil, "client", "attachments", "delete", "data/blob.bin")
	if g := groupOf(l, "admin"); g.UsedBytes != 0 {
		t.Errorf("used_bytes after the delete = %d; want 0", g.UsedBytes)
	}
	// Room again: the second file fits now.
	l.mustRun(nil, "client", "attachments", "upload", src, "data/second.bin")
}

func groupOf(l *lab, name string) tasks.Group {
	l.t.Helper()
	out := l.mustRun(nil, "client", "groups", "get", "-o", "json", name)
	var g tasks.Group
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		l.t.Fatalf("groups get printed %q: %v", out, err)
	}
	return g
}
