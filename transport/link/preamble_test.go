package link

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// chunkReader returns its chunks one Read at a time (or less, when p is
// shorter), as a pipe may.
type chunkReader struct {
	chunks [][]byte
	reads  int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	c.reads++
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}

func TestSkipPreamble(t *testing.T) {
	t.Parallel()
	const after = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	tests := []struct {
		name   string
		chunks []string
	}{
		{"no noise", []string{Preamble + after}},
		{"noise", []string{"Welcome to lab host\nLast login: yesterday\n" + Preamble + after}},
		{"noise without a newline", []string{"\x1b]0;title\x07" + Preamble + after}},
		{"split across reads", []string{"motd\nMITO-", "LI", "NK/1", "\n", after}},
		{"byte by byte", strings.Split("noise\n"+Preamble+after, "")},
		{"partial preambles in the noise", []string{"MITO-LINK/0\nMITO-MITO-LINK/1", "\n" + after}},
		{"noise at the limit", []string{strings.Repeat("x", MaxPreambleNoise), Preamble + after}},
		{"preamble then more preambles", []string{Preamble + Preamble + after}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cr := &chunkReader{}
			for _, c := range tt.chunks {
				cr.chunks = append(cr.chunks, []byte(c))
			}
			r, err := SkipPreamble(cr)
			if err != nil {
				t.Fatalf("SkipPreamble: %v", err)
			}
			if r != io.Reader(cr) {
				t.Errorf("SkipPreamble returned %T; want the reader it was given, so that its deadlines work", r)
			}
			rest, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			want := after
			if strings.HasPrefix(tt.name, "preamble then more") {
				want = Preamble + after
			}
			if string(rest) != want {
				t.Errorf("after the preamble: got %q; want %q", rest, want)
			}
		})
	}
}

// TestSkipPreambleOneByteReader checks that reads that return less than
// asked are followed correctly.
func TestSkipPreambleOneByteReader(t *testing.T) {
	t.Parallel()
	r, err := SkipPreamble(iotest.OneByteReader(strings.NewReader("hello\n" + Preamble + "rest")))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(r); string(b) != "rest" {
		t.Errorf("after the preamble: got %q; want %q", b, "rest")
	}
}

func TestSkipPreambleTooMuchNoise(t *testing.T) {
	t.Parallel()
	noise := "Welcome to lab host \x1b[1mbold\x1b[0m\n" + strings.Repeat("noise ", MaxPreambleNoise)
	src := &countingReader{r: strings.NewReader(noise + Preamble)}
	_, err := SkipPreamble(src)
	if err == nil {
		t.Fatal("SkipPreamble: got no error; want one after too much noise")
	}
	if !errors.Is(err, ErrNoPreamble) {
		t.Errorf("error %v does not wrap ErrNoPreamble", err)
	}
	msg := err.Error()
	for _, want := range []string{`"Welcome to lab host \x1b[1mbold\x1b[0m\nnoise noise`, "65536", ".bashrc"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q: does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, strings.Repeat("noise ", 40)) {
		t.Errorf("error quotes %d bytes; want about the first 200 of the noise", len(msg))
	}
	// It gives up soon after the limit, not at the end of the stream.
	if src.n > MaxPreambleNoise+len(Preamble) {
		t.Errorf("read %d bytes; want to give up after %d", src.n, MaxPreambleNoise)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestSkipPreambleEOF(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"", "ended after 0 bytes"},
		{"bash: mito-shim: command not found\n", `"bash: mito-shim: command not found\n"`},
		{"MITO-LINK/", `"MITO-LINK/"`},
	} {
		_, err := SkipPreamble(strings.NewReader(tt.in))
		if err == nil {
			t.Errorf("%q: got no error; want one", tt.in)
			continue
		}
		if !errors.Is(err, ErrNoPreamble) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "ended") {
			t.Errorf("%q: got %v; want an ErrNoPreamble saying the output ended, with %s", tt.in, err, tt.want)
		}
	}
}

func TestSkipPreambleReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	_, err := SkipPreamble(io.MultiReader(strings.NewReader("motd\n"), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || !errors.Is(err, ErrNoPreamble) || !strings.Contains(err.Error(), `"motd\n"`) {
		t.Errorf("got %v; want an error wrapping boom and ErrNoPreamble, showing the noise", err)
	}
}
