package link

import (
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Preamble is the line the shim writes on its stdout before any HTTP/2
// bytes. Over SSH, whatever the user's shell prints when it starts (a chatty
// .bashrc: "Welcome to lab host") reaches the coordinator first, on the same
// stream; the coordinator skips everything up to and including the preamble
// with SkipPreamble before it serves the link.
const Preamble = "MITO-LINK/1\n"

// MaxPreambleNoise is how many bytes SkipPreamble skips before giving up on
// a stream that never brings the preamble.
const MaxPreambleNoise = 64 << 10

// noiseQuoted is how much of the noise a SkipPreamble error shows.
const noiseQuoted = 200

// ErrNoPreamble is wrapped by the errors of SkipPreamble.
var ErrNoPreamble = errors.New("no link preamble")

// SkipPreamble reads and discards r up to and including Preamble, and
// returns a reader positioned right after it. It never reads past the
// preamble, so the reader it returns is r itself and keeps r's methods
// (deadlines, Close). It fails, wrapping ErrNoPreamble, when more than
// MaxPreambleNoise bytes come before the preamble, or when r ends or fails
// first; the error shows the start of what came instead, which is usually
// what a login script printed.
func SkipPreamble(r io.Reader) (io.Reader, error) {
	const p = Preamble
	// fail[i] is the length of the longest proper prefix of p[:i+1] that
	// is also its suffix (Knuth-Morris-Pratt), to follow partial matches
	// through noise such as "MITO-MITO-LINK/1\n".
	var fail [len(p)]int
	for i, k := 1, 0; i < len(p); i++ {
		for k > 0 && p[i] != p[k] {
			k = fail[k-1]
		}
		if p[i] == p[k] {
			k++
		}
		fail[i] = k
	}

	var (
		buf     [len(p)]byte
		head    []byte // the first bytes read, for the error
		matched int    // bytes of p matched at the end of what was read
		total   int    // bytes read
	)
	for {
		// Read no more than the rest of the preamble in the best case,
		// so that nothing after it is consumed.
		n, err := r.Read(buf[:len(p)-matched])
		for _, c := range buf[:n] {
			for matched > 0 && c != p[matched] {
				matched = fail[matched-1]
			}
			if c == p[matched] {
				matched++
			}
		}
		if len(head) < noiseQuoted {
			head = append(head, buf[:min(n, noiseQuoted-len(head))]...)
		}
		total += n
		if matched == len(p) {
			return r, nil
		}
		noise := total - matched
		switch {
		case noise > MaxPreambleNoise:
			return nil, fmt.Errorf("%w: the shim's output did not start with %q within %d bytes; it began with %s (does a login script such as .bashrc print?)",
				ErrNoPreamble, p, MaxPreambleNoise, quoteNoise(head, total))
		case err == io.EOF:
			return nil, fmt.Errorf("%w: the shim's output ended after %d bytes, before %q; it began with %s",
				ErrNoPreamble, total, p, quoteNoise(head, total))
		case err != nil:
			return nil, fmt.Errorf("%w: reading the shim's output after %d bytes, before %q: %w; it began with %s",
				ErrNoPreamble, total, p, err, quoteNoise(head, total))
		}
	}
}

// quoteNoise quotes the start of the noise, escaping what is not
// printable, and says when there was more.
func quoteNoise(head []byte, total int) string {
	if total == 0 {
		return "nothing"
	}
	q := strconv.Quote(string(head))
	if total > len(head) {
		q += fmt.Sprintf(" (%d more bytes)", total-len(head))
	}
	return q
}
