package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func lines(out string) []string          { return strings.Split(out, "\r\x1b[K")[1:] }

func TestProgressLine(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	var buf bytes.Buffer
	total := int64(40 << 20)
	p := newProgress(&buf, "model.bin", total, clock.now)

	chunk := make([]byte, 1<<20)
	// 1 MiB every 50 ms: 20 MiB/s, and a redraw every other chunk.
	for range 12 {
		clock.add(50 * time.Millisecond)
		p.Write(chunk)
	}
	got := lines(buf.String())
	if len(got) != 6 {
		t.Fatalf("got %d redraws in 600 ms; want 6 (at most one per 100 ms):\n%q", len(got), got)
	}
	if want := "model.bin  1.0 MiB / 40.0 MiB  2%  20.0 MiB/s"; got[0] != want {
		t.Errorf("first line %q; want %q", got[0], want)
	}
	if want := "model.bin  11.0 MiB / 40.0 MiB  27%  20.0 MiB/s"; got[5] != want {
		t.Errorf("last line %q; want %q", got[5], want)
	}

	// Writes within 100 ms of a redraw draw nothing.
	buf.Reset()
	p.Write(chunk)
	if buf.Len() != 0 {
		t.Errorf("redrew %q within 100 ms", buf.String())
	}

	// The rest arrives in a slower second; Finish draws a final line, kept.
	clock.add(time.Second)
	p.Write(make([]byte, total-13<<20))
	buf.Reset()
	p.Finish(true)
	if want := "\r\x1b[Kmodel.bin  40.0 MiB / 40.0 MiB  100%  25.0 MiB/s\n"; buf.String() != want {
		t.Errorf("final %q; want %q", buf.String(), want)
	}
}

func TestProgressFailureErasesLine(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	var buf bytes.Buffer
	p := newProgress(&buf, strings.Repeat("d/", 30)+"file", 2<<20, clock.now)
	if _, err := io.Copy(io.MultiWriter(io.Discard, p), strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	if line := lines(buf.String())[0]; !strings.HasPrefix(line, "…") || !strings.Contains(line, "d/file  3 B / 2.0 MiB  0%  -") {
		t.Errorf("line %q; want a shortened name and no rate at time 0", line)
	}
	buf.Reset()
	p.Finish(false)
	if buf.String() != "\r\x1b[K" {
		t.Errorf("Finish(false) wrote %q; want the line erased", buf.String())
	}
}

func TestDownloadProgressOnlyForLargeKnownSizes(t *testing.T) {
	var buf bytes.Buffer
	for _, c := range []struct {
		w    io.Writer
		size int64
		want bool
	}{
		{&buf, 1 << 20, true},
		{&buf, 1<<20 - 1, false},
		{&buf, -1, false},
		{nil, 1 << 30, false},
	} {
		if got := startTransferProgress(c.w, "x", c.size) != nil; got != c.want {
			t.Errorf("startTransferProgress(%v, %d) = %v; want %v", c.w != nil, c.size, got, c.want)
		}
	}
}
