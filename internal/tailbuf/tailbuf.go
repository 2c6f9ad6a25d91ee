// Package tailbuf keeps the end of a stream: the end of a command's output
// is where its error message is, and keeping only it bounds the memory a
// chatty command can take.
package tailbuf

import "sync"

// Buffer is an io.Writer that keeps the last bytes written to it, up to
// its size. It is safe for concurrent use, so that a command's stdout and
// stderr can share one.
type Buffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// New returns a Buffer that keeps the last max bytes (max > 0).
func New(max int) *Buffer {
	if max <= 0 {
		panic("tailbuf: size must be positive")
	}
	return &Buffer{max: max}
}

// Write keeps the end of p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	n := len(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) >= b.max {
		b.buf = append(b.buf[:0], p[len(p)-b.max:]...)
		return n, nil
	}
	if over := len(b.buf) + len(p) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

// Bytes returns a copy of the bytes kept.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}

// String returns the bytes kept as a string.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
