package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/transport/link"
)

// RunLink runs the worker over a link on r and w, the shim's stdin and
// stdout, with the coordinator serving the worker API on the other end (see
// link.ServeConn). It first writes link.Preamble on w, so that the
// coordinator can skip what the host's shell printed before the shim
// started. cfg.Client is ignored.
//
// It returns when ctx ends, when the link does (r ends or a write to w
// fails: the coordinator closed the link or the SSH session died), or when
// the coordinator has not answered any call for two lease TTLs (a
// half-open link), always after killing everything it runs and removing
// their working directories: a shim whose coordinator is gone has nobody
// to report to, and nothing may keep running on the host. The first two
// return nil; an unanswering coordinator is an error, as is a failure to
// write the preamble.
func RunLink(ctx context.Context, r io.Reader, w io.Writer, cfg Config) error {
	if _, err := io.WriteString(w, link.Preamble); err != nil {
		return fmt.Errorf("write link preamble: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var closeOnce sync.Once
	var closeErr error
	conn := link.NewConn(&endReader{r: r, end: cancel}, &endWriter{w: w, end: cancel}, func() error {
		cancel()
		closeOnce.Do(func() {
			var errs []error
			for _, c := range []any{r, w} {
				if c, ok := c.(io.Closer); ok {
					errs = append(errs, c.Close())
				}
			}
			closeErr = errors.Join(errs...)
		})
		return closeErr
	})
	defer conn.Close()
	hc := link.HTTPClient(conn)
	heard := newContactClock()
	hc.Transport = &contactTransport{rt: hc.Transport, heard: heard}
	c, err := client.New(link.BaseURL, client.WithHTTPClient(hc))
	if err != nil {
		return fmt.Errorf("make link client: %w", err)
	}
	cfg.Client = c
	return run(ctx, cfg, heard)
}

// endReader calls end when the link's read side ends: EOF means the
// coordinator closed the link (or the SSH session died).
type endReader struct {
	r   io.Reader
	end func()
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.end()
	}
	return n, err
}

// endWriter calls end when a write to the link fails: the other end is
// gone (EPIPE once sshd closed the shim's stdout), and nothing written
// will reach the coordinator any more.
type endWriter struct {
	w   io.Writer
	end func()
}

func (e *endWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.end()
	}
	return n, err
}

// contactClock records when the coordinator last answered a call.
type contactClock struct{ last atomic.Int64 } // UnixNano

func newContactClock() *contactClock {
	c := &contactClock{}
	c.touch()
	return c
}

func (c *contactClock) touch() { c.last.Store(time.Now().UnixNano()) }

// since returns how long ago the coordinator last answered.
func (c *contactClock) since() time.Duration {
	return time.Since(time.Unix(0, c.last.Load()))
}

// contactTransport notes every answer that comes from the coordinator,
// whatever its status: an answer, even an error, shows that the link
// works, which is what the worker's silence limit is about.
type contactTransport struct {
	rt    http.RoundTripper
	heard *contactClock
}

func (t *contactTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err == nil {
		t.heard.touch()
	}
	return resp, err
}
