package ssh_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/transport/ssh"
	"github.com/mitolab/mito/transport/ssh/sshtest"
)

// slots is a Config.Handshake hook that counts its holders.
type slots struct {
	mu                 sync.Mutex
	held, max          int
	acquired, released int
	sem                chan struct{} // nil: no limit
	heldInHostKeyCheck []int
}

func (s *slots) hook(ctx context.Context) (func(), error) {
	if s.sem != nil {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	s.held++
	s.acquired++
	s.max = max(s.max, s.held)
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.held--
			s.released++
			s.mu.Unlock()
			if s.sem != nil {
				<-s.sem
			}
		})
	}, nil
}

func (s *slots) counts() (held, max, acquired, released int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held, s.max, s.acquired, s.released
}

// slotPins is a Pins that records how many slots are held when a new
// host key is pinned, which happens inside the SSH handshake.
type slotPins struct {
	memPins
	s *slots
}

func (p *slotPins) Pin(ctx context.Context, hostport, key string) error {
	p.s.mu.Lock()
	p.s.heldInHostKeyCheck = append(p.s.heldInHostKeyCheck, p.s.held)
	p.s.mu.Unlock()
	return p.memPins.Pin(ctx, hostport, key)
}

func TestHandshakeHookPerHop(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	jump := e.server(t, sshtest.Options{})
	target := e.server(t, sshtest.Options{})
	s := &slots{}
	e.cfg.Handshake = s.hook
	e.cfg.Pins = &slotPins{s: s}
	jt := e.target("bastion", jump)
	jt.Policy = ssh.PolicyAcceptNew
	tg := e.target("lab1", target)
	tg.Policy = ssh.PolicyAcceptNew
	tg.Jump = &jt

	c := e.dial(t, tg)
	if out, err := c.Run(context.Background(), "echo ok"); err != nil || string(out) != "ok\n" {
		t.Fatalf("Run = %q, %v", out, err)
	}
	held, maxHeld, acquired, released := s.counts()
	if acquired != 2 || released != 2 || held != 0 || maxHeld != 1 {
		t.Errorf("hook: acquired %d, released %d, held %d, at most %d at once; want 2, 2, 0, 1 (one per hop, released after each handshake)",
			acquired, released, held, maxHeld)
	}
	// Each hop's host key was checked, inside its handshake, with its slot held.
	s.mu.Lock()
	inCheck := s.heldInHostKeyCheck
	s.mu.Unlock()
	if len(inCheck) != 2 || inCheck[0] != 1 || inCheck[1] != 1 {
		t.Errorf("slots held during the host key checks: %v; want [1 1]", inCheck)
	}
}

func TestHandshakeHookReleasedOnFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := &slots{}
	e.cfg.Handshake = s.hook

	// A refused TCP connect never takes a slot.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	e.dialErr(t, ssh.Target{Name: "gone", Address: "127.0.0.1", Port: port, IdentityFiles: []string{e.id}, KnownHosts: []string{e.kh}}, ssh.KindNetwork)
	if _, _, acquired, _ := s.counts(); acquired != 0 {
		t.Errorf("a failed TCP connect took %d handshake slots; want 0", acquired)
	}

	// A wrong host key and a refused login release theirs.
	srv := e.server(t, sshtest.Options{})
	e.trust(t, sshtest.KnownHostsLine(srv.Addr(), sshtest.MustKey(t).PublicKey()))
	e.dialErr(t, e.target("lab1", srv), ssh.KindHostKey)
	nobody := sshtest.New(t, sshtest.Options{})
	e.trust(t, nobody.KnownHostsLine())
	e.dialErr(t, e.target("lab2", nobody), ssh.KindAuth)
	if held, _, acquired, released := s.counts(); acquired != 2 || released != 2 || held != 0 {
		t.Errorf("after two failed handshakes: acquired %d, released %d, held %d; want 2, 2, 0", acquired, released, held)
	}

	// A hook that fails fails Dial, retryably, and closes the connection.
	e.cfg.Handshake = func(context.Context) (func(), error) { return nil, errors.New("no slot") }
	se := e.dialErr(t, e.target("lab2", nobody), ssh.KindNetwork)
	if !se.Retryable || !strings.Contains(se.Error(), "no slot") {
		t.Errorf("error = %v (retryable %v); want a retryable error naming the hook's", se, se.Retryable)
	}
	waitFor(t, "the connection to close", func() bool { return nobody.OpenConns() == 0 })
}

func TestHandshakeHookCancelWhileWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := e.server(t, sshtest.Options{})
	e.trust(t, srv.KnownHostsLine())
	s := &slots{sem: make(chan struct{}, 1)}
	s.sem <- struct{}{} // every slot is taken
	e.cfg.Handshake = s.hook

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		c, err := ssh.Dial(ctx, e.target("lab1", srv), e.cfg)
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	// The TCP connection is made before the wait for a slot.
	waitFor(t, "the TCP connection", func() bool { return srv.OpenConns() == 1 })
	select {
	case err := <-errc:
		t.Fatalf("Dial returned %v while waiting for a slot", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("Dial did not return after its context was cancelled")
	}
	var se *ssh.Error
	if !errors.Is(err, context.Canceled) || !errors.As(err, &se) || se.Retryable {
		t.Errorf("Dial error = %v; want a non-retryable *ssh.Error wrapping context.Canceled", err)
	}
	if srv.Logins() != 0 {
		t.Errorf("server saw %d logins; want 0", srv.Logins())
	}
	waitFor(t, "the connection to close", func() bool { return srv.OpenConns() == 0 })
	if _, _, acquired, _ := s.counts(); acquired != 0 {
		t.Errorf("acquired %d slots; want 0", acquired)
	}
}

