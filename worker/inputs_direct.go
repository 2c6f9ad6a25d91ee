package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/mitolab/mito/tasks"
)

// Direct input fetches: in a session that sends artifacts directly (auto
// or direct), the worker asks the coordinator for a presigned GET of each
// input and reads it straight from the artifact store, so that the bytes
// do not cross the link. As for uploads, in auto mode a store that cannot
// be reached (or a coordinator that gives no URL) makes the rest of the
// session relay; in direct mode a failed fetch is retried as a relayed one
// is.

// openInput opens input number index of attempt a for reading: straight
// from the artifact store when the session says so, else through the
// coordinator. It returns the body, which the caller must close, its size
// (-1 when unknown), the hex sha256 to check, and whether the body comes
// straight from the store. A transfer error of a direct fetch in direct
// mode is a *badTransfer, which fetchInput retries; the coordinator's
// refusals are its *tasks.Error, as from FetchInput.
func (w *worker) openInput(ctx context.Context, a *attempt, s *session, index int, in tasks.Input) (io.ReadCloser, int64, string, bool, error) {
	// A GET has no size limit: any size goes.
	if s.directInputs && wantsDirect(s, 0) {
		auto := s.artifacts == tasks.ArtifactsAuto
		p, err := s.c.PresignInput(ctx, tasks.InputPresignRequest{Lease: a.ref, Index: index})
		switch {
		case err == nil:
			body, err := w.getDirect(ctx, p)
			if err == nil {
				return body, p.Size, p.SHA256, true, nil
			}
			var status *statusError
			switch {
			case ctx.Err() != nil:
				return nil, 0, "", false, ctx.Err()
			case auto && errors.As(err, &status):
				w.relayFromNowOn(s, "the store answered "+status.Status(), "status", status.code, "s3_code", status.s3Code)
			case auto:
				w.relayFromNowOn(s, "the store cannot be reached", keyErr, err)
			default:
				return nil, 0, "", false, &badTransfer{err}
			}
		case ctx.Err() != nil:
			return nil, 0, "", false, ctx.Err()
		case tasks.ErrorCode(err) == tasks.EInvalid && errorField(err) == "artifacts":
			// The store cannot presign, or the host relays: fetch this
			// input, and in auto mode the rest, through the coordinator.
			if auto {
				w.relayFromNowOn(s, "the coordinator gave no download URL", keyErr, err)
			} else {
				a.log.Info("cannot fetch input directly; fetching it through the coordinator", "input", in.String(), keyErr, err)
			}
		default:
			// Not found, a stale lease, an unreachable coordinator:
			// fetchInput decides, as for the relayed fetch.
			return nil, 0, "", false, err
		}
	}
	body, size, sum, err := s.c.FetchInput(ctx, a.ref, index)
	return body, size, sum, false, err
}

// getDirect opens the body of a presigned GET. The body is cut with
// errStalled once it makes no progress for directStall. The URL is a
// credential: errors leave its query out.
func (w *worker) getDirect(ctx context.Context, p *tasks.InputPresignResponse) (io.ReadCloser, error) {
	u, err := presignedURL(p.URL, "a download")
	if err != nil {
		return nil, err
	}
	method := p.Method
	if method == "" {
		method = http.MethodGet
	}
	ctx, cancel := context.WithCancelCause(ctx)
	body := &progressReader{}
	body.touch()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchStall(ctx, cancel, body)
	}()
	stop := func() {
		cancel(nil)
		<-watched
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		stop()
		return nil, fmt.Errorf("download request: %w", redactURL(err))
	}
	// The bytes as stored: a transparently decompressed body would not
	// match the recorded size.
	req.Header.Set("Accept-Encoding", "identity")
	where := u.Scheme + "://" + u.Host + u.Path
	resp, err := w.direct.Do(req)
	if err != nil {
		if c := context.Cause(ctx); errors.Is(c, errStalled) {
			err = c
		}
		stop()
		return nil, fmt.Errorf("%s %s: %w", method, where, redactURL(err))
	}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		stop()
		return nil, &statusError{code: resp.StatusCode, s3Code: s3ErrorCode(b)}
	}
	body.r = resp.Body
	return &directBody{p: body, body: resp.Body, ctx: ctx, stop: stop, where: method + " " + where}, nil
}

// directBody is the body of a direct download: it says errStalled for a
// body cut by the stall watch, and stops the watch when closed.
type directBody struct {
	p     *progressReader
	body  io.Closer
	ctx   context.Context
	stop  func()
	where string
}

func (d *directBody) Read(b []byte) (int, error) {
	n, err := d.p.Read(b)
	if err != nil && err != io.EOF {
		if c := context.Cause(d.ctx); errors.Is(c, errStalled) {
			err = c
		}
		err = fmt.Errorf("%s: %w", d.where, redactURL(err))
	}
	return n, err
}

func (d *directBody) Close() error {
	err := d.body.Close()
	d.stop()
	return err
}
