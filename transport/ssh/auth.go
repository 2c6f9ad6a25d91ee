package ssh

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// loadSigners returns the keys to offer for h, in order, and a function
// that releases the agent connection once the handshake is over. Keys are
// only used to sign the handshake: the agent is never forwarded.
func loadSigners(h hop, agentSock string, log *slog.Logger) (signers []xssh.Signer, release func(), err error) {
	release = func() {}
	var agentSigners []xssh.Signer
	agentLoaded := false
	getAgent := func() []xssh.Signer {
		if agentLoaded {
			return agentSigners
		}
		agentLoaded = true
		if agentSock == "" || agentSock == "none" {
			return nil
		}
		conn, err := net.Dial("unix", agentSock)
		if err != nil {
			log.Debug("ssh-agent unavailable", "host", h.name, "err", err)
			return nil
		}
		release = func() { conn.Close() }
		s, err := agent.NewClient(conn).Signers()
		if err != nil {
			log.Debug("ssh-agent keys unavailable", "host", h.name, "err", err)
			return nil
		}
		agentSigners = s
		return s
	}

	// Explicit files (inventory or ssh_config) must work; the default
	// ~/.ssh/id_* files are tried when present.
	var files []xssh.Signer
	for _, f := range h.identityFiles {
		s, err := loadIdentity(f, getAgent)
		if err != nil {
			if h.defaultIDs {
				if !errors.Is(err, os.ErrNotExist) {
					log.Debug("skip default identity", "host", h.name, "file", f, "err", err)
				}
				continue
			}
			return nil, release, err
		}
		files = append(files, s...)
	}
	// The agent is not consulted when the inventory names a key (or
	// IdentitiesOnly is set): an inventory that names a key means that
	// key. Otherwise, as with OpenSSH, agent keys come before the default
	// files and after ssh_config's IdentityFile.
	var agentKeys []xssh.Signer
	if !h.identities && (h.defaultIDs || h.fromSSHConfig) {
		agentKeys = getAgent()
	}
	first, second := files, agentKeys
	if h.defaultIDs {
		first, second = agentKeys, files
	}
	signers = append(signers, first...)
	for _, s := range second {
		if !containsKey(signers, s.PublicKey()) {
			signers = append(signers, s)
		}
	}
	if len(signers) == 0 {
		return nil, release, errors.New("no usable key: set identity_file, an ssh_config IdentityFile, or load a key into ssh-agent")
	}
	return signers, release, nil
}

func containsKey(signers []xssh.Signer, k xssh.PublicKey) bool {
	for _, s := range signers {
		if string(s.PublicKey().Marshal()) == string(k.Marshal()) {
			return true
		}
	}
	return false
}

// loadIdentity reads a private key file and, like OpenSSH, its
// certificate "<file>-cert.pub" when present (offered first). A
// passphrase-protected key is used through the agent when the agent holds
// it: the coordinator never asks for passphrases.
func loadIdentity(file string, getAgent func() []xssh.Signer) ([]xssh.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read identity file: %w", err)
	}
	signer, err := xssh.ParsePrivateKey(data)
	var pme *xssh.PassphraseMissingError
	switch {
	case errors.As(err, &pme):
		pub := pme.PublicKey
		if pub == nil {
			if b, err := os.ReadFile(file + ".pub"); err == nil {
				pub, _, _, _, _ = xssh.ParseAuthorizedKey(b)
			}
		}
		if pub != nil {
			for _, s := range getAgent() {
				if string(s.PublicKey().Marshal()) == string(pub.Marshal()) {
					signer = s
					break
				}
			}
		}
		if signer == nil {
			return nil, fmt.Errorf("identity file %s is passphrase-protected and ssh-agent does not hold it", file)
		}
	case err != nil:
		return nil, fmt.Errorf("parse identity file %s: %w", file, err)
	}
	out := []xssh.Signer{signer}
	if b, err := os.ReadFile(file + "-cert.pub"); err == nil {
		if k, _, _, _, err := xssh.ParseAuthorizedKey(b); err == nil {
			if cert, ok := k.(*xssh.Certificate); ok {
				if cs, err := xssh.NewCertSigner(cert, signer); err == nil {
					out = []xssh.Signer{cs, signer}
				}
			}
		}
	}
	return out, nil
}
