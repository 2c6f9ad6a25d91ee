package ssh

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	xssh "golang.org/x/crypto/ssh"
)

// Kind says which part of a connection attempt failed, so that the host
// manager can pick a host state and decide whether to retry without
// parsing messages.
type Kind int

const (
	// KindNetwork: the TCP connection (or the jump host's forwarded one)
	// could not be made or was lost during the handshake: refused, timed
	// out, name not resolved. Usually retryable: hosts reboot.
	KindNetwork Kind = iota + 1
	// KindAuth: the server accepted none of our keys. Retrying with the
	// same keys cannot help.
	KindAuth
	// KindHostKey: the host key is unknown, differs from the known one or
	// is revoked. Never retryable: it needs a person to look.
	KindHostKey
	// KindProtocol: the SSH conversation itself failed (no common
	// algorithm, a server that drops us mid-handshake, a jump host that
	// refuses forwarding).
	KindProtocol
	// KindConfig: the Target or Config cannot work as given (bad policy,
	// unreadable identity or known_hosts file, accept-new without Pins).
	// Not retryable until someone fixes the inventory or the files.
	KindConfig
)

// String returns the kind's name for logs and host states.
func (k Kind) String() string {
	switch k {
	case KindNetwork:
		return "network"
	case KindAuth:
		return "auth"
	case KindHostKey:
		return "host key"
	case KindProtocol:
		return "protocol"
	case KindConfig:
		return "config"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is the error of every failed Dial: it names the hop that failed,
// what kind of failure it was and whether trying again later can help, so
// that the caller needs no string matching to choose between backoff and
// giving up.
type Error struct {
	// Host is the name of the hop that failed (Target.Name, or its
	// address when unnamed): with jump hosts it may be the jump host.
	Host string
	// Addr is the host:port that was dialled for that hop, when known.
	Addr string
	// Kind is the failed part.
	Kind Kind
	// Retryable is true when the same attempt may succeed later.
	Retryable bool
	// Err is the underlying error: a *HostKeyError for KindHostKey.
	Err error
}

// Error reads like "ssh lab1 (127.0.0.2:2222): host key mismatch: ...".
func (e *Error) Error() string {
	var hk *HostKeyError
	if errors.As(e.Err, &hk) {
		// The host key error already names host and address.
		return "ssh " + hk.Error()
	}
	if e.Addr != "" && e.Addr != e.Host {
		return fmt.Sprintf("ssh %s (%s): %v", e.Host, e.Addr, e.Err)
	}
	return fmt.Sprintf("ssh %s: %v", e.Host, e.Err)
}

// Unwrap gives errors.Is/As access to the cause (context.Canceled, a
// *HostKeyError, a *net.OpError).
func (e *Error) Unwrap() error { return e.Err }

// IsRetryable reports whether err is a Dial error that may succeed when
// tried again, or a lost connection. Unknown errors count as not
// retryable, so that a bug does not turn into a reconnect storm.
func IsRetryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return false
}

// HostKeyError is a host key that was refused. It carries both
// fingerprints, so that a person can compare them with the host's console
// (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) before changing anything.
type HostKeyError struct {
	// Host is the inventory name of the host.
	Host string
	// HostPort is the name the key was looked up under: the HostName (or
	// HostKeyAlias) and port, as known_hosts spells it.
	HostPort string
	// KeyType is the type of the key the server presented.
	KeyType string
	// Got is the SHA256 fingerprint of the key the server presented (the
	// certified key for a host certificate).
	Got string
	// Want are the fingerprints of the keys known for the host (or of the
	// trusted CAs for a certificate).
	Want []string
	// Sources says where each Want came from: "file:line" or "pinned".
	Sources []string
	// Revoked is true when the key (or its CA) is marked @revoked.
	Revoked bool
	// Unknown is true when nothing is known about the host at all.
	Unknown bool
	// CA is the fingerprint of the signing CA when the server presented a
	// host certificate.
	CA string
	// Reason is the certificate check's complaint (expired, wrong
	// principal, unknown CA), empty for plain keys.
	Reason string
	// Files are the known_hosts files that were searched.
	Files []string
}

// Error names the host and both fingerprints, and says what to do.
func (e *HostKeyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): ", e.Host, e.HostPort)
	want := func() {
		for i, w := range e.Want {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(w)
			if i < len(e.Sources) && e.Sources[i] != "" {
				fmt.Fprintf(&b, " (%s)", e.Sources[i])
			}
		}
	}
	switch {
	case e.Revoked:
		fmt.Fprintf(&b, "host key is revoked: got %s %s", e.KeyType, e.Got)
		if e.CA != "" {
			fmt.Fprintf(&b, " certified by CA %s", e.CA)
		}
		if len(e.Want) > 0 {
			b.WriteString("; revoked by ")
			want()
		}
	case e.CA != "":
		fmt.Fprintf(&b, "host certificate refused: %s: got key %s %s signed by CA %s", e.Reason, e.KeyType, e.Got, e.CA)
		if len(e.Want) > 0 {
			b.WriteString("; want ")
			want()
		} else {
			b.WriteString("; no trusted CA or key is known for this host")
		}
	case e.Unknown:
		host, port, err := net.SplitHostPort(e.HostPort)
		if err != nil {
			host, port = e.HostPort, "22"
		}
		fmt.Fprintf(&b, "host key is unknown: got %s %s; not found in %s; check the fingerprint on the host, then add it with `ssh-keyscan -p %s %s >> %s`, or set host_key_policy: accept-new",
			e.KeyType, e.Got, filesOrNone(e.Files), port, host, firstOr(e.Files, "~/.ssh/known_hosts"))
	default:
		fmt.Fprintf(&b, "host key mismatch: got %s %s, want ", e.KeyType, e.Got)
		want()
		if e.Reason != "" {
			b.WriteString("; " + e.Reason)
		}
		b.WriteString("; the host was reinstalled or someone is intercepting the connection")
	}
	return b.String()
}

