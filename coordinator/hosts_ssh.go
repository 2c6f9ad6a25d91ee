package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/transport/link"
	"github.com/mitolab/mito/transport/ssh"
)

// shimDir is where shims live on a host, relative to the SSH user's home.
// Each is named after its SHA-256, so a shim already there is never sent
// again and two versions never collide.
const shimDir = ".cache/mito"

// retryable reports whether reconnecting soon may help: a network error
// may, a refused key or a wrong host key will not.
func retryable(err error) bool {
	var se *ssh.Error
	if errors.As(err, &se) {
		return se.Retryable
	}
	return true
}

// sshTarget turns an inventory host, and its jump hosts, into a dial target.
func (c *Coordinator) sshTarget(h inventory.Host, depth int) (ssh.Target, error) {
	if depth > 8 {
		return ssh.Target{}, fmt.Errorf("jump chain of %s is too long", h.Name)
	}
	t := ssh.Target{
		Name: h.Name, Address: h.Address, Port: h.Port, User: h.User,
		Policy: h.HostKeyPolicy,
	}
	if h.IdentityFile != "" {
		t.IdentityFiles = []string{h.IdentityFile}
	}
	if h.KnownHosts != "" {
		t.KnownHosts = []string{h.KnownHosts}
	}
	if h.Jump == "" {
		return t, nil
	}
	c.mu.Lock()
	var jump inventory.Host
	found := false
	for _, other := range c.cfg.Hosts {
		if other.Name == h.Jump {
			jump, found = other, true
		}
	}
	c.mu.Unlock()
	if !found { // "[user@]host[:port]" outside the inventory, trusted like the target
		jump = inventory.Host{Name: h.Jump, Transport: inventory.TransportSSH, IdentityFile: h.IdentityFile, KnownHosts: h.KnownHosts, HostKeyPolicy: h.HostKeyPolicy}
		jump.User, jump.Address, jump.Port = splitUserHostPort(h.Jump)
	}
	jt, err := c.sshTarget(jump, depth+1)
	if err != nil {
		return ssh.Target{}, err
	}
	t.Jump = &jt
	return t, nil
}

// splitUserHostPort splits "[user@]host[:port]", with brackets around an
// IPv6 address that has a port.
func splitUserHostPort(s string) (user, host string, port int) {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		user, s = s[:i], s[i+1:]
	}
	host = s
	if strings.HasPrefix(s, "[") {
		if i := strings.Index(s, "]"); i > 0 {
			host = s[1:i]
			if rest := s[i+1:]; strings.HasPrefix(rest, ":") {
				fmt.Sscanf(rest[1:], "%d", &port)
			}
		}
		return user, host, port
	}
	if i := strings.LastIndex(s, ":"); i >= 0 && strings.Count(s, ":") == 1 {
		host = s[:i]
		fmt.Sscanf(s[i+1:], "%d", &port)
	}
	return user, host, port
}

// dialSSH connects to a host, holding a handshake slot while it does.
func (c *Coordinator) dialSSH(ctx context.Context, h inventory.Host) (*ssh.Client, error) {
	t, err := c.sshTarget(h, 0)
	if err != nil {
		return nil, err
	}
	select {
	case c.handshakes <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.handshakes }()
	cfg := c.cfg.SSH
	cfg.Pins = storePins{c}
	cfg.Logger = c.log
	return ssh.Dial(ctx, t, cfg)
}

// platform maps `uname -sm` output to Go's "os/arch".
func platform(uname string) (string, error) {
	f := strings.Fields(uname)
	if len(f) != 2 {
		return "", fmt.Errorf("unexpected uname -sm output %q", uname)
	}
	goos := strings.ToLower(f[0])
	arch := map[string]string{
		"x86_64": "amd64", "amd64": "amd64",
		"aarch64": "arm64", "arm64": "arm64",
	}[f[1]]
	if goos != "linux" || arch == "" {
		return "", fmt.Errorf("hosts running %s are not supported (mito's shim is built for linux/amd64 and linux/arm64)", strings.TrimSpace(uname))
	}
	return goos + "/" + arch, nil
}

