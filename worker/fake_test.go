package worker

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// fakeCoord is an in-memory coordinator that speaks the worker protocol,
// for fast unit tests of the loop. The real coordinator's end-to-end tests
// drive the shim against the real thing.
type fakeCoord struct {
	t   *testing.T
	srv *httptest.Server

	// mu guards the fields below.
	mu sync.Mutex
	// reg is the answer to registrations; changing reg.Session makes the
	// coordinator forget the old session, as a restart does.
	reg     tasks.RegisterResponse
	changed chan struct{} // closed and replaced on every change
	nextID  tasks.ID
	queue   []tasks.ID
	tasks   map[tasks.ID]*fakeTask
	// Failure injection.
	failHeartbeats  bool                  // answer heartbeats with 503
	hang            bool                  // answer nothing until cleared, like a half-open link
	revoked         bool                  // refuse every call, registrations too, with 401
	failRegister    int                   // answer this many more registrations with 503
	claimDelay      time.Duration         // answer claims this long after granting the leases
	failLogs        map[tasks.Stream]bool // refuse log writes of these streams with 400
	presignURL      string                // when set, presigned URLs point here instead of at the fake S3
	s3Status        int                   // when set, the fake S3 answers PUTs with this status
	refusePresign   bool                  // refuse presigns as a store that cannot presign does
	registered      tasks.RegisterRequest // the last registration
	registrations   []tasks.RegisterRequest
	releases        []tasks.ReleaseRequest // release calls, in order
	deregistrations []tasks.ReleaseRequest // deregister calls, in order
	heartbeatsSeen  int
	claimed, maxRun int // attempts claimed and not finished; the most at once
	// Direct uploads: the fake S3 behind the presigned URLs, what it holds
	// (by task/attempt/name) and what went which way.
	s3                         *httptest.Server
	s3obj                      map[string][]byte
	presigns, commits, relayed int
	directNames, relayedNames  []string
	// overQuota names artifacts refused with 413 quota_exceeded, relayed
	// or committed, as a group over its storage quota gets.
	overQuota map[string]bool
}

// fakeInput is what the fake serves for one input of a task.
type fakeInput struct {
	body []byte
	// missing, when set, is the 404 message served instead of the body.
	missing string
	// corrupt is how many more fetches get a body that does not match
	// its sha256; fetches counts them all.
	corrupt, fetches int
	// stall sends half the body, then nothing until the caller gives up.
	stall bool
	// presigns and direct count presigned fetches asked for and served
	// by the fake S3.
	presigns, direct int
}

type fakeTask struct {
	task      tasks.Task
	token     string
	logs      map[tasks.Stream][]byte
	artifacts map[string][]byte
	result    *tasks.Result
	stop      string    // when set, heartbeats answer Stop with this reason
	staleLogs bool      // when set, log writes get 409 stale_lease
	granted   time.Time // when the current attempt's lease was granted
	finishes  int       // finish calls for the task, refused or not
	// inputs are served for Spec.Inputs by index.
	inputs []*fakeInput
}

