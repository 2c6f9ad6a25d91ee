// Command mito-shim runs tasks on a lab host for a mito coordinator. The
// coordinator uploads it over SSH and starts it with a constant command
// line; the worker protocol then runs as HTTP/2 over the shim's stdin and
// stdout, so the host needs no route to the coordinator; it writes
// link.Preamble first, so that the coordinator can skip what the host's
// shell printed before it. The shim exits when that link closes, when the
// coordinator stops answering, or on SIGTERM, SIGINT or SIGHUP, and kills
// every task it runs before it does. It logs to stderr.
//
// It is built small and static (CGO_ENABLED=0) and links no database, S3 or
// Redis code; a test keeps it that way.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mitolab/mito/worker"
	"github.com/mitolab/mito/worker/watchdog"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// Each task runs under a watchdog that is this same binary in another
	// mode (see package watchdog).
	if watchdog.IsChild() {
		os.Exit(watchdog.Main())
	}
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("mito-shim", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mito-shim [-work-dir DIR]\n\n"+
			"Runs tasks for the mito coordinator on the other end of stdin/stdout.\n"+
			"It is started by the coordinator, not by hand; see 'mito worker' for that.\n\n")
		fs.PrintDefaults()
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	workDir := fs.String("work-dir", "", "root of the tasks' working directories (default $TMPDIR/mito-work-<uid>)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println(version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mito-shim: unexpected arguments %q\n", fs.Args())
		return 2
	}
	// When the SSH session ends, sshd closes our stdout and stderr. Go
	// kills a program that writes to a closed fd 1 or 2 with SIGPIPE unless
	// it handles the signal, which would leave its tasks running: handle it,
	// so that such writes fail with EPIPE instead and the shutdown goes on.
	// Not signal.Ignore: an ignored SIGPIPE is inherited across exec, and
	// tasks (yes | head) must get the default.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE) // for the rest of the process: its last words may go to a closed stderr too
	log := slog.New(slog.NewTextHandler(worker.LogWriter(os.Stderr), nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	err := worker.RunLink(ctx, os.Stdin, os.Stdout, worker.Config{
		Version: version,
		WorkDir: *workDir,
		Logger:  log,
	})
	if err != nil {
		log.Error("shim stopped", "err", err)
		return 1
	}
	return 0
}
