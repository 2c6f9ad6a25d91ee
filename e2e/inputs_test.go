package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
)

// TestInputs: tasks take other tasks' artifacts and group attachments as
// files in their work directory, through the real shim and straight from
// S3 by presigned URL (the host has `artifacts: direct`); an input
// deleted after submission fails its task with an error naming it, and
// the command never runs.
func TestInputs(t *testing.T) {
	l := s3Lab(t, "direct")
	ctx := t.Context()
	anon, err := client.New(l.url)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := anon.Login(ctx, "admin", adminPassword, 0)
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.New(l.url, client.WithToken(cred.Token))
	if err != nil {
		t.Fatal(err)
	}

	// A pipeline step: task 2 reads what task 1 wrote.
	t1 := l.submit("sh", "-c", `mkdir -p "$MITO_OUTPUT_DIR/res" && echo "made by the first task" > "$MITO_OUTPUT_DIR/res/out.txt"`)
	if task := l.waitFor(t1, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Fatalf("task 1 %s: %s", task.State, task.Error)
	}
	in := fmt.Sprintf("task:%d/res/out.txt=in/x", t1)
	t2 := l.submit("--input", in, "cat", "in/x")
	if task := l.waitFor(t2, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Fatalf("task 2 %s: %s", task.State, task.Error)
	}
	if out := l.mustRun(nil, "client", "tasks", "logs", id(t2)); out != "made by the first task\n" {
		t.Errorf("task 2 printed %q; want what task 1 wrote", out)
	}
	if out := l.mustRun(nil, "client", "tasks", "get", id(t2)); !strings.Contains(out, in) {
		t.Errorf("tasks get does not show the input %s:\n%s", in, out)
	}

	// An attachment uploaded with the Go SDK.
	const data = "a,b\n1,2\n"
	if _, err := api.UploadAttachment(ctx, "admin", "sets/small.csv", strings.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	t3 := l.submit("--input", "attachment:sets/small.csv", "--shell", "cat sets/small.csv")
	if task := l.waitFor(t3, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Fatalf("task 3 %s: %s", task.State, task.Error)
	}
	if out := l.mustRun(nil, "client", "tasks", "logs", id(t3)); out != data {
		t.Errorf("task 3 printed %q; want the attachment %q", out, data)
	}

	// On S3 with `artifacts: direct`, the shim fetched both inputs
	// straight from the store by presigned URL, and nobody logged one.
	logs := l.logs.String()
	if n := strings.Count(logs, "input presigned"); n < 2 {
		t.Errorf("the coordinator log shows %d input presigns; want one for each of tasks 2 and 3", n)
	}
	if n := strings.Count(logs, "input fetched directly"); n < 2 {
		t.Errorf("the shim log shows %d direct input fetches; want one for each of tasks 2 and 3", n)
	}
	if strings.Contains(logs, "X-Amz-Signature") || strings.Contains(logs, "through the coordinator") {
		t.Errorf("the log shows a presigned URL, or the shim fell back to the relay")
	}

	// Refused at submission: an attachment that does not exist.
	_, errOut, code := l.run(nil, "client", "submit", "--input", "attachment:nope.csv", "true")
	if code == 0 || !strings.Contains(errOut, "attachment:nope.csv: no such attachment in group admin") {
		t.Errorf("submit with a missing attachment: exit %d, stderr %q; want a refusal naming it", code, errOut)
	}

	// Deleted between submission and start: the one slot is held by a
	// task that waits for a gate, so that the next one stays queued.
	if _, err := api.UploadAttachment(ctx, "admin", "gone.csv", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	gate := filepath.Join(t.TempDir(), "gate")
	blocker := l.submit("sh", "-c", fmt.Sprintf("while [ ! -e %q ]; do sleep 0.1; done", gate))
	l.waitFor(blocker, 60*time.Second, tasks.Running)
	t4 := l.submit("--input", "attachment:gone.csv", "--shell", `echo ran; echo ran > "$MITO_OUTPUT_DIR/ran"`)
	if err := api.DeleteAttachment(ctx, "admin", "gone.csv"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	task := l.waitFor(t4, 60*time.Second, tasks.Succeeded, tasks.Failed)
	const want = "input attachment:gone.csv: no such attachment in group admin"
	if task.State != tasks.Failed || task.Error != want || task.ExitCode != nil {
		t.Errorf("task 4: %s, error %q, exit %v; want failed with %q and no exit code", task.State, task.Error, task.ExitCode, want)
	}
	if out := l.mustRun(nil, "client", "tasks", "logs", id(t4)); out != "" {
		t.Errorf("task 4 ran its command: %q", out)
	}
	if as, err := api.ListArtifacts(ctx, t4); err != nil || len(as) != 0 {
		t.Errorf("task 4 artifacts: %v, %v; want none", as, err)
	}
}

// TestInputsWaitForSource: a pipeline submitted at once, on a host with a
// free slot for each step, runs in order: the second step stays queued,
// and `tasks get` says what it waits for, until the first has written its
// artifact and ended.
func TestInputsWaitForSource(t *testing.T) {
	l := startLab(t, "hosts:\n  - {name: h, transport: local, groups: [admin], slots: 2}\n")
	gate := filepath.Join(t.TempDir(), "gate")
	first := l.submit("sh", "-c", fmt.Sprintf(`while [ ! -e %q ]; do sleep 0.1; done; sleep 1; echo "made by the first step" > "$MITO_OUTPUT_DIR/res.txt"`, gate))
	second := l.submit("--input", fmt.Sprintf("task:%d/res.txt", first), "cat", "res.txt")

	l.waitFor(first, 60*time.Second, tasks.Running)
	if task := l.get(second); task.State != tasks.Queued {
		t.Fatalf("second step is %s while the first runs; want queued", task.State)
	}
	want := fmt.Sprintf("task %d (running)", first)
	if out := l.mustRun(nil, "client", "tasks", "get", id(second)); !strings.Contains(out, want) {
		t.Errorf("tasks get of the second step does not say it waits for %s:\n%s", want, out)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if task := l.waitFor(second, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Fatalf("second step %s: %s", task.State, task.Error)
	}
	if out := l.mustRun(nil, "client", "tasks", "logs", id(second)); out != "made by the first step\n" {
		t.Errorf("second step printed %q; want what the first wrote", out)
	}
	if out := l.mustRun(nil, "client", "tasks", "get", id(second)); strings.Contains(out, "waiting for") {
		t.Errorf("tasks get of the finished second step still says it waits:\n%s", out)
	}
}
