package coordinator_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/tasks"
)

// hookStore is an artifact store that runs afterPut once an object is
// stored, to change the world between an upload and its record.
type hookStore struct {
	artifacts.Store
	mu       sync.Mutex
	afterPut func(key string)
}

func (h *hookStore) Put(ctx context.Context, key string, r io.Reader) (int64, string, error) {
	n, sum, err := h.Store.Put(ctx, key, r)
	h.mu.Lock()
	hook := h.afterPut
	h.mu.Unlock()
	if err == nil && hook != nil {
		hook(key)
	}
	return n, sum, err
}

// newAttachmentEnv is newEnv on an artifact directory the test can list.
func newAttachmentEnv(t *testing.T) (*env, *hookStore) {
	t.Helper()
	dir, err := artifacts.NewDir(filepath.Join(t.TempDir(), "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	arts := &hookStore{Store: dir}
	return newEnv(t, coordinator.Config{Artifacts: arts}), arts
}

// keys lists the artifact store under prefix.
func keys(t *testing.T, s artifacts.Store, prefix string) []string {
	t.Helper()
	ks, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func attachmentURL(group, key string) string {
	return "/api/v1/groups/" + group + "/attachments/" + key
}

// fetch does a GET and returns the status, the headers and the body.
func (e *env) fetch(token, path string) (int, http.Header, string) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func (e *env) attachments(token, group, query string) []tasks.Attachment {
	e.t.Helper()
	var out struct{ Attachments []tasks.Attachment }
	e.must(token, "GET", "/api/v1/groups/"+group+"/attachments"+query, nil, &out)
	return out.Attachments
}

func (e *env) group(token, name string) tasks.Group {
	e.t.Helper()
	var g tasks.Group
	e.must(token, "GET", "/api/v1/groups/"+name, nil, &g)
	return g
}

func sha(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

func TestAttachmentsCRUD(t *testing.T) {
	e, arts := newAttachmentEnv(t)
	alice := e.user("alice")

	// A raw "." segment in the path is refused before routing (the
	// router would redirect to another name); an escaped one is cleaned.
	if status, err := e.call(alice, "PUT", attachmentURL("alice", "data/./a.csv"), "hello", nil); status != http.StatusBadRequest || err == nil || err.Code != tasks.EInvalid {
		t.Errorf("upload to data/./a.csv: %d %+v; want 400 invalid", status, err)
	}
	var a tasks.Attachment
	if status, err := e.call(alice, "PUT", attachmentURL("alice", "data%2F.%2Fa.csv"), "hello", &a); status != http.StatusCreated || err != nil {
		t.Fatalf("upload: %d %+v", status, err)
	}
	if a.Group != "alice" || a.Key != "data/a.csv" || a.Size != 5 || a.SHA256 != sha("hello") || a.Creator != "alice" || a.CreatedAt.IsZero() {
		t.Errorf("uploaded %+v", a)
	}
	if got := e.attachments(alice, "alice", ""); len(got) != 1 || got[0].Key != a.Key || got[0].SHA256 != a.SHA256 || got[0].Size != a.Size || got[0].Creator != a.Creator || got[0].CreatedAt.Sub(a.CreatedAt).Abs() > time.Millisecond {
		t.Errorf("list: got %+v; want [%+v]", got, a)
	}
	if got := e.attachments(alice, "alice", "?prefix=data/"); len(got) != 1 {
		t.Errorf("list with prefix data/: got %+v; want one", got)
	}
	if got := e.attachments(alice, "alice", "?prefix=other/"); len(got) != 0 {
		t.Errorf("list with prefix other/: got %+v; want none", got)
	}
	status, h, body := e.fetch(alice, attachmentURL("alice", "data/a.csv"))
	if status != http.StatusOK || body != "hello" || h.Get("Content-Length") != "5" || h.Get("X-Mito-Sha256") != sha("hello") {
		t.Errorf("download: %d %q, headers %v", status, body, h)
	}
	stored := keys(t, arts, "attachments/alice/")
	if len(stored) != 1 {
		t.Fatalf("store holds %v; want one object", stored)
	}
	// The store's key never reaches users.
	if _, _, listing := e.fetch(alice, "/api/v1/groups/alice/attachments"); strings.Contains(listing, stored[0]) {
		t.Errorf("the listing shows the object key: %s", listing)
	}

	// A replacement takes a new object and drops the old one.
	e.must(alice, "PUT", attachmentURL("alice", "data/a.csv"), "hello world", &a)
	if _, _, body := e.fetch(alice, attachmentURL("alice", "data/a.csv")); body != "hello world" {
		t.Errorf("after replacing: got %q", body)
	}
	if now := keys(t, arts, "attachments/alice/"); len(now) != 1 || now[0] == stored[0] {
		t.Errorf("after replacing the store holds %v; want one object, not %s", now, stored[0])
	}
	if g := e.group(alice, "alice"); g.UsedBytes != 11 {
		t.Errorf("used_bytes = %d; want 11", g.UsedBytes)
	}
	// An empty file is a file.
	if status, err := e.call(alice, "PUT", attachmentURL("alice", "empty"), "", &a); status != http.StatusCreated || a.Size != 0 {
		t.Errorf("empty upload: %d %+v %+v", status, err, a)
	}

	e.must(alice, "DELETE", attachmentURL("alice", "data/a.csv"), nil, nil)
	e.must(alice, "DELETE", attachmentURL("alice", "empty"), nil, nil)
	if status, err := e.call(alice, "GET", attachmentURL("alice", "data/a.csv"), nil, nil); status != http.StatusNotFound || err.Code != tasks.ENotFound {
		t.Errorf("download after delete: %d %+v; want 404", status, err)
	}
	if status, err := e.call(alice, "DELETE", attachmentURL("alice", "data/a.csv"), nil, nil); status != http.StatusNotFound {
		t.Errorf("second delete: %d %+v; want 404", status, err)
	}
	if got := e.attachments(alice, "alice", ""); len(got) != 0 {
		t.Errorf("list after delete: %+v", got)
	}
	if left := keys(t, arts, "attachments/"); len(left) != 0 {
		t.Errorf("store holds %v after delete; want nothing", left)
	}
	if g := e.group(alice, "alice"); g.UsedBytes != 0 {
		t.Errorf("used_bytes after delete = %d; want 0", g.UsedBytes)
	}

	// Keys that are not clean relative paths are refused.
	for _, key := range []string{"a%5Cb", "a%01b", "%2Fabs"} {
		if status, err := e.call(alice, "PUT", attachmentURL("alice", key), "x", nil); status != http.StatusBadRequest || err.Field != "key" {
			t.Errorf("upload to %s: %d %+v; want 400 on key", key, status, err)
		}
	}
	if left := keys(t, arts, "attachments/"); len(left) != 0 {
		t.Errorf("store holds %v after refused uploads; want nothing", left)
	}
}

func TestAttachmentRoles(t *testing.T) {
	e, _ := newAttachmentEnv(t)
	alice, bob, carol, dave := e.user("alice"), e.user("bob"), e.user("carol"), e.user("dave")
	e.must(alice, "POST", "/api/v1/groups", map[string]string{"name": "lab"}, nil)
	e.must(alice, "PUT", "/api/v1/groups/lab/members/bob", map[string]string{"role": "read"}, nil)
	e.must(alice, "PUT", "/api/v1/groups/lab/members/carol", map[string]string{"role": "write"}, nil)
	e.must(alice, "PUT", attachmentURL("lab", "in.txt"), "data", nil)

	tests := []struct {
		who, token     string
		method, key    string
		wantStatus     int
		wantCode       tasks.Code
		wantBodyIfRead string
	}{
		{"reader lists", bob, "GET", "", 200, "", ""},
		{"reader downloads", bob, "GET", "in.txt", 200, "", "data"},
		{"reader may not upload", bob, "PUT", "new.txt", 403, tasks.EForbidden, ""},
		{"reader may not delete", bob, "DELETE", "in.txt", 403, tasks.EForbidden, ""},
		{"writer uploads", carol, "PUT", "new.txt", 201, "", ""},
		{"writer deletes", carol, "DELETE", "new.txt", 204, "", ""},
		{"stranger cannot list", dave, "GET", "", 404, tasks.ENotFound, ""},
		{"stranger cannot download", dave, "GET", "in.txt", 404, tasks.ENotFound, ""},
		{"stranger cannot upload", dave, "PUT", "x", 404, tasks.ENotFound, ""},
		{"stranger cannot delete", dave, "DELETE", "in.txt", 404, tasks.ENotFound, ""},
	}
	for _, tt := range tests {
		path := "/api/v1/groups/lab/attachments"
		if tt.key != "" {
			path = attachmentURL("lab", tt.key)
		}
		var in any
		if tt.method == "PUT" {
			in = "new"
		}
		if tt.wantBodyIfRead != "" {
			if status, _, body := e.fetch(tt.token, path); status != tt.wantStatus || body != tt.wantBodyIfRead {
				t.Errorf("%s: %d %q; want %d %q", tt.who, status, body, tt.wantStatus, tt.wantBodyIfRead)
			}
			continue
		}
		status, err := e.call(tt.token, tt.method, path, in, nil)
		if status != tt.wantStatus || (tt.wantCode != "" && (err == nil || err.Code != tt.wantCode)) {
			t.Errorf("%s: %d %+v; want %d %s", tt.who, status, err, tt.wantStatus, tt.wantCode)
		}
	}
	// A stranger learns nothing: not found, as for a group that does not exist.
	_, stranger := e.call(dave, "GET", "/api/v1/groups/lab/attachments", nil, nil)
	_, missing := e.call(dave, "GET", "/api/v1/groups/nosuch/attachments", nil, nil)
	if stranger == nil || missing == nil || strings.ReplaceAll(stranger.Message, "lab", "nosuch") != missing.Message {
		t.Errorf("stranger got %+v, unknown group %+v; want the same answer", stranger, missing)
	}

	// Quotas are for global admins, not for the group's own admins.
	if status, err := e.call(alice, "PUT", "/api/v1/groups/lab/quota", map[string]int64{"bytes": 0}, nil); status != http.StatusForbidden || err.Code != tasks.EForbidden {
		t.Errorf("group admin sets the quota: %d %+v; want 403", status, err)
	}
	var g tasks.Group
	if status, err := e.call(e.admin, "PUT", "/api/v1/groups/lab/quota", map[string]int64{"bytes": 1 << 20}, &g); status != http.StatusOK || g.QuotaBytes != 1<<20 || g.UsedBytes != 4 {
		t.Errorf("admin sets the quota: %d %+v %+v; want quota 1 MiB, 4 bytes used", status, err, g)
	}
	if g := e.group(bob, "lab"); g.QuotaBytes != 1<<20 || g.UsedBytes != 4 {
		t.Errorf("group as a reader sees it: %+v", g)
	}
	var list struct{ Groups []tasks.Group }
	e.must(alice, "GET", "/api/v1/groups", nil, &list)
	if i := slices.IndexFunc(list.Groups, func(g tasks.Group) bool { return g.Name == "lab" }); i < 0 || list.Groups[i].QuotaBytes != 1<<20 || list.Groups[i].UsedBytes != 4 {
		t.Errorf("group list: %+v; want lab with its quota and usage", list.Groups)
	}
	for _, tt := range []struct {
		path string
		body any
		want int
	}{
		{"/api/v1/groups/nosuch/quota", map[string]int64{"bytes": 1}, http.StatusNotFound},
		{"/api/v1/groups/lab/quota", map[string]int64{"bytes": -1}, http.StatusBadRequest},
		{"/api/v1/groups/lab/quota", map[string]any{}, http.StatusBadRequest},
		{"/api/v1/groups/lab/quota", map[string]string{"bytes": "10GiB"}, http.StatusBadRequest},
	} {
		if status, err := e.call(e.admin, "PUT", tt.path, tt.body, nil); status != tt.want {
			t.Errorf("PUT %s %v: %d %+v; want %d", tt.path, tt.body, status, err, tt.want)
		}
	}
}

func TestAttachmentQuota(t *testing.T) {
	e, arts := newAttachmentEnv(t)
	alice := e.user("alice")
	e.must(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 10}, nil)
	e.must(alice, "PUT", attachmentURL("alice", "k"), "12345678", nil)

	// Refused with nothing recorded and nothing left in the store.
	status, err := e.call(alice, "PUT", attachmentURL("alice", "k2"), "12345", nil)
	if status != http.StatusRequestEntityTooLarge || err.Code != tasks.EQuota || !strings.Contains(err.Message, "quota") {
		t.Errorf("upload over quota: %d %+v; want 413 quota_exceeded", status, err)
	}
	// A replacement that does not fit leaves the old file whole.
	if status, err := e.call(alice, "PUT", attachmentURL("alice", "k"), "12345678901", nil); status != http.StatusRequestEntityTooLarge || err.Code != tasks.EQuota {
		t.Errorf("replacement over quota: %d %+v; want 413 quota_exceeded", status, err)
	}
	// A body of unknown length is cut off once it passes the room left.
	req, _ := http.NewRequest("PUT", e.srv.URL+attachmentURL("alice", "k3"), io.MultiReader(strings.NewReader(strings.Repeat("x", 64<<10))))
	req.Header.Set("Authorization", "Bearer "+alice)
	req.ContentLength = -1
	resp, herr := e.srv.Client().Do(req)
	if herr != nil {
		t.Fatal(herr)
	}
	var chunked struct{ Error tasks.Error }
	_ = json.NewDecoder(resp.Body).Decode(&chunked)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || chunked.Error.Code != tasks.EQuota {
		t.Errorf("chunked upload over quota: %d %+v; want 413 quota_exceeded", resp.StatusCode, chunked.Error)
	}
	if got := e.attachments(alice, "alice", ""); len(got) != 1 || got[0].Key != "k" {
		t.Errorf("after refusals the list is %+v; want only k", got)
	}
	if _, _, body := e.fetch(alice, attachmentURL("alice", "k")); body != "12345678" {
		t.Errorf("k holds %q after a refused replacement; want the old bytes", body)
	}
	if stored := keys(t, arts, "attachments/"); len(stored) != 1 {
		t.Errorf("store holds %v; want only k's object", stored)
	}
	if g := e.group(alice, "alice"); g.UsedBytes != 8 {
		t.Errorf("used_bytes = %d; want 8", g.UsedBytes)
	}

	// The replaced file's bytes count as room: 10 bytes replace 8 under 10.
	e.must(alice, "PUT", attachmentURL("alice", "k"), "1234567890", nil)

	// A quota lowered under the usage refuses later uploads, and a delete
	// makes room again.
	e.must(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 5}, nil)
	if status, _ := e.call(alice, "PUT", attachmentURL("alice", "small"), "1", nil); status != http.StatusRequestEntityTooLarge {
		t.Errorf("upload over a lowered quota: %d; want 413", status)
	}
	e.must(alice, "DELETE", attachmentURL("alice", "k"), nil, nil)
	e.must(alice, "PUT", attachmentURL("alice", "small"), "1", nil)
	e.must(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 0}, nil)
	e.must(alice, "PUT", attachmentURL("alice", "big"), strings.Repeat("x", 1000), nil)
}

// TestAttachmentRecordRefusedByQuota: when the quota fills between the
// early check and the record (a concurrent upload), the store refuses the
// record and the new object is deleted.
func TestAttachmentRecordRefusedByQuota(t *testing.T) {
	e, arts := newAttachmentEnv(t)
	alice := e.user("alice")
	e.must(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 10}, nil)
	e.must(alice, "PUT", attachmentURL("alice", "k"), "old", nil)
	hookErr := setHook(e, arts, alice, "attachments/", "filler", "1234567")
	status, err := e.call(alice, "PUT", attachmentURL("alice", "k"), "newer", nil)
	if status != http.StatusRequestEntityTooLarge || err.Code != tasks.EQuota {
		t.Errorf("upload that lost the race: %d %+v; want 413 quota_exceeded", status, err)
	}
	if err := hookErr(); err != nil {
		t.Fatal(err)
	}
	if _, _, body := e.fetch(alice, attachmentURL("alice", "k")); body != "old" {
		t.Errorf("k holds %q; want the old bytes", body)
	}
	if stored := keys(t, arts, "attachments/"); len(stored) != 2 {
		t.Errorf("store holds %v; want the objects of k and filler only", stored)
	}
}

