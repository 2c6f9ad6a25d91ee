// Command mito runs tasks on lab testbed machines: `mito coordinator` keeps
// the queue and drives the hosts of an inventory, `mito client` is how users
// submit and follow work, `mito worker` runs tasks on a host that can dial
// the coordinator, and `mito inventory check` validates an inventory offline.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mitolab/mito/worker/watchdog"
)

func main() {
	// `mito worker` starts each task under a watchdog that is this same
	// binary in another mode.
	if watchdog.IsChild() {
		os.Exit(watchdog.Main())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}
