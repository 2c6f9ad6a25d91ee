package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"syscall"
	"time"

	"github.com/mitolab/mito/tasks"
)

// Inputs: before the command starts, every file in the task's
// Spec.Inputs is fetched from the coordinator into the work directory at
// its Path. An input that cannot be had (the coordinator answers 404 or
// another refusal) fails the attempt with the coordinator's message, and
// the command never runs: a task that would read a missing file is better
// told so than started.

// maxInputTries bounds the tries of one input; each may move a lot of data.
const maxInputTries = 5

// inputFailure is a fetch that cannot succeed by trying again; its message
// becomes the attempt's error.
type inputFailure struct{ msg string }

func (e *inputFailure) Error() string { return e.msg }

// badTransfer is a body that did not arrive whole: cut short, or not the
// bytes the coordinator recorded. Trying again can help.
type badTransfer struct{ err error }

func (e *badTransfer) Error() string { return e.err.Error() }
func (e *badTransfer) Unwrap() error { return e.err }

// fetchInputs fetches every input of the attempt into dir, in order. It
// returns nil when all are there, an *inputFailure when one cannot be had,
// context.DeadlineExceeded when the fetch outlasted the task's timeout, or
// the context's error when the attempt was stopped or its lease lost
// meanwhile.
func (w *worker) fetchInputs(a *attempt, dir string) error {
	ins := a.task.Inputs
	if len(ins) == 0 {
		return nil
	}
	// A stop (a cancel from the coordinator) ends the fetch as it would
	// end the command, and so does the task's timeout: a stalled stream
	// must not hold the slot, renewed by the heartbeat, forever.
	ctx, cancel := context.WithTimeout(a.ctx, w.timeout(a))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		select {
		case <-a.stopped:
			cancel()
		case <-ctx.Done():
		}
	})
	root, err := os.OpenRoot(dir)
	if err != nil {
		return &inputFailure{fmt.Sprintf("open work directory: %v", err)}
	}
	defer root.Close()
	for i, in := range ins {
		if err := w.fetchInput(ctx, a, root, i, in); err != nil {
			return err
		}
	}
	a.log.Info("inputs fetched", "count", len(ins))
	return nil
}

// fetchInput fetches one input, retrying transient failures.
func (w *worker) fetchInput(ctx context.Context, a *attempt, root *os.Root, index int, in tasks.Input) error {
	// The path comes from the coordinator; the root would keep it inside
	// the work directory anyway, but a path that is not canonical is a
	// bug worth naming.
	if msg := tasks.PathProblem(in.Path); msg != "" {
		return &inputFailure{fmt.Sprintf("input %s: path %q %s", in, in.Path, msg)}
	}
	bo := backoff{min: 500 * time.Millisecond, max: 10 * time.Second}
	for try := 1; ; try++ {
		s := w.cur()
		err := w.fetchOnce(ctx, a, s, root, index, in)
		var failure *inputFailure
		var transfer *badTransfer
		switch {
		case err == nil:
			a.log.Debug("input fetched", "input", in.String(), "path", in.Path)
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &failure):
			return &inputFailure{fmt.Sprintf("input %s: %s", in, failure.msg)}
		case tasks.ErrorCode(err) == tasks.EUnauthorized && try < maxInputTries:
			if !w.awaitSession(ctx, s) {
				return ctx.Err()
			}
			continue
		case tasks.ErrorCode(err) == tasks.EStaleLease || tasks.ErrorCode(err) == tasks.EConflict:
			a.log.Warn("coordinator refused an input: the lease is no longer current", "input", in.String(), keyErr, err)
			a.abandon(fmt.Sprintf("input fetch refused: %v", err))
			return a.ctx.Err()
		case errors.As(err, &transfer) || retryable(err):
			if try >= maxInputTries {
				return &inputFailure{fmt.Sprintf("input %s: %v (gave up after %d tries)", in, err, try)}
			}
		default:
			// A refusal (404: the input is gone; 400): the coordinator's
			// message names the input and says why.
			return &inputFailure{err.Error()}
		}
		a.log.Warn("cannot fetch input; retrying", "input", in.String(), keyErr, err)
		if !sleep(ctx, bo.next()) {
			return ctx.Err()
		}
	}
}

// fetchOnce streams input number index to its path under root, from the
// store or the coordinator (see openInput), checking its size and sha256;
// on any failure it removes what it wrote, so that the next try starts
// afresh. Local file errors are *inputFailure, transfer errors
// *badTransfer, and the coordinator's refusals its *tasks.Error. A direct
// fetch cut short in auto mode makes the next try, and the rest of the
// session, relay.
func (w *worker) fetchOnce(ctx context.Context, a *attempt, s *session, root *os.Root, index int, in tasks.Input) (err error) {
	body, size, want, direct, err := w.openInput(ctx, a, s, index, in)
	if err != nil {
		return err
	}
	defer body.Close()
	if direct && s.artifacts == tasks.ArtifactsAuto {
		defer func() {
			var transfer *badTransfer
			if errors.As(err, &transfer) && ctx.Err() == nil {
				w.relayFromNowOn(s, "a download from the store failed", keyErr, err)
			}
		}()
	}
	p := in.Path
	if dir := path.Dir(p); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return &inputFailure{fmt.Sprintf("create its directory in the work directory: %v", err)}
		}
	}
	// O_EXCL|O_NOFOLLOW: never write through a link or over a file that
	// is already there. Executable, since attachments carry no mode and a
	// prebuilt binary is a common input; in a private, throwaway work
	// directory that costs nothing.
	f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o755)
	if err != nil {
		return &inputFailure{fmt.Sprintf("create it in the work directory: %v", err)}
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = &inputFailure{fmt.Sprintf("write it to the work directory: %v", cerr)}
		}
		if err != nil {
			_ = root.Remove(p)
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), &bodyReader{r: body})
	var transfer *badTransfer
	switch {
	case errors.As(err, &transfer) && ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &transfer):
		return err
	case err != nil:
		return &inputFailure{fmt.Sprintf("write it to the work directory: %v", err)}
	case size >= 0 && n != size:
		return &badTransfer{fmt.Errorf("got %d of %d bytes", n, size)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return &badTransfer{fmt.Errorf("sha256 %s does not match the coordinator's %q", got, want)}
	}
	if direct {
		a.log.Info("input fetched directly", "input", in.String(), "size", n)
	}
	return nil
}

// bodyReader marks read errors as transfer errors, so that fetchOnce can
// tell them from write errors of the same io.Copy.
type bodyReader struct{ r io.Reader }

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &badTransfer{fmt.Errorf("read: %w", err)}
	}
	return n, err
}
