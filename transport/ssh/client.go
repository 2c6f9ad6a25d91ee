// Package ssh connects the coordinator to lab hosts that accept SSH and
// nothing else: it dials (through jump hosts, honouring ~/.ssh/config),
// verifies host keys against known_hosts or trust-on-first-use pins, runs
// commands, and uploads files atomically over SFTP.
//
// Security comes first because these hosts run whatever we send them:
//
//   - A host key is checked inside the SSH handshake, before
//     authentication, so nothing ever runs on a host whose key does not
//     match. Unknown hosts are refused unless the target opts into
//     accept-new; @revoked keys and host certificates signed by a CA listed
//     with @cert-authority are honoured as OpenSSH does.
//   - There is no way to skip the check in this package, no agent
//     forwarding and no pty.
//
// Every Dial failure is an *Error that says which hop failed, what kind of
// failure it was and whether a retry can help, so that the host manager
// can choose between backoff and marking a host unreachable without
// matching strings.
package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	xssh "golang.org/x/crypto/ssh"
)

// kexPreference puts curve25519-sha256 first: it is much cheaper than the
// post-quantum hybrids on small lab machines (see ENVIRONMENT.md), which
// matters when a coordinator reconnects many hosts at once. The remaining
// supported exchanges follow as fallbacks.
var kexPreference = func() []string {
	out := []string{xssh.KeyExchangeCurve25519}
	for _, k := range xssh.SupportedAlgorithms().KeyExchanges {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}()

// Client is a verified, authenticated SSH connection to one host, possibly
// through jump hosts. It is safe for concurrent use: run many sessions on
// one connection, which costs a tenth of a new connection.
type Client struct {
	name string
	addr string
	log  *slog.Logger
	ssh  *xssh.Client
	// chain holds the jump hosts' connections, first hop first; they are
	// closed after the final one.
	chain []*xssh.Client

	done      chan struct{}
	doneOnce  sync.Once
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	// mu guards the fields below.
	mu      sync.Mutex
	sftp    *sftp.Client
	doneErr error
}

// Dial connects to t through its jump hosts, verifying each hop's host key
// with that hop's own known_hosts and policy, and authenticating each hop.
// Its error is always an *Error.
func Dial(ctx context.Context, t Target, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	localUser, home := localIdentity()
	sc, err := loadSSHConfig(cfg.SSHConfig, home)
	if err != nil {
		return nil, &Error{Host: t.name(), Kind: KindConfig, Err: err}
	}
	hops, err := resolveChain(t, sc, localUser)
	if err != nil {
		return nil, &Error{Host: t.name(), Kind: KindConfig, Err: err}
	}
	var clients []*xssh.Client
	closeAll := func() {
		for i := len(clients) - 1; i >= 0; i-- {
			clients[i].Close()
		}
	}
	for i, h := range hops {
		var via *xssh.Client
		if i > 0 {
			via = clients[i-1]
		}
		c, err := dialHop(ctx, h, via, cfg)
		if err != nil {
			closeAll()
			return nil, err
		}
		clients = append(clients, c)
	}
	last := hops[len(hops)-1]
	c := &Client{
		name:    last.name,
		addr:    last.addr,
		log:     cfg.Logger.With("host", last.name),
		ssh:     clients[len(clients)-1],
		chain:   clients[:len(clients)-1],
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := c.ssh.Wait()
		c.markDone(fmt.Errorf("connection closed: %w", err))
	}()
	if cfg.KeepAlive > 0 {
		c.wg.Add(1)
		go c.keepalive(cfg.KeepAlive)
	}
	c.log.Debug("connected", "addr", last.addr, "hops", len(hops))
	return c, nil
}

func dialHop(ctx context.Context, h hop, via *xssh.Client, cfg Config) (*xssh.Client, error) {
	fail := func(kind Kind, retry bool, err error) error {
		return &Error{Host: h.name, Addr: h.addr, Kind: kind, Retryable: retry, Err: err}
	}
	if h.policy == PolicyAcceptNew && cfg.Pins == nil {
		return nil, fail(KindConfig, false, errors.New("host key policy accept-new needs a pin store (Config.Pins)"))
	}
	db, err := loadKnownHosts(h.knownHosts)
	if err != nil {
		return nil, fail(KindConfig, false, err)
	}
	signers, release, err := loadSigners(h, cfg.Agent, cfg.Logger)
	defer release()
	if err != nil {
		return nil, fail(KindAuth, false, err)
	}
	checker := &hostKeyChecker{
		host: h.name, keyName: h.keyName, policy: h.policy,
		db: db, pins: cfg.Pins, ctx: ctx, log: cfg.Logger,
	}
	ccfg := &xssh.ClientConfig{
		Config:            xssh.Config{KeyExchanges: kexPreference},
		User:              h.user,
		Auth:              []xssh.AuthMethod{xssh.PublicKeys(signers...)},
		HostKeyCallback:   checker.check,
		HostKeyAlgorithms: checker.algorithms(),
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	var conn net.Conn
	if via == nil {
		conn, err = (&net.Dialer{}).DialContext(dctx, "tcp", h.addr)
	} else {
		conn, err = via.DialContext(dctx, "tcp", h.addr)
	}
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fail(KindNetwork, false, fmt.Errorf("connect: %w", ctx.Err()))
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %s", cfg.ConnectTimeout)
		}
		kind, retry := classifyDialError(err)
		if via != nil {
			return nil, fail(kind, retry, fmt.Errorf("connect through jump host: %w", err))
		}
		return nil, fail(kind, retry, fmt.Errorf("connect: %w", err))
	}

	if cfg.Handshake != nil {
		release, err := cfg.Handshake(ctx)
		if err != nil {
			conn.Close()
			if ctx.Err() != nil {
				return nil, fail(KindNetwork, false, fmt.Errorf("wait to handshake: %w", ctx.Err()))
			}
			return nil, fail(KindNetwork, true, fmt.Errorf("wait to handshake: %w", err))
		}
		if release != nil {
			defer release()
		}
	}

	// Neither a forwarded channel nor x/crypto's handshake honours
	// deadlines or contexts, so closing the conn is what bounds it.
	var timedOut atomic.Bool
	timer := time.AfterFunc(cfg.HandshakeTimeout, func() {
		timedOut.Store(true)
		conn.Close()
	})
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	sconn, chans, reqs, err := xssh.NewClientConn(conn, h.keyName, ccfg)
	timerStopped, ctxStopped := timer.Stop(), stop()
	if err == nil && (!timerStopped || !ctxStopped) {
		sconn.Close()
		err = net.ErrClosed
	}
	if err != nil {
		conn.Close()
		var hke *HostKeyError
		switch {
		case errors.As(checker.failure, &hke):
			return nil, fail(KindHostKey, false, hke)
		case checker.failure != nil:
			// The pin store failed: the key could not be checked
			// now, but may be later.
			return nil, fail(KindHostKey, true, checker.failure)
		case ctx.Err() != nil:
			return nil, fail(KindNetwork, false, fmt.Errorf("handshake: %w", ctx.Err()))
		case timedOut.Load():
			return nil, fail(KindNetwork, true, fmt.Errorf("handshake timed out after %s", cfg.HandshakeTimeout))
		}
		kind, retry := classifyHandshakeError(err)
		return nil, fail(kind, retry, err)
	}
	return xssh.NewClient(sconn, chans, reqs), nil
}

