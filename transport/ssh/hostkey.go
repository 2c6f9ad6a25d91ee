package ssh

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// knownHostsDB is the known_hosts files of one hop. Matching (hashed
// names, wildcards, negation, ports), @cert-authority and @revoked are
// knownhosts' job; we only add what it does not expose: which entries
// match a host (for HostKeyAlgorithms and messages) and which of those are
// CAs.
type knownHostsDB struct {
	files []string // the files that exist
	cb    xssh.HostKeyCallback
	// lines of each file, to tell @cert-authority entries apart.
	lines map[string][]string
}

func loadKnownHosts(files []string) (*knownHostsDB, error) {
	db := &knownHostsDB{lines: make(map[string][]string)}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read known_hosts: %w", err)
		}
		var lines []string
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		db.lines[f] = lines
		db.files = append(db.files, f)
	}
	if len(db.files) > 0 {
		cb, err := knownhosts.New(db.files...)
		if err != nil {
			return nil, fmt.Errorf("parse known_hosts: %w", err)
		}
		db.cb = cb
	}
	return db, nil
}

func (db *knownHostsDB) isCA(k knownhosts.KnownKey) bool {
	lines := db.lines[k.Filename]
	if k.Line < 1 || k.Line > len(lines) {
		return false
	}
	return strings.HasPrefix(strings.TrimSpace(lines[k.Line-1]), "@cert-authority")
}

// probeKey is a key no host has: checking it makes knownhosts list every
// entry that matches a host name.
var probeKey = sync.OnceValue(func() xssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	k, err := xssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return k
})

var probeAddr = &net.TCPAddr{IP: net.IPv4zero}

// known returns the plain keys and the CA keys listed for hostport.
func (db *knownHostsDB) known(hostport string) (plain, cas []knownhosts.KnownKey) {
	if db.cb == nil {
		return nil, nil
	}
	var ke *knownhosts.KeyError
	if err := db.cb(hostport, probeAddr, probeKey()); !errors.As(err, &ke) {
		return nil, nil
	}
	for _, k := range ke.Want {
		if db.isCA(k) {
			cas = append(cas, k)
		} else {
			plain = append(plain, k)
		}
	}
	return plain, cas
}

// hostKeyChecker verifies one hop's host key during the handshake, so that
// a refused key stops the connection before authentication, let alone any
// exec or SFTP.
type hostKeyChecker struct {
	host    string // name for messages
	keyName string // host:port looked up in known_hosts and pins
	policy  string
	db      *knownHostsDB
	pins    Pins
	ctx     context.Context
	log     *slog.Logger

	// pinned caches Pins.Pinned for the handshake.
	pinned    xssh.PublicKey
	pinnedErr error
	pinOnce   sync.Once

	// failure is the refusal the callback returned, so Dial can report
	// it whatever the handshake wraps it in.
	failure error
}

func (c *hostKeyChecker) lookupPin() (xssh.PublicKey, error) {
	c.pinOnce.Do(func() {
		if c.policy != PolicyAcceptNew || c.pins == nil {
			return
		}
		s, ok, err := c.pins.Pinned(c.ctx, c.keyName)
		if err != nil {
			c.pinnedErr = fmt.Errorf("look up pinned host key: %w", err)
			return
		}
		if !ok {
			return
		}
		k, _, _, _, err := xssh.ParseAuthorizedKey([]byte(s))
		if err != nil {
			c.pinnedErr = fmt.Errorf("parse pinned host key of %s: %w", c.keyName, err)
			return
		}
		c.pinned = k
	})
	return c.pinned, c.pinnedErr
}

// algorithms returns the host key algorithms to offer: those of the keys
// known for the host, so that a host known by its ed25519 key is not asked
// for RSA first and then refused. Nil means the defaults (nothing known).
func (c *hostKeyChecker) algorithms() []string {
	plain, cas := c.db.known(c.keyName)
	var out []string
	if len(cas) > 0 {
		out = append(out, certAlgos...)
	}
	for _, k := range plain {
		out = append(out, algosFor(k.Key.Type())...)
	}
	if len(plain) == 0 && len(cas) == 0 {
		if k, err := c.lookupPin(); err == nil && k != nil {
			out = append(out, algosFor(k.Type())...)
		}
	}
	if len(plain) == 0 && len(cas) > 0 {
		// Only CAs are known: still let a server without a certificate
		// show its plain key, so that the error says what is wrong
		// instead of "no common algorithm".
		out = append(out, xssh.SupportedAlgorithms().HostKeys...)
	}
	supported := slices.Concat(xssh.SupportedAlgorithms().HostKeys, xssh.InsecureAlgorithms().HostKeys)
	var res []string
	for _, a := range out {
		if slices.Contains(supported, a) && !slices.Contains(res, a) {
			res = append(res, a)
		}
	}
	return res
}

