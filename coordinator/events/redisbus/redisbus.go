// Package redisbus is an events.Bus on Redis PUBLISH/SUBSCRIBE, for several
// coordinators (and remote watchers) sharing one Redis.
//
// Redis only carries hints between processes. Each Bus fans events out to
// its local subscribers through an events.Local, so what a process
// publishes reaches its own subscribers even while Redis is down; Redis
// adds the events of the other processes. Losing Redis therefore only
// delays the waiters of other processes until their timers fire.
//
//	Publish ──▶ local fan-out ──▶ own subscribers
//	   └──────▶ PUBLISH ──▶ Redis ──▶ reader goroutine of every Bus
//	                                   (own events skipped) ──▶ local fan-out
package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mitolab/mito/coordinator/events"
)

// DefaultChannel is the Redis channel used unless WithChannel says otherwise.
const DefaultChannel = "mito:events"

const (
	// publishTimeout bounds a PUBLISH: the caller is on a request path and
	// a notification is not worth waiting for.
	publishTimeout = 500 * time.Millisecond
	// connectTimeout bounds the Ping in New when ctx has no earlier deadline.
	connectTimeout = 5 * time.Second
	// Reconnect backoff of the reader.
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// closeWait bounds how long Close waits for the reader to stop. The reader
// stops within milliseconds unless go-redis holds it in network I/O, which
// the client's own timeouts (about a second) end; past closeWait Close
// closes the client anyway, which ends that I/O, and reports the reader as
// not stopped. A variable for tests.
var closeWait = 1500 * time.Millisecond

// idlePing is how long the reader waits for traffic before it pings Redis;
// a second silent period means the connection is dead even if TCP has not
// noticed (a half-open connection). A variable for tests.
var idlePing = 5 * time.Second

// Log attribute keys.
const (
	logAddr    = "addr"
	logChannel = "channel"
	logErr     = "err"
	logWait    = "wait"
)

// errUnavailable is returned by Publish while the reader knows Redis is
// unreachable, so that callers do not each wait for a timeout.
var errUnavailable = errors.New("redis unavailable")

// Option configures a Bus.
type Option func(*config)

type config struct {
	channel string
	log     *slog.Logger
}

// WithChannel sets the Redis channel. Default: DefaultChannel. Every
// process that should see each other's events must use the same one.
func WithChannel(name string) Option { return func(c *config) { c.channel = name } }

// WithLogger sets the logger for connection state changes. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// envelope is what travels over Redis: the event and the Bus that sent it,
// so that a Bus can skip its own events, which it already delivered.
type envelope struct {
	Origin string       `json:"origin"`
	Event  events.Event `json:"event"`
}

// Bus is an events.Bus on Redis. Its zero value is not usable; call New.
type Bus struct {
	client  *redis.Client
	channel string
	origin  string
	log     *slog.Logger
	local   *events.Local

	// up is false while the reader knows Redis is unreachable.
	up atomic.Bool

	// Close stops the reader with both cancel (for go-redis calls) and
	// closing (for the reader's own waits and checks): either alone is
	// enough, so one lost signal cannot leave the reader running.
	cancel  context.CancelFunc
	closing chan struct{} // closed, under mu, when Close begins
	done    chan struct{} // closed when the reader has returned

	// mu guards the reader's current PubSub and the closing of closing, so
	// that Close can interrupt a blocked read.
	mu sync.Mutex
	ps *redis.PubSub
}

var _ events.Bus = (*Bus)(nil)

// New connects to the Redis at rawURL (redis:// or rediss://) and starts the
// goroutine that reads the channel. It fails if Redis does not answer a
// Ping; errors never include the URL's password.
func New(ctx context.Context, rawURL string, opts ...Option) (*Bus, error) {
	cfg := config{channel: DefaultChannel}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.channel == "" {
		return nil, errors.New("new redis bus: empty channel name")
	}
	ropt, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	// Without this go-redis ignores context deadlines on the wire, and a
	// hung Redis would hold Publish for its read timeout on every retry.
	ropt.ContextTimeoutEnabled = true
	if ropt.DialerRetries == 0 {
		// The reader paces its own reconnects; go-redis's extra dial
		// attempts would only make a Publish to a dead Redis slower.
		ropt.DialerRetries = 1
	}
	// Short network timeouts: this client only publishes, pings and
	// subscribes, and go-redis does not notice a cancelled context while it
	// waits on the network, so these also bound how long Close can wait
	// for the reader when Redis hangs.
	if ropt.DialTimeout == 0 {
		ropt.DialTimeout = 2 * time.Second
	}
	if ropt.ReadTimeout == 0 {
		ropt.ReadTimeout = time.Second
	}
	if ropt.WriteTimeout == 0 {
		ropt.WriteTimeout = time.Second
	}
	client := redis.NewClient(ropt)
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("connect to %s: %w", redact(rawURL), err)
	}
	// Subscribe before returning, so that the Bus hears every event others
	// publish after New returns.
	ps := client.Subscribe(pctx, cfg.channel)
	if msg, err := ps.Receive(pctx); err != nil || !isSubscribed(msg) {
		_ = ps.Close()
		_ = client.Close()
		if err == nil {
			err = fmt.Errorf("unexpected reply %v", msg)
		}
		return nil, fmt.Errorf("subscribe to %s on %s: %w", cfg.channel, redact(rawURL), err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails
	rctx, stop := context.WithCancel(context.Background())
	b := &Bus{
		client:  client,
		channel: cfg.channel,
		origin:  hex.EncodeToString(id[:]),
		log:     cfg.log.With(logAddr, ropt.Addr, logChannel, cfg.channel),
		local:   events.NewLocal(),
		cancel:  stop,
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		ps:      ps,
	}
	b.up.Store(true)
	go b.read(rctx)
	return b, nil
}

// parseURL parses a Redis URL; its errors never include the password.
func parseURL(raw string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL; keep only the reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("parse redis url %s: %w", redact(raw), err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("parse redis url %s: scheme %q, want redis or rediss", redact(raw), u.Scheme)
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("parse redis url %s: %w", redact(raw), err)
	}
	return opt, nil
}

// redact returns raw with any password replaced, also when raw does not
// parse as a URL.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Opaque == "" {
		return u.Redacted()
	}
	// Unparseable: drop everything between the scheme and the last '@' of
	// the authority, where a password would be.
	rest, scheme := raw, ""
	if i := strings.Index(raw, "://"); i >= 0 {
		scheme, rest = raw[:i+3], raw[i+3:]
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		rest = "xxxxx" + rest[i:]
	}
	return scheme + rest
}

