package worker

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/mitolab/mito/tasks"
)

// uploadArtifacts streams every regular file under out to the coordinator,
// or straight to the artifact store where the session's mode allows it
// (see uploadDirect), named by its path relative to out with '/'. Through an os.Root, so that a
// symlink (or a directory swapped for one) can never make the worker read
// a file outside out; symlinks and special files are skipped with a
// warning. It returns, one line each, the artifacts the coordinator
// refused for good (the group is over its storage quota): they fail the
// attempt, since what the task made is lost, while the others are still
// tried.
func (w *worker) uploadArtifacts(a *attempt, out string) (refused []string) {
	root, err := os.OpenRoot(out)
	if err != nil {
		a.log.Warn("cannot open output directory; no artifacts uploaded", keyErr, err)
		return nil
	}
	defer root.Close()
	_ = fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			a.log.Warn("cannot read output directory; skipping it", "path", name, keyErr, err)
			return nil
		}
		if a.ctx.Err() != nil {
			return fs.SkipAll
		}
		switch {
		case d.IsDir():
			return nil
		case !d.Type().IsRegular():
			a.log.Warn("not a regular file; not uploaded", "artifact", name, "type", d.Type().String())
			return nil
		}
		more, err := w.uploadFile(a, root, name)
		if err != nil {
			refused = append(refused, fmt.Sprintf("artifact %s refused: %v", name, err))
		}
		if !more {
			return fs.SkipAll
		}
		return nil
	})
	return refused
}

// uploadFile uploads one artifact, directly or relayed, retrying
// transient failures. It reports
// whether to go on with the others: not when the lease is gone; and the
// coordinator's refusal when it refused the artifact for good (over the
// group's quota).
func (w *worker) uploadFile(a *attempt, root *os.Root, name string) (bool, error) {
	// O_NOFOLLOW: the walk saw a regular file, but the name may have been
	// replaced by a symlink since. O_NONBLOCK: nor must a FIFO hang us.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		a.log.Warn("cannot open artifact; not uploaded", "artifact", name, keyErr, err)
		return true, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		a.log.Warn("not a regular file; not uploaded", "artifact", name)
		return true, nil
	}
	if wantsDirect(w.cur(), fi.Size()) {
		switch out, err := w.uploadDirect(a, f, name, fi.Size()); out {
		case directDone, directSkip:
			return true, nil
		case directRefused:
			a.log.Error("coordinator refused an artifact; the attempt fails", "artifact", name, keyErr, err)
			return true, err
		case directAbort:
			return false, nil
		}
	}
	bo := backoff{min: 500 * time.Millisecond, max: 10 * time.Second}
	for try := 1; ; try++ {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			a.log.Warn("cannot read artifact; not uploaded", "artifact", name, keyErr, err)
			return true, nil
		}
		s := w.cur()
		err := s.c.UploadArtifact(a.ctx, a.ref, name, f, fi.Size())
		switch {
		case err == nil:
			a.log.Debug("artifact uploaded through the coordinator", "artifact", name, "size", fi.Size())
			return true, nil
		case a.ctx.Err() != nil:
			return false, nil
		case tasks.ErrorCode(err) == tasks.EQuota:
			a.log.Error("coordinator refused an artifact; the attempt fails", "artifact", name, keyErr, err)
			return true, err
		case tasks.ErrorCode(err) == tasks.EUnauthorized && try < maxUploadTries:
			if !w.awaitSession(a.ctx, s) {
				return false, nil
			}
			continue
		case leaseGone(err):
			a.log.Warn("coordinator refused an artifact: the lease is no longer current", "artifact", name, keyErr, err)
			a.abandon(fmt.Sprintf("artifact upload refused: %v", err))
			return false, nil
		case !retryable(err) || try >= maxUploadTries:
			a.log.Error("cannot upload artifact; skipping it", "artifact", name, keyErr, err)
			return true, nil
		}
		a.log.Warn("cannot upload artifact; retrying", "artifact", name, keyErr, err)
		if !sleep(a.ctx, bo.next()) {
			return false, nil
		}
	}
}

// maxUploadTries bounds the tries of one artifact; each may move a lot of
// data.
const maxUploadTries = 5
