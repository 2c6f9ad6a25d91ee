// Package sshtest is an in-process SSH and SFTP server for unit tests of
// code that drives hosts over SSH: fast, hermetic, and instrumented, so
// that a test can assert not only what happened but what did not (no
// session was opened on a host whose key was refused).
//
// It is not OpenSSH: tests of behaviour that depends on sshd itself run
// against real sshd instances started by the test script.
package sshtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/pkg/sftp"
	xssh "golang.org/x/crypto/ssh"
)

// ExecHandler runs one exec request in place of `sh -c cmd`. It returns
// the exit status to report.
type ExecHandler func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) int

// Options configure a Server. The zero value gives a server with a fresh
// ed25519 host key that accepts nobody.
type Options struct {
	// HostKeys are the server's host keys (plain or certificate signers);
	// empty means one fresh ed25519 key.
	HostKeys []xssh.Signer
	// AuthorizedKeys may log in, as any user.
	AuthorizedKeys []xssh.PublicKey
	// Handler runs exec requests; nil runs them with `sh -c` in Dir.
	Handler ExecHandler
	// Linger, when set with Handler, runs after Handler has returned and
	// its exit status has been sent, with the channel's stdout and stderr
	// still open until Linger returns: what it writes arrives after the
	// exit status. This is OpenSSH's behaviour when a command leaves a
	// background process holding its output ("nohup daemon &"). ctx ends
	// when the client closes the channel or the server stops.
	Linger func(ctx context.Context, stdout, stderr io.Writer)
	// Dir is the working directory of commands and the SFTP root for
	// relative paths (the "home"); empty means a fresh t.TempDir() with
	// New, or the process's directory with Start.
	Dir string
	// NoForwarding refuses direct-tcpip, like AllowTcpForwarding no.
	NoForwarding bool
}

// Server is a running in-process SSH server.
type Server struct {
	opts Options
	cfg  *xssh.ServerConfig
	ln   net.Listener
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	silent atomic.Bool

	conns, logins, sessions, execs, subsystems, forwards, keepalives atomic.Int64

	// mu guards the fields below.
	mu        sync.Mutex
	users     []string
	commands  []string
	openConns map[net.Conn]struct{}
}

// New starts a server on 127.0.0.1 and stops it when the test ends.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	s, err := Start(opts)
	if err != nil {
		tb.Fatalf("start ssh test server: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Start starts a server on 127.0.0.1; Close stops it.
func Start(opts Options) (*Server, error) {
	if len(opts.HostKeys) == 0 {
		k, err := GenerateKey()
		if err != nil {
			return nil, err
		}
		opts.HostKeys = []xssh.Signer{k}
	}
	s := &Server{opts: opts, openConns: make(map[net.Conn]struct{})}
	s.cfg = &xssh.ServerConfig{
		PublicKeyCallback: func(meta xssh.ConnMetadata, key xssh.PublicKey) (*xssh.Permissions, error) {
			for _, k := range s.opts.AuthorizedKeys {
				if string(k.Marshal()) == string(key.Marshal()) {
					return &xssh.Permissions{}, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
	}
	for _, k := range opts.HostKeys {
		s.cfg.AddHostKey(k)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the "127.0.0.1:port" the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Host is the listening IP address.
func (s *Server) Host() string { h, _, _ := net.SplitHostPort(s.Addr()); return h }

// Port is the listening port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr())
	n, _ := strconv.Atoi(p)
	return n
}

// HostKey is the public key of the server's first host key.
func (s *Server) HostKey() xssh.PublicKey { return s.opts.HostKeys[0].PublicKey() }

// KnownHostsLine is the known_hosts line for the server's first host key.
func (s *Server) KnownHostsLine() string {
	return KnownHostsLine(s.Addr(), s.HostKey())
}

// Dir is the working directory of commands and SFTP.
func (s *Server) Dir() string { return s.opts.Dir }

// Counters: how many of each thing the server saw, so that a test can
// assert that nothing happened.

// Conns counts accepted TCP connections.
func (s *Server) Conns() int64 { return s.conns.Load() }

// Logins counts successful authentications.
func (s *Server) Logins() int64 { return s.logins.Load() }

// Sessions counts opened session channels.
func (s *Server) Sessions() int64 { return s.sessions.Load() }

// Execs counts exec requests.
func (s *Server) Execs() int64 { return s.execs.Load() }

// Subsystems counts subsystem requests (SFTP).
func (s *Server) Subsystems() int64 { return s.subsystems.Load() }

// Forwards counts direct-tcpip channels (jump host use).
func (s *Server) Forwards() int64 { return s.forwards.Load() }

// OpenConns is how many client connections are open now.
func (s *Server) OpenConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.openConns)
}

// KeepAlives counts keepalive@openssh.com requests.
func (s *Server) KeepAlives() int64 { return s.keepalives.Load() }

// Users returns the user names of successful logins, in order.
func (s *Server) Users() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.users...)
}

// Commands returns the exec'd command lines, in order.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// SetSilent makes the server stop answering global requests (keepalives)
// while keeping the TCP connection open: a host that hangs, as seen by
// the client.
func (s *Server) SetSilent(v bool) { s.silent.Store(v) }

// Close stops the server, closes every connection and waits for its
// goroutines (commands are killed).
func (s *Server) Close() {
	s.stop()
	s.ln.Close()
	s.mu.Lock()
	for c := range s.openConns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.openConns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.openConns, c)
				s.mu.Unlock()
			}()
			s.serveConn(c)
		}()
	}
}

