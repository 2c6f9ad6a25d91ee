package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/coordinator/artifacts/s3"
	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/coordinator/events/redisbus"
	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/coordinator/store/postgres"
	"github.com/mitolab/mito/coordinator/store/sqlite"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/transport/ssh"
)

func init() { register(newCoordinatorCmd) }

// defaultListen is where the coordinator listens and the client looks.
const defaultListen = "127.0.0.1:7800"

type coordinatorOptions struct {
	listen    string
	dataDir   string
	inventory string
	db        string
	shim      string
	leaseTTL  time.Duration
	killGrace time.Duration
	logLevel  string
	logFormat string
	tlsCert   string
	tlsKey    string
	sshConfig string
	reload    time.Duration
	sweep     time.Duration
	s3        s3.Config
	// s3PartSize is --s3-part-size as given ("16MiB"), parsed when S3 opens.
	s3PartSize string
	redis      string
	id         string
	config     string
}

func newCoordinatorCmd() *cobra.Command {
	var opts coordinatorOptions
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run the coordinator: the API, the queue, and the shims of the inventory's hosts",
		Long: `Run the coordinator.

With no flags it keeps everything under its data directory: a SQLite
database (mito.db) and the artifacts (artifacts/). With --db it keeps its
state in PostgreSQL instead.

On first start with an empty store it creates the user "admin", with the
password in MITO_ADMIN_PASSWORD or, if that is unset, a generated one
written to <data dir>/admin-password (mode 0600).

SIGINT or SIGTERM stops it cleanly: the shims are told to stop, and tasks
that were running are left to their leases, which requeue them.

These flags can also be set by environment variables: MITO_LISTEN,
MITO_DATA_DIR, MITO_INVENTORY, MITO_DB, MITO_SHIM, MITO_TLS_CERT,
MITO_TLS_KEY, MITO_SSH_CONFIG, MITO_COORDINATOR_ID, and MITO_S3_ENDPOINT, MITO_S3_BUCKET,
MITO_S3_REGION, MITO_S3_PREFIX, MITO_S3_TLS, MITO_S3_ACCESS_KEY, MITO_REDIS,
MITO_COORDINATOR_ID; the S3 secret key comes from MITO_S3_SECRET_KEY only. Serve HTTPS (--tls-cert, --tls-key) whenever the coordinator
listens beyond loopback: passwords and tokens cross the API.

--config FILE (or MITO_CONFIG) reads the same settings from a YAML file
whose keys mirror the flags, with "_" for "-" and the S3 ones under s3:

  listen: 0.0.0.0:7800
  db: postgres://mito@db.lab/mito
  lease_ttl: 30s
  s3: {endpoint: s3.lab:9000, bucket: mito-artifacts, tls: true}

A flag beats its environment variable, which beats the file, which beats
the default. Unknown keys are errors. The file may hold the --db and
--redis URLs, passwords included (keep it private; they are never logged),
but not the S3 secret key, which comes from MITO_S3_SECRET_KEY only.`,
		Example: `  # Embedded default, two local hosts:
  mito coordinator --inventory examples/inventories/local.yaml

  # State in PostgreSQL, artifacts in S3:
  export MITO_S3_ACCESS_KEY=... MITO_S3_SECRET_KEY=...
  mito coordinator --db postgres://mito@db.lab/mito --s3-endpoint s3.lab:9000 --inventory lab.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.config != "" {
				if err := applyCoordinatorConfig(cmd, opts.config); err != nil {
					return err
				}
			}
			return runCoordinator(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.config, "config", os.Getenv("MITO_CONFIG"), "read settings from this YAML `file`; its keys mirror the flags (data_dir for --data-dir, s3: {endpoint: …} for --s3-endpoint)")
	f.StringVar(&opts.listen, "listen", envOr("MITO_LISTEN", defaultListen), "address to serve the API on")
	f.StringVar(&opts.dataDir, "data-dir", envOr("MITO_DATA_DIR", defaultDataDir()), "directory for the SQLite store, artifacts and the admin password")
	f.StringVar(&opts.inventory, "inventory", os.Getenv("MITO_INVENTORY"), "YAML inventory of hosts to run tasks on")
	f.StringVar(&opts.db, "db", os.Getenv("MITO_DB"), "PostgreSQL URL (postgres://…); default: SQLite in the data directory")
	f.StringVar(&opts.shim, "shim", os.Getenv("MITO_SHIM"), "shim binary for local hosts (default: mito-shim beside this binary, else this binary's worker --stdio)")
	f.DurationVar(&opts.leaseTTL, "lease-ttl", 30*time.Second, "how long a host keeps a task without renewing its lease")
	f.DurationVar(&opts.killGrace, "kill-grace", 5*time.Second, "time between SIGTERM and SIGKILL when a task is stopped")
	f.StringVar(&opts.sshConfig, "ssh-config", os.Getenv("MITO_SSH_CONFIG"), "ssh_config file to honour for SSH hosts (default ~/.ssh/config; \"none\" to ignore it)")
	f.DurationVar(&opts.reload, "reload-every", 2*time.Second, "how often to look for a changed inventory file (SIGHUP reloads at once; 0 to only reload on SIGHUP)")
	f.DurationVar(&opts.sweep, "sweep-every", time.Hour, "how often to look for artifact store objects no record points at (left by crashes or failed deletes); one found at two looks in a row is deleted (at least 1m; 0 disables)")
	f.StringVar(&opts.s3.Endpoint, "s3-endpoint", os.Getenv("MITO_S3_ENDPOINT"), "keep artifacts in S3 at this host:port (MinIO, Ceph, AWS, versitygw); default: the data directory")
	f.StringVar(&opts.s3.Bucket, "s3-bucket", envOr("MITO_S3_BUCKET", "mito-artifacts"), "S3 bucket for artifacts; created when missing")
	f.StringVar(&opts.s3.Region, "s3-region", envOr("MITO_S3_REGION", "us-east-1"), "S3 region of the bucket")
	f.StringVar(&opts.s3.Prefix, "s3-prefix", os.Getenv("MITO_S3_PREFIX"), "key prefix inside the bucket, to share it")
	f.StringVar(&opts.s3PartSize, "s3-part-size", envOr("MITO_S3_PART_SIZE", "16MiB"), "S3 multipart part size, 5MiB to 5GiB: each relayed upload holds one part in memory, and an object has at most 10,000 parts")
	f.BoolVar(&opts.s3.Secure, "s3-tls", os.Getenv("MITO_S3_TLS") == "true", "reach S3 over https")
	f.StringVar(&opts.s3.AccessKey, "s3-access-key", os.Getenv("MITO_S3_ACCESS_KEY"), "S3 access key (or MITO_S3_ACCESS_KEY); the secret key is read from MITO_S3_SECRET_KEY only, never from a flag")
	f.StringVar(&opts.redis, "redis", os.Getenv("MITO_REDIS"), "Redis URL (redis://[:password@]host:port/db) for live events shared by several coordinators; default: in-process")
	f.StringVar(&opts.tlsCert, "tls-cert", os.Getenv("MITO_TLS_CERT"), "serve HTTPS with this certificate (PEM); needs --tls-key")
	f.StringVar(&opts.tlsKey, "tls-key", os.Getenv("MITO_TLS_KEY"), "private key (PEM) of --tls-cert")
	f.StringVar(&opts.id, "id", os.Getenv("MITO_COORDINATOR_ID"), "this coordinator's id among those sharing one --db, shown as the owner of the hosts it drives (default hostname-pid-random)")
	f.StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&opts.logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// defaultDataDir follows the XDG base directory convention.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "mito")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "mito")
	}
	return "mito-data"
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level: %q is not debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	}
	return nil, usagef("--log-format: %q is not text or json", format)
}

// shimBinaries finds the static shims to push to SSH hosts beside the
// mito binary: mito-shim-linux-amd64 and mito-shim-linux-arm64 (make
// shims), and mito-shim itself for this machine's platform.
func shimBinaries(local []string) map[string]string {
	out := make(map[string]string)
	self, err := os.Executable()
	if err != nil {
		return out
	}
	dir := filepath.Dir(self)
	for _, arch := range []string{"amd64", "arm64"} {
		p := filepath.Join(dir, "mito-shim-linux-"+arch)
		if _, err := os.Stat(p); err == nil {
			out["linux/"+arch] = p
		}
	}
	here := runtime.GOOS + "/" + runtime.GOARCH
	if _, ok := out[here]; !ok && len(local) == 1 && filepath.Base(local[0]) == "mito-shim" {
		out[here] = local[0]
	}
	return out
}

// shimCommand finds the shim for local hosts.
func shimCommand(flag string) ([]string, error) {
	if flag != "" {
		return []string{flag}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	beside := filepath.Join(filepath.Dir(self), "mito-shim")
	if _, err := os.Stat(beside); err == nil {
		return []string{beside}, nil
	}
	return []string{self, "worker", "--stdio"}, nil
}

func openStore(ctx context.Context, db, dataDir string) (store.Store, string, error) {
	if db != "" {
		if !strings.HasPrefix(db, "postgres://") && !strings.HasPrefix(db, "postgresql://") {
			return nil, "", usagef("--db: want a postgres:// URL, got %q", redactURL(db))
		}
		st, err := postgres.Open(ctx, db)
		if err != nil {
			return nil, "", fmt.Errorf("open PostgreSQL store %s: %w", redactURL(db), err)
		}
		return st, "postgres " + redactURL(db), nil
	}
	path := filepath.Join(dataDir, "mito.db")
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		return nil, "", fmt.Errorf("open SQLite store: %w", err)
	}
	return st, "sqlite " + path, nil
}

// eventBus is an events.Bus that can be closed.
type eventBus interface {
	events.Bus
	Close() error
}

// redisLog adapts slog to go-redis's logger.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug("redis: " + fmt.Sprintf(format, v...))
}

// localBus is the in-process bus, which needs no closing.
type localBus struct{ *events.Local }

func (localBus) Close() error { return nil }

// openEvents connects to Redis when a URL is given, so that several
// coordinators wake each other; otherwise events stay in this process.
func openEvents(ctx context.Context, url string, log *slog.Logger) (eventBus, string, error) {
	if url == "" {
		return localBus{events.NewLocal()}, "in-process", nil
	}
	// go-redis logs every failed dial of its own accord; send that to our
	// log at debug level (the bus itself reports outages once).
	redis.SetLogger(redisLog{log})
	bus, err := redisbus.New(ctx, url, redisbus.WithLogger(log))
	if err != nil {
		return nil, "", fmt.Errorf("connect to redis for events: %w", err) // the URL in err is redacted
	}
	return bus, "redis " + redactURL(url), nil
}

// openArtifacts opens the artifact store: S3 when --s3-endpoint is given,
// else a directory under the data directory.
func openArtifacts(ctx context.Context, opts coordinatorOptions) (artifacts.Store, string, error) {
	if opts.s3.Endpoint == "" {
		dir := filepath.Join(opts.dataDir, "artifacts")
		st, err := artifacts.NewDir(dir)
		if err != nil {
			return nil, "", fmt.Errorf("open artifact directory: %w", err)
		}
		return st, "directory " + dir, nil
	}
	cfg := opts.s3
	part, err := humanize.ParseBytes(opts.s3PartSize)
	if err != nil || part < 5<<20 || part > 5<<30 {
		return nil, "", usagef("--s3-part-size %q: want a size from 5MiB to 5GiB, such as 16MiB", opts.s3PartSize)
	}
	cfg.PartSize = part
	cfg.SecretKey = os.Getenv("MITO_S3_SECRET_KEY")
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, "", usagef("--s3-endpoint needs credentials: set MITO_S3_ACCESS_KEY (or --s3-access-key) and MITO_S3_SECRET_KEY")
	}
	st, err := s3.New(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	scheme := "http"
	if cfg.Secure {
		scheme = "https"
	}
	return st, fmt.Sprintf("s3 %s://%s/%s/%s", scheme, cfg.Endpoint, cfg.Bucket, cfg.Prefix), nil
}

// redactURL hides the password of a database URL, in its user part or
// its query, so that it never reaches a log or an error message.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable database URL)"
	}
	q := u.Query()
	for k := range q {
		if strings.EqualFold(k, "password") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}

// minSweepEvery is the shortest --sweep-every: well above the moment
// between an upload's object and its record, however loaded the store.
const minSweepEvery = time.Minute

// sweepEvery maps --sweep-every, where 0 disables the sweep, to
// coordinator.Config.SweepEvery, where 0 is the default and negative
// disables it.
func sweepEvery(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// minLeaseTTL is the shortest --lease-ttl.
const minLeaseTTL = 2 * time.Second

func runCoordinator(ctx context.Context, opts coordinatorOptions) error {
	log, err := newLogger(opts.logLevel, opts.logFormat)
	if err != nil {
		return err
	}
	// A shim's watchdogs kill what it runs a margin before the leases
	// run out (a tenth of the TTL of grace, at least a second of slack
	// when the TTL allows), and the heartbeats must fit in what is left:
	// below 2s that leaves a few hundred milliseconds for a round trip.
	if opts.leaseTTL < minLeaseTTL {
		return usagef("--lease-ttl %s is too short: at least %s, so that a shim can renew its leases and still have its tasks dead before they run out", opts.leaseTTL, minLeaseTTL)
	}
	if opts.killGrace < 0 {
		return usagef("--kill-grace must not be negative")
	}
	if (opts.tlsCert == "") != (opts.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	// The sweep deletes an object it found without a record at two looks
	// in a row; the looks must be far enough apart for any upload to
	// have recorded its object in between.
	if opts.sweep < 0 || (opts.sweep > 0 && opts.sweep < minSweepEvery) {
		return usagef("--sweep-every %s: must be 0 (no sweep) or at least %s", opts.sweep, minSweepEvery)
	}
	var hosts []inventory.Host
	if opts.inventory != "" {
		inv, err := inventory.Load(opts.inventory)
		if err != nil {
			return err
		}
		hosts = inv.Hosts
	}
	if err := os.MkdirAll(opts.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	unlock, err := lockDataDir(opts.dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	st, desc, err := openStore(ctx, opts.db, opts.dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	arts, artsDesc, err := openArtifacts(ctx, opts)
	if err != nil {
		return err
	}
	shim, err := shimCommand(opts.shim)
	if err != nil {
		return err
	}
	bus, busDesc, err := openEvents(ctx, opts.redis, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	c := coordinator.New(coordinator.Config{
		Events: bus,
		Store:  st, Artifacts: arts, Logger: log, Hosts: hosts, ShimCommand: shim,
		Shims:    shimBinaries(shim),
		SSH:      ssh.Config{SSHConfig: opts.sshConfig},
		LeaseTTL: opts.leaseTTL, KillGrace: opts.killGrace,
		ID:         opts.id,
		SweepEvery: sweepEvery(opts.sweep),
	})
	pwFile := filepath.Join(opts.dataDir, "admin-password")
	created, err := c.EnsureAdmin(ctx, os.Getenv("MITO_ADMIN_PASSWORD"), pwFile)
	if err != nil {
		return err
	}
	if created && os.Getenv("MITO_ADMIN_PASSWORD") == "" {
		log.Warn("created user admin; its password is in " + pwFile)
	} else if created {
		log.Info("created user admin with the password from MITO_ADMIN_PASSWORD")
	}

	groups, err := c.EnsureGroups(ctx)
	if err != nil {
		return err
	}
	for _, g := range groups {
		log.Info("created group "+g+" for the inventory's hosts; admin is its admin", "group", g)
	}

	ln, err := net.Listen("tcp", opts.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Long polls watch this context, so that shutdown does not wait for them.
	reqCtx, stopRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRequests()
	srv := &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	scheme := "http"
	if opts.tlsCert != "" {
		scheme = "https"
	}
	log.Info("coordinator listening", "url", scheme+"://"+ln.Addr().String(), "id", c.ID(), "store", desc, "artifacts", artsDesc, "events", busDesc, "hosts", len(hosts), "shim", strings.Join(shim, " "))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.Run(gctx) })
	if opts.inventory != "" {
		g.Go(func() error {
			watchInventory(gctx, opts.inventory, opts.reload, log, c.UpdateHosts)
			return nil
		})
	}
	g.Go(func() error {
		serve := func() error { return srv.Serve(ln) }
		if opts.tlsCert != "" {
			serve = func() error { return srv.ServeTLS(ln, opts.tlsCert, opts.tlsKey) }
		}
		if err := serve(); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down")
		stopRequests()
		shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(shutCtx)
	})
	err = g.Wait()
	log.Info("coordinator stopped")
	return err
}

// lockDataDir makes sure only one coordinator uses a data directory: two
// would drive the same hosts and share one SQLite file and artifact tree.
// The lock is released by the kernel if the process dies.
func lockDataDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		holder := "another coordinator"
		if pid := strings.TrimSpace(string(b)); pid != "" {
			holder += " (pid " + pid + ")"
		}
		return nil, fmt.Errorf("data directory %s is in use by %s; give this one its own --data-dir", dir, holder)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

// watchInventory reloads the inventory on SIGHUP, and when the file
// changes (checked every `every`). A file with problems is reported and
// ignored: the coordinator keeps the hosts it has.
func watchInventory(ctx context.Context, path string, every time.Duration, log *slog.Logger, apply func([]inventory.Host)) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	stamp := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return ""
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-tick:
			if now := stamp(); now == last {
				continue
			}
		}
		last = stamp()
		inv, err := inventory.Load(path)
		if err != nil {
			log.Error("inventory not reloaded; keeping the hosts as they were", "file", path, "err", err)
			continue
		}
		log.Info("inventory reloaded", "file", path, "hosts", len(inv.Hosts))
		apply(inv.Hosts)
	}
}
