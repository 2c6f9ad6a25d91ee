package redisbus

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/coordinator/events/eventstest"
	"github.com/mitolab/mito/tasks"
)

// redisURL returns the Redis to test against, or skips the test.
func redisURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("MITO_TEST_REDIS_URL")
	if u == "" {
		msg := "MITO_TEST_REDIS_URL not set; start Redis (redis-server --port 6379) and set MITO_TEST_REDIS_URL=redis://127.0.0.1:6379/0"
		if os.Getenv("MITO_TEST_REQUIRE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return u
}

// channel returns a channel name no other test uses.
func channel(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "mito:test:" + t.Name() + ":" + hex.EncodeToString(b[:])
}

func newBus(t *testing.T, url string, opts ...Option) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := New(ctx, url, opts...)
	if err != nil {
		t.Fatalf("new bus: %v", err)
	}
	t.Cleanup(func() { closeWithin(t, b, closeBound) })
	return b
}

// closeBound is how long a test lets Close take: its own bound, closeWait,
// plus slack for a loaded machine running the race detector.
const closeBound = 3 * time.Second

// closeWithin closes bus, failing the test (with every goroutine's stack)
// if Close fails or does not return within d, and returns how long it took.
// Tests never call Close bare: a Close that hangs must fail its test in
// seconds, not hang the test binary until its -timeout.
func closeWithin(t *testing.T, bus *Bus, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- bus.Close() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("close: %v", err)
		}
		return time.Since(start)
	case <-time.After(d):
		t.Errorf("close did not return in %v:\n%s", d, stacks())
		return d
	}
}

// stacks returns the stacks of all goroutines.
func stacks() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}

// within fails the test if done is not closed within d.
func within(t *testing.T, done <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: not done after %v:\n%s", what, d, stacks())
	}
}

func ev(id int) events.Event {
	return events.Event{Task: tasks.ID(id), Group: "lab", State: "running", Host: "h1"}
}

func TestConformanceRedis(t *testing.T) {
	url := redisURL(t)
	eventstest.Run(t, func(t *testing.T) events.Bus { return newBus(t, url, WithChannel(channel(t))) })
}

func TestConformanceMiniredis(t *testing.T) {
	mr := miniredis.RunT(t)
	url := "redis://" + mr.Addr()
	eventstest.Run(t, func(t *testing.T) events.Bus { return newBus(t, url, WithChannel(channel(t))) })
}

// TestTwoBuses checks that two buses on one channel see each other's
// events, each exactly once, including their own. Each publish waits for
// the previous event to reach the other bus; Redis keeps the order of one
// channel, so an echo of a bus's own event would arrive before the next
// remote one and break the sequence.
func TestTwoBuses(t *testing.T) {
	t.Run("redis", func(t *testing.T) { testTwoBuses(t, redisURL(t)) })
	t.Run("miniredis", func(t *testing.T) { testTwoBuses(t, "redis://"+miniredis.RunT(t).Addr()) })
}

func testTwoBuses(t *testing.T, url string) {
	ch := channel(t)
	a := newBus(t, url, WithChannel(ch))
	b := newBus(t, url, WithChannel(ch))
	other := newBus(t, url, WithChannel(channel(t))) // must hear nothing
	subA, cancelA := a.Subscribe()
	defer cancelA()
	subB, cancelB := b.Subscribe()
	defer cancelB()
	subOther, cancelOther := other.Subscribe()
	defer cancelOther()
	// No waiting: New returns subscribed.
	ctx := context.Background()
	seq := []struct {
		from *Bus
		ev   events.Event
	}{{a, ev(1)}, {b, ev(2)}, {a, ev(3)}, {b, ev(4)}}
	for _, s := range seq {
		if err := s.from.Publish(ctx, s.ev); err != nil {
			t.Fatalf("publish: %v", err)
		}
		for name, sub := range map[string]<-chan events.Event{"a": subA, "b": subB} {
			if got := eventstest.Receive(t, sub); got != s.ev {
				t.Errorf("bus %s: got %+v; want %+v", name, got, s.ev)
			}
		}
	}
	eventstest.Quiet(t, subA)
	eventstest.Quiet(t, subB)
	eventstest.Quiet(t, subOther)
}

