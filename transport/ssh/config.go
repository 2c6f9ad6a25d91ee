package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
)

// Host key policies, as the inventory spells them.
const (
	// PolicyStrict refuses any host whose key known_hosts does not list.
	PolicyStrict = "strict"
	// PolicyAcceptNew trusts the key an unknown host shows on first
	// contact, pins it in Config.Pins, and refuses a different key later.
	PolicyAcceptNew = "accept-new"
)

// Defaults of Config, used when a field is zero.
const (
	DefaultConnectTimeout   = 10 * time.Second
	DefaultHandshakeTimeout = 15 * time.Second
	DefaultKeepAlive        = 15 * time.Second
	// keepAliveMisses unanswered keepalives close the connection.
	keepAliveMisses = 3
	// maxHops bounds jump chains, so that a ProxyJump loop in ssh_config
	// fails instead of recursing forever.
	maxHops = 8
)

// Target is one hop: where and as whom to connect, and how to trust it.
// Empty fields are filled from ssh_config, then from OpenSSH's defaults,
// so that an inventory can say as little as "address: lab1".
type Target struct {
	// Name is used in messages and errors: the inventory host name.
	// Empty means Address.
	Name string
	// Address is a host name, an IP address, or a ~/.ssh/config alias
	// (whose HostName is then dialled).
	Address string
	// Port is 0 for ssh_config's Port, else 22.
	Port int
	// User is "" for ssh_config's User, else the current user.
	User string
	// IdentityFiles are private key files to offer, in order. Empty means:
	// ssh_config's IdentityFile entries, then ssh-agent, then
	// ~/.ssh/id_ed25519, id_ecdsa and id_rsa when present. A
	// passphrase-protected file is used through ssh-agent when the agent
	// holds it.
	IdentityFiles []string
	// KnownHosts are known_hosts files. Empty means ssh_config's
	// UserKnownHostsFile, else ~/.ssh/known_hosts. A missing file counts as
	// empty.
	KnownHosts []string
	// Policy is PolicyStrict (also for "") or PolicyAcceptNew.
	Policy string
	// Jump is the hop before this one (a chain: Jump.Jump...). When nil,
	// ssh_config's ProxyJump is honoured; its hops take this target's
	// explicit KnownHosts, IdentityFiles and Policy unless ssh_config gives
	// them their own.
	Jump *Target
}

func (t Target) name() string {
	if t.Name != "" {
		return t.Name
	}
	return t.Address
}

// Pins remembers host keys accepted under PolicyAcceptNew (trust on first
// use). The coordinator backs it with its store, so that a pin outlives
// the process and is shared by coordinators.
type Pins interface {
	// Pinned returns the key pinned for hostport, in authorized_keys
	// format ("ssh-ed25519 AAAA..."), and whether there is one.
	Pinned(ctx context.Context, hostport string) (authorizedKey string, ok bool, err error)
	// Pin records key for hostport. It is called only when Pinned said
	// there was none.
	Pin(ctx context.Context, hostport, authorizedKey string) error
}

// Config holds what is common to all connections. Its zero value works:
// every field documents its default.
type Config struct {
	// SSHConfig is the path of an ssh_config file to honour; "" means
	// ~/.ssh/config if it exists; "none" ignores ssh_config.
	SSHConfig string
	// Pins stores keys accepted under accept-new; required only for
	// targets with that policy.
	Pins Pins
	// Agent is the ssh-agent socket; "" means $SSH_AUTH_SOCK, "none" means
	// no agent. Keys are never forwarded.
	Agent string
	// ConnectTimeout bounds each hop's TCP connect; default 10s.
	ConnectTimeout time.Duration
	// HandshakeTimeout bounds each hop's SSH handshake including
	// authentication; default 15s.
	HandshakeTimeout time.Duration
	// KeepAlive is the interval of keepalive@openssh.com requests; after 3
	// unanswered ones the connection is closed and Client.Done closes.
	// Default 15s; negative disables keepalives.
	KeepAlive time.Duration
	// Logger receives debug and info records; default discards.
	Logger *slog.Logger
	// Handshake, when set, is called for each hop once its TCP (or
	// jump-forwarded) connection is up, right before the SSH handshake,
	// which waits for it; release is called when that handshake ends,
	// whether it succeeded or failed. It is where a caller bounds
	// concurrent handshakes (sshd's MaxStartups) without a slot being
	// held through TCP connects to hosts that do not answer. It should
	// return ctx's error when ctx ends while it waits; any error fails
	// Dial (not retryable when ctx ended, else retryable). The wait does
	// not count against HandshakeTimeout.
	Handshake func(ctx context.Context) (release func(), err error)
}

func (c Config) withDefaults() Config {
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Agent == "" {
		c.Agent = os.Getenv("SSH_AUTH_SOCK")
	}
	return c
}

// hop is a Target with everything resolved: what Dial actually uses.
type hop struct {
	name          string
	host          string // HostName to dial
	port          int
	user          string
	addr          string // host:port to dial
	keyName       string // host:port to look up in known_hosts (HostKeyAlias)
	identityFiles []string
	defaultIDs    bool // identityFiles are the ~/.ssh/id_* fallbacks
	fromSSHConfig bool // identityFiles come from ssh_config
	identities    bool // IdentitiesOnly: no agent keys
	knownHosts    []string
	policy        string
}

