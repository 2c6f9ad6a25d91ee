package main

import (
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

const (
	// progressMin is the smallest transfer that gets a progress line.
	progressMin = 1 << 20
	// progressEvery is the least time between two redraws.
	progressEvery = 100 * time.Millisecond
	// progressNameMax is how much of a name the line shows.
	progressNameMax = 40
)

// progress draws one line, redrawn in place, for a transfer of total
// bytes: "name  12.3 MiB / 40.0 MiB  31%  18.2 MiB/s". It is an io.Writer
// that counts what passes through it (put it in an io.MultiWriter beside
// the real destination); it never fails a write. It is not safe for
// concurrent use.
type progress struct {
	w        io.Writer
	name     string
	total    int64
	n        int64
	now      func() time.Time
	start    time.Time
	lastDraw time.Time
	drawn    bool
}

// newProgress starts a progress line on w. now is the clock (time.Now
// outside tests).
func newProgress(w io.Writer, name string, total int64, now func() time.Time) *progress {
	if utf8.RuneCountInString(name) > progressNameMax {
		r := []rune(name)
		name = "…" + string(r[len(r)-progressNameMax+1:])
	}
	return &progress{w: w, name: name, total: total, now: now, start: now()}
}

// startTransferProgress returns a progress line on w for a download or an
// upload of size bytes, or nil when w is nil or the transfer is too small
// (or of unknown size) to deserve one.
func startTransferProgress(w io.Writer, name string, size int64) *progress {
	if w == nil || size < progressMin {
		return nil
	}
	return newProgress(w, name, size, time.Now)
}

// Write counts p and redraws the line when progressEvery has passed since
// the last time.
func (p *progress) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if t := p.now(); !p.drawn || t.Sub(p.lastDraw) >= progressEvery {
		p.lastDraw = t
		p.draw(t, "")
	}
	return len(b), nil
}

// Finish ends the line: on success it is drawn a last time, with the
// average rate, and kept; otherwise it is erased so that the error that
// follows starts on a clean line.
func (p *progress) Finish(ok bool) {
	if !ok {
		if p.drawn {
			fmt.Fprint(p.w, "\r\x1b[K")
		}
		return
	}
	p.draw(p.now(), "\n")
}

func (p *progress) draw(t time.Time, end string) {
	p.drawn = true
	pct := int64(100)
	if p.total > 0 {
		pct = min(100, p.n*100/p.total)
	}
	rate := "-"
	if d := t.Sub(p.start); d > 0 {
		rate = fmtSize(int64(float64(p.n)/d.Seconds())) + "/s"
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s  %s / %s  %d%%  %s%s", p.name, fmtSize(p.n), fmtSize(p.total), pct, rate, end)
}
