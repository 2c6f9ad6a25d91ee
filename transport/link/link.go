// Package link runs mito's worker HTTP API over a single byte stream: a
// child process's stdin and stdout, or an SSH session's. The shim has no
// other way to reach the coordinator (no TCP forwarding, no route back), so
// the stream carries HTTP/2 with prior knowledge (h2c): every call is its own
// stream, and a long poll never holds up a log upload. Because it is plain
// HTTP, the coordinator serves the very same handler over TCP and over a link.
//
// The coordinator side calls ServeConn on the child's stdout/stdin; the shim
// side makes its client with HTTPClient and uses the base URL BaseURL.
//
// HTTP/2 comes from net/http itself (Protocols.SetUnencryptedHTTP2 and
// http.ClientConn), which Go 1.26 supports natively: golang.org/x/net/http2
// marks its Transport, Server and ServeConn deprecated in favour of it.
package link

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// BaseURL is the coordinator URL to use with a client from HTTPClient. The
// host part is never resolved: every request goes over the link.
const BaseURL = "http://link"

// ErrRedial is returned for a request after the link's HTTP/2 connection has
// ended: a byte stream cannot be dialled again, so the caller must make a new
// link (the coordinator restarts the shim, the shim exits).
var ErrRedial = errors.New("link is closed and cannot be redialled")

// addr is the dummy address of both ends of a link.
type addr struct{}

func (addr) Network() string { return "link" }
func (addr) String() string  { return "link" }

// conn is a net.Conn over a reader and a writer.
type conn struct {
	r     io.Reader
	w     io.Writer
	close func() error

	// wmu serialises writes: net.Conn allows concurrent Write calls, an
	// arbitrary io.Writer need not.
	wmu sync.Mutex

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
}

// NewConn wraps a pipe pair as a net.Conn, so that HTTP/2 can run over it.
// close is called once by the first Close; it must make a Read blocked on r
// return (closing an *os.File from os.Pipe does, as does closing an SSH
// session). When close is nil, Close closes r and w if they are io.Closers.
// Deadlines are passed on to r and w when they support them (an *os.File
// from os.Pipe does) and are otherwise ignored.
func NewConn(r io.Reader, w io.Writer, close func() error) net.Conn {
	if close == nil {
		close = func() error {
			var errs []error
			if c, ok := r.(io.Closer); ok {
				errs = append(errs, c.Close())
			}
			if c, ok := w.(io.Closer); ok && any(w) != any(r) {
				errs = append(errs, c.Close())
			}
			return errors.Join(errs...)
		}
	}
	return &conn{r: r, w: w, close: close, closed: make(chan struct{})}
}

func (c *conn) Read(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	n, err := c.r.Read(p)
	if err != nil {
		select {
		case <-c.closed:
			// The read failed because we closed the stream; say so in the
			// way net/http expects.
			return n, net.ErrClosed
		default:
		}
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.w.Write(p)
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.closeErr = c.close()
	})
	return c.closeErr
}

func (c *conn) LocalAddr() net.Addr  { return addr{} }
func (c *conn) RemoteAddr() net.Addr { return addr{} }

func (c *conn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

type readDeadliner interface{ SetReadDeadline(time.Time) error }
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

func (c *conn) SetReadDeadline(t time.Time) error {
	if d, ok := c.r.(readDeadliner); ok {
		_ = d.SetReadDeadline(t) // a pipe without poller support cannot; that is fine
	}
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	if d, ok := c.w.(writeDeadliner); ok {
		_ = d.SetWriteDeadline(t)
	}
	return nil
}

// h2cOnly is the protocol set of both ends: HTTP/2 with prior knowledge and
// nothing else, so that neither side ever falls back to HTTP/1, which could
// carry only one request at a time.
func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

// http2Config tunes both ends. Windows are larger than the defaults because
// an SSH link can have a long round trip and artifacts can be large; pings
// find a link that hangs without closing.
func http2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxReceiveBufferPerConnection: 8 << 20,
		MaxReceiveBufferPerStream:     4 << 20,
		SendPingTimeout:               30 * time.Second,
		PingTimeout:                   15 * time.Second,
	}
}