// setHook makes the next Put under prefix upload the attachment key of
// alice's group, once, and returns how that upload went. The hook's own
// upload, stored while the first Put waits, does not fire it again.
func setHook(e *env, arts *hookStore, token, prefix, key, content string) func() error {
	var (
		fired atomic.Bool
		done  = make(chan error, 1)
	)
	arts.mu.Lock()
	arts.afterPut = func(stored string) {
		if !strings.HasPrefix(stored, prefix) || fired.Swap(true) {
			return
		}
		req, _ := http.NewRequest("PUT", e.srv.URL+attachmentURL("alice", key), strings.NewReader(content))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				err = fmt.Errorf("upload of %s from the hook: %s", key, resp.Status)
			}
		}
		done <- err
	}
	arts.mu.Unlock()
	return func() error {
		arts.mu.Lock()
		arts.afterPut = nil
		arts.mu.Unlock()
		select {
		case err := <-done:
			return err
		default:
			return fmt.Errorf("the hook never ran")
		}
	}
}

// putArtifact relays an artifact as a worker does.
func (w *worker) putArtifact(ref tasks.LeaseRef, name, data string) (int, *tasks.Error) {
	w.e.t.Helper()
	url := fmt.Sprintf("%s/worker/v1/tasks/%d/artifacts/%s?attempt=%d", w.e.srv.URL, ref.Task, name, ref.Attempt)
	req, _ := http.NewRequest("PUT", url, strings.NewReader(data))
	req.Header.Set("X-Mito-Session", w.session)
	req.Header.Set("X-Mito-Lease", ref.Token)
	resp, err := w.e.srv.Client().Do(req)
	if err != nil {
		w.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Error *tasks.Error }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Error
}