var certAlgos = []string{
	xssh.CertAlgoED25519v01,
	xssh.CertAlgoECDSA256v01, xssh.CertAlgoECDSA384v01, xssh.CertAlgoECDSA521v01,
	xssh.CertAlgoRSASHA512v01, xssh.CertAlgoRSASHA256v01,
}

func algosFor(keyType string) []string {
	if keyType == xssh.KeyAlgoRSA {
		// An RSA key signs with SHA-2 on any current server; plain
		// ssh-rsa (SHA-1) stays last for old ones.
		return []string{xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256, xssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// check is the HostKeyCallback.
func (c *hostKeyChecker) check(hostname string, remote net.Addr, key xssh.PublicKey) error {
	err := c.verify(hostname, remote, key, nil)
	if err != nil {
		c.failure = err
	}
	return err
}

func fingerprint(k xssh.PublicKey) string { return xssh.FingerprintSHA256(k) }

func source(k knownhosts.KnownKey) string { return fmt.Sprintf("%s:%d", k.Filename, k.Line) }

func (c *hostKeyChecker) newError(key xssh.PublicKey, cert *xssh.Certificate) *HostKeyError {
	e := &HostKeyError{Host: c.host, HostPort: c.keyName, KeyType: key.Type(), Got: fingerprint(key), Files: c.db.files}
	if cert != nil {
		e.CA = fingerprint(cert.SignatureKey)
	}
	return e
}

func (e *HostKeyError) add(keys ...knownhosts.KnownKey) {
	for _, k := range keys {
		e.Want = append(e.Want, fingerprint(k.Key))
		e.Sources = append(e.Sources, source(k))
	}
}

// verify checks key; cert is the certificate key came from when we fall
// back from a certificate to its plain key, as OpenSSH does when no CA is
// listed for the host.
func (c *hostKeyChecker) verify(hostname string, remote net.Addr, key xssh.PublicKey, cert *xssh.Certificate) error {
	if c.db.cb != nil {
		err := c.db.cb(hostname, remote, key)
		if err == nil {
			return nil
		}
		var rev *knownhosts.RevokedError
		var ke *knownhosts.KeyError
		switch {
		case errors.As(err, &rev):
			e := c.newError(key, cert)
			e.Revoked = true
			e.add(rev.Revoked)
			return e
		case errors.As(err, &ke):
			if len(ke.Want) > 0 {
				var plain, cas []knownhosts.KnownKey
				for _, k := range ke.Want {
					if c.db.isCA(k) {
						cas = append(cas, k)
					} else {
						plain = append(plain, k)
					}
				}
				e := c.newError(key, cert)
				if len(plain) > 0 {
					e.add(plain...)
					return e
				}
				// Only CAs are trusted for this host.
				e.add(cas...)
				if cert != nil {
					e.Reason = "certificate is not signed by a CA trusted for this host"
				} else {
					e.CA = ""
					e.Reason = "host presented a plain key, but only certificates are trusted for it"
				}
				return e
			}
			// Nothing known: the policy decides below.
		default:
			hc, ok := key.(*xssh.Certificate)
			if !ok {
				e := c.newError(key, nil)
				e.Reason = err.Error()
				return e
			}
			if strings.Contains(err.Error(), "no authorities for hostname") {
				// No CA listed for this host signed it: judge the
				// certified key on its own.
				return c.verify(hostname, remote, hc.Key, hc)
			}
			// A listed CA signed it, but the certificate is not
			// valid (expired, wrong principal, revoked).
			e := c.newError(hc.Key, hc)
			e.Reason = strings.TrimPrefix(err.Error(), "ssh: ")
			e.Revoked = strings.Contains(err.Error(), "revoked")
			_, cas := c.db.known(hostname)
			e.add(cas...)
			return e
		}
	} else if hc, ok := key.(*xssh.Certificate); ok {
		key, cert = hc.Key, hc
	}

	// The host is unknown to known_hosts.
	if c.policy != PolicyAcceptNew {
		e := c.newError(key, nil)
		e.Unknown = true
		return e
	}
	pinned, err := c.lookupPin()
	if err != nil {
		return err
	}
	if pinned != nil {
		if string(pinned.Marshal()) == string(key.Marshal()) {
			return nil
		}
		e := c.newError(key, nil)
		e.Want = []string{fingerprint(pinned)}
		e.Sources = []string{"pinned on first use"}
		return e
	}
	line := strings.TrimSpace(string(xssh.MarshalAuthorizedKey(key)))
	if err := c.pins.Pin(c.ctx, c.keyName, line); err != nil {
		return fmt.Errorf("pin host key of %s: %w", c.keyName, err)
	}
	c.log.Info("pinned new host key (accept-new)", "host", c.host, "hostport", c.keyName, "fingerprint", fingerprint(key))
	return nil
}