func (s *Server) serveConn(c net.Conn) {
	sconn, chans, reqs, err := xssh.NewServerConn(c, s.cfg)
	if err != nil {
		return
	}
	defer sconn.Close()
	s.logins.Add(1)
	s.mu.Lock()
	s.users = append(s.users, sconn.User())
	s.mu.Unlock()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				s.keepalives.Add(1)
			}
			if s.silent.Load() {
				continue // never reply: the client sees a hung host
			}
			if r.WantReply {
				r.Reply(false, nil) // like OpenSSH: unknown request
			}
		}
	}()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			s.sessions.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.session(ch, creqs)
			}()
		case "direct-tcpip":
			if s.opts.NoForwarding {
				nc.Reject(xssh.Prohibited, "forwarding disabled")
				continue
			}
			s.forwards.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.forward(nc)
			}()
		default:
			nc.Reject(xssh.UnknownChannelType, "unsupported channel type")
		}
	}
}

// forward serves a direct-tcpip channel: the jump host role.
func (s *Server) forward(nc xssh.NewChannel) {
	var req struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := xssh.Unmarshal(nc.ExtraData(), &req); err != nil {
		nc.Reject(xssh.ConnectionFailed, "bad request")
		return
	}
	var d net.Dialer
	conn, err := d.DialContext(s.ctx, "tcp", net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port))))
	if err != nil {
		nc.Reject(xssh.ConnectionFailed, err.Error())
		return
	}
	defer conn.Close()
	ch, creqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	go xssh.DiscardRequests(creqs)
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, ch); conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(ch, conn); ch.CloseWrite(); done <- struct{}{} }()
	select {
	case <-done:
		<-done
	case <-s.ctx.Done():
	}
}

func (s *Server) session(ch xssh.Channel, reqs <-chan *xssh.Request) {
	defer ch.Close()
	for r := range reqs {
		switch r.Type {
		case "exec":
			var p struct{ Command string }
			if err := xssh.Unmarshal(r.Payload, &p); err != nil {
				r.Reply(false, nil)
				continue
			}
			s.execs.Add(1)
			s.mu.Lock()
			s.commands = append(s.commands, p.Command)
			s.mu.Unlock()
			r.Reply(true, nil)
			s.exec(ch, reqs, p.Command)
			return
		case "subsystem":
			var p struct{ Name string }
			if err := xssh.Unmarshal(r.Payload, &p); err != nil || p.Name != "sftp" {
				r.Reply(false, nil)
				continue
			}
			s.subsystems.Add(1)
			r.Reply(true, nil)
			go xssh.DiscardRequests(reqs)
			srv, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(s.opts.Dir))
			if err != nil {
				return
			}
			go func() { <-s.ctx.Done(); srv.Close() }()
			srv.Serve()
			srv.Close()
			return
		default:
			// pty-req, env, shell, x11, auth-agent: refused.
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}
}

