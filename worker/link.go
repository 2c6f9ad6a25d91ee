package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/transport/link"
)

// RunLink runs the worker over a link on r and w, the shim's stdin and
// stdout, with the coordinator serving the worker API on the other end (see
// link.ServeConn). cfg.Client is ignored. It returns when ctx ends or the
// link does, after killing everything it runs: a shim whose coordinator is
// gone has nobody to report to, and nothing may keep running on the host.
func RunLink(ctx context.Context, r io.Reader, w io.Writer, cfg Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var closeOnce sync.Once
	var closeErr error
	conn := link.NewConn(&endReader{r: r, end: cancel}, w, func() error {
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
	c, err := client.New(link.BaseURL, client.WithHTTPClient(link.HTTPClient(conn)))
	if err != nil {
		return fmt.Errorf("make link client: %w", err)
	}
	cfg.Client = c
	return Run(ctx, cfg)
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
