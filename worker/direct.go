package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mitolab/mito/tasks"
)

// Direct uploads: the worker asks the coordinator for a presigned URL,
// PUTs the file straight to the artifact store (S3) over the host's own
// network, then asks the coordinator to record it. In auto mode the first
// failure (a refused presign, an unreachable store, an error answer from
// it) makes the rest of the session relay through the coordinator.

const (
	// directConnectTimeout bounds connecting to the artifact store: a host
	// that cannot reach it must find out fast, and relay.
	directConnectTimeout = 5 * time.Second
	// maxDirectPut is the largest object one S3 PUT may carry; larger
	// artifacts are relayed (the coordinator uploads them in parts).
	maxDirectPut = 5 << 30
)

// directStall is how long a direct upload may make no progress (no bytes
// taken, no answer) before it is given up. A variable for tests.
var directStall = 2 * time.Minute

// newDirectClient returns the client for direct uploads: the host's own
// network and proxy settings, a 5s connect timeout, and no overall
// timeout (an upload may be large; a stalled one is cut by directStall).
func newDirectClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: directConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: directStall,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}}
}

// directOutcome is how a direct upload ended.
type directOutcome int

const (
	directDone    directOutcome = iota // uploaded and recorded
	directRelay                        // send this artifact through the coordinator instead
	directSkip                         // give up this artifact, go on with the others
	directAbort                        // give up every artifact: the lease is gone or the worker stops
	directRefused                      // refused for good (over the group's quota): the attempt fails
)

// wantsDirect reports whether an artifact of size bytes goes straight to
// the store in session s.
func wantsDirect(s *session, size int64) bool {
	return s.artifacts != tasks.ArtifactsRelay && !s.noDirect.Load() && size <= maxDirectPut
}

// relayFromNowOn makes an auto session relay its remaining artifacts, and
// says so once.
func (w *worker) relayFromNowOn(s *session, why string, args ...any) {
	s.noDirect.Store(true)
	s.noDirectOnce.Do(func() {
		w.log.Warn("cannot upload artifacts directly to the artifact store ("+why+"); sending them through the coordinator for the rest of the session", args...)
	})
}

// uploadDirect sends one artifact by a presigned URL and records it. f is
// at any offset; size is what was found by stat. The error is the
// coordinator's refusal when the outcome is directRefused, else nil.
func (w *worker) uploadDirect(a *attempt, f *os.File, name string, size int64) (directOutcome, error) {
	bo := backoff{min: 500 * time.Millisecond, max: 10 * time.Second}
	for try := 1; ; try++ {
		s := w.cur()
		if !wantsDirect(s, size) {
			return directRelay, nil // a new session may have another mode
		}
		auto := s.artifacts == tasks.ArtifactsAuto
		p, err := s.c.PresignArtifact(a.ctx, tasks.PresignRequest{Lease: a.ref, Name: name, Size: size})
		if err != nil {
			switch {
			case a.ctx.Err() != nil:
				return directAbort, nil
			case tasks.ErrorCode(err) == tasks.EQuota:
				return directRefused, err
			case tasks.ErrorCode(err) == tasks.EUnauthorized && try < maxUploadTries:
				if !w.awaitSession(a.ctx, s) {
					return directAbort, nil
				}
				continue
			case leaseGone(err):
				a.log.Warn("coordinator refused an artifact: the lease is no longer current", "artifact", name, keyErr, err)
				a.abandon(fmt.Sprintf("artifact upload refused: %v", err))
				return directAbort, nil
			case retryable(err) && try < maxUploadTries:
				a.log.Warn("cannot get an upload URL for an artifact; retrying", "artifact", name, keyErr, err)
				if !sleep(a.ctx, bo.next()) {
					return directAbort, nil
				}
				continue
			}
			// Refused: the store cannot presign, or this name or size
			// cannot go directly. The relay says what it makes of it.
			if field := errorField(err); auto && field != "name" && field != "size" {
				w.relayFromNowOn(s, "the coordinator gave no upload URL", keyErr, err)
			} else {
				a.log.Info("cannot upload artifact directly; sending it through the coordinator", "artifact", name, keyErr, err)
			}
			return directRelay, nil
		}
		sum, err := w.putDirect(a.ctx, p, f, size)
		if err != nil {
			var changed *changedError
			var status *statusError
			switch {
			case a.ctx.Err() != nil:
				return directAbort, nil
			case errors.As(err, &changed):
				a.log.Warn("artifact changed while it was uploaded; not uploaded", "artifact", name, keyErr, err)
				return directSkip, nil
			case auto && errors.As(err, &status):
				w.relayFromNowOn(s, "the store answered "+status.Status(), "status", status.code, "s3_code", status.s3Code)
				return directRelay, nil
			case auto:
				w.relayFromNowOn(s, "the store cannot be reached", keyErr, err)
				return directRelay, nil
			case try >= maxUploadTries:
				a.log.Error("cannot upload artifact directly, and the inventory says not to relay; skipping it", "artifact", name, keyErr, err)
				return directSkip, nil
			}
			a.log.Warn("cannot upload artifact directly; retrying", "artifact", name, keyErr, err)
			if !sleep(a.ctx, bo.next()) {
				return directAbort, nil
			}
			continue
		}
		return w.commitDirect(a, name, size, sum)
	}
}