// TestHandshakeHookLimits runs dials at once through a one-slot hook: they
// all succeed, one handshake at a time.
func TestHandshakeHookLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := e.server(t, sshtest.Options{})
	e.trust(t, srv.KnownHostsLine())
	s := &slots{sem: make(chan struct{}, 1)}
	e.cfg.Handshake = s.hook
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ssh.Dial(context.Background(), e.target("lab1", srv), e.cfg)
			if err != nil {
				t.Errorf("Dial: %v", err)
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	if held, maxHeld, acquired, released := s.counts(); acquired != 6 || released != 6 || held != 0 || maxHeld != 1 {
		t.Errorf("acquired %d, released %d, held %d, at most %d at once; want 6, 6, 0, 1", acquired, released, held, maxHeld)
	}
}

func TestRunCombined(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := e.server(t, sshtest.Options{})
	e.trust(t, srv.KnownHostsLine())
	c := e.dial(t, e.target("lab1", srv))
	ctx := context.Background()

	var out strings.Builder
	if err := c.RunCombined(ctx, "echo out; echo err >&2; read x || echo eof", &out); err != nil {
		t.Fatalf("RunCombined: %v", err)
	}
	if got := out.String(); !strings.Contains(got, "out\n") || !strings.Contains(got, "err\n") || !strings.Contains(got, "eof\n") {
		t.Errorf("output %q; want stdout, stderr and EOF on stdin", got)
	}
	out.Reset()
	err := c.RunCombined(ctx, "echo partial; exit 3", &out)
	var ce *ssh.CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 3 || out.String() != "partial\n" {
		t.Errorf("RunCombined = %v, output %q; want exit status 3 after %q", err, out.String(), "partial\n")
	}
}

// TestRunCombinedLingeringOutput is a command that exits but leaves its
// stdout open (a daemon started without redirections): RunCombined
// returns shortly after the exit status, and closes the session.
func TestRunCombinedLingeringOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lingerEnded := make(chan struct{}, 2)
	srv := e.server(t, sshtest.Options{
		Handler: func(_ context.Context, cmd string, _ io.Reader, stdout, _ io.Writer) int {
			io.WriteString(stdout, "started\n")
			if cmd == "fail" {
				return 4
			}
			return 0
		},
		Linger: func(ctx context.Context, stdout, _ io.Writer) {
			io.WriteString(stdout, "daemon says hi\n")
			<-ctx.Done() // holds stdout until the client hangs up
			lingerEnded <- struct{}{}
		},
	})
	e.trust(t, srv.KnownHostsLine())
	c := e.dial(t, e.target("lab1", srv))

	for _, tc := range []struct {
		cmd  string
		code int
	}{{"ok", 0}, {"fail", 4}} {
		var out strings.Builder
		start := time.Now()
		errc := make(chan error, 1)
		go func() { errc <- c.RunCombined(context.Background(), tc.cmd, &out) }()
		var err error
		select {
		case err = <-errc:
		case <-time.After(ssh.OutputGrace + 5*time.Second):
			t.Fatalf("%s: RunCombined still waiting %s after the command exited", tc.cmd, time.Since(start))
		}
		var ce *ssh.CommandError
		switch {
		case tc.code == 0 && err != nil:
			t.Errorf("%s: RunCombined = %v; want nil", tc.cmd, err)
		case tc.code != 0 && (!errors.As(err, &ce) || ce.ExitCode != tc.code):
			t.Errorf("%s: RunCombined = %v; want exit status %d", tc.cmd, err, tc.code)
		}
		if d := time.Since(start); d < ssh.OutputGrace-100*time.Millisecond {
			t.Errorf("%s: returned after %s; want it to wait OutputGrace for late output", tc.cmd, d)
		}
		if got := out.String(); got != "started\ndaemon says hi\n" {
			t.Errorf("%s: output %q; want the command's and the daemon's first line", tc.cmd, got)
		}
		select {
		case <-lingerEnded:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the session was not closed", tc.cmd)
		}
	}
}

func TestRunCombinedCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ended := make(chan struct{})
	srv := e.server(t, sshtest.Options{
		Handler: func(ctx context.Context, _ string, _ io.Reader, stdout, _ io.Writer) int {
			io.WriteString(stdout, "working\n")
			<-ctx.Done()
			close(ended)
			return 0
		},
	})
	e.trust(t, srv.KnownHostsLine())
	c := e.dial(t, e.target("lab1", srv))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var out strings.Builder
	err := c.RunCombined(ctx, "hang", &out)
	if !errors.Is(err, context.DeadlineExceeded) || out.String() != "working\n" {
		t.Errorf("RunCombined = %v, output %q; want the deadline's error after %q", err, out.String(), "working\n")
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the session was not closed")
	}
}
