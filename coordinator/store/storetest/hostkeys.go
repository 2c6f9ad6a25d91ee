package storetest

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// newHostKey returns a new ed25519 public key in authorized_keys form,
// without a newline, and its SHA256 fingerprint.
func newHostKey(t *testing.T) (key, fingerprint string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	ok(t, err, "generate key")
	sp, err := ssh.NewPublicKey(pub)
	ok(t, err, "ssh.NewPublicKey")
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))), ssh.FingerprintSHA256(sp)
}

// wantPinned fails unless hostport has key pinned ("" for none).
func wantPinned(t *testing.T, s store.Store, hostport, key, what string) {
	t.Helper()
	got, found, err := s.PinnedHostKey(t.Context(), hostport)
	ok(t, err, what+": PinnedHostKey "+hostport)
	switch {
	case key == "" && found:
		t.Errorf("%s: PinnedHostKey %s = %q; want none", what, hostport, got)
	case key != "" && !found:
		t.Errorf("%s: PinnedHostKey %s = none; want %q", what, hostport, key)
	case got != key:
		t.Errorf("%s: PinnedHostKey %s = %q; want %q", what, hostport, got, key)
	}
}

func testHostKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	const hp = "127.0.0.2:2222"
	k1, fp1 := newHostKey(t)
	k2, fp2 := newHostKey(t)

	wantPinned(t, s, hp, "", "before any pin")

	// First use pins; the same key again, with or without a comment or
	// a trailing newline, is no error and changes nothing.
	ok(t, s.PinHostKey(ctx, hp, k1), "first PinHostKey")
	wantPinned(t, s, hp, k1, "after the first pin")
	ok(t, s.PinHostKey(ctx, hp, k1), "PinHostKey of the same key")
	ok(t, s.PinHostKey(ctx, hp, k1+" root@host\n"), "PinHostKey of the same key with a comment")
	wantPinned(t, s, hp, k1, "after pinning the same key again")

	// A different key is a conflict naming the host and both keys, and
	// the first key stays pinned.
	err := s.PinHostKey(ctx, hp, k2)
	wantCode(t, err, tasks.EConflict, "PinHostKey of another key")
	mention(t, err, "PinHostKey of another key", hp, fp1, fp2, "ssh-ed25519")
	wantPinned(t, s, hp, k1, "after a conflicting pin")

	// Pins are per host:port: another port of the same address, or
	// another address, is another host.
	ok(t, s.PinHostKey(ctx, "127.0.0.2:22", k2), "PinHostKey on another port")
	ok(t, s.PinHostKey(ctx, "[::1]:2222", k2), "PinHostKey on an IPv6 address")
	wantPinned(t, s, "127.0.0.2:22", k2, "another port")
	wantPinned(t, s, "[::1]:2222", k2, "IPv6 address")
	wantPinned(t, s, hp, k1, "first host after pinning others")
	wantPinned(t, s, "127.0.0.3:2222", "", "a host never pinned")

	// Bad input is refused, and pins nothing.
	for _, bad := range []string{"", "127.0.0.2", ":22", "127.0.0.2:", "127.0.0.2:x", "127.0.0.2:0", "127.0.0.2:70000"} {
		wantCode(t, s.PinHostKey(ctx, bad, k1), tasks.EInvalid, "PinHostKey hostport "+bad)
		_, _, err := s.PinnedHostKey(ctx, bad)
		wantCode(t, err, tasks.EInvalid, "PinnedHostKey hostport "+bad)
	}
	for _, bad := range []string{"", "ssh-ed25519", "ssh-ed25519 not-base64!", k1 + "\n" + k2} {
		wantCode(t, s.PinHostKey(ctx, "127.0.0.9:22", bad), tasks.EInvalid, "PinHostKey key "+bad)
	}
	wantPinned(t, s, "127.0.0.9:22", "", "after bad keys")
}

// testHostKeysConcurrent pins a different key for one host from many
// goroutines at once: exactly one wins, every other gets EConflict, and
// the winner's key is the one pinned.
func testHostKeysConcurrent(t *testing.T, s store.Store) {
	const hp, n = "10.250.1.2:22", 16
	keys := make([]string, n)
	for i := range keys {
		keys[i], _ = newHostKey(t)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.PinHostKey(t.Context(), hp, keys[i])
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatalf("pins %d and %d both succeeded; want exactly one", winner, i)
			}
			winner = i
			continue
		}
		wantCode(t, err, tasks.EConflict, "losing concurrent pin")
	}
	if winner < 0 {
		t.Fatalf("no concurrent pin succeeded; errors: %v", errs)
	}
	wantPinned(t, s, hp, keys[winner], "after concurrent pins")

	// Concurrent pins of one key all succeed.
	const hp2 = "10.250.0.2:22"
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.PinHostKey(t.Context(), hp2, keys[0])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		ok(t, err, "concurrent pin of the same key")
	}
	wantPinned(t, s, hp2, keys[0], "after concurrent pins of one key")
}