func newFake(t *testing.T, reg tasks.RegisterResponse) *fakeCoord {
	t.Helper()
	f := &fakeCoord{t: t, reg: reg, changed: make(chan struct{}), tasks: make(map[tasks.ID]*fakeTask)}
	if f.reg.Session == "" {
		f.reg.Session = "session-1"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /worker/v1/register", f.register)
	mux.HandleFunc("POST /worker/v1/claim", f.session(f.claim))
	mux.HandleFunc("POST /worker/v1/heartbeat", f.session(f.heartbeat))
	mux.HandleFunc("POST /worker/v1/tasks/{id}/log", f.session(f.log))
	mux.HandleFunc("PUT /worker/v1/tasks/{id}/artifacts/{name...}", f.session(f.artifact))
	mux.HandleFunc("POST /worker/v1/tasks/{id}/finish", f.session(f.finish))
	mux.HandleFunc("POST /worker/v1/tasks/{id}/artifacts-presign", f.session(f.presign))
	mux.HandleFunc("POST /worker/v1/tasks/{id}/artifacts-commit", f.session(f.commit))
	mux.HandleFunc("GET /worker/v1/tasks/{id}/inputs/{index}", f.session(f.input))
	mux.HandleFunc("POST /worker/v1/tasks/{id}/inputs-presign", f.session(f.inputPresign))
	mux.HandleFunc("POST /worker/v1/release", f.session(f.release))
	mux.HandleFunc("POST /worker/v1/deregister", f.session(f.deregister))
	f.srv = httptest.NewServer(f.hangable(mux))
	t.Cleanup(f.srv.Close)
	f.s3obj = make(map[string][]byte)
	f.s3 = httptest.NewServer(http.HandlerFunc(f.s3put))
	t.Cleanup(f.s3.Close)
	return f
}

// s3put is the fake S3: it stores PUTs whose URL carries the signature,
// streaming with a Content-Length, as S3 wants them.
func (f *fakeCoord) s3put(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		f.s3get(w, r)
		return
	}
	f.mu.Lock()
	status := f.s3Status
	f.mu.Unlock()
	switch {
	case status != 0:
		http.Error(w, "<Error><Code>AccessDenied</Code></Error>", status)
		return
	case r.Method != http.MethodPut || r.URL.Query().Get("X-Amz-Signature") != "sig":
		http.Error(w, "<Error><Code>SignatureDoesNotMatch</Code></Error>", http.StatusForbidden)
		return
	case r.ContentLength < 0 || r.Header.Get("Content-Type") != "application/octet-stream":
		http.Error(w, "<Error><Code>MissingContentLength</Code></Error>", http.StatusLengthRequired)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	f.mu.Lock()
	f.s3obj[strings.TrimPrefix(r.URL.Path, "/")] = body
	f.mu.Unlock()
}

func (f *fakeCoord) presign(w http.ResponseWriter, r *http.Request) {
	var req tasks.PresignRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.presigns++
	if f.refusePresign || f.reg.Artifacts == "" || f.reg.Artifacts == tasks.ArtifactsRelay {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, "the artifact store cannot take direct uploads")
		return
	}
	ft := f.lease(w, r.PathValue("id"), req.Lease.Attempt, req.Lease.Token)
	if ft == nil {
		return
	}
	base := f.s3.URL
	if f.presignURL != "" {
		base = f.presignURL
	}
	key := fmt.Sprintf("%d/%d/%s", ft.task.ID, req.Lease.Attempt, url.PathEscape(req.Name))
	writeJSON(w, tasks.PresignResponse{
		URL:     base + "/" + key + "?X-Amz-Signature=sig",
		Method:  http.MethodPut,
		Headers: map[string]string{"Content-Type": "application/octet-stream"},
		Expires: time.Now().Add(time.Minute),
	})
}

func (f *fakeCoord) commit(w http.ResponseWriter, r *http.Request) {
	var req tasks.CommitRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commits++
	ft := f.lease(w, r.PathValue("id"), req.Lease.Attempt, req.Lease.Token)
	if ft == nil {
		return
	}
	if f.overQuota[req.Name] {
		writeErr(w, http.StatusRequestEntityTooLarge, tasks.EQuota, "group lab is over its storage quota of 10 bytes")
		return
	}
	body, ok := f.s3obj[fmt.Sprintf("%d/%d/%s", ft.task.ID, req.Lease.Attempt, req.Name)]
	switch {
	case !ok:
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, "nothing uploaded")
		return
	case int64(len(body)) != req.Size:
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, "size mismatch")
		return
	case fmt.Sprintf("%x", sha256.Sum256(body)) != req.SHA256:
		f.t.Errorf("commit %s: sha256 %s does not match the bytes uploaded", req.Name, req.SHA256)
	}
	ft.artifacts[req.Name] = body
	f.directNames = append(f.directNames, req.Name)
	w.WriteHeader(http.StatusCreated)
	writeJSON(w, tasks.Artifact{Task: ft.task.ID, Attempt: req.Lease.Attempt, Name: req.Name, Size: req.Size, SHA256: req.SHA256})
}