// markDone records why the connection ended and closes Done once.
func (c *Client) markDone(err error) {
	c.doneOnce.Do(func() {
		c.mu.Lock()
		c.doneErr = err
		c.mu.Unlock()
		close(c.done)
	})
}

// keepalive sends keepalive@openssh.com requests and closes the
// connection after keepAliveMisses unanswered ones: a host that lost
// power or a network that dropped us never sends a FIN, and without this
// the coordinator would wait on a dead link for hours.
func (c *Client) keepalive(interval time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	var pending chan error // non-nil while a request is in flight
	missed := 0
	for {
		select {
		case <-c.closing:
			return
		case <-c.done:
			return
		case err := <-pending:
			pending = nil
			missed = 0
			if err != nil {
				c.fail(fmt.Errorf("keepalive: %w", err))
				return
			}
		case <-t.C:
			if pending != nil {
				missed++
				if missed >= keepAliveMisses {
					c.fail(fmt.Errorf("keepalive: no answer to %d requests in %s", missed, time.Duration(missed)*interval))
					return
				}
				continue
			}
			pending = make(chan error, 1)
			c.wg.Add(1)
			go func(ch chan<- error) {
				defer c.wg.Done()
				// The server's answer (even "unknown request") is the
				// proof of life; the reply's content does not matter.
				_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
				ch <- err
			}(pending)
		}
	}
}

// fail closes a connection found dead, so that every user of it gets an
// error now instead of hanging.
func (c *Client) fail(err error) {
	c.log.Warn("ssh connection lost", "err", err)
	c.markDone(err)
	c.closeConns()
}

func (c *Client) closeConns() error {
	err := c.ssh.Close()
	for i := len(c.chain) - 1; i >= 0; i-- {
		c.chain[i].Close()
	}
	return err
}

// Done is closed when the connection ends, whether by Close, a failed
// keepalive or the network, so that the host manager can reconnect.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.doneErr
}

// Name returns the host name used in messages.
func (c *Client) Name() string { return c.name }

// Close closes the connection and, after it, every jump host connection
// of the chain, and waits for the client's goroutines.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closing)
		c.mu.Lock()
		sc := c.sftp
		c.sftp = nil
		c.mu.Unlock()
		if sc != nil {
			sc.Close()
		}
		c.markDone(net.ErrClosed)
		err = c.closeConns()
		c.wg.Wait()
	})
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}
