package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/tasks"
)

// deletedNames lists the attempt/name of each deleted artifact, in order.
func deletedNames(as []tasks.Artifact) []string {
	var out []string
	for _, a := range as {
		out = append(out, fmt.Sprintf("%d/%s", a.Attempt, a.Name))
	}
	return out
}

// TestDeleteArtifactsFreesQuota deletes a finished task's artifacts and
// checks that the group's usage drops by their sizes, that their objects
// go, and that an upload the quota refused before now fits.
func TestDeleteArtifactsFreesQuota(t *testing.T) {
	e, arts := newAttachmentEnv(t)
	alice, bob, carol, dave := e.user("alice"), e.user("bob"), e.user("carol"), e.user("dave")
	e.must(alice, "POST", "/api/v1/groups", map[string]string{"name": "lab"}, nil)
	e.must(alice, "PUT", "/api/v1/groups/lab/members/bob", map[string]string{"role": "read"}, nil)
	e.must(alice, "PUT", "/api/v1/groups/lab/members/carol", map[string]string{"role": "write"}, nil)
	e.must(e.admin, "PUT", "/api/v1/groups/lab/quota", map[string]int64{"bytes": 20}, nil)

	first := e.submit(alice, tasks.Spec{Group: "lab", Command: []string{"true"}})
	w := e.worker(alice, "host-a", []string{"lab"}, 1)
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	for _, name := range []string{"a.bin", "sub/b.bin"} {
		if status, err := w.putArtifact(ref, name, "12345678"); status != http.StatusCreated {
			t.Fatalf("put %s: %d %+v", name, status, err)
		}
	}
	del := fmt.Sprintf("/api/v1/tasks/%d/artifacts", first.ID)

	// While the task runs its worker may still upload.
	status, err := e.call(alice, "DELETE", del, nil, nil)
	if status != http.StatusConflict || err.Code != tasks.EConflict || !strings.Contains(err.Message, "running") {
		t.Errorf("delete while running: %d %+v; want 409 conflict saying the task is running", status, err)
	}
	now := time.Now()
	if status, err := w.finish(ref, tasks.Result{State: tasks.Succeeded, ExitCode: exitCode(0), StartedAt: now, FinishedAt: now}); err != nil {
		t.Fatalf("finish: %d %s", status, err.Message)
	}
	if g := e.group(alice, "lab"); g.UsedBytes != 16 {
		t.Fatalf("used_bytes = %d; want 16", g.UsedBytes)
	}

	// A second task's output does not fit.
	second := e.submit(alice, tasks.Spec{Group: "lab", Command: []string{"true"}})
	ref2 := w.claim(1, 0)[0].Lease.LeaseRef
	if ref2.Task != second.ID {
		t.Fatalf("claimed task %d; want %d", ref2.Task, second.ID)
	}
	if status, err := w.putArtifact(ref2, "big.bin", "0123456789"); status != http.StatusRequestEntityTooLarge || err == nil || err.Code != tasks.EQuota {
		t.Fatalf("artifact over quota: %d %+v; want 413 quota_exceeded", status, err)
	}

	// Roles: a reader may not delete, a stranger does not see the task.
	for _, tt := range []struct {
		who, token string
		status     int
		code       tasks.Code
	}{
		{"reader", bob, http.StatusForbidden, tasks.EForbidden},
		{"stranger", dave, http.StatusNotFound, tasks.ENotFound},
	} {
		if status, err := e.call(tt.token, "DELETE", del, nil, nil); status != tt.status || err == nil || err.Code != tt.code {
			t.Errorf("%s deletes: %d %+v; want %d %s", tt.who, status, err, tt.status, tt.code)
		}
	}
	// Bad queries change nothing.
	for _, q := range []string{"?attempt=x", "?attempt=-1", "?attempt=2", "?name=../x", "?name=", "?name=/etc/passwd"} {
		if status, err := e.call(carol, "DELETE", del+q, nil, nil); status != http.StatusBadRequest || err.Code != tasks.EInvalid {
			t.Errorf("delete %s: %d %+v; want 400 invalid", q, status, err)
		}
	}
	if g := e.group(alice, "lab"); g.UsedBytes != 16 {
		t.Errorf("used_bytes after refused deletes = %d; want 16", g.UsedBytes)
	}

	// A writer deletes one name; one that matches nothing is not listed.
	var out struct{ Deleted []tasks.Artifact }
	e.must(carol, "DELETE", del+"?attempt=1&name=a.bin&name=nope", nil, &out)
	if got := deletedNames(out.Deleted); !slices.Equal(got, []string{"1/a.bin"}) || out.Deleted[0].Size != 8 || out.Deleted[0].SHA256 != sha("12345678") {
		t.Errorf("deleted %+v; want a.bin of attempt 1, 8 bytes, with its sha256", out.Deleted)
	}
	if g := e.group(bob, "lab"); g.UsedBytes != 8 {
		t.Errorf("used_bytes after the delete = %d; want 8", g.UsedBytes)
	}
	want := []string{fmt.Sprintf("tasks/%d/1/sub/b.bin", first.ID)}
	if got := keys(t, arts, "tasks/"); !slices.Equal(got, want) {
		t.Errorf("store holds %v; want %v", got, want)
	}
	if status, _, _ := e.fetch(alice, del+"/a.bin"); status != http.StatusNotFound {
		t.Errorf("download of a deleted artifact: %d; want 404", status)
	}

	// The upload that did not fit now does.
	if status, err := w.putArtifact(ref2, "big.bin", "0123456789"); status != http.StatusCreated {
		t.Fatalf("artifact after the delete: %d %+v; want 201", status, err)
	}
	if g := e.group(alice, "lab"); g.UsedBytes != 18 {
		t.Errorf("used_bytes = %d; want 18", g.UsedBytes)
	}

	// Without a query, everything of every attempt; then nothing is left.
	out.Deleted = nil
	e.must(alice, "DELETE", del, nil, &out)
	if got := deletedNames(out.Deleted); !slices.Equal(got, []string{"1/sub/b.bin"}) {
		t.Errorf("deleted %q; want [1/sub/b.bin]", got)
	}
	if g := e.group(alice, "lab"); g.UsedBytes != 10 {
		t.Errorf("used_bytes = %d; want 10 (big.bin of the other task)", g.UsedBytes)
	}
	if got := keys(t, arts, fmt.Sprintf("tasks/%d/", first.ID)); len(got) != 0 {
		t.Errorf("store still holds %v", got)
	}
	var raw map[string]any
	e.must(alice, "DELETE", del, nil, &raw)
	if d, ok := raw["deleted"].([]any); !ok || len(d) != 0 {
		t.Errorf("delete of nothing answered %v; want {\"deleted\": []}", raw)
	}
	if status, err := e.call(alice, "DELETE", "/api/v1/tasks/999999/artifacts", nil, nil); status != http.StatusNotFound {
		t.Errorf("delete of a missing task: %d %+v; want 404", status, err)
	}
}

