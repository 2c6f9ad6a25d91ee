package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	xssh "golang.org/x/crypto/ssh"
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
	stderr := &tailBuffer{max: MaxStderr}
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

// tailBuffer keeps the last max bytes written to it: the end of stderr is
// where the error message is.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) Bytes() []byte { return t.buf }