// commitDirect records an artifact the store holds, retrying transient
// failures. The error is the coordinator's refusal when the outcome is
// directRefused, else nil.
func (w *worker) commitDirect(a *attempt, name string, size int64, sum string) (directOutcome, error) {
	bo := backoff{min: 500 * time.Millisecond, max: 10 * time.Second}
	req := tasks.CommitRequest{Lease: a.ref, Name: name, Size: size, SHA256: sum}
	for try := 1; ; try++ {
		s := w.cur()
		_, err := s.c.CommitArtifact(a.ctx, req)
		switch {
		case err == nil:
			a.log.Info("artifact uploaded directly", "artifact", name, "size", size)
			return directDone, nil
		case a.ctx.Err() != nil:
			return directAbort, nil
		case tasks.ErrorCode(err) == tasks.EQuota:
			return directRefused, err
		case tasks.ErrorCode(err) == tasks.EUnauthorized && try < maxUploadTries:
			if !w.awaitSession(a.ctx, s) {
				return directAbort, nil
			}
			continue
		case leaseGone(err):
			a.log.Warn("coordinator refused an artifact: the lease is no longer current", "artifact", name, keyErr, err)
			a.abandon(fmt.Sprintf("artifact upload refused: %v", err))
			return directAbort, nil
		case !retryable(err) || try >= maxUploadTries:
			// The store lost or mangled the object (the coordinator deleted
			// it on a size mismatch): send it the other way.
			a.log.Warn("coordinator did not record the direct upload; sending the artifact through it", "artifact", name, keyErr, err)
			return directRelay, nil
		}
		a.log.Warn("cannot record artifact; retrying", "artifact", name, keyErr, err)
		if !sleep(a.ctx, bo.next()) {
			return directAbort, nil
		}
	}
}

// putDirect streams size bytes of f from its start to the presigned URL
// and returns their hex sha256. The bytes are read as they go out, never
// held whole. The URL is a credential: errors leave its query out.
func (w *worker) putDirect(ctx context.Context, p *tasks.PresignResponse, f *os.File, size int64) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", &changedError{err}
	}
	u, err := presignedURL(p.URL, "an upload")
	if err != nil {
		return "", err
	}
	method := p.Method
	if method == "" {
		method = http.MethodPut
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	h := sha256.New()
	body := &progressReader{r: io.TeeReader(io.LimitReader(f, size), h)}
	body.touch()
	go watchStall(ctx, cancel, body)

	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return "", fmt.Errorf("upload request: %w", redactURL(err))
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	where := u.Scheme + "://" + u.Host + u.Path
	resp, err := w.direct.Do(req)
	if err != nil {
		if c := context.Cause(ctx); errors.Is(c, errStalled) {
			err = c
		}
		if body.n.Load() < size && body.eof.Load() {
			return "", &changedError{fmt.Errorf("read %d of %d bytes", body.n.Load(), size)}
		}
		return "", fmt.Errorf("%s %s: %w", method, where, redactURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return "", &statusError{code: resp.StatusCode, s3Code: s3ErrorCode(b)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if n := body.n.Load(); n != size {
		return "", &changedError{fmt.Errorf("sent %d of %d bytes", n, size)}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// presignedURL parses a URL from the coordinator for a direct upload or
// download (what: "an upload", "a download"), refusing one that is not http(s). The error leaves the
// URL out: it is a credential.
func presignedURL(raw, what string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("the coordinator sent %s URL that is not http(s)", what)
	}
	return u, nil
}

// errStalled cuts a direct upload that stopped making progress.
var errStalled = errors.New("the upload made no progress for too long")

// watchStall cancels ctx with errStalled once r has not been read for
// directStall; it returns when ctx ends.
func watchStall(ctx context.Context, cancel context.CancelCauseFunc, r *progressReader) {
	t := time.NewTicker(min(directStall/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, r.last.Load())) > directStall {
				cancel(errStalled)
				return
			}
		}
	}
}

// progressReader counts what is read and when it last was.
type progressReader struct {
	r    io.Reader
	n    atomic.Int64
	last atomic.Int64 // UnixNano
	eof  atomic.Bool
}

func (p *progressReader) touch() { p.last.Store(time.Now().UnixNano()) }

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	p.touch()
	if err == io.EOF {
		p.eof.Store(true)
	}
	return n, err
}

// changedError is a file that did not give the bytes its size promised.
type changedError struct{ err error }

func (e *changedError) Error() string { return "the file changed: " + e.err.Error() }
func (e *changedError) Unwrap() error { return e.err }

// statusError is an error answer from the artifact store.
type statusError struct {
	code   int
	s3Code string // "AccessDenied", "SignatureDoesNotMatch", ...; may be empty
}

func (e *statusError) Status() string {
	s := fmt.Sprintf("%d %s", e.code, http.StatusText(e.code))
	if e.s3Code != "" {
		s += " (" + e.s3Code + ")"
	}
	return s
}

func (e *statusError) Error() string { return "artifact store answered " + e.Status() }

// s3ErrorCode returns the Code of an S3 XML error body, or "".
func s3ErrorCode(body []byte) string {
	_, rest, ok := strings.Cut(string(body), "<Code>")
	code, _, ok2 := strings.Cut(rest, "</Code>")
	if !ok || !ok2 || len(code) > 64 || strings.ContainsAny(code, "<> \n\t") {
		return ""
	}
	return code
}

// redactURL drops the URL, and so the presigned query, from an HTTP
// client error.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errorField returns the field of a tasks.Error, or "".
func errorField(err error) string {
	var e *tasks.Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}
