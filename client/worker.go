package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/mitolab/mito/tasks"
)

// Worker protocol calls (see tasks/protocol.go). A shim or `mito worker`
// calls Register once, then the others; every write for a task carries its
// lease, so that a write for an attempt that was given away is refused with
// a tasks.EStaleLease error.

// LeaseHeader carries a lease token on the worker calls whose body is raw
// bytes and so cannot hold a LeaseRef.
const LeaseHeader = "X-Mito-Lease"

// Register starts a worker session and keeps its id for the calls that
// follow. Call it before any other worker call and not concurrently with
// them: it writes the client's session, which is not guarded. A worker that
// registers again while other goroutines still send (after the coordinator
// forgot its session) uses RegisterSession instead.
func (c *Client) Register(ctx context.Context, req tasks.RegisterRequest) (*tasks.RegisterResponse, error) {
	var resp tasks.RegisterResponse
	if err := c.do(ctx, http.MethodPost, "/worker/v1/register", req, &resp); err != nil {
		return nil, err
	}
	c.session = resp.Session
	return &resp, nil
}

// RegisterSession starts a worker session like Register but leaves c as it
// is: it returns a new client, sharing c's coordinator, credentials and
// HTTP client, that sends the new session. No client's session is ever
// written while it may be in use, so it is safe to call while other
// goroutines send requests with c or with a client of an earlier session;
// a caller switches to the new session by swapping the client it uses.
func (c *Client) RegisterSession(ctx context.Context, req tasks.RegisterRequest) (*Client, *tasks.RegisterResponse, error) {
	var resp tasks.RegisterResponse
	if err := c.do(ctx, http.MethodPost, "/worker/v1/register", req, &resp); err != nil {
		return nil, nil, err
	}
	sc := *c
	sc.session = resp.Session
	return &sc, &resp, nil
}