func TestArtifactOverQuota(t *testing.T) {
	e, arts := newAttachmentEnv(t)
	alice := e.user("alice")
	e.must(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 10}, nil)
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "host-a", []string{"alice"}, 1)
	ref := w.claim(1, 0)[0].Lease.LeaseRef

	// Refused before the bytes are taken.
	status, err := w.putArtifact(ref, "big.bin", strings.Repeat("x", 11))
	if status != http.StatusRequestEntityTooLarge || err == nil || err.Code != tasks.EQuota {
		t.Errorf("artifact over quota: %d %+v; want 413 quota_exceeded", status, err)
	}
	if status, err := w.putArtifact(ref, "ok.bin", "12345"); status != http.StatusCreated {
		t.Fatalf("artifact under quota: %d %+v", status, err)
	}
	// Refused at the record, when an attachment took the room meanwhile:
	// the object is deleted.
	hookErr := setHook(e, arts, alice, "tasks/", "filler", "1234")
	status, err = w.putArtifact(ref, "late.bin", "123")
	if status != http.StatusRequestEntityTooLarge || err == nil || err.Code != tasks.EQuota {
		t.Errorf("artifact that lost the race: %d %+v; want 413 quota_exceeded", status, err)
	}
	if err := hookErr(); err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("tasks/%d/1/ok.bin", task.ID)}
	if got := keys(t, arts, "tasks/"); !slices.Equal(got, want) {
		t.Errorf("store holds %v; want %v", got, want)
	}
	var list struct{ Artifacts []tasks.Artifact }
	e.must(alice, "GET", fmt.Sprintf("/api/v1/tasks/%d/artifacts", task.ID), nil, &list)
	if len(list.Artifacts) != 1 || list.Artifacts[0].Name != "ok.bin" {
		t.Errorf("artifacts recorded: %+v; want only ok.bin", list.Artifacts)
	}
	if g := e.group(alice, "alice"); g.UsedBytes != 9 {
		t.Errorf("used_bytes = %d; want 9 (ok.bin and filler)", g.UsedBytes)
	}
}

