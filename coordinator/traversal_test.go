package coordinator_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

// hostileNames are artifact names that point outside the attempt's
// output, or could be read two ways, as a shim might send them.
var hostileNames = []string{"../x", "/etc/passwd", "a/../../b", "..", ".", "a/..", "a//b", `a\..\..\b`, "a\x00b", "a\nb"}

// TestRelayedArtifactRefusesHostileNames sends artifacts with names that
// climb out of the output directory over the relay (PUT
// /worker/v1/tasks/{id}/artifacts/{name...}), raw and percent-encoded: the
// coordinator must refuse each with 400 (raw dot segments before the
// router, which would redirect to the cleaned path; escaped ones in the
// handler), and nothing may be stored.
func TestRelayedArtifactRefusesHostileNames(t *testing.T) {
	e, arts := newPresignEnv(t, coordinator.Config{})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "host-a", []string{"alice"}, 1)
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	base := fmt.Sprintf("%s/worker/v1/tasks/%d/artifacts/", e.srv.URL, task.ID)

	// put sends a relayed upload to the raw (already escaped) path,
	// following redirects as a client would (a 307 repeats the PUT), and
	// returns the final status and error code.
	put := func(rawName string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, base+rawName+fmt.Sprintf("?attempt=%d", ref.Attempt), strings.NewReader("evil"))
		if err != nil {
			t.Fatalf("request for %q: %v", rawName, err)
		}
		req.Header.Set("X-Mito-Session", w.session)
		req.Header.Set("X-Mito-Lease", ref.Token)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatalf("PUT %q: %v", rawName, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		code := ""
		if i := strings.Index(string(b), `"code":"`); i >= 0 {
			code, _, _ = strings.Cut(string(b)[i+len(`"code":"`):], `"`)
		}
		return resp.StatusCode, code
	}

	for _, raw := range []string{ // as they go on the wire
		"../x", "%2e%2e/x", "..%2Fx", "%2E%2E%2Fx",
		"/etc/passwd", "%2Fetc%2Fpasswd",
		"a/../../b", "a%2F..%2F..%2Fb", "a/..%2F..%2Fb", "a%5C..%5C..%5Cb",
		"%2e%2e", ".", "a/.", "a%00b", "a%0Ab", "a%2F%2Fb", "a//b",
	} {
		if status, code := put(raw); status != http.StatusBadRequest || code != string(tasks.EInvalid) {
			t.Errorf("PUT artifacts/%s: %d %q; want 400 invalid", raw, status, code)
		}
	}
	if keys, _ := arts.List(t.Context(), ""); len(keys) > 0 {
		t.Errorf("store holds %q after hostile uploads; want nothing", keys)
	}
	var resp struct{ Artifacts []tasks.Artifact }
	e.must(alice, "GET", fmt.Sprintf("/api/v1/tasks/%d/artifacts", task.ID), nil, &resp)
	if len(resp.Artifacts) > 0 {
		t.Errorf("artifacts recorded after hostile uploads: %+v", resp.Artifacts)
	}

	// The test can fail: a good name is stored.
	prefix := fmt.Sprintf("tasks/%d/%d/", task.ID, ref.Attempt)
	if status, _ := put("out/ok.txt"); status != http.StatusCreated || !arts.has(prefix+"out/ok.txt") {
		t.Errorf("PUT out/ok.txt: %d; want 201 and the object stored", status)
	}
}

// TestDirectArtifactRefusesHostileNames asks for upload URLs and commits
// for names that climb out of the output directory: each is refused with
// 400 before a URL is handed out or a record written.
func TestDirectArtifactRefusesHostileNames(t *testing.T) {
	e, arts := newPresignEnv(t, coordinator.Config{})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "host-a", []string{"alice"}, 1)
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	presign := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-presign", task.ID)
	commit := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-commit", task.ID)
	const sum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" // of no bytes

	for _, name := range append([]string{"", "../../../../etc/passwd", "./../x"}, hostileNames...) {
		var p tasks.PresignResponse
		if status, err := w.call("POST", presign, tasks.PresignRequest{Lease: ref, Name: name, Size: 0}, &p); status != http.StatusBadRequest || err == nil || err.Code != tasks.EInvalid || err.Field != "name" {
			t.Errorf("presign %q: %d %+v %q; want 400 invalid on name, no URL", name, status, err, p.URL)
		}
		// A commit for the same name, as if the shim had put the bytes
		// somewhere by itself.
		if status, err := w.call("POST", commit, tasks.CommitRequest{Lease: ref, Name: name, Size: 0, SHA256: sum}, nil); status != http.StatusBadRequest || err == nil || err.Code != tasks.EInvalid || err.Field != "name" {
			t.Errorf("commit %q: %d %+v; want 400 invalid on name", name, status, err)
		}
	}
	if keys, _ := arts.List(t.Context(), ""); len(keys) != 0 {
		t.Errorf("store holds %q; want nothing", keys)
	}
	var resp struct{ Artifacts []tasks.Artifact }
	e.must(alice, "GET", fmt.Sprintf("/api/v1/tasks/%d/artifacts", task.ID), nil, &resp)
	if len(resp.Artifacts) != 0 {
		t.Errorf("artifacts listed after hostile commits: %+v; want none", resp.Artifacts)
	}
}
