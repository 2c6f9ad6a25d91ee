package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// pair makes the two ends of a link.
type pair func(t *testing.T) (client, server net.Conn)

var pairs = map[string]pair{
	"net.Pipe": func(t *testing.T) (net.Conn, net.Conn) {
		a, b := net.Pipe()
		return a, b
	},
	"NewConn(net.Pipe)": func(t *testing.T) (net.Conn, net.Conn) {
		a, b := net.Pipe()
		return NewConn(a, a, a.Close), NewConn(b, b, b.Close)
	},
	"os.Pipe": func(t *testing.T) (net.Conn, net.Conn) {
		t.Helper()
		// Like a shim and its parent: the child reads its stdin (r1) and
		// writes its stdout (w2).
		r1, w1, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r2, w2, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, f := range []*os.File{r1, w1, r2, w2} {
				f.Close()
			}
		})
		client := NewConn(r1, w2, func() error { r1.Close(); return w2.Close() })
		server := NewConn(r2, w1, nil)
		return client, server
	},
}

// testHandler answers /echo with the request body, /hash with the body's
// SHA-256, /big?n= with n random bytes preceded by nothing, and /wait by
// blocking until release is closed.
func testHandler(release <-chan struct{}, waiting chan<- struct{}) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	})
	mux.HandleFunc("POST /hash", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	mux.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
		waiting <- struct{}{}
		select {
		case <-release:
			_, _ = io.WriteString(w, "released")
		case <-r.Context().Done():
			// The link is going away: abort rather than answer, as a
			// real long poll cut short must not look like an answer.
			panic(http.ErrAbortHandler)
		}
	})
	mux.HandleFunc("GET /ctx", func(w http.ResponseWriter, r *http.Request) {
		v, _ := r.Context().Value(ctxKey{}).(string)
		_, _ = io.WriteString(w, v)
	})
	return mux
}

type ctxKey struct{}

// serve runs ServeConn on server in the background and returns a function
// that waits for it to return.
func serve(t *testing.T, ctx context.Context, server net.Conn, h http.Handler) (wait func() bool) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		ServeConn(ctx, server, h, func(ctx context.Context) context.Context {
			return context.WithValue(ctx, ctxKey{}, "host-a")
		})
	}()
	t.Cleanup(func() {
		server.Close()
		<-done
	})
	return func() bool {
		select {
		case <-done:
			return true
		case <-time.After(5 * time.Second):
			return false
		}
	}
}

func get(ctx context.Context, hc *http.Client, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, BaseURL+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 {
		return "", fmt.Errorf("got protocol %s; want HTTP/2", resp.Proto)
	}
	return string(b), err
}

