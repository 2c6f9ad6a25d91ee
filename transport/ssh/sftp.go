package ssh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/pkg/sftp"
)

// uploadChunk is the size of each SFTP write. Writes are sequential:
// pkg/sftp's concurrent writes were 6x slower against OpenSSH here
// (ENVIRONMENT.md section 6).
const uploadChunk = 32 << 10

// sftpClient returns the connection's SFTP client, opening it on first
// use: one subsystem serves every upload and stat of the connection.
func (c *Client) sftpClient() (*sftp.Client, error) {
	c.mu.Lock()
	sc := c.sftp
	c.mu.Unlock()
	if sc != nil {
		return sc, nil
	}
	if err := c.Err(); err != nil {
		return nil, fmt.Errorf("ssh %s: open sftp: %w", c.name, err)
	}
	// Opened outside mu (it waits for the server's version packet); if
	// two callers race, the loser closes its extra subsystem.
	sc, err := sftp.NewClient(c.ssh, sftp.UseConcurrentWrites(false))
	if err != nil {
		return nil, fmt.Errorf("ssh %s: open sftp: %w", c.name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sftp != nil {
		sc.Close()
		return c.sftp, nil
	}
	c.sftp = sc
	return sc, nil
}

// dropSFTP forgets a broken SFTP client so that the next call opens a new
// one.
func (c *Client) dropSFTP(sc *sftp.Client) {
	c.mu.Lock()
	if c.sftp == sc {
		c.sftp = nil
	}
	c.mu.Unlock()
	sc.Close()
}

// remotePath makes dst an SFTP path: "~/x" and "x" are relative to the
// remote home directory, where SFTP servers start.
func remotePath(dst string) (string, error) {
	switch {
	case dst == "" || dst == "~" || dst == "~/":
		return "", errors.New("empty destination path")
	case strings.HasPrefix(dst, "~/"):
		dst = dst[2:]
	case strings.HasPrefix(dst, "~"):
		return "", fmt.Errorf("destination %q: only ~/ (the login user's home) is supported", dst)
	}
	dst = path.Clean(dst)
	if dst == "." || dst == "/" || strings.HasSuffix(dst, "/") {
		return "", fmt.Errorf("destination %q is a directory", dst)
	}
	return dst, nil
}

// Upload writes size bytes from r to dst on the host, atomically: the
// data goes to a temporary file beside dst, is checked for length, gets
// mode, and only then is renamed onto dst. So the host never runs a
// half-written shim, and a failed upload leaves nothing behind. dst is
// absolute, or relative to the remote home (with or without "~/"); its
// parent directories are created.
func (c *Client) Upload(ctx context.Context, r io.Reader, size int64, dst string, mode fs.FileMode) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := remotePath(dst)
	if err != nil {
		return fmt.Errorf("ssh %s: upload: %w", c.name, err)
	}
	if size < 0 {
		return fmt.Errorf("ssh %s: upload %s: negative size %d", c.name, dst, size)
	}
	sc, err := c.sftpClient()
	if err != nil {
		return err
	}
	err = c.upload(ctx, sc, r, size, p, mode)
	if err != nil {
		if c.Err() != nil {
			c.dropSFTP(sc)
		}
		return fmt.Errorf("ssh %s: upload %s: %w", c.name, dst, err)
	}
	return nil
}

func (c *Client) upload(ctx context.Context, sc *sftp.Client, r io.Reader, size int64, dst string, mode fs.FileMode) (err error) {
	dir, base := path.Split(dst)
	if dir != "" {
		if err := sc.MkdirAll(path.Clean(dir)); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := dir + "." + base + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			if rerr := sc.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				c.log.Warn("remove temporary upload file", "path", tmp, "err", rerr)
			}
		}
	}()

	// Copy one bounded chunk at a time (never ReadFrom, which may write
	// concurrently), checking ctx between chunks; read one byte past size
	// to catch a reader longer than announced.
	buf := make([]byte, uploadChunk)
	var written int64
	lr := io.LimitReader(r, size+1)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := lr.Read(buf)
		if n > 0 {
			if written+int64(n) > size {
				return fmt.Errorf("source is longer than the announced %d bytes", size)
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			written += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read source: %w", rerr)
		}
	}
	if written != size {
		return fmt.Errorf("source gave %d bytes, want %d", written, size)
	}
	if err := f.Chmod(mode.Perm()); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	fi, err := sc.Stat(tmp)
	if err != nil {
		return fmt.Errorf("stat temporary file: %w", err)
	}
	if fi.Size() != size {
		return fmt.Errorf("host stored %d bytes, want %d", fi.Size(), size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := sc.PosixRename(tmp, dst); err != nil {
		// Servers without posix-rename@openssh.com refuse to rename
		// onto an existing file: remove it first. The window where dst
		// is missing is harmless: readers see no file, never a partial
		// one.
		c.log.Debug("posix-rename failed, falling back to remove+rename", "err", err)
		if rerr := sc.Remove(dst); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fmt.Errorf("rename: %w (and remove old file: %v)", err, rerr)
		}
		if err := sc.Rename(tmp, dst); err != nil {
			return fmt.Errorf("rename: %w", err)
		}
	}
	return nil
}

// Stat returns the file info of path on the host (absolute, or relative
// to the remote home); the error wraps fs.ErrNotExist when it is missing,
// so that the caller can skip an upload that is already done.
func (c *Client) Stat(ctx context.Context, p string) (fs.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rp := p
	switch {
	case p == "":
		return nil, fmt.Errorf("ssh %s: stat: empty path", c.name)
	case p == "~":
		rp = "."
	case strings.HasPrefix(p, "~/"):
		rp = "./" + p[2:]
	}
	sc, err := c.sftpClient()
	if err != nil {
		return nil, err
	}
	fi, err := sc.Stat(rp)
	if err != nil {
		if c.Err() != nil {
			c.dropSFTP(sc)
		}
		var se *sftp.StatusError
		if errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxNoSuchFile {
			err = fs.ErrNotExist
		}
		return nil, fmt.Errorf("ssh %s: stat %s: %w", c.name, p, err)
	}
	return fi, nil
}