// Publish delivers ev to this process's subscribers, then publishes it to
// Redis for the other processes. A Redis failure is returned after local
// delivery; the call never waits longer than publishTimeout for Redis, and
// not at all while the reader knows Redis is down.
func (b *Bus) Publish(ctx context.Context, ev events.Event) error {
	_ = b.local.Publish(ctx, ev)
	if b.isClosing() {
		return errors.New("publish event: bus closed")
	}
	if !b.up.Load() {
		return fmt.Errorf("publish event: %w", errUnavailable)
	}
	msg, err := json.Marshal(envelope{Origin: b.origin, Event: ev})
	if err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := b.client.Publish(ctx, b.channel, msg).Err(); err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	return nil
}

// Subscribe registers a subscriber for the events of this process and of
// every other Bus on the same channel. Events are dropped for a subscriber
// that falls behind, as with events.Local.
func (b *Bus) Subscribe() (<-chan events.Event, func()) { return b.local.Subscribe() }

// Close stops the reader, waits for it and closes the Redis connections.
// Subscriptions stay open and get only this process's own events. Close
// returns within about closeWait even if Redis hangs; if the reader has not
// stopped by then, it says so in the error, and the reader stops on its own
// once the closed client fails its I/O.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.isClosing() {
		b.mu.Unlock()
		return nil
	}
	close(b.closing)
	ps := b.ps
	b.mu.Unlock()
	// closing and the cancel each end the reader's waits and loop; the
	// cancel also ends a dial. Closing the PubSub interrupts a blocked read.
	// ps.Close takes the PubSub's lock, which the reader may hold while
	// go-redis dials or writes, so it runs aside and Close waits for it only
	// up to the bound.
	b.cancel()
	psClosed := make(chan struct{})
	go func() {
		defer close(psClosed)
		if ps != nil {
			_ = ps.Close()
		}
	}()
	timer := time.NewTimer(closeWait)
	defer timer.Stop()
	var errs []error
	for done, psDone := b.done, psClosed; done != nil || psDone != nil; {
		select {
		case <-done:
			done = nil
		case <-psDone:
			psDone = nil
		case <-timer.C:
			errs = append(errs, fmt.Errorf("close redis bus: reader still running after %v", closeWait))
			b.log.Warn("redis events reader did not stop in time; closing the client under it", logWait, closeWait)
			done, psDone = nil, nil
		}
	}
	if err := b.client.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close redis bus: %w", err))
	}
	return errors.Join(errs...)
}