func post(ctx context.Context, hc *http.Client, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func TestLink(t *testing.T) {
	for name, mk := range pairs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("concurrent requests and long poll", func(t *testing.T) {
				t.Parallel()
				client, server := mk(t)
				release, waiting := make(chan struct{}), make(chan struct{}, 1)
				serve(t, t.Context(), server, testHandler(release, waiting))
				hc := HTTPClient(client)
				defer client.Close()

				longPoll := make(chan string, 1)
				go func() {
					s, err := get(t.Context(), hc, "/wait")
					if err != nil {
						s = err.Error()
					}
					longPoll <- s
				}()
				<-waiting

				// While the long poll blocks, many other requests must pass.
				var g errgroup.Group
				for i := range 50 {
					g.Go(func() error {
						want := fmt.Sprintf("request %d", i)
						got, err := post(t.Context(), hc, "/echo", []byte(want))
						if err != nil {
							return err
						}
						if string(got) != want {
							return fmt.Errorf("got %q; want %q", got, want)
						}
						return nil
					})
				}
				if err := g.Wait(); err != nil {
					t.Fatal(err)
				}
				select {
				case s := <-longPoll:
					t.Fatalf("long poll ended early with %q", s)
				default:
				}
				close(release)
				if got := <-longPoll; got != "released" {
					t.Errorf("long poll: got %q; want %q", got, "released")
				}
				if got, err := get(t.Context(), hc, "/ctx"); err != nil || got != "host-a" {
					t.Errorf("base context value: got %q, %v; want %q", got, err, "host-a")
				}
			})

			t.Run("large bodies", func(t *testing.T) {
				t.Parallel()
				client, server := mk(t)
				serve(t, t.Context(), server, testHandler(nil, nil))
				hc := HTTPClient(client)
				defer client.Close()

				body := make([]byte, 16<<20)
				_, _ = rand.Read(body)
				sum := sha256.Sum256(body)
				var g errgroup.Group
				g.Go(func() error { // up
					got, err := post(t.Context(), hc, "/hash", body)
					if want := fmt.Sprintf("%d %x", len(body), sum); err != nil || string(got) != want {
						return fmt.Errorf("hash: got %q, %v; want %q", got, err, want)
					}
					return nil
				})
				g.Go(func() error { // up and down
					got, err := post(t.Context(), hc, "/echo", body)
					if err != nil {
						return err
					}
					if !bytes.Equal(got, body) {
						return fmt.Errorf("echo: got %d bytes, sha256 %x; want %d bytes, %x", len(got), sha256.Sum256(got), len(body), sum)
					}
					return nil
				})
				if err := g.Wait(); err != nil {
					t.Fatal(err)
				}
			})

			t.Run("client close ends server", func(t *testing.T) {
				t.Parallel()
				client, server := mk(t)
				release, waiting := make(chan struct{}), make(chan struct{}, 1)
				wait := serve(t, t.Context(), server, testHandler(release, waiting))
				hc := HTTPClient(client)
				if _, err := post(t.Context(), hc, "/echo", []byte("x")); err != nil {
					t.Fatal(err)
				}
				client.Close()
				if !wait() {
					t.Fatal("ServeConn did not return after the client end closed")
				}
				if _, err := post(t.Context(), hc, "/echo", []byte("x")); err == nil {
					t.Error("request after close succeeded; want an error")
				}
			})

			t.Run("server close ends client", func(t *testing.T) {
				t.Parallel()
				client, server := mk(t)
				release, waiting := make(chan struct{}), make(chan struct{}, 1)
				ctx, cancel := context.WithCancel(t.Context())
				wait := serve(t, ctx, server, testHandler(release, waiting))
				hc := HTTPClient(client)
				defer client.Close()
				errc := make(chan error, 1)
				go func() {
					_, err := get(t.Context(), hc, "/wait")
					errc <- err
				}()
				<-waiting
				cancel() // ServeConn must close the connection
				if !wait() {
					t.Fatal("ServeConn did not return after its context ended")
				}
				select {
				case err := <-errc:
					if err == nil {
						t.Error("long poll succeeded after the server closed; want an error")
					}
				case <-time.After(5 * time.Second):
					t.Fatal("long poll still blocked 5s after the server closed")
				}
				if _, err := post(t.Context(), hc, "/echo", []byte("x")); err == nil {
					t.Error("request after close succeeded; want an error")
				}
			})
		})
	}
}

// TestNewConnCloseUnblocksRead checks that Close makes a blocked Read return.
func TestNewConnCloseUnblocksRead(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := NewConn(r, w, nil)
	var wg sync.WaitGroup
	var readErr error
	wg.Go(func() {
		_, readErr = c.Read(make([]byte, 10))
	})
	time.Sleep(50 * time.Millisecond)
	c.Close()
	wg.Wait()
	if readErr == nil {
		t.Error("Read after Close: got nil error; want one")
	}
	if got := c.LocalAddr().String(); got != "link" {
		t.Errorf("LocalAddr: got %q; want %q", got, "link")
	}
}

// TestServeConnWaitsForHandlers checks that ServeConn returns only after the
// handlers it started have returned, so that the coordinator can close what
// they use (its store) once it has.
func TestServeConnWaitsForHandlers(t *testing.T) {
	for name, mk := range pairs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			client, server := mk(t)
			started := make(chan struct{})
			var mu sync.Mutex
			handlerDone := false
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				<-r.Context().Done()
				// A handler that takes a while to notice, as one in the
				// middle of a store transaction does.
				time.Sleep(300 * time.Millisecond)
				mu.Lock()
				handlerDone = true
				mu.Unlock()
			})
			served := make(chan struct{})
			go func() {
				defer close(served)
				ServeConn(t.Context(), server, h, nil)
			}()
			hc := HTTPClient(client)
			go func() { _, _ = get(t.Context(), hc, "/slow") }()
			select {
			case <-started:
			case <-time.After(5 * time.Second):
				t.Fatal("handler did not start")
			}
			client.Close() // the shim goes away
			select {
			case <-served:
			case <-time.After(5 * time.Second):
				t.Fatal("ServeConn did not return after the link closed")
			}
			mu.Lock()
			defer mu.Unlock()
			if !handlerDone {
				t.Error("ServeConn returned while a handler still ran")
			}
		})
	}
}
