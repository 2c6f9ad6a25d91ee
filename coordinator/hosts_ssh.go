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
	"github.com/mitolab/mito/transport/ssh"
)

// shimDir is where shims live on a host, relative to the SSH user's home.
// Each is named after its SHA-256, so a shim already there is never sent
// again and two versions never collide.
const shimDir = ".cache/mito"

// retryable reports whether reconnecting soon may help: a network error
// may, a refused key or a wrong host key will not. A failure that is not
// the SSH transport's (the shim exited) is worth a retry.
func retryable(err error) bool {
	var se *ssh.Error
	if errors.As(err, &se) {
		return ssh.IsRetryable(err)
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
	if !found && !strings.ContainsAny(h.Jump, "@:") {
		// The inventory checked the name when it was loaded; the host has
		// since gone (a reload removed it while this one drains).
		return ssh.Target{}, fmt.Errorf("jump host %q of %s is no longer in the inventory", h.Jump, h.Name)
	}
	if !found { // "[user@]host[:port]" outside the inventory, trusted like the target
		jump = inventory.Host{Name: h.Jump, Transport: inventory.TransportSSH, IdentityFile: h.IdentityFile, KnownHosts: h.KnownHosts, HostKeyPolicy: h.HostKeyPolicy}
		var err error
		if jump.User, jump.Address, jump.Port, err = ssh.ParseJump(h.Jump); err != nil {
			return ssh.Target{}, fmt.Errorf("jump host of %s: %w", h.Name, err)
		}
	}
	jt, err := c.sshTarget(jump, depth+1)
	if err != nil {
		return ssh.Target{}, err
	}
	t.Jump = &jt
	return t, nil
}

// dialSSH connects to a host, holding a handshake slot while it does.
func (c *Coordinator) dialSSH(ctx context.Context, h inventory.Host) (*ssh.Client, error) {
	t, err := c.sshTarget(h, 0)
	if err != nil {
		return nil, err
	}
	cfg := c.cfg.SSH
	// The slot is held during each hop's handshake only, not its TCP
	// connect: a black-holed host must not block the others.
	cfg.Handshake = func(ctx context.Context) (func(), error) {
		select {
		case c.handshakes <- struct{}{}:
			return func() { <-c.handshakes }, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cfg.Pins = storePins{c}
	cfg.Logger = c.log
	return ssh.Dial(ctx, t, cfg)
}

// lastLine returns the last non-empty line of a command's output, which
// skips whatever a chatty login shell printed first.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
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
func (c *Coordinator) pushShim(ctx context.Context, cl *ssh.Client, h inventory.Host, force bool) (string, error) {
	out, err := cl.Run(ctx, "uname -sm")
	if err != nil {
		return "", fmt.Errorf("detect platform: %w", err)
	}
	plat, err := platform(lastLine(string(out)))
	if err != nil {
		return "", err
	}
	path, size, sum, err := c.shimFor(plat)
	if err != nil {
		return "", err
	}
	remote := shimDir + "/shim-" + sum
	if fi, err := cl.Stat(ctx, remote); err == nil && fi.Size() == size && !force {
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

// setupTimeout bounds connecting, detecting the platform and pushing the
// shim: keepalives catch a dead connection, not a hung command or SFTP.
const setupTimeout = 2 * time.Minute

// runSSHShim connects to an SSH host, pushes the shim if needed, starts it
// with a constant command line and serves the worker protocol over the
// session's stdin/stdout until either side ends. No task data ever goes
// into a command line: it all travels over the link.
func (c *Coordinator) runSSHShim(ctx context.Context, d *hostDriver, h inventory.Host) error {
	setupCtx, cancelSetup := context.WithTimeout(ctx, setupTimeout)
	defer cancelSetup()
	cl, err := c.dialSSH(setupCtx, h)
	if err != nil {
		return err
	}
	defer cl.Close()
	c.mu.Lock()
	force := d.forceUpload
	d.forceUpload = false
	c.mu.Unlock()
	remote, err := c.pushShim(setupCtx, cl, h, force)
	if err != nil {
		return err
	}
	// The session outlives ctx: on shutdown the shim is told to stop by
	// closing its stdin, and given the time to kill its tasks.
	sess, err := cl.Start(context.WithoutCancel(ctx), remote) // a hex name in a fixed directory: nothing for a shell to expand
	if err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	defer sess.Close()
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		_, _ = io.Copy(&lineLogger{log: c.log, host: h.Name}, sess.Stderr)
	}()
	defer func() { <-logDone }()
	out, err := awaitPreamble(sess.Stdout, func() { _ = sess.Close() })
	if err != nil {
		_ = sess.Close()
		c.noteUnrunnable(d, sess.Wait())
		return fmt.Errorf("shim on %s: %w", h.Name, err)
	}
	waitErr := c.serveShim(ctx, d.s, out, sess.Stdin, cl.Done(), sess.Wait, func() { _ = sess.Close() })
	if ctx.Err() != nil {
		return nil
	}
	select {
	case <-cl.Done():
		return &ssh.Error{Host: h.Name, Kind: ssh.KindNetwork, Retryable: true, Err: errors.New("connection lost")}
	default:
	}
	c.noteUnrunnable(d, waitErr)
	if waitErr != nil {
		return fmt.Errorf("shim: %w", waitErr)
	}
	return errors.New("shim exited")
}

// noteUnrunnable makes the next connect upload the shim again when the
// remote shell could not run the cached one (exit 126 or 127): the file
// may be damaged or lack its execute bit.
func (c *Coordinator) noteUnrunnable(d *hostDriver, err error) {
	var ce *ssh.CommandError
	if errors.As(err, &ce) && (ce.ExitCode == 126 || ce.ExitCode == 127) {
		c.mu.Lock()
		d.forceUpload = true
		c.mu.Unlock()
	}
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