// exec runs one command on ch and reports its exit status.
func (s *Server) exec(ch xssh.Channel, reqs <-chan *xssh.Request, cmd string) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go func() {
		// The client closing the channel (or sending a signal) ends
		// the command.
		for r := range reqs {
			if r.Type == "signal" {
				cancel()
			}
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
		cancel()
	}()
	if s.opts.Handler != nil {
		code := s.opts.Handler(ctx, cmd, ch, ch, ch.Stderr())
		if s.opts.Linger != nil {
			ch.SendRequest("exit-status", false, xssh.Marshal(struct{ Status uint32 }{uint32(code)}))
			s.opts.Linger(ctx, ch, ch.Stderr())
			ch.CloseWrite()
			return
		}
		ch.CloseWrite()
		ch.SendRequest("exit-status", false, xssh.Marshal(struct{ Status uint32 }{uint32(code)}))
		return
	}
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.Dir = s.opts.Dir
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.Stdout = ch
	c.Stderr = ch.Stderr()
	stdin, err := c.StdinPipe()
	if err != nil {
		return
	}
	if err := c.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "sshtest: %v\n", err)
		ch.SendRequest("exit-status", false, xssh.Marshal(struct{ Status uint32 }{127}))
		return
	}
	go func() {
		// Not waited for by c.Wait: it ends when the client sends EOF
		// or the channel closes.
		io.Copy(stdin, ch)
		stdin.Close()
	}()
	err = c.Wait()
	ch.CloseWrite()
	var ee *exec.ExitError
	switch {
	case err == nil:
		ch.SendRequest("exit-status", false, xssh.Marshal(struct{ Status uint32 }{0}))
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ch.SendRequest("exit-signal", false, xssh.Marshal(struct {
				Signal     string
				CoreDumped bool
				Msg        string
				Lang       string
			}{signalName(ws.Signal()), false, "", ""}))
			return
		}
		ch.SendRequest("exit-status", false, xssh.Marshal(struct{ Status uint32 }{uint32(ee.ExitCode())}))
	}
}

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "KILL"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGPIPE:
		return "PIPE"
	case syscall.SIGSEGV:
		return "SEGV"
	}
	return strconv.Itoa(int(sig))
}

// GenerateKey returns a fresh ed25519 signer.
func GenerateKey() (xssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return xssh.NewSignerFromKey(priv)
}

// MustKey is GenerateKey for tests.
func MustKey(tb testing.TB) xssh.Signer {
	tb.Helper()
	k, err := GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// WriteIdentity writes a fresh ed25519 private key in OpenSSH format
// (mode 0600) under dir and returns its path and signer, for clients that
// read identity files.
func WriteIdentity(tb testing.TB, dir, name string) (string, xssh.Signer) {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	block, err := xssh.MarshalPrivateKey(priv, "sshtest")
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		tb.Fatal(err)
	}
	signer, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path+".pub", xssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path, signer
}

// KnownHostsLine returns a known_hosts line for key at addr (host:port),
// in the form OpenSSH writes.
func KnownHostsLine(addr string, key xssh.PublicKey) string {
	return knownHostsName(addr) + " " + string(trimNL(xssh.MarshalAuthorizedKey(key)))
}

// CertAuthorityLine returns an "@cert-authority" known_hosts line that
// trusts ca for host certificates of addr.
func CertAuthorityLine(addr string, ca xssh.PublicKey) string {
	return "@cert-authority " + KnownHostsLine(addr, ca)
}

// RevokedLine returns an "@revoked" known_hosts line for key.
func RevokedLine(key xssh.PublicKey) string {
	return "@revoked * " + string(trimNL(xssh.MarshalAuthorizedKey(key)))
}

func knownHostsName(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "22" {
		return host
	}
	return "[" + host + "]:" + port
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// HostCertSigner signs a host certificate for key with ca, valid for
// principals (host names or IPs) and forever, and returns a signer that
// presents it.
func HostCertSigner(tb testing.TB, key, ca xssh.Signer, principals ...string) xssh.Signer {
	tb.Helper()
	cert := &xssh.Certificate{
		Key:             key.PublicKey(),
		Serial:          1,
		CertType:        xssh.HostCert,
		KeyId:           "sshtest",
		ValidPrincipals: principals,
		ValidAfter:      0,
		ValidBefore:     xssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		tb.Fatal(err)
	}
	s, err := xssh.NewCertSigner(cert, key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
