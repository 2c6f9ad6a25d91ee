package artifacts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mitolab/mito/tasks"
)

// Dir is a Store in a local directory: each object is a file at its key
// under the root. It is the embedded default, so it has to be as safe as a
// real object store: a Put writes a temporary file under root/.tmp, syncs
// it and renames it into place, so a crash or a failed upload never leaves
// a partial object; every access goes through an os.Root, so no key and no
// symbolic link inside the root can reach a file outside it.
//
// A key that is a prefix directory of another ("a" and "a/b") cannot be
// stored in both forms; artifact keys never need that.
type Dir struct {
	root *os.Root
}

// staleTemp is how old a leftover temporary file must be before NewDir
// removes it: older than any upload in progress from another process
// sharing the directory.
const staleTemp = 24 * time.Hour

// copyBuf is the chunk size of a Put: large enough for disk throughput,
// small enough that many concurrent uploads hold little memory.
const copyBuf = 256 << 10

// NewDir opens (creating if needed) a Dir at root. It removes temporary
// files that crashed uploads left behind more than a day ago.
func NewDir(root string) (*Dir, error) {
	if err := os.MkdirAll(filepath.Join(root, tmpDir), 0o750); err != nil {
		return nil, fmt.Errorf("create artifact directory: %w", err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("open artifact directory: %w", err)
	}
	d := &Dir{root: r}
	if entries, err := fs.ReadDir(r.FS(), tmpDir); err == nil {
		for _, e := range entries {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
				_ = r.Remove(path.Join(tmpDir, e.Name()))
			}
		}
	}
	return d, nil
}

// Close releases the directory handle.
func (d *Dir) Close() error { return d.root.Close() }

// Put implements Store.
func (d *Dir) Put(ctx context.Context, key string, r io.Reader) (int64, string, error) {
	if err := ValidKey(key); err != nil {
		return 0, "", err
	}
	if err := ctx.Err(); err != nil {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	tmp, f, err := d.createTemp()
	if err != nil {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = f.Close()
			_ = d.root.Remove(tmp)
		}
	}()

	h := sha256.New()
	size, err := io.CopyBuffer(io.MultiWriter(f, h), ctxReader{ctx, r}, make([]byte, copyBuf))
	if err != nil {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	if err := d.rename(tmp, key); err != nil {
		return 0, "", fmt.Errorf("put %s: %w", key, err)
	}
	committed = true
	d.syncDir(path.Dir(key))
	return size, hex.EncodeToString(h.Sum(nil)), nil
}

// createTemp creates a new, uniquely named file under .tmp.
func (d *Dir) createTemp() (string, *os.File, error) {
	for range 10 {
		name := path.Join(tmpDir, "put-"+rand.Text())
		f, err := d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return name, f, err
	}
	return "", nil, errors.New("create temporary file: too many name collisions")
}

// rename moves the finished temporary file into place. A concurrent
// Delete may remove the parent directory between MkdirAll and Rename, so
// a vanished parent is retried.
func (d *Dir) rename(tmp, key string) error {
	var err error
	for range 5 {
		if dir := path.Dir(key); dir != "." {
			if err = d.root.MkdirAll(dir, 0o750); err != nil {
				return err
			}
		}
		if err = d.root.Rename(tmp, key); !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

// syncDir makes a rename durable. It is best effort: the object is
// already complete and visible, and a failure here cannot be undone.
func (d *Dir) syncDir(dir string) {
	if f, err := d.root.Open(dir); err == nil {
		_ = f.Sync()
		_ = f.Close()
	}
}

// Open implements Store.
func (d *Dir) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := ValidKey(key); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", key, err)
	}
	f, err := d.root.Open(key)
	if err != nil {
		if isMissing(err) {
			return nil, 0, notFound(key)
		}
		return nil, 0, fmt.Errorf("open %s: %w", key, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open %s: %w", key, err)
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, 0, notFound(key)
	}
	return f, info.Size(), nil
}

// Delete implements Store. It also removes the directories the object
// leaves empty, so that deleting a task's artifacts leaves no litter.
func (d *Dir) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	info, err := d.root.Lstat(key)
	switch {
	case isMissing(err):
		return nil
	case err != nil:
		return fmt.Errorf("delete %s: %w", key, err)
	case info.IsDir():
		return nil // a prefix, not an object
	}
	if err := d.root.Remove(key); err != nil && !isMissing(err) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	for dir := path.Dir(key); dir != "."; dir = path.Dir(dir) {
		if d.root.Remove(dir) != nil {
			break // not empty, or gone: either way, stop
		}
	}
	return nil
}

// List implements Store. prefix is a plain string prefix, as in S3:
// "tasks/4" lists "tasks/4/..." and "tasks/42/...".
func (d *Dir) List(ctx context.Context, prefix string) ([]string, error) {
	if strings.ContainsAny(prefix, "\x00\\") || strings.HasPrefix(prefix, "/") || slices.Contains(strings.Split(prefix, "/"), "..") {
		return nil, tasks.Invalid("prefix", "%q is not a key prefix", prefix)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	// Walk only the directory the prefix fixes: "tasks/4" walks "tasks".
	start := "."
	if i := strings.LastIndex(prefix, "/"); i > 0 {
		start = prefix[:i]
	}
	keys := []string{}
	err := fs.WalkDir(d.root.FS(), start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p == start && isMissing(err) {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case e.IsDir() && (p == tmpDir || (p != "." && !strings.HasPrefix(p+"/", prefix) && !strings.HasPrefix(prefix, p+"/"))):
			return fs.SkipDir
		case e.Type().IsRegular() && strings.HasPrefix(p, prefix) && ValidKey(p) == nil:
			keys = append(keys, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}

// ctxReader stops a copy when its context ends, so a cancelled upload
// does not run to the end of a slow body.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func notFound(key string) error {
	return &tasks.Error{Code: tasks.ENotFound, Field: "key", Message: fmt.Sprintf("artifact %s: not found", key)}
}

// isMissing reports errors meaning "no such object": the file is absent,
// or a path segment is a file rather than a directory.
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
