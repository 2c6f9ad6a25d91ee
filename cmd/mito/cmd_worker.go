package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/worker"
)

func init() { register(newWorkerCmd) }

// workerOptions are the flags of `mito worker`.
type workerOptions struct {
	coordinator string
	token       string
	name        string
	groups      []string
	tags        []string
	slots       int
	workDir     string
	stdio       bool
}

func newWorkerCmd() *cobra.Command {
	var opts workerOptions
	cmd := &cobra.Command{
		Use:   "worker -c URL [flags]",
		Short: "Run tasks on this host for a coordinator it can reach",
		Long: `Run tasks on this host for a mito coordinator reached over HTTP(S).

This is the same worker the coordinator starts on inventory hosts over SSH,
for hosts that can dial out to the coordinator instead. It registers under
--name for the given groups and tags, claims up to --slots tasks at a time,
runs each in a fresh directory under --work-dir with its own process group,
streams its output and uploads the files it writes to $MITO_OUTPUT_DIR.
Without -g it serves only the personal group of the token's user.

The coordinator is --coordinator (-c), else $MITO_COORDINATOR.

It authenticates with an API token (--token, the MITO_TOKEN environment
variable, or the token 'mito client login' stored for that coordinator)
whose user may write to every group it serves. It stops on
SIGINT, SIGTERM or SIGHUP, killing the tasks it runs and telling the
coordinator, which queues them again at once and shows the host offline.

Each task runs under a watchdog (this binary, or mito-shim beside it, in
another mode) that kills everything the task started, also if the worker
itself is killed or frozen, before its lease could run out.

The name is the worker's host in 'mito client hosts list': a second
worker of a name that runs is refused (exit 5), whether on this machine
or another; one killed and started again on this machine takes its name
back at once.`,
		Example: `  # Serve the "lab" group with two slots, on a host tagged 10g and bbr
  export MITO_TOKEN=...
  mito worker -c https://mito.lab.example:8443 -g lab -t 10g -t bbr --slots 2

  # Serve your personal group, keeping task directories on a bigger disk
  export MITO_COORDINATOR=http://10.0.0.1:8080
  mito worker --work-dir /scratch/mito`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("token") {
				opts.token = os.Getenv("MITO_TOKEN")
			}
			if !cmd.Flags().Changed("coordinator") && !opts.stdio {
				opts.coordinator = os.Getenv("MITO_COORDINATOR")
			}
			return runWorker(cmd.Context(), opts, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.coordinator, "coordinator", "c", "", "coordinator `URL`, http://host:port or https://host:port (default $MITO_COORDINATOR)")
	f.StringVar(&opts.token, "token", "", "API `token` (default $MITO_TOKEN)")
	f.StringVar(&opts.name, "name", "", "host `name` to register as (default the hostname)")
	f.StringArrayVarP(&opts.groups, "group", "g", nil, "serve the tasks of `group` (repeatable; default your personal group)")
	f.StringArrayVarP(&opts.tags, "tag", "t", nil, "offer `tag` to tasks that require it (repeatable)")
	f.IntVar(&opts.slots, "slots", 1, "run up to `N` tasks at once")
	f.StringVar(&opts.workDir, "work-dir", "", "root of the tasks' working `directories` (default $TMPDIR/mito-work-<uid>)")
	// --stdio makes this binary a shim: the worker protocol over stdin and
	// stdout, as the coordinator starts it. Not for people.
	f.BoolVar(&opts.stdio, "stdio", false, "speak the worker protocol over stdin/stdout, like mito-shim")
	_ = f.MarkHidden("stdio")
	return cmd
}

func runWorker(ctx context.Context, opts workerOptions, stderr io.Writer) error {
	// SIGHUP too: a worker started from a terminal or an SSH session must
	// not outlive it.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	defer stop()
	// When the SSH session ends, sshd closes our stdout and stderr; Go kills
	// a program that writes to a closed fd 1 or 2 with SIGPIPE unless it
	// handles the signal, which would leave its tasks running. Handled, such
	// writes fail with EPIPE and the shutdown goes on. Not signal.Ignore: an
	// ignored SIGPIPE is inherited across exec, by the tasks.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE) // for the rest of the process: its last words may go to a closed stderr too
	cfg := worker.Config{
		Version:         version,
		WorkDir:         opts.workDir,
		Logger:          slog.New(slog.NewTextHandler(worker.LogWriter(stderr), nil)),
		WatchdogProgram: siblingShim(),
	}
	if opts.stdio {
		if opts.coordinator != "" {
			return usagef("--stdio and --coordinator exclude each other: with --stdio the coordinator is on stdin/stdout")
		}
		return worker.RunLink(ctx, os.Stdin, os.Stdout, cfg)
	}

	if opts.coordinator == "" {
		return usagef("no coordinator: give its URL with -c, e.g. -c https://mito.example:8443, or set MITO_COORDINATOR")
	}
	if err := checkCoordinatorURL(opts.coordinator, ""); err != nil {
		return err
	}
	if opts.token == "" {
		opts.token = storedToken(opts.coordinator)
	}
	if opts.token == "" {
		return usagef("no API token: pass --token, set MITO_TOKEN, or log in first with 'mito client login -c %s'", opts.coordinator)
	}
	if opts.name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("get hostname (pass --name): %w", err)
		}
		opts.name = h
	}
	if err := tasks.ValidName("--name", opts.name); err != nil {
		return usagef("%v", err)
	}
	for _, g := range opts.groups {
		if err := tasks.ValidName("--group", g); err != nil {
			return usagef("%v", err)
		}
	}
	for _, t := range opts.tags {
		if err := tasks.ValidName("--tag", t); err != nil {
			return usagef("%v", err)
		}
	}
	if opts.slots < 1 {
		return usagef("--slots must be at least 1, got %d", opts.slots)
	}
	c, err := client.New(opts.coordinator, client.WithToken(opts.token))
	if err != nil {
		return usagef("--coordinator: %v", err)
	}
	cfg.Client = c
	cfg.Name = opts.name
	cfg.Groups = opts.groups
	cfg.Tags = opts.tags
	cfg.Slots = opts.slots
	return worker.Run(ctx, cfg)
}

// siblingShim returns the mito-shim beside this binary if it is of the
// same version, for the tasks' watchdogs: it starts in less than half the
// time this much bigger binary takes, and a watchdog starts with every
// task. Empty (this binary) otherwise.
func siblingShim() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	shim := filepath.Join(filepath.Dir(self), "mito-shim")
	out, err := exec.Command(shim, "-version").Output()
	if err != nil || strings.TrimSpace(string(out)) != version {
		return ""
	}
	return shim
}

// storedToken returns the token 'mito client login' stored for the
// coordinator, if it has one that has not expired.
func storedToken(coordinator string) string {
	dir, err := configDir()
	if err != nil {
		return ""
	}
	creds, err := loadCredentials(dir)
	if err != nil {
		return ""
	}
	c, ok := creds[coordinatorKey(coordinator)]
	if !ok || c.expired(time.Now()) {
		return ""
	}
	return c.Token
}