// hangable holds every request while hang is set, and answers nothing to
// those whose callers give up meanwhile.
func (f *fakeCoord) hangable(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			f.mu.Lock()
			hang, ch := f.hang, f.changed
			f.mu.Unlock()
			if !hang {
				break
			}
			select {
			case <-ch:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// broadcast wakes every waiter; the caller holds mu.
func (f *fakeCoord) broadcast() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func writeErr(w http.ResponseWriter, status int, code tasks.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": tasks.Error{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeCoord) session(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		ok := f.sessionOK(r)
		f.mu.Unlock()
		if !ok {
			writeErr(w, http.StatusUnauthorized, tasks.EUnauthorized, "unknown worker session: register again")
			return
		}
		h(w, r)
	}
}

// sessionOK reports whether r's session is the current one; the caller
// holds mu. Long polls check again when they wake, as a restarted
// coordinator no longer answers them.
func (f *fakeCoord) sessionOK(r *http.Request) bool {
	return !f.revoked && r.Header.Get("X-Mito-Session") == f.reg.Session
}

// restart makes the coordinator forget the worker's session, as a restart
// does; fn, if not nil, changes its tasks meanwhile.
func (f *fakeCoord) restart(session string, fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reg.Session = session
	if fn != nil {
		fn()
	}
	f.broadcast()
}

func (f *fakeCoord) register(w http.ResponseWriter, r *http.Request) {
	var req tasks.RegisterRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revoked {
		writeErr(w, http.StatusUnauthorized, tasks.EUnauthorized, "token revoked")
		return
	}
	if f.failRegister > 0 {
		f.failRegister--
		writeErr(w, http.StatusServiceUnavailable, tasks.EUnavailable, "down for the test")
		return
	}
	f.registered = req
	f.registrations = append(f.registrations, req)
	resp := f.reg
	for _, ref := range req.Running {
		if ft := f.tasks[ref.Task]; ft != nil && ft.stop != "" {
			resp.Stop = append(resp.Stop, tasks.Stop{Task: ref.Task, Attempt: ref.Attempt, Reason: ft.stop})
		}
	}
	writeJSON(w, resp)
}

// release queues again the attempts named that hold their leases, as the
// coordinator does.
func (f *fakeCoord) release(w http.ResponseWriter, r *http.Request) {
	var req tasks.ReleaseRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases = append(f.releases, req)
	writeJSON(w, tasks.ReleaseResponse{Released: f.releaseLocked(req.Attempts)})
}

func (f *fakeCoord) deregister(w http.ResponseWriter, r *http.Request) {
	var req tasks.ReleaseRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deregistrations = append(f.deregistrations, req)
	f.releaseLocked(req.Attempts)
	w.WriteHeader(http.StatusNoContent)
}

// releaseLocked requeues the current attempts among refs; f.mu is held.
func (f *fakeCoord) releaseLocked(refs []tasks.LeaseRef) []tasks.LeaseRef {
	released := []tasks.LeaseRef{}
	for _, ref := range refs {
		ft := f.tasks[ref.Task]
		if ft == nil || ft.result != nil || ft.token != ref.Token || ft.task.Attempt != ref.Attempt {
			continue
		}
		ft.token, ft.task.State = "", tasks.Queued
		f.queue = append(f.queue, ft.task.ID)
		f.claimed--
		released = append(released, ref)
	}
	f.broadcast()
	return released
}

func (f *fakeCoord) claim(w http.ResponseWriter, r *http.Request) {
	var req tasks.ClaimRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	timer := time.NewTimer(time.Duration(req.Wait))
	defer timer.Stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	expired := false
	for len(f.queue) == 0 && f.sessionOK(r) && !expired {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			expired = true
		case <-r.Context().Done():
			expired = true
		}
		f.mu.Lock()
	}
	if !f.sessionOK(r) {
		writeErr(w, http.StatusUnauthorized, tasks.EUnauthorized, "unknown worker session: register again")
		return
	}
	resp := tasks.ClaimResponse{Assignments: []tasks.Assignment{}}
	for len(f.queue) > 0 && len(resp.Assignments) < req.Max {
		ft := f.tasks[f.queue[0]]
		f.queue = f.queue[1:]
		ft.task.Attempt++
		ft.task.State = tasks.Running
		ft.token = fmt.Sprintf("token-%d-%d", ft.task.ID, ft.task.Attempt)
		ft.granted = time.Now()
		ref := tasks.LeaseRef{Task: ft.task.ID, Attempt: ft.task.Attempt, Token: ft.token}
		resp.Assignments = append(resp.Assignments, tasks.Assignment{Lease: tasks.Lease{LeaseRef: ref, Expires: time.Now().Add(time.Duration(f.reg.LeaseTTL))}, Task: ft.task})
		f.claimed++
		f.maxRun = max(f.maxRun, f.claimed)
	}
	if d := f.claimDelay; d > 0 && len(resp.Assignments) > 0 {
		f.mu.Unlock()
		time.Sleep(d)
		f.mu.Lock()
	}
	writeJSON(w, resp)
}

func (f *fakeCoord) heartbeat(w http.ResponseWriter, r *http.Request) {
	var req tasks.HeartbeatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	timer := time.NewTimer(time.Duration(req.Wait))
	defer timer.Stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeatsSeen++
	if f.failHeartbeats {
		writeErr(w, http.StatusServiceUnavailable, tasks.EUnavailable, "down for the test")
		return
	}
	for {
		if !f.sessionOK(r) {
			writeErr(w, http.StatusUnauthorized, tasks.EUnauthorized, "unknown worker session: register again")
			return
		}
		var resp tasks.HeartbeatResponse
		for _, ref := range req.Running {
			if ft := f.tasks[ref.Task]; ft != nil && ft.stop != "" {
				resp.Stop = append(resp.Stop, tasks.Stop{Task: ref.Task, Attempt: ref.Attempt, Reason: ft.stop})
			}
		}
		if len(resp.Stop) > 0 {
			writeJSON(w, resp)
			return
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
			f.mu.Lock()
			continue
		case <-timer.C:
		case <-r.Context().Done():
		}
		f.mu.Lock()
		writeJSON(w, resp)
		return
	}
}

