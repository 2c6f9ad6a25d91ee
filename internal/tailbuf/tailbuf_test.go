package tailbuf

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

func TestBuffer(t *testing.T) {
	t.Parallel()
	b := New(5)
	for _, s := range []string{"ab", "cdef", "", "ghijklmn", "o"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := b.String(); got != "klmno" {
		t.Errorf("String() = %q; want %q", got, "klmno")
	}
	if got := string(b.Bytes()); got != "klmno" {
		t.Errorf("Bytes() = %q; want %q", got, "klmno")
	}
	// Bytes is a copy: writing on does not change it.
	got := b.Bytes()
	b.Write([]byte("pq"))
	if string(got) != "klmno" || b.String() != "mnopq" {
		t.Errorf("after another write: copy %q, buffer %q; want klmno, mnopq", got, b.String())
	}
	if cap(b.buf) > 2*b.max {
		t.Errorf("capacity %d; want at most twice the size", cap(b.buf))
	}
}

func TestBufferConcurrent(t *testing.T) {
	t.Parallel()
	b := New(1000)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line := strings.Repeat(string(rune('a'+i)), 9) + "\n"
			for range 500 {
				b.Write([]byte(line))
			}
		}()
	}
	wg.Wait()
	out := b.Bytes()
	if len(out) != 1000 {
		t.Fatalf("kept %d bytes; want 1000", len(out))
	}
	// Writes are whole: every complete line is one writer's.
	for _, l := range bytes.Split(out[bytes.IndexByte(out, '\n')+1:len(out)-1], []byte("\n")) {
		if len(l) != 9 || bytes.Count(l, l[:1]) != 9 {
			t.Fatalf("interleaved line %q", l)
		}
	}
}
