package ssh_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/mitolab/mito/transport/ssh"
	"github.com/mitolab/mito/transport/ssh/sshtest"
)

// env is a client side: an identity file and a known_hosts file in a
// temporary directory, and a Config that ignores the developer's own
// ~/.ssh/config and agent.
type env struct {
	dir    string
	id     string
	signer xssh.Signer
	kh     string
	cfg    ssh.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	id, signer := sshtest.WriteIdentity(t, dir, "id_ed25519")
	e := &env{dir: dir, id: id, signer: signer, kh: filepath.Join(dir, "known_hosts")}
	e.cfg = ssh.Config{SSHConfig: "none", Agent: "none", ConnectTimeout: 5 * time.Second, HandshakeTimeout: 5 * time.Second}
	return e
}

// server starts a server that lets e's key in.
func (e *env) server(t *testing.T, opts sshtest.Options) *sshtest.Server {
	t.Helper()
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, e.signer.PublicKey())
	return sshtest.New(t, opts)
}

// trust appends lines to e's known_hosts.
func (e *env) trust(t *testing.T, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(e.kh, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := fmt.Fprintln(f, l); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) target(name string, s *sshtest.Server) ssh.Target {
	return ssh.Target{Name: name, Address: s.Host(), Port: s.Port(), IdentityFiles: []string{e.id}, KnownHosts: []string{e.kh}}
}

func (e *env) dial(t *testing.T, tg ssh.Target) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial(context.Background(), tg, e.cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialErr dials and wants an *ssh.Error of kind.
func (e *env) dialErr(t *testing.T, tg ssh.Target, kind ssh.Kind) *ssh.Error {
	t.Helper()
	c, err := ssh.Dial(context.Background(), tg, e.cfg)
	if err == nil {
		c.Close()
		t.Fatalf("Dial succeeded; want a %v error", kind)
	}
	var se *ssh.Error
	if !errors.As(err, &se) {
		t.Fatalf("Dial error is %T (%v); want *ssh.Error", err, err)
	}
	if se.Kind != kind {
		t.Fatalf("Dial error kind = %v (%v); want %v", se.Kind, err, kind)
	}
	return se
}

func hostKeyError(t *testing.T, err error) *ssh.HostKeyError {
	t.Helper()
	var hke *ssh.HostKeyError
	if !errors.As(err, &hke) {
		t.Fatalf("error %v is not a *HostKeyError", err)
	}
	return hke
}

// assertUntouched checks that nothing ran on s: no login, session, exec or
// SFTP.
func assertUntouched(t *testing.T, s *sshtest.Server) {
	t.Helper()
	if n := s.Logins() + s.Sessions() + s.Execs() + s.Subsystems() + s.Forwards(); n != 0 {
		t.Errorf("server saw logins=%d sessions=%d execs=%d subsystems=%d forwards=%d; want all 0",
			s.Logins(), s.Sessions(), s.Execs(), s.Subsystems(), s.Forwards())
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine())
	c := e.dial(t, e.target("lab1", s))
	ctx := context.Background()

	out, err := c.Run(ctx, "echo hello; echo noise >&2")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if string(out) != "hello\n" {
		t.Errorf("stdout = %q; want %q", out, "hello\n")
	}

	out, err = c.Run(ctx, "echo partial; echo first >&2; echo 'it broke' >&2; exit 3")
	var ce *ssh.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("Run error = %v (%T); want *CommandError", err, err)
	}
	if ce.ExitCode != 3 || ce.Host != "lab1" || string(ce.Stderr) != "first\nit broke\n" {
		t.Errorf("CommandError = {Host %q, ExitCode %d, Stderr %q}; want {lab1, 3, %q}", ce.Host, ce.ExitCode, ce.Stderr, "first\nit broke\n")
	}
	if !strings.Contains(err.Error(), "it broke") || !strings.Contains(err.Error(), "status 3") {
		t.Errorf("message %q; want the status and the last stderr line", err)
	}
	if string(out) != "partial\n" {
		t.Errorf("stdout on failure = %q; want %q", out, "partial\n")
	}

	_, err = c.Run(ctx, "kill -9 $$")
	if !errors.As(err, &ce) || ce.Signal != "KILL" {
		t.Errorf("Run(kill) error = %v; want a CommandError with Signal KILL", err)
	}
}

func TestRunStderrIsCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine())
	c := e.dial(t, e.target("lab1", s))
	_, err := c.Run(context.Background(), "head -c 200000 /dev/zero | tr '\\0' x >&2; echo; echo the end >&2; exit 1")
	var ce *ssh.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("Run error = %v; want *CommandError", err)
	}
	if len(ce.Stderr) != ssh.MaxStderr {
		t.Errorf("len(Stderr) = %d; want %d", len(ce.Stderr), ssh.MaxStderr)
	}
	if !bytes.HasSuffix(ce.Stderr, []byte("the end\n")) {
		t.Errorf("Stderr does not keep its tail: ...%q", ce.Stderr[len(ce.Stderr)-20:])
	}
}

func TestRunCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine())
	c := e.dial(t, e.target("lab1", s))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Run(ctx, "sleep 30")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run error = %v; want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run returned after %s; want soon after the deadline", d)
	}
	// The connection is still usable.
	if _, err := c.Run(context.Background(), "true"); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine())
	c := e.dial(t, e.target("lab1", s))

	sess, err := c.Start(context.Background(), `while read -r l; do echo "$l" | tr a-z A-Z; done; echo done >&2`)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sess.Close()
	var stderr bytes.Buffer
	errDone := make(chan struct{})
	go func() { io.Copy(&stderr, sess.Stderr); close(errDone) }()
	if _, err := io.WriteString(sess.Stdin, "hello\nworld\n"); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 6)
	if _, err := io.ReadFull(sess.Stdout, line); err != nil || string(line) != "HELLO\n" {
		t.Fatalf("first line = %q, %v; want %q", line, err, "HELLO\n")
	}
	sess.Stdin.Close()
	rest, err := io.ReadAll(sess.Stdout)
	if err != nil || string(rest) != "WORLD\n" {
		t.Errorf("rest = %q, %v; want %q", rest, err, "WORLD\n")
	}
	<-errDone
	if err := sess.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if stderr.String() != "done\n" {
		t.Errorf("stderr = %q; want %q", stderr.String(), "done\n")
	}

	sess, err = c.Start(context.Background(), "exit 4")
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, sess.Stderr)
	io.Copy(io.Discard, sess.Stdout)
	var ce *ssh.CommandError
	if err := sess.Wait(); !errors.As(err, &ce) || ce.ExitCode != 4 {
		t.Errorf("Wait = %v; want CommandError with status 4", err)
	}
}

func TestStartCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine())
	c := e.dial(t, e.target("lab1", s))
	ctx, cancel := context.WithCancel(context.Background())
	sess, err := c.Start(ctx, "cat")
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, sess.Stderr)
	cancel()
	if _, err := io.ReadAll(sess.Stdout); err != nil {
		t.Errorf("stdout after cancel: %v", err)
	}
	if err := sess.Wait(); err == nil {
		t.Errorf("Wait after cancel = nil; want an error")
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// leftovers lists temporary upload files under dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			found = append(found, p)
		}
		return nil
	})
	return found
}

func TestUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine())
	c := e.dial(t, e.target("lab1", s))
	ctx := context.Background()

	data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 000 bytes: many chunks
	const rel = ".cache/mito/nested/shim-abc"
	if err := c.Upload(ctx, bytes.NewReader(data), int64(len(data)), rel, 0o750); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	local := filepath.Join(s.Dir(), rel)
	got, err := os.ReadFile(local)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("uploaded file: %d bytes, %v; want %d bytes equal", len(got), err, len(data))
	}
	if fi, _ := os.Stat(local); fi.Mode().Perm() != 0o750 {
		t.Errorf("mode = %v; want 0750", fi.Mode().Perm())
	}

	fi, err := c.Stat(ctx, "~/"+rel)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if fi.Size() != int64(len(data)) || fi.Mode().Perm() != 0o750 {
		t.Errorf("Stat = size %d mode %v; want %d 0750", fi.Size(), fi.Mode().Perm(), len(data))
	}
	if _, err := c.Stat(ctx, ".cache/mito/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(missing) = %v; want fs.ErrNotExist", err)
	}

	// Overwrite an existing file, by absolute path.
	abs := filepath.Join(s.Dir(), "abs", "file")
	for _, content := range []string{"one", "second version"} {
		if err := c.Upload(ctx, strings.NewReader(content), int64(len(content)), abs, 0o644); err != nil {
			t.Fatalf("Upload(%s): %v", abs, err)
		}
		if got, _ := os.ReadFile(abs); string(got) != content {
			t.Errorf("content = %q; want %q", got, content)
		}
	}

	// Empty file.
	if err := c.Upload(ctx, strings.NewReader(""), 0, "empty", 0o600); err != nil {
		t.Fatalf("Upload(empty): %v", err)
	}
	if fi, err := os.Stat(filepath.Join(s.Dir(), "empty")); err != nil || fi.Size() != 0 {
		t.Errorf("empty file: %v, %v", fi, err)
	}
	if l := leftovers(t, s.Dir()); len(l) > 0 {
		t.Errorf("temporary files left: %v", l)
	}
}

func TestUploadFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine())
	c := e.dial(t, e.target("lab1", s))
	ctx := context.Background()

	old := []byte("old good content")
	if err := c.Upload(ctx, bytes.NewReader(old), int64(len(old)), "bin/tool", 0o755); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 100000)
	boom := errors.New("disk on fire")
	tests := []struct {
		name string
		r    io.Reader
		size int64
		want string
	}{
		{"failing reader", &failingReader{data: big, err: boom}, 200000, "disk on fire"},
		{"short reader", bytes.NewReader(big), 100001, "gave 100000 bytes"},
		{"long reader", bytes.NewReader(big), 99999, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Upload(ctx, tt.r, tt.size, "bin/tool", 0o755)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Upload error = %v; want one containing %q", err, tt.want)
			}
			if got, _ := os.ReadFile(filepath.Join(s.Dir(), "bin/tool")); !bytes.Equal(got, old) {
				t.Errorf("destination changed to %d bytes; want the old file intact", len(got))
			}
			if l := leftovers(t, s.Dir()); len(l) > 0 {
				t.Errorf("temporary files left: %v", l)
			}
		})
	}
	// A failed upload to a new name leaves no file at all.
	if err := c.Upload(ctx, &failingReader{data: big, err: boom}, 200000, "new/tool", 0o755); err == nil {
		t.Fatal("Upload succeeded; want an error")
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "new/tool")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial destination visible: %v", err)
	}
	if l := leftovers(t, s.Dir()); len(l) > 0 {
		t.Errorf("temporary files left: %v", l)
	}
}

func TestHostKeyUnknownStrict(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, "# nothing yet")
	se := e.dialErr(t, e.target("lab1", s), ssh.KindHostKey)
	if se.Retryable {
		t.Error("unknown host key is retryable; want not")
	}
	hke := hostKeyError(t, se)
	if !hke.Unknown || hke.Got != xssh.FingerprintSHA256(s.HostKey()) {
		t.Errorf("HostKeyError = %+v; want Unknown with Got the server's fingerprint", hke)
	}
	msg := se.Error()
	for _, want := range []string{"ssh lab1 (", "unknown", hke.Got, "ssh-keyscan -p " + fmt.Sprint(s.Port()), "accept-new"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	assertUntouched(t, s)

	// A missing known_hosts file counts as empty.
	tg := e.target("lab1", s)
	tg.KnownHosts = []string{filepath.Join(e.dir, "does-not-exist")}
	if hke := hostKeyError(t, e.dialErr(t, tg, ssh.KindHostKey)); !hke.Unknown {
		t.Errorf("missing file: HostKeyError = %+v; want Unknown", hke)
	}
}

func TestHostKeyMismatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	other := sshtest.MustKey(t).PublicKey()
	e.trust(t, "# first line", sshtest.KnownHostsLine(s.Addr(), other))
	se := e.dialErr(t, e.target("lab1", s), ssh.KindHostKey)
	if se.Retryable {
		t.Error("mismatch is retryable; want not")
	}
	hke := hostKeyError(t, se)
	got, want := xssh.FingerprintSHA256(s.HostKey()), xssh.FingerprintSHA256(other)
	if hke.Unknown || hke.Got != got || len(hke.Want) != 1 || hke.Want[0] != want {
		t.Errorf("HostKeyError = %+v; want Got %s, Want [%s]", hke, got, want)
	}
	msg := se.Error()
	for _, w := range []string{"ssh lab1 (", "host key mismatch", got, want, e.kh + ":2"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q lacks %q", msg, w)
		}
	}
	assertUntouched(t, s)
}

func TestHostKeyRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine(), sshtest.RevokedLine(s.HostKey()))
	se := e.dialErr(t, e.target("lab1", s), ssh.KindHostKey)
	if hke := hostKeyError(t, se); !hke.Revoked {
		t.Errorf("HostKeyError = %+v; want Revoked", hke)
	}
	if !strings.Contains(se.Error(), "revoked") {
		t.Errorf("message %q does not say revoked", se)
	}
	assertUntouched(t, s)
}

func TestHostKeyAlgorithmsFollowKnownKeys(t *testing.T) {
	t.Parallel()
	// The server has an ECDSA and an ed25519 key. x/crypto's default
	// order asks for ECDSA first; known_hosts lists only ed25519, so
	// without restricting the algorithms the client would be shown the
	// ECDSA key and refuse it.
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecSigner, err := xssh.NewSignerFromKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ed := sshtest.MustKey(t)
	e := newEnv(t)
	s := e.server(t, sshtest.Options{HostKeys: []xssh.Signer{ecSigner, ed}})
	e.trust(t, sshtest.KnownHostsLine(s.Addr(), ed.PublicKey()))
	c := e.dial(t, e.target("lab1", s))
	if _, err := c.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
}

func TestHostCertificate(t *testing.T) {
	t.Parallel()
	ca, otherCA := sshtest.MustKey(t), sshtest.MustKey(t)
	e := newEnv(t)

	hostKey := sshtest.MustKey(t)
	good := e.server(t, sshtest.Options{HostKeys: []xssh.Signer{sshtest.HostCertSigner(t, hostKey, ca, "127.0.0.1")}})
	bad := e.server(t, sshtest.Options{HostKeys: []xssh.Signer{sshtest.HostCertSigner(t, sshtest.MustKey(t), otherCA, "127.0.0.1")}})
	wrongName := e.server(t, sshtest.Options{HostKeys: []xssh.Signer{sshtest.HostCertSigner(t, sshtest.MustKey(t), ca, "somewhere.else")}})
	for _, s := range []*sshtest.Server{good, bad, wrongName} {
		e.trust(t, sshtest.CertAuthorityLine(s.Addr(), ca.PublicKey()))
	}

	c := e.dial(t, e.target("good", good))
	if _, err := c.Run(context.Background(), "true"); err != nil {
		t.Fatalf("Run on certified host: %v", err)
	}

	se := e.dialErr(t, e.target("bad", bad), ssh.KindHostKey)
	hke := hostKeyError(t, se)
	if hke.CA != xssh.FingerprintSHA256(otherCA.PublicKey()) || len(hke.Want) != 1 || hke.Want[0] != xssh.FingerprintSHA256(ca.PublicKey()) {
		t.Errorf("HostKeyError = %+v; want CA = other CA, Want = [trusted CA]", hke)
	}
	if !strings.Contains(se.Error(), "certificate") {
		t.Errorf("message %q does not mention the certificate", se)
	}
	assertUntouched(t, bad)

	se = e.dialErr(t, e.target("wrongname", wrongName), ssh.KindHostKey)
	if hke := hostKeyError(t, se); !strings.Contains(hke.Reason, "principal") {
		t.Errorf("HostKeyError.Reason = %q; want a principal complaint", hke.Reason)
	}
	assertUntouched(t, wrongName)

	// Revoking the CA refuses its certificates.
	e2 := newEnv(t)
	good2 := e2.server(t, sshtest.Options{HostKeys: []xssh.Signer{sshtest.HostCertSigner(t, hostKey, ca, "127.0.0.1")}})
	e2.trust(t, sshtest.CertAuthorityLine(good2.Addr(), ca.PublicKey()), sshtest.RevokedLine(ca.PublicKey()))
	if hke := hostKeyError(t, e2.dialErr(t, e2.target("good2", good2), ssh.KindHostKey)); !hke.Revoked {
		t.Errorf("revoked CA: HostKeyError = %+v; want Revoked", hke)
	}
	assertUntouched(t, good2)
}