// lease finds the task of a write and checks its lease; it answers and
// returns nil when the write must be refused. The caller holds mu.
func (f *fakeCoord) lease(w http.ResponseWriter, id string, attempt int, token string) *fakeTask {
	n, _ := strconv.ParseInt(id, 10, 64)
	ft := f.tasks[tasks.ID(n)]
	switch {
	case ft == nil:
		writeErr(w, http.StatusNotFound, tasks.ENotFound, "no such task")
	case ft.token != token || ft.task.Attempt != attempt || ft.result != nil:
		writeErr(w, http.StatusConflict, tasks.EStaleLease, "lease is no longer current")
	default:
		return ft
	}
	return nil
}

func (f *fakeCoord) log(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	attempt, _ := strconv.Atoi(r.URL.Query().Get("attempt"))
	offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	stream, err := tasks.ParseStream(r.URL.Query().Get("stream"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.lease(w, r.PathValue("id"), attempt, r.Header.Get("X-Mito-Lease"))
	if ft == nil {
		return
	}
	if f.failLogs[stream] {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, "refused for the test")
		return
	}
	if ft.staleLogs {
		writeErr(w, http.StatusConflict, tasks.EStaleLease, "lease is no longer current")
		return
	}
	buf := ft.logs[stream]
	if offset > len(buf) {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, fmt.Sprintf("offset: %d is past the end %d", offset, len(buf)))
		return
	}
	if end := offset + len(body); end > len(buf) {
		buf = append(buf[:offset:offset], body...)
	}
	ft.logs[stream] = buf
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeCoord) artifact(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if int64(len(body)) != r.ContentLength {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, "length mismatch")
		return
	}
	attempt, _ := strconv.Atoi(r.URL.Query().Get("attempt"))
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.lease(w, r.PathValue("id"), attempt, r.Header.Get("X-Mito-Lease"))
	if ft == nil {
		return
	}
	if f.overQuota[r.PathValue("name")] {
		writeErr(w, http.StatusRequestEntityTooLarge, tasks.EQuota, "group lab is over its storage quota of 10 bytes")
		return
	}
	ft.artifacts[r.PathValue("name")] = body
	f.relayed++
	f.relayedNames = append(f.relayedNames, r.PathValue("name"))
	w.WriteHeader(http.StatusNoContent)
}

// input serves an input of a running attempt, fenced by its lease, with
// its size and sha256, as the coordinator does.
func (f *fakeCoord) input(w http.ResponseWriter, r *http.Request) {
	attempt, _ := strconv.Atoi(r.URL.Query().Get("attempt"))
	index, _ := strconv.Atoi(r.PathValue("index"))
	f.mu.Lock()
	ft := f.lease(w, r.PathValue("id"), attempt, r.Header.Get("X-Mito-Lease"))
	if ft == nil {
		f.mu.Unlock()
		return
	}
	if index < 0 || index >= len(ft.inputs) {
		f.mu.Unlock()
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, "index: out of range")
		return
	}
	in := ft.inputs[index]
	in.fetches++
	body, missing, stall := in.body, in.missing, in.stall
	corrupt := in.corrupt > 0
	if corrupt {
		in.corrupt--
	}
	f.broadcast()
	f.mu.Unlock()
	if missing != "" {
		writeErr(w, http.StatusNotFound, tasks.ENotFound, missing)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("X-Mito-Sha256", fmt.Sprintf("%x", sha256.Sum256(body)))
	if corrupt && len(body) > 0 {
		body = append([]byte{body[0] ^ 1}, body[1:]...)
	}
	if stall {
		_, _ = w.Write(body[:len(body)/2])
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
		return
	}
	_, _ = w.Write(body)
}