// waitHear publishes on from until sub (a subscriber of to) gets one of
// those events, and fails after a while.
func waitHear(t *testing.T, from, to *Bus, sub <-chan events.Event) {
	t.Helper()
	probe := events.Event{Task: 999999, Group: "probe"}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		_ = from.Publish(context.Background(), probe)
		select {
		case got := <-sub:
			if got == probe {
				drain(sub)
				return
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s never heard %s", to.origin, from.origin)
}

// drain empties sub after a short wait for stragglers. It returns once sub
// is quiet or closed, and after at most a few seconds of steady traffic.
func drain(sub <-chan events.Event) {
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-sub:
			if !ok {
				return
			}
		case <-time.After(100 * time.Millisecond):
			return
		case <-deadline:
			return
		}
	}
}

// redisServer is a redis-server child process the test may stop and start.
type redisServer struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
	out  bytes.Buffer
}

func startRedisServer(t *testing.T) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		msg := "redis-server not in PATH; install Redis (apt-get install redis-server) to run this test"
		if os.Getenv("MITO_TEST_REQUIRE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &redisServer{t: t, port: port}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.port) }

func (s *redisServer) start() {
	s.t.Helper()
	s.out.Reset()
	s.cmd = exec.Command("redis-server", "--port", fmt.Sprint(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no")
	s.cmd.Stdout = &s.out
	s.cmd.Stderr = &s.out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop()
	s.t.Fatalf("redis-server on port %d did not come up:\n%s", s.port, s.out.String())
}

func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// TestRedisOutage stops Redis under two buses: each still delivers its own
// events locally, and events flow between them again once Redis is back.
func TestRedisOutage(t *testing.T) {
	srv := startRedisServer(t)
	ch := channel(t)
	var logs logBuffer
	a := newBus(t, srv.url(), WithChannel(ch), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	b := newBus(t, srv.url(), WithChannel(ch))
	subA, cancelA := a.Subscribe()
	defer cancelA()
	subB, cancelB := b.Subscribe()
	defer cancelB()
	waitHear(t, b, a, subA)
	waitHear(t, a, b, subB)
	drain(subA) // A's own probes

	srv.stop()
	// Publish until A's reader has noticed, so the second phase also covers
	// the fast failure while the bus knows Redis is down.
	deadline := time.Now().Add(10 * time.Second)
	for i := 1; ; i++ {
		start := time.Now()
		err := a.Publish(context.Background(), ev(i))
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("publish with Redis down took %v; want it bounded", took)
		}
		if err == nil {
			t.Fatal("publish with Redis down: got no error")
		}
		if got := eventstest.Receive(t, subA); got != ev(i) {
			t.Fatalf("local delivery with Redis down: got %+v; want %+v", got, ev(i))
		}
		if errors.Is(err, errUnavailable) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader never noticed Redis is down; last error: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let the readers retry a few times

	srv.start()
	waitHear(t, b, a, subA)
	waitHear(t, a, b, subB)
	if n := logs.count("connection lost"); n != 1 {
		t.Errorf("logged loss %d times; want once:\n%s", n, logs.buf.String())
	}
	if n := logs.count("connection restored"); n != 1 {
		t.Errorf("logged restore %d times; want once:\n%s", n, logs.buf.String())
	}
}

// freezeProxy forwards TCP to target until frozen; then it holds every
// connection open and silent, like a network partition.
type freezeProxy struct {
	l      net.Listener
	target string
	frozen atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startFreezeProxy(t *testing.T, target string) *freezeProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{l: l, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		done := make(chan struct{})
		go func() {
			p.wg.Wait()
			close(done)
		}()
		within(t, done, 5*time.Second, "freeze proxy shutdown")
	})
	return p
}

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

func (p *freezeProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if p.frozen.Load() {
			continue // swallow: the peer hears nothing
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *freezeProxy) url() string { return "redis://" + p.l.Addr().String() }

// TestPublishBoundedWhenRedisHangs checks that a Redis that accepts but
// never answers cannot hold up Publish: go-redis alone would wait for its
// read timeout on every retry.
func TestPublishBoundedWhenRedisHangs(t *testing.T) {
	mr := miniredis.RunT(t)
	p := startFreezeProxy(t, mr.Addr())
	bus := newBus(t, p.url(), WithChannel(channel(t)))
	sub, cancel := bus.Subscribe()
	defer cancel()
	if err := bus.Publish(context.Background(), ev(1)); err != nil {
		t.Fatalf("publish before freeze: %v", err)
	}
	eventstest.Receive(t, sub)
	p.frozen.Store(true)
	start := time.Now()
	err := bus.Publish(context.Background(), ev(2))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("publish to a hung Redis took %v; want about %v", took, publishTimeout)
	}
	if err == nil {
		t.Error("publish to a hung Redis: got no error")
	}
	if got := eventstest.Receive(t, sub); got != ev(2) {
		t.Errorf("local delivery: got %+v; want %+v", got, ev(2))
	}
	// Close must not wait for go-redis to give up on the hung connection
	// for long.
	closeWithin(t, bus, closeBound)
}

// TestSilentRedisIsDetected checks that the reader notices a connection on
// which Redis stopped answering, and resumes when it answers again.
func TestSilentRedisIsDetected(t *testing.T) {
	old := idlePing
	idlePing = 100 * time.Millisecond
	t.Cleanup(func() { idlePing = old })
	mr := miniredis.RunT(t)
	p := startFreezeProxy(t, mr.Addr())
	ch := channel(t)
	var logs logBuffer
	a := newBus(t, p.url(), WithChannel(ch), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	b := newBus(t, "redis://"+mr.Addr(), WithChannel(ch))
	subA, cancelA := a.Subscribe()
	defer cancelA()
	subB, cancelB := b.Subscribe()
	defer cancelB()

	p.frozen.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := a.Publish(context.Background(), ev(1))
		if errors.Is(err, errUnavailable) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader never noticed the silent connection; last publish error: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.frozen.Store(false)
	drain(subA)
	drain(subB)
	waitHear(t, b, a, subA)
	waitHear(t, a, b, subB)
	if n := logs.count("connection lost"); n != 1 {
		t.Errorf("logged loss %d times; want once:\n%s", n, logs.buf.String())
	}
}

// TestCloseStopsReader checks that Close waits for the reader, whether
// Redis is up or down at the time.
func TestCloseStopsReader(t *testing.T) {
	srv := startRedisServer(t)
	settle := func() int {
		n := runtime.NumGoroutine()
		for i := 0; i < 50; i++ {
			time.Sleep(20 * time.Millisecond)
			if m := runtime.NumGoroutine(); m == n {
				break
			} else {
				n = m
			}
		}
		return n
	}
	for _, down := range []bool{false, true} {
		t.Run(fmt.Sprintf("down=%v", down), func(t *testing.T) {
			if !down {
				srv.stop()
				srv.start()
			}
			before := settle()
			ctx := context.Background()
			bus, err := New(ctx, srv.url(), WithChannel(channel(t)))
			if err != nil {
				t.Fatal(err)
			}
			sub, cancel := bus.Subscribe()
			_ = bus.Publish(ctx, ev(1))
			eventstest.Receive(t, sub)
			cancel()
			if down {
				srv.stop()
				_ = bus.Publish(ctx, ev(2))
				time.Sleep(200 * time.Millisecond) // the reader is now retrying
			}
			closeWithin(t, bus, closeBound)
			select {
			case <-bus.done:
			default:
				t.Error("Close returned before the reader stopped")
			}
			closeWithin(t, bus, closeBound) // a second Close is harmless
			if err := bus.Publish(ctx, ev(3)); err == nil {
				t.Error("publish after close: got no error")
			}
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > before {
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines after close; want at most %d:\n%s",
						runtime.NumGoroutine(), before, stacks())
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestCloseIsPrompt is the regression test for a Close that waited for the
// reader forever (a 12-minute hang of make test): Close closed the reader's
// PubSub but did not cancel the reader's context, and the reader took the
// error of the closed PubSub, which go-redis returns at once on every later
// call and never recovers from, for a lost connection, and retried it with
// backoff forever. Close must return promptly with the reader stopped,
// whatever the reader is doing at the time.
func TestCloseIsPrompt(t *testing.T) {
	for _, state := range []string{"reading", "silent", "backing off"} {
		t.Run(state, func(t *testing.T) {
			old := idlePing
			idlePing = 200 * time.Millisecond // exercise the ping path too
			t.Cleanup(func() { idlePing = old })
			mr := miniredis.RunT(t)
			p := startFreezeProxy(t, mr.Addr())
			ch := channel(t)
			bus := newBus(t, p.url(), WithChannel(ch))
			other := newBus(t, "redis://"+mr.Addr(), WithChannel(ch))
			sub, cancel := bus.Subscribe()
			defer cancel()
			waitHear(t, other, bus, sub) // the reader is running
			switch state {
			case "silent": // the reader is blocked on a connection that says nothing
				p.frozen.Store(true)
				time.Sleep(300 * time.Millisecond)
			case "backing off": // Redis is gone; the reader retries
				mr.Close()
				deadline := time.Now().Add(10 * time.Second)
				for !errors.Is(bus.Publish(context.Background(), ev(1)), errUnavailable) {
					if time.Now().After(deadline) {
						t.Fatal("reader never noticed Redis is gone")
					}
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(300 * time.Millisecond)
			}
			took := closeWithin(t, bus, closeBound)
			t.Logf("close took %v", took)
			select {
			case <-bus.done:
			default:
				t.Error("Close returned before the reader stopped")
			}
		})
	}
}

// TestReaderStopsWithoutCancel checks the reader's second stop signal: had
// Close's cancel been lost (as in the hang TestCloseIsPrompt guards
// against), the reader still stops when Close begins instead of retrying
// the PubSub that Close closed.
func TestReaderStopsWithoutCancel(t *testing.T) {
	mr := miniredis.RunT(t)
	bus := newBus(t, "redis://"+mr.Addr(), WithChannel(channel(t)))
	cancel := bus.cancel
	t.Cleanup(cancel)
	bus.cancel = func() {} // only Close reads the field, and it runs after this
	closeWithin(t, bus, closeBound)
	within(t, bus.done, time.Second, "reader after Close without cancel")
}

// TestCloseIsBoundedWhenReaderHangs checks that Close returns after
// closeWait, with an error, even if the reader does not stop.
func TestCloseIsBoundedWhenReaderHangs(t *testing.T) {
	old := closeWait
	closeWait = 200 * time.Millisecond
	t.Cleanup(func() { closeWait = old })
	mr := miniredis.RunT(t)
	ch := channel(t)
	bus := newBus(t, "redis://"+mr.Addr(), WithChannel(ch))
	other := newBus(t, "redis://"+mr.Addr(), WithChannel(ch))
	sub, cancel := bus.Subscribe()
	defer cancel()
	// Once bus's reader has delivered an event it has long since taken
	// bus.done for its deferred close, so swapping the field here makes
	// Close wait on a channel nobody closes, like a reader that hangs.
	waitHear(t, other, bus, sub)
	readerDone := bus.done
	bus.done = make(chan struct{})
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- bus.Close() }()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "reader still running") {
			t.Errorf("close with a hung reader: got %v; want a reader still running error", err)
		}
		if took := time.Since(start); took > closeWait+time.Second {
			t.Errorf("close with a hung reader took %v; want about %v", took, closeWait)
		}
	case <-time.After(closeBound):
		t.Fatalf("close with a hung reader did not return in %v:\n%s", closeBound, stacks())
	}
	within(t, readerDone, closeBound, "the real reader")
}

func TestNewErrorHidesPassword(t *testing.T) {
	const secret = "s3cretPW"
	mr := miniredis.RunT(t)
	mr.RequireAuth("right-password")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	_ = l.Close()

	for _, tc := range []struct{ name, url string }{
		{"unreachable", "redis://user:" + secret + "@" + closedAddr + "/0"},
		{"wrong password", "redis://:" + secret + "@" + mr.Addr() + "/0"},
		{"bad port", "redis://user:" + secret + "@127.0.0.1:port/0"},
		{"bad host", "redis://user:" + secret + "@[::1/0"},
		{"bad scheme", "http://user:" + secret + "@127.0.0.1:6379/0"},
		{"bad db", "redis://user:" + secret + "@127.0.0.1:6379/x"},
		{"bad escape", "redis://user:" + secret + "%zz@127.0.0.1:6379/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			bus, err := New(ctx, tc.url)
			if err == nil {
				closeWithin(t, bus, closeBound)
				t.Fatal("got no error")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error reveals the password: %v", err)
			}
			t.Log(err)
		})
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"redis://u:pw@h:1/0", "redis://u:xxxxx@h:1/0"},
		{"redis://h:1/0", "redis://h:1/0"},
		{"redis://u:pw%zz@h:1/0", "redis://xxxxx@h:1/0"},
		{"redis://u:p@w@[::1/0", "redis://xxxxx@[::1/0"},
		{"u:pw@h", "xxxxx@h"},
	} {
		if got := redact(tc.in); got != tc.want {
			t.Errorf("redact(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestMalformedMessagesAreSkipped(t *testing.T) {
	mr := miniredis.RunT(t)
	ch := channel(t)
	bus := newBus(t, "redis://"+mr.Addr(), WithChannel(ch))
	sub, cancel := bus.Subscribe()
	defer cancel()
	other := newBus(t, "redis://"+mr.Addr(), WithChannel(ch))
	waitHear(t, other, bus, sub)
	mr.Publish(ch, "not json")
	if err := other.Publish(context.Background(), ev(5)); err != nil {
		t.Fatal(err)
	}
	if got := eventstest.Receive(t, sub); got != ev(5) {
		t.Errorf("got %+v; want %+v", got, ev(5))
	}
}

var _ io.Writer = (*logBuffer)(nil)
