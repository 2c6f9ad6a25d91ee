package coordinator_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

// presignStore is an in-memory artifact store that presigns uploads and
// downloads, like S3: its URLs point at its own HTTP server.
type presignStore struct {
	srv *httptest.Server
	mu  sync.Mutex
	obj map[string][]byte
}

func newPresignStore(t *testing.T) *presignStore {
	s := &presignStore{obj: map[string][]byte{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method != http.MethodPut && r.Method != http.MethodGet) || r.URL.Query().Get("sig") != "ok" {
			http.Error(w, "<Error><Code>SignatureDoesNotMatch</Code></Error>", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodGet {
			s.mu.Lock()
			b, ok := s.obj[strings.TrimPrefix(r.URL.Path, "/")]
			s.mu.Unlock()
			if !ok {
				http.Error(w, "<Error><Code>NoSuchKey</Code></Error>", http.StatusNotFound)
				return
			}
			_, _ = w.Write(b)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.obj[strings.TrimPrefix(r.URL.Path, "/")] = b
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *presignStore) Put(ctx context.Context, key string, r io.Reader) (int64, string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return 0, "", err
	}
	s.mu.Lock()
	s.obj[key] = b
	s.mu.Unlock()
	return int64(len(b)), fmt.Sprintf("%x", sha256.Sum256(b)), nil
}

func (s *presignStore) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.obj[key]
	if !ok {
		return nil, 0, tasks.Errorf(tasks.ENotFound, "%s: not found", key)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (s *presignStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	delete(s.obj, key)
	s.mu.Unlock()
	return nil
}

func (s *presignStore) List(ctx context.Context, prefix string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.obj {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

func (s *presignStore) PresignPut(ctx context.Context, key string, expiry time.Duration) (*url.URL, error) {
	return url.Parse(s.srv.URL + "/" + key + "?sig=ok")
}

func (s *presignStore) PresignGet(ctx context.Context, key string, expiry time.Duration, filename string) (*url.URL, error) {
	return url.Parse(s.srv.URL + "/" + key + "?sig=ok")
}

func (s *presignStore) Stat(ctx context.Context, key string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.obj[key]
	if !ok {
		return 0, tasks.Errorf(tasks.ENotFound, "%s: not found", key)
	}
	return int64(len(b)), nil
}

func (s *presignStore) has(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.obj[key]
	return ok
}

// newPresignEnv is newEnv on a presigning artifact store.
func newPresignEnv(t *testing.T, cfg coordinator.Config) (*env, *presignStore) {
	t.Helper()
	arts := newPresignStore(t)
	cfg.Artifacts = arts
	return newEnv(t, cfg), arts
}

func putURL(t *testing.T, p tasks.PresignResponse, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(p.Method, p.URL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDirectArtifactUpload(t *testing.T) {
	e, arts := newPresignEnv(t, coordinator.Config{})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})

	var reg tasks.RegisterResponse
	e.must(alice, "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "host-a", Groups: []string{"alice"}}, &reg)
	if reg.Artifacts != tasks.ArtifactsAuto {
		t.Errorf("register: artifacts = %q; want auto for a TCP worker on a presigning store", reg.Artifacts)
	}
	w := &worker{e: e, token: alice, session: reg.Session}
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	presign := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-presign", task.ID)
	commit := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-commit", task.ID)

	data := []byte("direct bytes")
	sum := fmt.Sprintf("%x", sha256.Sum256(data))
	var p tasks.PresignResponse
	if _, err := w.call("POST", presign, tasks.PresignRequest{Lease: ref, Name: "./out/r.txt", Size: int64(len(data))}, &p); err != nil {
		t.Fatalf("presign: %s", err.Message)
	}
	if p.Method != http.MethodPut || !p.Expires.After(time.Now()) {
		t.Errorf("presign = %+v; want a PUT URL that has not expired", p)
	}
	if code := putURL(t, p, data); code != http.StatusOK {
		t.Fatalf("PUT to the presigned URL: %d", code)
	}
	var a tasks.Artifact
	if status, err := w.call("POST", commit, tasks.CommitRequest{Lease: ref, Name: "out/r.txt", Size: int64(len(data)), SHA256: sum}, &a); err != nil || status != http.StatusCreated {
		t.Fatalf("commit: %d %+v", status, err)
	}
	if a.Name != "out/r.txt" || a.Size != int64(len(data)) || a.SHA256 != sum || a.Attempt != 1 {
		t.Errorf("committed %+v", a)
	}
	var resp struct{ Artifacts []tasks.Artifact }
	e.must(alice, "GET", fmt.Sprintf("/api/v1/tasks/%d/artifacts", task.ID), nil, &resp)
	if list := resp.Artifacts; len(list) != 1 || list[0].Name != "out/r.txt" || list[0].SHA256 != sum {
		t.Errorf("artifacts listed: %+v", list)
	}

	// Bad names are refused before any URL is handed out.
	for _, name := range []string{"../x", "/etc/passwd", "a/../../b", ""} {
		if status, err := w.call("POST", presign, tasks.PresignRequest{Lease: ref, Name: name, Size: 1}, nil); status != http.StatusBadRequest || err.Code != tasks.EInvalid {
			t.Errorf("presign %q: %d %+v; want 400 invalid", name, status, err)
		}
	}

	// A size that does not match what the store holds: 400, and the object is gone.
	if _, err := w.call("POST", presign, tasks.PresignRequest{Lease: ref, Name: "short", Size: 10}, &p); err != nil {
		t.Fatalf("presign: %s", err.Message)
	}
	putURL(t, p, []byte("12345"))
	key := fmt.Sprintf("tasks/%d/1/short", task.ID)
	if !arts.has(key) {
		t.Fatalf("%s not in the store after the PUT", key)
	}
	if status, err := w.call("POST", commit, tasks.CommitRequest{Lease: ref, Name: "short", Size: 10, SHA256: sum}, nil); status != http.StatusBadRequest || err.Field != "size" {
		t.Errorf("commit with the wrong size: %d %+v; want 400 on size", status, err)
	}
	if arts.has(key) {
		t.Errorf("%s still in the store after a size mismatch", key)
	}
	// Nothing uploaded: 400, not 404 (which a worker takes for a lost task).
	if status, err := w.call("POST", commit, tasks.CommitRequest{Lease: ref, Name: "never", Size: 1, SHA256: sum}, nil); status != http.StatusBadRequest {
		t.Errorf("commit of nothing: %d %+v; want 400", status, err)
	}
	if status, _ := w.call("POST", commit, tasks.CommitRequest{Lease: ref, Name: "x", Size: 1, SHA256: "XYZ"}, nil); status != http.StatusBadRequest {
		t.Errorf("commit with a bad sha256: %d; want 400", status)
	}
	if status, _ := w.call("POST", presign, tasks.PresignRequest{Lease: tasks.LeaseRef{Task: task.ID + 1, Attempt: 1, Token: ref.Token}, Name: "x", Size: 1}, nil); status != http.StatusBadRequest {
		t.Errorf("presign with a lease of another task than the path's: %d; want 400", status)
	}
}

func TestDirectArtifactUploadIsLeaseFenced(t *testing.T) {
	e, arts := newPresignEnv(t, coordinator.Config{LeaseTTL: time.Second})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	a := e.worker(alice, "host-a", []string{"alice"}, 1)
	ref := a.claim(1, 0)[0].Lease.LeaseRef
	presign := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-presign", task.ID)
	commit := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-commit", task.ID)
	data := []byte("late")
	sum := fmt.Sprintf("%x", sha256.Sum256(data))

	// A wrong token gets no URL, and its commit deletes nothing of the
	// running attempt's.
	forged := ref
	forged.Token = "forged"
	if status, err := a.call("POST", presign, tasks.PresignRequest{Lease: forged, Name: "f", Size: 4}, nil); status != http.StatusConflict || err.Code != tasks.EStaleLease {
		t.Errorf("presign with a forged token: %d %+v; want 409 stale_lease", status, err)
	}
	var p tasks.PresignResponse
	if _, err := a.call("POST", presign, tasks.PresignRequest{Lease: ref, Name: "f", Size: 4}, &p); err != nil {
		t.Fatalf("presign: %s", err.Message)
	}
	putURL(t, p, data)
	key := fmt.Sprintf("tasks/%d/1/f", task.ID)
	if status, _ := a.call("POST", commit, tasks.CommitRequest{Lease: forged, Name: "f", Size: 4, SHA256: sum}, nil); status != http.StatusConflict {
		t.Errorf("commit with a forged token: %d; want 409", status)
	}
	if !arts.has(key) {
		t.Fatalf("a forged commit deleted the running attempt's upload")
	}

	// The lease runs out (host-a stops renewing); the task is requeued.
	// The late commit is refused and its upload deleted.
	e.waitState(alice, task.ID, 10*time.Second, tasks.Queued)
	if status, err := a.call("POST", commit, tasks.CommitRequest{Lease: ref, Name: "f", Size: 4, SHA256: sum}, nil); status != http.StatusConflict || err.Code != tasks.EStaleLease {
		t.Errorf("late commit: %d %+v; want 409 stale_lease", status, err)
	}
	if arts.has(key) {
		t.Errorf("%s still in the store after a stale commit", key)
	}
	if status, _ := a.call("POST", presign, tasks.PresignRequest{Lease: ref, Name: "g", Size: 4}, nil); status != http.StatusConflict {
		t.Errorf("late presign: %d; want 409", status)
	}
	var resp struct{ Artifacts []tasks.Artifact }
	e.must(alice, "GET", fmt.Sprintf("/api/v1/tasks/%d/artifacts", task.ID), nil, &resp)
	if len(resp.Artifacts) != 0 {
		t.Errorf("artifacts recorded after stale commits: %+v", resp.Artifacts)
	}
}

func TestDirectArtifactUploadNeedsAPresigningStore(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	var reg tasks.RegisterResponse
	e.must(alice, "POST", "/worker/v1/register", tasks.RegisterRequest{Name: "host-a", Groups: []string{"alice"}}, &reg)
	if reg.Artifacts != tasks.ArtifactsRelay {
		t.Errorf("register on a local artifact directory: artifacts = %q; want relay", reg.Artifacts)
	}
	w := &worker{e: e, token: alice, session: reg.Session}
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	status, err := w.call("POST", fmt.Sprintf("/worker/v1/tasks/%d/artifacts-presign", task.ID), tasks.PresignRequest{Lease: ref, Name: "x", Size: 1}, nil)
	if status != http.StatusBadRequest || err.Field != "artifacts" {
		t.Errorf("presign on a local directory: %d %+v; want 400 on artifacts", status, err)
	}
}