// shimFor returns the local shim binary for a platform, its size and its
// SHA-256, hashing each binary once.
func (c *Coordinator) shimFor(plat string) (path string, size int64, sum string, err error) {
	path = c.cfg.Shims[plat]
	if path == "" {
		return "", 0, "", fmt.Errorf("no shim for %s: build it with `make shims` and put it beside the mito binary", plat)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", 0, "", fmt.Errorf("shim for %s: %w", plat, err)
	}
	type cached struct {
		size    int64
		modTime time.Time
		sum     string
	}
	if v, ok := c.shimSums.Load(path); ok {
		if e := v.(cached); e.size == fi.Size() && e.modTime.Equal(fi.ModTime()) {
			return path, e.size, e.sum, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, "", fmt.Errorf("shim for %s: %w", plat, err)
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		return "", 0, "", fmt.Errorf("hash shim %s: %w", path, err)
	}
	sum = hex.EncodeToString(hash.Sum(nil))
	c.shimSums.Store(path, cached{fi.Size(), fi.ModTime(), sum})
	return path, fi.Size(), sum, nil
}

// pushShim makes sure the host has the shim for its platform and returns
// its remote path. A shim already there (same name, same size) is not
// sent again.
func (c *Coordinator) pushShim(ctx context.Context, cl *ssh.Client, h inventory.Host) (string, error) {
	out, err := cl.Run(ctx, "uname -sm")
	if err != nil {
		return "", fmt.Errorf("detect platform: %w", err)
	}
	plat, err := platform(string(out))
	if err != nil {
		return "", err
	}
	path, size, sum, err := c.shimFor(plat)
	if err != nil {
		return "", err
	}
	remote := shimDir + "/shim-" + sum
	if fi, err := cl.Stat(ctx, remote); err == nil && fi.Size() == size {
		c.log.Info("shim already on host", logHost, h.Name, "platform", plat, "path", "~/"+remote)
		return remote, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("look for the shim: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open shim: %w", err)
	}
	defer f.Close()
	start := time.Now()
	if err := cl.Upload(ctx, f, size, remote, 0o755); err != nil {
		return "", fmt.Errorf("upload shim: %w", err)
	}
	c.log.Info("shim uploaded", logHost, h.Name, "platform", plat, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	return remote, nil
}

// runSSHShim connects to an SSH host, pushes the shim if needed, starts it
// with a constant command line and serves the worker protocol over the
// session's stdin/stdout until either side ends. No task data ever goes
// into a command line: it all travels over the link.
func (c *Coordinator) runSSHShim(ctx context.Context, d *hostDriver) error {
	c.mu.Lock()
	h := d.inv
	c.mu.Unlock()
	cl, err := c.dialSSH(ctx, h)
	if err != nil {
		return err
	}
	defer cl.Close()
	remote, err := c.pushShim(ctx, cl, h)
	if err != nil {
		return err
	}
	// The path is hex and a fixed directory: nothing a shell could expand.
	sess, err := cl.Start(ctx, remote)
	if err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	defer sess.Close()
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		_, _ = io.Copy(&lineLogger{log: c.log, host: h.Name}, sess.Stderr)
	}()
	conn := link.NewConn(sess.Stdout, sess.Stdin, sess.Close)
	served := make(chan struct{})
	go func() {
		defer close(served)
		link.ServeConn(ctx, conn, c.handler, linkContext(d.s))
	}()
	select {
	case <-served:
	case <-cl.Done(): // the connection died under the session
		_ = conn.Close()
		<-served
	}
	_ = sess.Close()
	waitErr := sess.Wait()
	<-logDone
	if ctx.Err() != nil {
		return nil
	}
	select {
	case <-cl.Done():
		return &ssh.Error{Host: h.Name, Kind: ssh.KindNetwork, Retryable: true, Err: errors.New("connection lost")}
	default:
	}
	if waitErr != nil {
		return fmt.Errorf("shim: %w", waitErr)
	}
	return errors.New("shim exited")
}

// storePins keeps the host keys accepted under "accept-new" in the store,
// so that every coordinator sharing it trusts the same key.
type storePins struct{ c *Coordinator }

func (p storePins) Pinned(ctx context.Context, hostport string) (string, bool, error) {
	return p.c.store.PinnedHostKey(ctx, hostport)
}

func (p storePins) Pin(ctx context.Context, hostport, key string) error {
	if err := p.c.store.PinHostKey(ctx, hostport, key); err != nil {
		return err
	}
	p.c.log.Warn("pinned the host key of a new host (accept-new)", "hostport", hostport)
	return nil
}