// inputPresign answers a presigned GET of an input on the fake S3, as a
// coordinator with DirectInputs does.
func (f *fakeCoord) inputPresign(w http.ResponseWriter, r *http.Request) {
	var req tasks.InputPresignRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refusePresign || !f.reg.DirectInputs || f.reg.Artifacts == "" || f.reg.Artifacts == tasks.ArtifactsRelay {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": tasks.Error{Code: tasks.EInvalid, Field: "artifacts", Message: "inputs: the artifact store cannot serve direct downloads"}})
		return
	}
	ft := f.lease(w, r.PathValue("id"), req.Lease.Attempt, req.Lease.Token)
	if ft == nil {
		return
	}
	if req.Index < 0 || req.Index >= len(ft.inputs) {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, "index: out of range")
		return
	}
	in := ft.inputs[req.Index]
	in.presigns++
	f.broadcast()
	if in.missing != "" {
		writeErr(w, http.StatusNotFound, tasks.ENotFound, in.missing)
		return
	}
	base := f.s3.URL
	if f.presignURL != "" {
		base = f.presignURL
	}
	writeJSON(w, tasks.InputPresignResponse{
		URL:     fmt.Sprintf("%s/inputs/%d/%d?X-Amz-Signature=sig", base, ft.task.ID, req.Index),
		Method:  http.MethodGet,
		Expires: time.Now().Add(time.Minute),
		Size:    int64(len(in.body)),
		SHA256:  fmt.Sprintf("%x", sha256.Sum256(in.body)),
	})
}

// s3get is the fake S3 serving an input by a presigned GET.
func (f *fakeCoord) s3get(w http.ResponseWriter, r *http.Request) {
	var id tasks.ID
	var index int
	if _, err := fmt.Sscanf(r.URL.Path, "/inputs/%d/%d", &id, &index); err != nil || r.URL.Query().Get("X-Amz-Signature") != "sig" {
		http.Error(w, "<Error><Code>SignatureDoesNotMatch</Code></Error>", http.StatusForbidden)
		return
	}
	f.mu.Lock()
	ft := f.tasks[id]
	if ft == nil || index < 0 || index >= len(ft.inputs) {
		f.mu.Unlock()
		http.Error(w, "<Error><Code>NoSuchKey</Code></Error>", http.StatusNotFound)
		return
	}
	in := ft.inputs[index]
	in.direct++
	body := in.body
	f.broadcast()
	f.mu.Unlock()
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func (f *fakeCoord) finish(w http.ResponseWriter, r *http.Request) {
	var req tasks.FinishRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	if err := req.Result.Validate(); err != nil {
		writeErr(w, http.StatusBadRequest, tasks.EInvalid, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if ft := f.tasks[req.Lease.Task]; ft != nil {
		ft.finishes++
	}
	ft := f.lease(w, r.PathValue("id"), req.Lease.Attempt, req.Lease.Token)
	if ft == nil {
		return
	}
	res := req.Result
	ft.result = &res
	ft.task.State = res.State
	f.claimed--
	f.broadcast()
	writeJSON(w, ft.task)
}

// submit queues a task and returns its id.
func (f *fakeCoord) submit(spec tasks.Spec) tasks.ID { return f.submitInputs(spec) }

// submitInputs queues a task that serves inputs for its Spec.Inputs.
func (f *fakeCoord) submitInputs(spec tasks.Spec, inputs ...*fakeInput) tasks.ID {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	id := f.nextID
	if spec.Timeout == 0 {
		spec.Timeout = tasks.Duration(time.Minute)
	}
	f.tasks[id] = &fakeTask{
		task:      tasks.Task{ID: id, Spec: spec, State: tasks.Queued},
		logs:      make(map[tasks.Stream][]byte),
		artifacts: make(map[string][]byte),
		inputs:    inputs,
	}
	f.queue = append(f.queue, id)
	f.broadcast()
	return id
}

// with runs fn on a task under the lock, and wakes waiters.
func (f *fakeCoord) with(id tasks.ID, fn func(ft *fakeTask)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.tasks[id])
	f.broadcast()
}

// waitResult waits for the task's reported result.
func (f *fakeCoord) waitResult(t *testing.T, id tasks.ID, timeout time.Duration) tasks.Result {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		ft := f.tasks[id]
		res, ch := ft.result, f.changed
		f.mu.Unlock()
		if res != nil {
			return *res
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("task %d: no result after %s", id, timeout)
		}
	}
}

// snapshotTask returns a copy of what the fake knows of a task.
func (f *fakeCoord) snapshotTask(id tasks.ID) (logs map[tasks.Stream]string, artifacts map[string]string, res *tasks.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.tasks[id]
	logs = map[tasks.Stream]string{}
	for k, v := range ft.logs {
		logs[k] = string(v)
	}
	artifacts = map[string]string{}
	for k, v := range ft.artifacts {
		artifacts[k] = string(v)
	}
	return logs, artifacts, ft.result
}