// sshConfig is an optional parsed ssh_config.
type sshConfig struct {
	c    *ssh_config.Config
	home string
}

func (s *sshConfig) get(alias, key string) string {
	if s.c == nil {
		return ""
	}
	v, err := s.c.Get(alias, key)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(v)
}

func (s *sshConfig) getAll(alias, key string) []string {
	if s.c == nil {
		return nil
	}
	v, err := s.c.GetAll(alias, key)
	if err != nil {
		return nil
	}
	return v
}

func loadSSHConfig(path, home string) (*sshConfig, error) {
	sc := &sshConfig{home: home}
	switch path {
	case "none":
		return sc, nil
	case "":
		if home == "" {
			return sc, nil
		}
		path = filepath.Join(home, ".ssh", "config")
		if _, err := os.Stat(path); err != nil {
			return sc, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read ssh_config: %w", err)
	}
	defer f.Close()
	c, err := ssh_config.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("parse ssh_config %s: %w", path, err)
	}
	sc.c = c
	return sc, nil
}

// resolveChain turns t and its jumps into hops, first hop first.
func resolveChain(t Target, sc *sshConfig, localUser string) ([]hop, error) {
	var chain []hop
	var walk func(t Target, depth int) error
	walk = func(t Target, depth int) error {
		if depth >= maxHops {
			return fmt.Errorf("jump chain of %s is longer than %d hops (a ProxyJump loop?)", t.name(), maxHops)
		}
		h, proxy, err := resolveHop(t, sc, localUser)
		if err != nil {
			return err
		}
		switch {
		case t.Jump != nil:
			if err := walk(*t.Jump, depth+1); err != nil {
				return err
			}
		case proxy != "":
			// ProxyJump lists hops first to last; each hop is itself
			// an ssh_config alias, and only the first one's own
			// ProxyJump applies (as with OpenSSH's ssh -J).
			specs := strings.Split(proxy, ",")
			jumps := make([]Target, len(specs))
			for i, s := range specs {
				jt, err := parseJump(strings.TrimSpace(s))
				if err != nil {
					return fmt.Errorf("ProxyJump of %s: %w", t.name(), err)
				}
				jt.Policy = t.Policy
				if len(sc.getAll(jt.Address, "UserKnownHostsFile")) == 0 {
					jt.KnownHosts = t.KnownHosts
				}
				if len(sc.getAll(jt.Address, "IdentityFile")) == 0 {
					jt.IdentityFiles = t.IdentityFiles
				}
				jumps[i] = jt
			}
			// The first jump may have its own ProxyJump; later ones
			// are reached through the earlier ones.
			if err := walk(jumps[0], depth+1); err != nil {
				return err
			}
			for _, jt := range jumps[1:] {
				jh, _, err := resolveHop(jt, sc, localUser)
				if err != nil {
					return err
				}
				chain = append(chain, jh)
			}
		}
		chain = append(chain, h)
		return nil
	}
	if err := walk(t, 0); err != nil {
		return nil, err
	}
	if len(chain) > maxHops {
		return nil, fmt.Errorf("jump chain of %s is longer than %d hops", t.name(), maxHops)
	}
	return chain, nil
}

// parseJump reads one ProxyJump entry (see ParseJump) as a Target.
func parseJump(s string) (Target, error) {
	user, host, port, err := ParseJump(s)
	if err != nil {
		return Target{}, err
	}
	return Target{Address: host, User: user, Port: port}, nil
}

// ParseJump reads a jump host as ssh -J and ProxyJump write it:
// "[user@]host[:port]", with brackets around an IPv6 address that has a
// port ("[fd00::1]:2222"; a bare "fd00::1" is an address without one), or
// "ssh://[user@]host[:port]". An absent user is "" and an absent port 0,
// both meaning "ssh_config's, else the default". A port that is not a
// number from 1 to 65535 is an error, as is a missing host.
func ParseJump(s string) (user, host string, port int, err error) {
	orig := s
	bad := func(format string, args ...any) (string, string, int, error) {
		return "", "", 0, fmt.Errorf("jump host %q: "+format, append([]any{orig}, args...)...)
	}
	if s == "" {
		return "", "", 0, errors.New("empty jump host")
	}
	if strings.HasPrefix(s, "ssh://") {
		u, err := url.Parse(s)
		if err != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
			return bad("not an ssh://[user@]host[:port] URL")
		}
		if _, hasPass := u.User.Password(); hasPass {
			return bad("a password in the URL is not supported")
		}
		user, s = u.User.Username(), u.Host
	} else if i := strings.LastIndexByte(s, '@'); i >= 0 {
		user, s = s[:i], s[i+1:]
	}
	var portStr string
	hasPort := false
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return bad("missing ]")
		}
		host, s = s[1:end], s[end+1:]
		switch {
		case s == "":
		case strings.HasPrefix(s, ":"):
			portStr, hasPort = s[1:], true
		default:
			return bad("unexpected %q after ]", s)
		}
	case strings.Count(s, ":") > 1:
		// An IPv6 address without a port.
		if _, err := netip.ParseAddr(s); err != nil {
			return bad("%q is not an IPv6 address (put an address with a port in brackets: [addr]:port)", s)
		}
		host = s
	default:
		host, portStr, hasPort = strings.Cut(s, ":")
	}
	if host == "" {
		return bad("no host")
	}
	if strings.ContainsAny(host, " \t/@[]") {
		return bad("bad host %q", host)
	}
	if hasPort {
		n, err := strconv.Atoi(portStr)
		if err != nil || n <= 0 || n > 65535 || strings.Trim(portStr, "0123456789") != "" {
			return bad("bad port %q", portStr)
		}
		port = n
	}
	return user, host, port, nil
}

