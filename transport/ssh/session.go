package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/mitolab/mito/internal/tailbuf"
)

func (c *Client) newSession() (*xssh.Session, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		if cerr := c.Err(); cerr != nil {
			return nil, fmt.Errorf("ssh %s: open session: %w", c.name, cerr)
		}
		return nil, fmt.Errorf("ssh %s: open session: %w", c.name, err)
	}
	return s, nil
}

// Run runs cmd with no stdin and returns its stdout. A command that exits
// non-zero gives a *CommandError with its stderr; cancelling ctx kills
// the command's session. cmd goes to the remote user's shell: callers must
// pass constant command lines, never task data.
func (c *Client) Run(ctx context.Context, cmd string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := c.newSession()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var stdout bytes.Buffer
	stderr := tailbuf.New(MaxStderr)
	s.Stdout = &stdout
	s.Stderr = stderr
	stop := context.AfterFunc(ctx, func() {
		s.Signal(xssh.SIGKILL) // OpenSSH ignores it; the close below counts
		s.Close()
	})
	defer stop()
	err = s.Run(cmd)
	if ctx.Err() != nil {
		return stdout.Bytes(), fmt.Errorf("ssh %s: run %q: %w", c.name, cmd, ctx.Err())
	}
	if err != nil {
		return stdout.Bytes(), c.commandError(cmd, err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// commandError turns a session's error into a *CommandError, or wraps a
// transport error.
func (c *Client) commandError(cmd string, err error, stderr []byte) error {
	var ee *xssh.ExitError
	var me *xssh.ExitMissingError
	switch {
	case errors.As(err, &ee):
		ce := &CommandError{Host: c.name, Cmd: cmd, ExitCode: ee.ExitStatus(), Signal: ee.Signal(), Stderr: stderr}
		if ce.Signal != "" {
			ce.ExitCode = -1
		}
		return ce
	case errors.As(err, &me):
		if cerr := c.Err(); cerr != nil {
			return fmt.Errorf("ssh %s: run %q: %w", c.name, cmd, cerr)
		}
		return &CommandError{Host: c.name, Cmd: cmd, ExitCode: -1, Stderr: stderr}
	}
	return fmt.Errorf("ssh %s: run %q: %w", c.name, cmd, err)
}

// Session is a long-running remote command with its standard streams: the
// shim's link to the coordinator runs over Stdin and Stdout.
type Session struct {
	// Stdin is the command's standard input; Close sends EOF.
	Stdin io.WriteCloser
	// Stdout is the command's standard output.
	Stdout io.Reader
	// Stderr is the command's standard error. Read it (or copy it to
	// io.Discard): stdout and stderr share the channel's flow-control
	// window, so unread stderr eventually stalls stdout too.
	Stderr io.Reader

	c    *Client
	cmd  string
	s    *xssh.Session
	stop func() bool

	waitOnce sync.Once
	waitErr  error
}

// Start starts cmd with pipes for its standard streams. Cancelling ctx
// closes the session (and so ends the command's streams) at any time
// until Wait returns.
func (c *Client) Start(ctx context.Context, cmd string) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := c.newSession()
	if err != nil {
		return nil, err
	}
	sess := &Session{c: c, cmd: cmd, s: s}
	if sess.Stdin, err = s.StdinPipe(); err == nil {
		if sess.Stdout, err = s.StdoutPipe(); err == nil {
			sess.Stderr, err = s.StderrPipe()
		}
	}
	if err == nil {
		err = s.Start(cmd)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("ssh %s: start %q: %w", c.name, cmd, err)
	}
	sess.stop = context.AfterFunc(ctx, func() { s.Close() })
	return sess, nil
}

// Wait waits for the command to exit. A non-zero exit gives a
// *CommandError (without stderr, which the caller reads from Stderr).
func (s *Session) Wait() error {
	s.waitOnce.Do(func() {
		err := s.s.Wait()
		s.stop()
		if err != nil {
			s.waitErr = s.c.commandError(s.cmd, err, nil)
		}
	})
	return s.waitErr
}

// Close ends the session: the remote side sees its channel close (and
// EOF on stdin); OpenSSH then hangs up the command.
func (s *Session) Close() error {
	s.stop()
	err := s.s.Close()
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

// OutputGrace is how long RunCombined goes on reading a command's output
// after the command exited.
const OutputGrace = 2 * time.Second

// RunCombined runs cmd with no stdin (it reads EOF), writing its stdout
// and stderr to w as they come; writes to w are never concurrent. A
// command that exits non-zero gives a *CommandError (without stderr, which
// went to w); cancelling ctx closes the session and returns ctx's error.
//
// Once the exit status has arrived, output is read for at most
// OutputGrace more, and then the session is closed: a command that
// leaves a background process holding its stdout or stderr ("nohup
// iperf3 -s &" without redirections) would otherwise keep the channel,
// and so the caller, waiting for as long as that process runs. What the
// process writes later is lost (and a write may get it SIGPIPE): such
// commands should redirect their daemons' output.
func (c *Client) RunCombined(ctx context.Context, cmd string, w io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch, reqs, err := c.ssh.OpenChannel("session", nil)
	if err != nil {
		if cerr := c.Err(); cerr != nil {
			return fmt.Errorf("ssh %s: open session: %w", c.name, cerr)
		}
		return fmt.Errorf("ssh %s: open session: %w", c.name, err)
	}
	defer ch.Close()

	// x/crypto's Session reports the exit status only once the channel
	// closes, which is exactly what a lingering background process
	// prevents; so the session's requests are read here.
	exited := make(chan struct{}) // closed at exit-status or exit-signal
	reqsDone := make(chan struct{})
	var (
		exitOnce   sync.Once
		exitStatus = -1
		exitSignal string
	)
	go func() {
		defer close(reqsDone)
		for r := range reqs {
			switch r.Type {
			case "exit-status":
				var m struct{ Status uint32 }
				if xssh.Unmarshal(r.Payload, &m) == nil {
					exitOnce.Do(func() { exitStatus = int(m.Status); close(exited) })
				}
			case "exit-signal":
				var m struct {
					Signal     string
					CoreDumped bool
					Error      string
					Lang       string
				}
				if xssh.Unmarshal(r.Payload, &m) == nil {
					exitOnce.Do(func() { exitSignal = m.Signal; close(exited) })
				}
			}
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}()

	ok, err := ch.SendRequest("exec", true, xssh.Marshal(struct{ Command string }{cmd}))
	if err == nil && !ok {
		err = errors.New("the server refused to run it")
	}
	if err != nil {
		if cerr := c.Err(); cerr != nil {
			err = cerr
		}
		return fmt.Errorf("ssh %s: start %q: %w", c.name, cmd, err)
	}
	_ = ch.CloseWrite() // no input
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()

	sw := &lockedWriter{w: w}
	copied := make(chan error, 2)
	go func() { _, err := io.Copy(sw, ch); copied <- err }()
	go func() { _, err := io.Copy(sw, ch.Stderr()); copied <- err }()
	var (
		copyErr error
		grace   <-chan time.Time
		exitCh  = exited
	)
	for pending := 2; pending > 0; {
		select {
		case err := <-copied:
			pending--
			if err != nil && copyErr == nil {
				// w failed: the stream is no longer read, which
				// would stall the other one too.
				copyErr = err
				ch.Close()
			}
		case <-exitCh:
			exitCh = nil
			t := time.NewTimer(OutputGrace)
			defer t.Stop()
			grace = t.C
		case <-grace:
			grace = nil
			c.log.Debug("command exited but its output is still open; closing the session", "cmd", cmd)
			ch.Close() // ends both copies
		}
	}
	// Both streams ended; the exit status comes now, if not already
	// there, or the channel closes without one.
	select {
	case <-exited:
	case <-reqsDone:
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		return fmt.Errorf("ssh %s: run %q: %w", c.name, cmd, ctx.Err())
	}
	select {
	case <-exited:
		switch {
		case exitSignal != "":
			return &CommandError{Host: c.name, Cmd: cmd, ExitCode: -1, Signal: exitSignal}
		case exitStatus != 0:
			return &CommandError{Host: c.name, Cmd: cmd, ExitCode: exitStatus}
		}
	default:
		if copyErr == nil {
			if cerr := c.Err(); cerr != nil {
				return fmt.Errorf("ssh %s: run %q: %w", c.name, cmd, cerr)
			}
			return &CommandError{Host: c.name, Cmd: cmd, ExitCode: -1}
		}
	}
	if copyErr != nil {
		return fmt.Errorf("ssh %s: run %q: output: %w", c.name, cmd, copyErr)
	}
	return nil
}

// lockedWriter serialises writes of a command's two streams.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
