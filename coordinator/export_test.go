package coordinator

import "context"

// SweepOrphans runs one sweep of the artifact store, for tests that set a
// negative SweepEvery so that Run's loop never sweeps beside them.
func (c *Coordinator) SweepOrphans(ctx context.Context) (int, error) {
	return c.sweepOrphans(ctx)
}