// isClosing reports whether Close has begun.
func (b *Bus) isClosing() bool {
	select {
	case <-b.closing:
		return true
	default:
		return false
	}
}

// stopping reports whether the reader must return: ctx is cancelled or
// Close has begun. Close does both; the reader checks both, so that neither
// alone (a lost cancel, say) can leave it retrying a closed PubSub forever.
func (b *Bus) stopping(ctx context.Context) bool { return ctx.Err() != nil || b.isClosing() }

// read receives the channel until ctx ends or Close begins, reconnecting
// with backoff. go-redis re-dials and re-subscribes a PubSub by itself on
// the next receive after a network error; read only paces the retries,
// detects silent connections and reports state changes.
//
// A closed PubSub is different: go-redis fails every call on it at once
// with redis.ErrClosed and never reconnects it, so read must never retry
// one. Close closes it, and read then returns; should it ever be closed
// otherwise, read replaces it with a new one.
func (b *Bus) read(ctx context.Context) {
	defer close(b.done)
	b.mu.Lock()
	ps := b.ps
	b.mu.Unlock()
	defer func() { _ = ps.Close() }()
	backoff := minBackoff
	pinged := false
	for !b.stopping(ctx) {
		msg, err := ps.ReceiveTimeout(ctx, idlePing)
		if b.stopping(ctx) {
			return
		}
		var nerr interface{ Timeout() bool }
		switch {
		case errors.Is(err, redis.ErrClosed):
			// Closed, but not by Close (stopping said no): retrying it
			// would fail at once forever, so start over on a new one.
			b.lost(err)
			ps = b.subscribe(ctx)
		case err != nil && errors.As(err, &nerr) && nerr.Timeout() && !pinged:
			// Idle: ask for a Pong to tell a quiet channel from a dead one.
			if err := ps.Ping(ctx); err != nil {
				b.lost(err)
				break
			}
			pinged = true
			continue
		case err != nil && errors.As(err, &nerr) && nerr.Timeout():
			// No answer to the ping: the connection is dead without TCP
			// knowing. Start over on a new one.
			b.lost(err)
			_ = ps.Close()
			ps = b.subscribe(ctx)
		case err != nil:
			b.lost(err)
		default:
			pinged = false
			backoff = minBackoff
			b.handle(msg)
			continue
		}
		pinged = false
		select {
		case <-ctx.Done():
			return
		case <-b.closing:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// subscribe returns a new PubSub on the channel, registered with b first so
// that Close can interrupt it. go-redis keeps the subscription even when
// Redis does not answer now; the next receive dials and subscribes again.
func (b *Bus) subscribe(ctx context.Context) *redis.PubSub {
	ps := b.client.Subscribe(ctx) // no channel yet: no network I/O
	b.mu.Lock()
	b.ps = ps
	closing := b.isClosing()
	b.mu.Unlock()
	if closing { // Close ran before b.ps was set and could not close it
		_ = ps.Close()
		return ps
	}
	_ = ps.Subscribe(ctx, b.channel) // a failure shows in the next receive
	return ps
}

func isSubscribed(msg any) bool {
	s, ok := msg.(*redis.Subscription)
	return ok && s.Kind == "subscribe"
}

// handle processes one message from the PubSub.
func (b *Bus) handle(msg any) {
	switch m := msg.(type) {
	case *redis.Subscription:
		if isSubscribed(m) {
			b.restored()
		}
	case *redis.Pong:
		b.restored()
	case *redis.Message:
		b.restored()
		var env envelope
		if err := json.Unmarshal([]byte(m.Payload), &env); err != nil {
			b.log.Debug("skip malformed event", logErr, err)
			return
		}
		if env.Origin == b.origin {
			return // delivered locally when published
		}
		_ = b.local.Publish(context.Background(), env.Event)
	}
}

func (b *Bus) lost(err error) {
	if b.up.Swap(false) {
		b.log.Warn("redis events connection lost; only local events until it returns", logErr, err)
	}
}

func (b *Bus) restored() {
	if !b.up.Swap(true) {
		b.log.Info("redis events connection restored")
	}
}
