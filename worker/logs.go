package worker

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mitolab/mito/tasks"
)

// Log streaming: output is sent when flushSize bytes are waiting or every
// flushEvery, whichever comes first, in requests of at most maxChunk.
const (
	flushSize  = 64 << 10
	flushEvery = 200 * time.Millisecond
	maxChunk   = 1 << 20
	readSize   = 32 << 10
)

// logPump carries one output stream of an attempt to the coordinator.
// Reading and sending are separate goroutines, so a slow link never blocks
// the task's writes; the buffer between them is bounded by the log cap.
type logPump struct {
	w      *worker
	a      *attempt
	stream tasks.Stream
	cap    int64
	ready  chan struct{} // flushSize bytes wait, or the stream ended; capacity 1

	// mu guards the fields below.
	mu        sync.Mutex
	pending   []byte // read, not yet sent
	kept      int64  // bytes kept so far, sent or pending; at most cap
	truncated bool   // output was dropped: past the cap, or sending gave up
	dropped   bool   // sending gave up: read output is thrown away
	eof       bool   // the stream ended
}

func newLogPump(w *worker, a *attempt, stream tasks.Stream, limit int64) *logPump {
	return &logPump{w: w, a: a, stream: stream, cap: limit, ready: make(chan struct{}, 1)}
}

func (p *logPump) signal() {
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

// read reads the stream to its end, keeping up to the cap. It goes on
// reading past the cap so that the task never blocks on a full pipe.
func (p *logPump) read(f *os.File) {
	buf := make([]byte, readSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			p.add(buf[:n])
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				p.a.log.Warn("output still open after the task's process group was killed: a process left the group", "stream", p.stream)
			} else if !errors.Is(err, io.EOF) {
				p.a.log.Warn("cannot read task output", "stream", p.stream, keyErr, err)
			}
			break
		}
	}
	p.mu.Lock()
	p.eof = true
	p.mu.Unlock()
	p.signal()
}

func (p *logPump) add(b []byte) {
	p.mu.Lock()
	if room := p.cap - p.kept; int64(len(b)) > room {
		b = b[:max(room, 0)]
		p.truncated = true
	}
	if !p.dropped {
		p.pending = append(p.pending, b...)
	}
	p.kept += int64(len(b))
	full := len(p.pending) >= flushSize
	p.mu.Unlock()
	if full {
		p.signal()
	}
}

func (p *logPump) isTruncated() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.truncated
}

// upload sends what read keeps until the stream has ended and everything
// is sent, sending gives up, or ctx ends.
func (p *logPump) upload(ctx context.Context) {
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	var sent int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.ready:
		case <-tick.C:
		}
		for {
			p.mu.Lock()
			// Slicing is safe: add only appends, so these bytes never change.
			chunk := p.pending[:min(len(p.pending), maxChunk)]
			last := p.eof && len(chunk) == len(p.pending)
			p.mu.Unlock()
			if len(chunk) > 0 {
				if !p.send(ctx, sent, chunk) {
					// What was not sent, and all that comes later, is lost:
					// the result must say the stream is incomplete.
					p.mu.Lock()
					p.dropped, p.truncated, p.pending = true, true, nil
					p.mu.Unlock()
					return
				}
				sent += int64(len(chunk))
				p.mu.Lock()
				p.pending = p.pending[len(chunk):]
				p.mu.Unlock()
			}
			if last {
				return
			}
			if len(chunk) < maxChunk {
				break
			}
		}
	}
}

// send writes one chunk at offset, retrying while that can help: the
// offset makes a repeated write harmless. It reports whether the chunk was
// written; a refusal because the lease is gone kills the attempt.
func (p *logPump) send(ctx context.Context, offset int64, chunk []byte) bool {
	bo := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	for try := 1; ; try++ {
		s := p.w.cur()
		err := s.c.AppendLog(ctx, p.a.ref, p.stream, offset, chunk)
		switch {
		case err == nil:
			return true
		case ctx.Err() != nil:
			return false
		case tasks.ErrorCode(err) == tasks.EUnauthorized && try < maxTries:
			if !p.w.awaitSession(ctx, s) {
				return false
			}
			continue
		case leaseGone(err):
			p.a.log.Warn("coordinator refused output: the lease is no longer current; killing the attempt", "stream", p.stream, keyErr, err)
			p.a.abandon("log write refused: " + err.Error())
			return false
		case !retryable(err) || try >= maxTries:
			p.a.log.Error("cannot send output; dropping the rest of the stream", "stream", p.stream, "offset", offset, keyErr, err)
			return false
		}
		p.a.log.Warn("cannot send output; retrying", "stream", p.stream, keyErr, err)
		if !sleep(ctx, bo.next()) {
			return false
		}
	}
}
