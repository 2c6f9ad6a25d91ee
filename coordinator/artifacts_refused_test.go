package coordinator_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/mitolab/mito/tasks"
)

// TestRefusedReuploadKeepsTheRecordedArtifact: a larger re-upload of an
// artifact of the same attempt and name that loses a quota race (another
// upload fills the quota between the early check and the record) must not
// delete the object the existing record points at: the recorded artifact
// stays downloadable.
func TestRefusedReuploadKeepsTheRecordedArtifact(t *testing.T) {
	e, arts := newAttachmentEnv(t)
	alice := e.user("alice")
	e.must(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 10}, nil)
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "host-a", []string{"alice"}, 1)
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	if status, err := w.putArtifact(ref, "a", "12345"); status != http.StatusCreated {
		t.Fatalf("first upload: %d %+v", status, err)
	}
	// While the re-upload is being stored, an attachment takes the room.
	hookErr := setHook(e, arts, alice, "tasks/", "filler", "1234")
	if status, err := w.putArtifact(ref, "a", "1234567"); status != http.StatusRequestEntityTooLarge || err == nil || err.Code != tasks.EQuota {
		t.Errorf("re-upload that lost the race: %d %+v; want 413 quota_exceeded", status, err)
	}
	if err := hookErr(); err != nil {
		t.Fatal(err)
	}
	var list struct{ Artifacts []tasks.Artifact }
	e.must(alice, "GET", fmt.Sprintf("/api/v1/tasks/%d/artifacts", task.ID), nil, &list)
	if len(list.Artifacts) != 1 || list.Artifacts[0].Size != 5 {
		t.Fatalf("records: %+v; want artifact a of 5 bytes", list.Artifacts)
	}
	if status, _, body := e.fetch(alice, fmt.Sprintf("/api/v1/tasks/%d/artifacts/a", task.ID)); status != http.StatusOK {
		t.Errorf("artifact a is recorded but its download gives %d %q", status, body)
	}
}