// failingDelete is an artifact store whose deletes fail.
type failingDelete struct{ artifacts.Store }

func (failingDelete) Delete(context.Context, string) error { return errors.New("disk on fire") }

// TestDeleteArtifactsObjectFailure checks that an object that cannot be
// deleted does not fail the request: the record is gone and the quota
// credited, and the object is only garbage.
func TestDeleteArtifactsObjectFailure(t *testing.T) {
	dir, err := artifacts.NewDir(filepath.Join(t.TempDir(), "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, coordinator.Config{Artifacts: failingDelete{dir}})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "host-a", []string{"alice"}, 1)
	w.runTask(task.ID, tasks.Failed, map[string]string{"out.txt": "hello"})
	if g := e.group(alice, "alice"); g.UsedBytes != 5 {
		t.Fatalf("used_bytes = %d; want 5", g.UsedBytes)
	}
	var out struct{ Deleted []tasks.Artifact }
	e.must(alice, "DELETE", fmt.Sprintf("/api/v1/tasks/%d/artifacts?name=out.txt", task.ID), nil, &out)
	if got := deletedNames(out.Deleted); !slices.Equal(got, []string{"1/out.txt"}) {
		t.Errorf("deleted %q; want [1/out.txt]", got)
	}
	if g := e.group(alice, "alice"); g.UsedBytes != 0 {
		t.Errorf("used_bytes = %d; want 0", g.UsedBytes)
	}
}
