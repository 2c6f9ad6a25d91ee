package main

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
	"path/filepath"

	"github.com/mitolab/mito/tasks"
)

// A download of an attachment or an artifact is written the same way, by
// saveDownload: every file operation goes through an os.Root, so that a
// symbolic link, in the target's place or in a directory on the way to it,
// cannot lead a write out of the download directory; the bytes go to a
// temporary file next to the target, are checked against the size and
// SHA-256 the coordinator announced, and only then renamed into place, so
// that an interrupted or corrupted download leaves nothing behind and a
// reader never sees half a file. A rename replaces a symbolic link
// itself, never the file it points to.

// download is one file to write.
type download struct {
	root   *os.Root
	rel    string // the target in root, a local relative path
	target string // the target as the user names it, for messages
	force  bool   // replace an existing file
	label  string // what the progress line names
}

// checkReplace refuses a target that exists, unless force, and one that
// is a directory in any case. Lstat, not Stat: an existing symbolic link
// counts as a file, whatever it points to.
func checkReplace(root *os.Root, name, target string, force bool) error {
	st, err := root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case st.IsDir():
		return tasks.Errorf(tasks.EConflict, "%s is a directory", target)
	case !force:
		return tasks.Errorf(tasks.EConflict, "%s exists; use --force to replace it", target)
	}
	return nil
}

// save writes body, of size bytes (-1: unknown) and hex SHA-256 sum, to
// d's target as described above, and returns the bytes written. With
// progressTo set, a file of 1 MiB or more shows a progress line there. The
// target is checked again (checkReplace) just before the rename, for a
// file that appeared while the bytes came.
func (d download) save(ctx context.Context, body io.Reader, size int64, sum string, progressTo io.Writer) (int64, error) {
	if sum == "" {
		return 0, fmt.Errorf("the coordinator sent no SHA-256 to check the download against")
	}
	dir := filepath.Dir(d.rel)
	if dir != "." {
		if err := d.root.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("create directory: %w", err)
		}
	}
	tmp := filepath.Join(dir, "."+filepath.Base(d.rel)+".mito-"+rand.Text()[:12]+".tmp")
	f, err := d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, fmt.Errorf("create file: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = d.root.Remove(tmp)
		}
	}()
	h := sha256.New()
	dst := io.MultiWriter(f, h)
	prog := startTransferProgress(progressTo, d.label, size)
	if prog != nil {
		dst = io.MultiWriter(f, h, prog)
	}
	n, err := io.Copy(dst, body)
	if prog != nil {
		prog.Finish(err == nil)
	}
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("download: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("write %s: %w", d.target, err)
	}
	if size >= 0 && n != size {
		return 0, fmt.Errorf("got %d bytes; the coordinator announced %d", n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return 0, fmt.Errorf("SHA-256 mismatch: got %s; the coordinator recorded %s", got, sum)
	}
	if err := checkReplace(d.root, d.rel, d.target, d.force); err != nil {
		return 0, err
	}
	if err := d.root.Rename(tmp, d.rel); err != nil {
		return 0, fmt.Errorf("move into place: %w", err)
	}
	renamed = true
	return n, nil
}
