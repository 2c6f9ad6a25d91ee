package ssh_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/transport/ssh"
	"github.com/mitolab/mito/transport/ssh/sshtest"
)

// TestRealSSHD runs against real OpenSSH sshd hosts, which the test script
// starts (see ENVIRONMENT.md section 2):
//
//	MITO_TEST_SSH_HOSTS=127.0.0.2:2222,127.0.0.3:2222
//	MITO_TEST_SSH_USER=tester
//	MITO_TEST_SSH_KEY=/path/id_ed25519
//	MITO_TEST_SSH_KNOWN_HOSTS=/path/known_hosts
//
// Without them it skips, unless MITO_TEST_REQUIRE is set.
func TestRealSSHD(t *testing.T) {
	hosts := os.Getenv("MITO_TEST_SSH_HOSTS")
	if hosts == "" {
		msg := "MITO_TEST_SSH_HOSTS not set: start sshd hosts with the test script (.ci/services-up.sh) and source its env"
		if os.Getenv("MITO_TEST_REQUIRE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	user, key, kh := os.Getenv("MITO_TEST_SSH_USER"), os.Getenv("MITO_TEST_SSH_KEY"), os.Getenv("MITO_TEST_SSH_KNOWN_HOSTS")
	for _, hp := range strings.Split(hosts, ",") {
		hp = strings.TrimSpace(hp)
		t.Run(hp, func(t *testing.T) {
			host, portStr, err := net.SplitHostPort(hp)
			if err != nil {
				t.Fatal(err)
			}
			port, _ := strconv.Atoi(portStr)
			tg := ssh.Target{Name: hp, Address: host, Port: port, User: user}
			if key != "" {
				tg.IdentityFiles = []string{key}
			}
			if kh != "" {
				tg.KnownHosts = []string{kh}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := ssh.Dial(ctx, tg, ssh.Config{SSHConfig: "none", Agent: "none"})
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()

			out, err := c.Run(ctx, "echo $SSH_CONNECTION")
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if f := strings.Fields(string(out)); len(f) != 4 || f[2] != host || f[3] != portStr {
				t.Errorf("SSH_CONNECTION = %q; want it to end with %s %s", out, host, portStr)
			}
			var ce *ssh.CommandError
			if _, err := c.Run(ctx, "echo bad >&2; exit 7"); !asCommandError(err, &ce) || ce.ExitCode != 7 || string(ce.Stderr) != "bad\n" {
				t.Errorf("Run(exit 7) = %v; want CommandError status 7 with stderr", err)
			}

			const size = 10 << 20
			data := make([]byte, size)
			rand.Read(data)
			dst := fmt.Sprintf(".cache/mito-test/upload-%d", time.Now().UnixNano())
			start := time.Now()
			if err := c.Upload(ctx, bytes.NewReader(data), size, dst, 0o700); err != nil {
				t.Fatalf("Upload: %v", err)
			}
			t.Logf("10 MiB upload took %s", time.Since(start))
			defer c.Run(context.Background(), "rm -f "+dst)
			fi, err := c.Stat(ctx, dst)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if fi.Size() != size || fi.Mode().Perm() != 0o700 {
				t.Errorf("Stat = %d bytes mode %v; want %d 0700", fi.Size(), fi.Mode().Perm(), size)
			}
			sum, err := c.Run(ctx, "sha256sum "+dst)
			if err != nil {
				t.Fatal(err)
			}
			if want := sha256hex(data); !strings.HasPrefix(string(sum), want) {
				t.Errorf("remote sha256 = %q; want %s", sum, want)
			}
			if out, _ := c.Run(ctx, "ls -a .cache/mito-test | grep -c tmp- || true"); strings.TrimSpace(string(out)) != "0" {
				t.Errorf("temporary files left: %s", out)
			}

			// A known_hosts that lists another key: refused in the
			// handshake.
			other := filepath.Join(t.TempDir(), "known_hosts")
			if err := os.WriteFile(other, []byte(sshtest.KnownHostsLine(hp, sshtest.MustKey(t).PublicKey())+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			bad := tg
			bad.KnownHosts = []string{other}
			if _, err := ssh.Dial(ctx, bad, ssh.Config{SSHConfig: "none", Agent: "none"}); !isKind(err, ssh.KindHostKey) {
				t.Errorf("Dial with a wrong known_hosts = %v; want a host key error", err)
			}

			// A command that leaves a process holding its stdout: sshd
			// sends the exit status but keeps the channel open, and
			// RunCombined stops reading OutputGrace later.
			var comb strings.Builder
			start = time.Now()
			if err := c.RunCombined(ctx, "echo started; sleep 5 &", &comb); err != nil || comb.String() != "started\n" {
				t.Errorf("RunCombined = %v, output %q; want nil and %q", err, comb.String(), "started\n")
			}
			if d := time.Since(start); d > ssh.OutputGrace+3*time.Second {
				t.Errorf("RunCombined with a background process took %s", d)
			}

			// A long-running command with stdin/stdout, as the shim runs.
			sess, err := c.Start(ctx, "cat")
			if err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, sess.Stderr)
			io.WriteString(sess.Stdin, "ping\n")
			sess.Stdin.Close()
			if b, _ := io.ReadAll(sess.Stdout); string(b) != "ping\n" {
				t.Errorf("cat echoed %q", b)
			}
			if err := sess.Wait(); err != nil {
				t.Errorf("Wait: %v", err)
			}
		})
	}
}

func isKind(err error, k ssh.Kind) bool {
	var se *ssh.Error
	return errors.As(err, &se) && se.Kind == k
}

func asCommandError(err error, ce **ssh.CommandError) bool { return errors.As(err, ce) }

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