func filesOrNone(files []string) string {
	if len(files) == 0 {
		return "(no known_hosts file)"
	}
	return strings.Join(files, ", ")
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// MaxStderr bounds the stderr a CommandError keeps: enough for any error
// message, not enough for a chatty command to fill the coordinator's
// memory.
const MaxStderr = 64 << 10

// CommandError is a remote command that ran and failed. It keeps the
// command's stderr (the last MaxStderr bytes), because "exit status 1"
// alone tells an operator nothing.
type CommandError struct {
	// Host is the name of the host the command ran on.
	Host string
	// Cmd is the command line.
	Cmd string
	// ExitCode is the exit status, or -1 when the command ended without
	// one (killed by a signal, or the session was lost).
	ExitCode int
	// Signal is the signal name without "SIG" when the command was killed
	// by one.
	Signal string
	// Stderr is the tail of the command's standard error.
	Stderr []byte
}

// Error names the host, the command (shortened), the status and the last
// line of stderr.
func (e *CommandError) Error() string {
	cmd := e.Cmd
	if len(cmd) > 80 {
		cmd = cmd[:77] + "..."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ssh %s: command %q ", e.Host, cmd)
	switch {
	case e.Signal != "":
		fmt.Fprintf(&b, "killed by signal %s", e.Signal)
	case e.ExitCode < 0:
		b.WriteString("ended without an exit status")
	default:
		fmt.Fprintf(&b, "exited with status %d", e.ExitCode)
	}
	if msg := lastLine(e.Stderr); msg != "" {
		b.WriteString(": ")
		b.WriteString(msg)
	}
	return b.String()
}

func lastLine(b []byte) string {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	if len(b) > 200 {
		b = b[len(b)-200:]
	}
	return string(bytes.TrimSpace(b))
}

// classifyDialError sorts a TCP (or forwarded) connect failure.
func classifyDialError(err error) (Kind, bool) {
	var oce *xssh.OpenChannelError
	if errors.As(err, &oce) {
		// The jump host could not or would not connect to the next hop.
		switch oce.Reason {
		case xssh.ConnectionFailed, xssh.ResourceShortage:
			return KindNetwork, true
		default: // Prohibited (AllowTcpForwarding no), unknown type
			return KindProtocol, false
		}
	}
	return KindNetwork, true
}

// classifyHandshakeError sorts a failed SSH handshake. Host key failures
// are recognised before this by the callback; here we tell auth failures
// (not retryable), dropped connections (retryable: sshd's MaxStartups
// drops connections under load) and protocol mismatches apart.
func classifyHandshakeError(err error) (Kind, bool) {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unable to authenticate"),
		strings.Contains(msg, "no supported methods remain"):
		return KindAuth, false
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed),
		errors.Is(err, os.ErrDeadlineExceeded):
		return KindNetwork, true
	case strings.Contains(msg, "no common algorithm"):
		return KindProtocol, false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return KindNetwork, true
	}
	return KindProtocol, true
}