// memPins is an in-memory Pins.
type memPins struct {
	mu sync.Mutex
	m  map[string]string
}

func (p *memPins) Pinned(_ context.Context, hostport string) (string, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.m[hostport]
	return k, ok, nil
}

func (p *memPins) Pin(_ context.Context, hostport, key string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]string)
	}
	p.m[hostport] = key
	return nil
}

func TestAcceptNew(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	pins := &memPins{}
	e.cfg.Pins = pins
	tg := e.target("lab1", s)
	tg.Policy = ssh.PolicyAcceptNew

	c := e.dial(t, tg)
	if _, err := c.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	want := strings.TrimSpace(string(xssh.MarshalAuthorizedKey(s.HostKey())))
	if got, ok, _ := pins.Pinned(context.Background(), s.Addr()); !ok || got != want {
		t.Fatalf("pin for %s = %q, %v; want %q", s.Addr(), got, ok, want)
	}
	// Known now: the second connection passes without pinning again.
	e.dial(t, tg).Close()

	// The host's key changes: refused.
	other := sshtest.MustKey(t).PublicKey()
	pins.Pin(context.Background(), s.Addr(), string(xssh.MarshalAuthorizedKey(other)))
	waitFor(t, "two logins", func() bool { return s.Logins() == 2 })
	se := e.dialErr(t, tg, ssh.KindHostKey)
	hke := hostKeyError(t, se)
	if hke.Got != xssh.FingerprintSHA256(s.HostKey()) || len(hke.Want) != 1 || hke.Want[0] != xssh.FingerprintSHA256(other) {
		t.Errorf("HostKeyError = %+v; want Got = server key, Want = pinned key", hke)
	}
	if !strings.Contains(se.Error(), "pinned") {
		t.Errorf("message %q does not say the key was pinned", se)
	}
	if s.Logins() != 2 {
		t.Errorf("server saw a login after the refused key")
	}

	// known_hosts still wins under accept-new: a listed, different key
	// is refused, and nothing is pinned.
	e2 := newEnv(t)
	s2 := e2.server(t, sshtest.Options{})
	e2.trust(t, sshtest.KnownHostsLine(s2.Addr(), other))
	e2.cfg.Pins = pins
	tg2 := e2.target("lab2", s2)
	tg2.Policy = ssh.PolicyAcceptNew
	e2.dialErr(t, tg2, ssh.KindHostKey)
	if _, ok, _ := pins.Pinned(context.Background(), s2.Addr()); ok {
		t.Errorf("key pinned although known_hosts lists another")
	}
	assertUntouched(t, s2)

	// accept-new without a pin store is a configuration error.
	e2.cfg.Pins = nil
	if se := e2.dialErr(t, tg2, ssh.KindConfig); se.Retryable {
		t.Errorf("config error is retryable")
	}
}

func TestJumpChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	jump := e.server(t, sshtest.Options{})
	target := e.server(t, sshtest.Options{})
	e.trust(t, jump.KnownHostsLine(), target.KnownHostsLine())
	jt := e.target("bastion", jump)
	tg := e.target("lab1", target)
	tg.Jump = &jt

	c := e.dial(t, tg)
	out, err := c.Run(context.Background(), "echo via jump")
	if err != nil || string(out) != "via jump\n" {
		t.Fatalf("Run = %q, %v", out, err)
	}
	if jump.Forwards() != 1 || jump.Sessions() != 0 {
		t.Errorf("jump host: forwards=%d sessions=%d; want 1, 0", jump.Forwards(), jump.Sessions())
	}
	if err := c.Upload(context.Background(), strings.NewReader("hi"), 2, "f", 0o600); err != nil {
		t.Errorf("Upload via jump: %v", err)
	}
	// Closing the client closes the whole chain.
	c.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after Close")
	}
	waitFor(t, "jump host connection to close", func() bool { return jump.OpenConns() == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJumpChainSecondHopMismatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	jump := e.server(t, sshtest.Options{})
	target := e.server(t, sshtest.Options{})
	e.trust(t, jump.KnownHostsLine(), sshtest.KnownHostsLine(target.Addr(), sshtest.MustKey(t).PublicKey()))
	jt := e.target("bastion", jump)
	tg := e.target("lab1", target)
	tg.Jump = &jt

	se := e.dialErr(t, tg, ssh.KindHostKey)
	if se.Host != "lab1" {
		t.Errorf("error names host %q; want lab1 (the second hop)", se.Host)
	}
	if hke := hostKeyError(t, se); hke.Host != "lab1" {
		t.Errorf("HostKeyError.Host = %q; want lab1", hke.Host)
	}
	assertUntouched(t, target)
	waitFor(t, "jump host connection to close", func() bool { return jump.OpenConns() == 0 })

	// And a mismatch on the first hop is reported for the jump host.
	e2 := newEnv(t)
	e2.trust(t, sshtest.KnownHostsLine(jump.Addr(), sshtest.MustKey(t).PublicKey()), target.KnownHostsLine())
	jt2 := e2.target("bastion", jump)
	tg2 := e2.target("lab1", target)
	tg2.Jump = &jt2
	if se := e2.dialErr(t, tg2, ssh.KindHostKey); se.Host != "bastion" {
		t.Errorf("error names host %q; want bastion", se.Host)
	}
}

func TestJumpForwardingRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	jump := e.server(t, sshtest.Options{NoForwarding: true})
	target := e.server(t, sshtest.Options{})
	e.trust(t, jump.KnownHostsLine(), target.KnownHostsLine())
	jt := e.target("bastion", jump)
	tg := e.target("lab1", target)
	tg.Jump = &jt
	se := e.dialErr(t, tg, ssh.KindProtocol)
	if se.Retryable {
		t.Errorf("forwarding refused is retryable; want not")
	}
}

func TestAuthFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := sshtest.New(t, sshtest.Options{}) // authorizes nobody
	e.trust(t, s.KnownHostsLine())
	se := e.dialErr(t, e.target("lab1", s), ssh.KindAuth)
	if se.Retryable || ssh.IsRetryable(se) {
		t.Errorf("auth failure is retryable; want not")
	}
	if s.Sessions() != 0 {
		t.Errorf("sessions = %d; want 0", s.Sessions())
	}

	// An identity file that does not exist is an auth error too, found
	// before connecting.
	tg := e.target("lab1", s)
	tg.IdentityFiles = []string{filepath.Join(e.dir, "nope")}
	conns := s.Conns()
	e.dialErr(t, tg, ssh.KindAuth)
	if s.Conns() != conns {
		t.Errorf("connected with a missing identity file")
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close()
	e := newEnv(t)
	se := e.dialErr(t, ssh.Target{Name: "gone", Address: "127.0.0.1", Port: addr.Port, IdentityFiles: []string{e.id}, KnownHosts: []string{e.kh}}, ssh.KindNetwork)
	if !se.Retryable || !ssh.IsRetryable(se) {
		t.Errorf("connection refused is not retryable; want retryable")
	}
	if !strings.HasPrefix(se.Error(), "ssh gone (127.0.0.1:") {
		t.Errorf("message %q; want it to start with the host and address", se)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	// A server that accepts and never speaks.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	e := newEnv(t)
	e.cfg.HandshakeTimeout = 200 * time.Millisecond
	port := ln.Addr().(*net.TCPAddr).Port
	start := time.Now()
	se := e.dialErr(t, ssh.Target{Name: "mute", Address: "127.0.0.1", Port: port, IdentityFiles: []string{e.id}, KnownHosts: []string{e.kh}}, ssh.KindNetwork)
	if !se.Retryable || !strings.Contains(se.Error(), "timed out") {
		t.Errorf("error = %v (retryable %v); want a retryable timeout", se, se.Retryable)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Dial took %s; want about the handshake timeout", d)
	}
}

func TestKeepAliveDetectsHungServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine())
	e.cfg.KeepAlive = 50 * time.Millisecond
	c := e.dial(t, e.target("lab1", s))

	time.Sleep(300 * time.Millisecond)
	select {
	case <-c.Done():
		t.Fatalf("Done closed while the server answers: %v", c.Err())
	default:
	}
	if s.KeepAlives() == 0 {
		t.Errorf("no keepalives sent")
	}
	s.SetSilent(true)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the server stopped answering")
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "keepalive") {
		t.Errorf("Err = %v; want a keepalive error", err)
	}
	if _, err := c.Run(context.Background(), "true"); err == nil {
		t.Errorf("Run on a dead connection succeeded")
	}
}

func TestSSHConfigAlias(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bastion := e.server(t, sshtest.Options{})
	s := e.server(t, sshtest.Options{})
	e.trust(t, s.KnownHostsLine(), bastion.KnownHostsLine())
	cfgPath := filepath.Join(e.dir, "ssh_config")
	config := fmt.Sprintf(`Host lab
  HostName 127.0.0.1
  Port %d
  User alice
  IdentityFile %s
  UserKnownHostsFile %s

Host jumpbox
  HostName 127.0.0.1
  Port %d
  User bob
  IdentityFile %s
  UserKnownHostsFile %s

Host behind
  HostName 127.0.0.1
  Port %d
  User carol
  IdentityFile %s
  UserKnownHostsFile %s
  ProxyJump jumpbox
`, s.Port(), e.id, e.kh, bastion.Port(), e.id, e.kh, s.Port(), e.id, e.kh)
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cfg.SSHConfig = cfgPath

	c := e.dial(t, ssh.Target{Name: "lab1", Address: "lab"})
	if _, err := c.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	if u := s.Users(); len(u) != 1 || u[0] != "alice" {
		t.Errorf("users = %v; want [alice]", u)
	}

	// Target fields override ssh_config.
	c2 := e.dial(t, ssh.Target{Name: "lab1", Address: "lab", User: "dave"})
	if _, err := c2.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if u := s.Users(); len(u) != 2 || u[1] != "dave" {
		t.Errorf("users = %v; want [alice dave]", u)
	}

	// ProxyJump from ssh_config.
	c3 := e.dial(t, ssh.Target{Name: "lab2", Address: "behind"})
	if _, err := c3.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	if bastion.Forwards() != 1 {
		t.Errorf("bastion forwards = %d; want 1", bastion.Forwards())
	}
	if u := bastion.Users(); len(u) != 1 || u[0] != "bob" {
		t.Errorf("bastion users = %v; want [bob]", u)
	}
	if u := s.Users(); len(u) != 3 || u[2] != "carol" {
		t.Errorf("users = %v; want [alice dave carol]", u)
	}
}

func TestBadTarget(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name string
		tg   ssh.Target
	}{
		{"no address", ssh.Target{Name: "x"}},
		{"bad policy", ssh.Target{Name: "x", Address: "127.0.0.1", Policy: "yolo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if se := e.dialErr(t, tt.tg, ssh.KindConfig); se.Retryable {
				t.Errorf("config error is retryable")
			}
		})
	}
}