// resolveHop fills t's empty fields from ssh_config and defaults. It also
// returns the alias's ProxyJump ("" or "none": none).
func resolveHop(t Target, sc *sshConfig, localUser string) (hop, string, error) {
	alias := t.Address
	if alias == "" {
		return hop{}, "", errors.New("no address")
	}
	h := hop{name: t.name(), policy: t.Policy}
	switch h.policy {
	case "":
		h.policy = PolicyStrict
	case PolicyStrict, PolicyAcceptNew:
	default:
		return hop{}, "", fmt.Errorf("unknown host key policy %q (want %q or %q)", t.Policy, PolicyStrict, PolicyAcceptNew)
	}

	h.host = alias
	if hn := sc.get(alias, "HostName"); hn != "" {
		h.host = expandTokens(hn, tokens{h: alias})
	}
	h.port = t.Port
	if h.port == 0 {
		if p := sc.get(alias, "Port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n <= 0 || n > 65535 {
				return hop{}, "", fmt.Errorf("ssh_config: bad Port %q for %s", p, alias)
			}
			h.port = n
		} else {
			h.port = 22
		}
	}
	h.user = t.User
	if h.user == "" {
		h.user = sc.get(alias, "User")
	}
	if h.user == "" {
		h.user = localUser
	}
	if h.user == "" {
		return hop{}, "", errors.New("no user: set one in the inventory or ssh_config")
	}
	tok := tokens{h: h.host, p: strconv.Itoa(h.port), r: h.user, u: localUser, d: sc.home, n: alias}
	h.addr = net.JoinHostPort(h.host, strconv.Itoa(h.port))
	h.keyName = h.addr
	if ka := sc.get(alias, "HostKeyAlias"); ka != "" {
		h.keyName = net.JoinHostPort(ka, strconv.Itoa(h.port))
	}

	h.identities = strings.EqualFold(sc.get(alias, "IdentitiesOnly"), "yes")
	h.identityFiles = t.IdentityFiles
	if len(h.identityFiles) == 0 {
		for _, f := range sc.getAll(alias, "IdentityFile") {
			if strings.EqualFold(f, "none") {
				continue
			}
			h.identityFiles = append(h.identityFiles, expandPath(f, tok))
			h.fromSSHConfig = true
		}
	}
	if len(h.identityFiles) == 0 && sc.home != "" {
		h.defaultIDs = true
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			h.identityFiles = append(h.identityFiles, filepath.Join(sc.home, ".ssh", n))
		}
	}

	h.knownHosts = t.KnownHosts
	if len(h.knownHosts) == 0 {
		for _, v := range sc.getAll(alias, "UserKnownHostsFile") {
			for _, f := range strings.Fields(v) {
				if strings.EqualFold(f, "none") {
					continue
				}
				h.knownHosts = append(h.knownHosts, expandPath(f, tok))
			}
			break // the first UserKnownHostsFile line wins, as in OpenSSH
		}
	}
	if len(h.knownHosts) == 0 && sc.home != "" {
		h.knownHosts = []string{filepath.Join(sc.home, ".ssh", "known_hosts")}
	}

	proxy := sc.get(alias, "ProxyJump")
	if strings.EqualFold(proxy, "none") {
		proxy = ""
	}
	return h, proxy, nil
}

// tokens are the ssh_config percent-tokens we expand.
type tokens struct{ h, p, r, u, d, n string }

func expandTokens(s string, t tokens) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case '%':
			b.WriteByte('%')
		case 'h':
			b.WriteString(t.h)
		case 'p':
			b.WriteString(t.p)
		case 'r':
			b.WriteString(t.r)
		case 'u':
			b.WriteString(t.u)
		case 'd':
			b.WriteString(t.d)
		case 'n':
			b.WriteString(t.n)
		default:
			b.WriteByte('%')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func expandPath(p string, t tokens) string {
	p = strings.Trim(p, `"`)
	p = expandTokens(p, t)
	if p == "~" {
		return t.d
	}
	if strings.HasPrefix(p, "~/") && t.d != "" {
		return filepath.Join(t.d, p[2:])
	}
	return p
}

// localIdentity returns the current user's name and home directory.
func localIdentity() (name, home string) {
	if u, err := user.Current(); err == nil {
		name, home = u.Username, u.HomeDir
	}
	if h, err := os.UserHomeDir(); err == nil {
		home = h
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	return name, home
}