// Claim asks for up to req.Max tasks, waiting up to req.Wait for one. An
// empty answer means the wait ran out.
func (c *Client) Claim(ctx context.Context, req tasks.ClaimRequest) (*tasks.ClaimResponse, error) {
	var resp tasks.ClaimResponse
	if err := c.do(ctx, http.MethodPost, "/worker/v1/claim", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Heartbeat renews the leases of the running attempts and waits up to
// req.Wait for one of them to be stopped.
func (c *Client) Heartbeat(ctx context.Context, req tasks.HeartbeatRequest) (*tasks.HeartbeatResponse, error) {
	var resp tasks.HeartbeatResponse
	if err := c.do(ctx, http.MethodPost, "/worker/v1/heartbeat", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// AppendLog writes data to an attempt's output stream at byte offset. The
// offset makes a retry after a lost answer harmless: the coordinator keeps
// bytes it already has.
func (c *Client) AppendLog(ctx context.Context, ref tasks.LeaseRef, stream tasks.Stream, offset int64, data []byte) error {
	q := url.Values{}
	q.Set("attempt", strconv.Itoa(ref.Attempt))
	q.Set("stream", string(stream))
	q.Set("offset", strconv.FormatInt(offset, 10))
	path := fmt.Sprintf("/worker/v1/tasks/%d/log?%s", ref.Task, q.Encode())
	return c.sendRaw(ctx, http.MethodPost, path, ref, bytes.NewReader(data), int64(len(data)))
}

// UploadArtifact streams size bytes from r as the artifact name of an
// attempt. name is a relative path with '/' separators. r is read as the
// request goes out, never held in memory whole; reading more or fewer than
// size bytes fails the upload.
func (c *Client) UploadArtifact(ctx context.Context, ref tasks.LeaseRef, name string, r io.Reader, size int64) error {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	path := fmt.Sprintf("/worker/v1/tasks/%d/artifacts/%s?attempt=%d", ref.Task, strings.Join(segs, "/"), ref.Attempt)
	return c.sendRaw(ctx, http.MethodPut, path, ref, io.LimitReader(r, size), size)
}

// PresignArtifact asks for a URL to upload an artifact of size bytes
// straight to the artifact store. A coordinator whose store cannot presign
// refuses with a tasks.EInvalid error.
func (c *Client) PresignArtifact(ctx context.Context, req tasks.PresignRequest) (*tasks.PresignResponse, error) {
	var resp tasks.PresignResponse
	path := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-presign", req.Lease.Task)
	if err := c.do(ctx, http.MethodPost, path, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// CommitArtifact records an artifact uploaded by a URL from
// PresignArtifact. The coordinator checks the size; the sha256 is the
// caller's.
func (c *Client) CommitArtifact(ctx context.Context, req tasks.CommitRequest) (*tasks.Artifact, error) {
	var a tasks.Artifact
	path := fmt.Sprintf("/worker/v1/tasks/%d/artifacts-commit", req.Lease.Task)
	if err := c.do(ctx, http.MethodPost, path, req, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// PresignInput asks for a URL to fetch an input of the leased attempt
// straight from the artifact store. It fails as FetchInput does for an
// input that cannot be had, and with a tasks.EInvalid error on the field
// "artifacts" when the coordinator wants the input fetched through it.
func (c *Client) PresignInput(ctx context.Context, req tasks.InputPresignRequest) (*tasks.InputPresignResponse, error) {
	var resp tasks.InputPresignResponse
	path := fmt.Sprintf("/worker/v1/tasks/%d/inputs-presign", req.Lease.Task)
	if err := c.do(ctx, http.MethodPost, path, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// FetchInput opens input number index (in Spec.Inputs order) of an
// attempt for reading, streaming it rather than holding it in memory. It
// returns the body, which the caller must close, its size (-1 when the
// coordinator did not say) and the hex SHA-256 the coordinator recorded,
// which the caller must check once it has read the whole body. An input
// that cannot be had now is a tasks.ENotFound error whose message names
// it.
func (c *Client) FetchInput(ctx context.Context, ref tasks.LeaseRef, index int) (io.ReadCloser, int64, string, error) {
	path := fmt.Sprintf("/worker/v1/tasks/%d/inputs/%d?attempt=%d", ref.Task, index, ref.Attempt)
	req, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, 0, "", err
	}
	req.Header.Set(LeaseHeader, ref.Token)
	// The bytes as stored: a transparently decompressed body would not
	// match the recorded size.
	req.Header.Set("Accept", "application/octet-stream")
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.send(req)
	if err != nil {
		return nil, 0, "", err
	}
	return resp.Body, resp.ContentLength, strings.ToLower(resp.Header.Get("X-Mito-Sha256")), nil
}

// Finish reports the end of an attempt and returns the task as stored.
func (c *Client) Finish(ctx context.Context, ref tasks.LeaseRef, res tasks.Result) (*tasks.Task, error) {
	var t tasks.Task
	path := fmt.Sprintf("/worker/v1/tasks/%d/finish", ref.Task)
	if err := c.do(ctx, http.MethodPost, path, tasks.FinishRequest{Lease: ref, Result: res}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// sendRaw sends a raw body of known length with the lease token.
func (c *Client) sendRaw(ctx context.Context, method, path string, ref tasks.LeaseRef, body io.Reader, size int64) error {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(LeaseHeader, ref.Token)
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// Release ends attempts that are dead on the worker's host before their
// leases run out, so that the coordinator queues them again at once.
func (c *Client) Release(ctx context.Context, req tasks.ReleaseRequest) (*tasks.ReleaseResponse, error) {
	var resp tasks.ReleaseResponse
	if err := c.do(ctx, http.MethodPost, "/worker/v1/release", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Deregister ends the worker's session: it releases the attempts req
// names, and the coordinator shows the host offline at once.
func (c *Client) Deregister(ctx context.Context, req tasks.ReleaseRequest) error {
	return c.do(ctx, http.MethodPost, "/worker/v1/deregister", req, nil)
}