func TestDirectArtifactOverQuota(t *testing.T) {
	e, arts := newPresignEnv(t, coordinator.Config{})
	alice := e.user("alice")
	e.must(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 10}, nil)
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "host-a", []string{"alice"}, 1)
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	presign := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-presign", task.ID)
	commit := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-commit", task.ID)

	// No URL for what cannot fit.
	if status, err := w.call("POST", presign, tasks.PresignRequest{Lease: ref, Name: "big", Size: 11}, nil); status != http.StatusRequestEntityTooLarge || err.Code != tasks.EQuota {
		t.Errorf("presign over quota: %d %+v; want 413 quota_exceeded", status, err)
	}
	// An upload that fitted when presigned but not when committed is deleted.
	var p tasks.PresignResponse
	if _, err := w.call("POST", presign, tasks.PresignRequest{Lease: ref, Name: "f", Size: 8}, &p); err != nil {
		t.Fatalf("presign: %s", err.Message)
	}
	putURL(t, p, []byte("12345678"))
	e.must(alice, "PUT", attachmentURL("alice", "filler"), "12345", nil)
	status, err := w.call("POST", commit, tasks.CommitRequest{Lease: ref, Name: "f", Size: 8, SHA256: sha("12345678")}, nil)
	if status != http.StatusRequestEntityTooLarge || err.Code != tasks.EQuota {
		t.Errorf("commit over quota: %d %+v; want 413 quota_exceeded", status, err)
	}
	if key := fmt.Sprintf("tasks/%d/1/f", task.ID); arts.has(key) {
		t.Errorf("%s still in the store after a refused commit", key)
	}
}