// HTTPClient returns an HTTP client whose every request goes over conn as
// HTTP/2, whatever the URL's host (use BaseURL). Requests are multiplexed on
// the one connection; past the server's stream limit they wait rather than
// dial. Once the connection has ended, requests fail with ErrRedial.
func HTTPClient(conn net.Conn) *http.Client {
	lt := &linkTransport{}
	var dialMu sync.Mutex
	dialed := false
	lt.tr = &http.Transport{
		Protocols:          h2cOnly(),
		HTTP2:              http2Config(),
		DisableCompression: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			dialMu.Lock()
			defer dialMu.Unlock()
			if dialed {
				return nil, ErrRedial
			}
			dialed = true
			return conn, nil
		},
	}
	return &http.Client{Transport: lt}
}

// linkTransport sends every request on one http.ClientConn, made on first
// use because making it writes to the link and may fail.
type linkTransport struct {
	tr *http.Transport

	mu  sync.Mutex
	cc  *http.ClientConn
	err error
}

func (t *linkTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	cc, err := t.clientConn(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // RoundTrip must close the body, even on error
		}
		return nil, err
	}
	return cc.RoundTrip(req)
}

func (t *linkTransport) clientConn(ctx context.Context) (*http.ClientConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cc == nil && t.err == nil {
		t.cc, t.err = t.tr.NewClientConn(ctx, "http", "link:80")
	}
	if t.err != nil {
		return nil, t.err
	}
	if t.cc.Err() != nil {
		return nil, ErrRedial
	}
	return t.cc, nil
}

// ServeConn serves h as HTTP/2 on conn until the connection ends or ctx
// does, then closes conn and returns once every handler it started has
// returned (their contexts are cancelled when the connection ends), so that
// the caller may then close what the handlers use. base, when not nil,
// derives the context of every request from ctx: the coordinator uses it to
// put the host's identity there, since a link has no address or credentials
// to tell hosts apart.
func ServeConn(ctx context.Context, conn net.Conn, h http.Handler, base func(context.Context) context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reqCtx := ctx
	if base != nil {
		reqCtx = base(ctx)
	}
	connDone := make(chan struct{})
	var doneOnce sync.Once
	// http.Server.Close does not wait for handlers, and once the
	// connection is gone neither does Shutdown: track them here.
	var handlers inflight
	srv := &http.Server{
		Handler:     handlers.wrap(h),
		Protocols:   h2cOnly(),
		HTTP2:       http2Config(),
		BaseContext: func(net.Listener) context.Context { return reqCtx },
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				doneOnce.Do(func() { close(connDone) })
				cancel()
			}
		},
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		<-ctx.Done()
		_ = srv.Close()
		_ = conn.Close()
	})
	l := &oneConnListener{conn: conn, done: make(chan struct{})}
	_ = srv.Serve(l) // returns once the listener is closed: see ConnState
	cancel()
	wg.Wait()
	if l.accepted() {
		<-connDone
	}
	handlers.closeAndWait()
}

// inflight counts running handlers and lets ServeConn wait for them.
type inflight struct {
	mu     sync.Mutex
	closed bool // no handler may start any more
	wg     sync.WaitGroup
}

// wrap runs h for every request unless closeAndWait has been called, in
// which case the request is refused.
func (f *inflight) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.enter() {
			http.Error(w, "link is closing", http.StatusServiceUnavailable)
			return
		}
		defer f.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// enter counts a handler in. wg.Add happens under mu and never after
// closed is set, so that it cannot race with closeAndWait's wg.Wait.
func (f *inflight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	return true
}

// closeAndWait refuses new handlers and waits for the running ones.
func (f *inflight) closeAndWait() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	mu   sync.Mutex
	conn net.Conn // nil once accepted
	took bool

	closeOnce sync.Once
	done      chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	if c != nil {
		l.took = true
	}
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) accepted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.took
}

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return addr{} }
