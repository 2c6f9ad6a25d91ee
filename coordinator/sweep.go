package coordinator

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/mitolab/mito/coordinator/store"
)

// The sweep deletes objects of the artifact store that no record points
// at. They are left by a coordinator that crashed between an upload's Put
// and its record (PutAttachment, AddArtifact), and by a delete that failed
// after a replacement or a deletion, which is only logged; they take
// storage forever, though no group's quota. An upload's object becomes
// listable a moment before its record is written, so the sweep works in
// two phases: a key is deleted only if the previous sweep, SweepEvery
// earlier, already found it without a record and it has none now. Keys
// of the running attempt of a task are never orphans (the store says so),
// since its shim may upload under them and record them at any time; once
// the attempt ended no record can name them again, fenced by its lease.
// Several coordinators may sweep one artifact store: deletes are
// idempotent.

// sweepState is what one sweep leaves for the next.
type sweepState struct {
	// mu guards candidates; it is never held across I/O.
	mu sync.Mutex
	// candidates are the keys the previous sweep found no record for.
	candidates map[string]bool
}

// sweepLoop sweeps at once, to find candidates even on a coordinator that
// restarts more often than SweepEvery, then every SweepEvery, until ctx
// ends. A negative SweepEvery disables it.
func (c *Coordinator) sweepLoop(ctx context.Context) error {
	if c.cfg.SweepEvery < 0 {
		return nil
	}
	t := time.NewTicker(c.cfg.SweepEvery)
	defer t.Stop()
	for {
		if _, err := c.sweepOrphans(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("sweep artifact store", logErr, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweepPrefixes are where the coordinator writes objects: every object
// under them is an attachment's or an artifact's.
var sweepPrefixes = []string{store.AttachmentObjectPrefix, store.ArtifactObjectPrefix}

// sweepOrphans runs one sweep and returns how many objects it deleted. On
// any error listing or looking up, it deletes nothing and keeps the
// previous candidates for the next sweep. A failed delete is logged and
// its key stays a candidate.
func (c *Coordinator) sweepOrphans(ctx context.Context) (int, error) {
	var keys []string
	for _, prefix := range sweepPrefixes {
		ks, err := c.cfg.Artifacts.List(ctx, prefix)
		if err != nil {
			return 0, err
		}
		keys = append(keys, ks...)
	}
	orphans := make(map[string]bool)
	for batch := range slices.Chunk(keys, store.MaxObjectBatch) {
		referenced, err := c.store.ReferencedObjects(ctx, batch)
		if err != nil {
			return 0, err
		}
		for _, k := range batch {
			if !referenced[k] {
				orphans[k] = true
			}
		}
	}

	c.sweep.mu.Lock()
	previous := c.sweep.candidates
	c.sweep.candidates = nil
	c.sweep.mu.Unlock()

	deleted := 0
	for _, k := range keys {
		if !orphans[k] || !previous[k] || ctx.Err() != nil {
			continue
		}
		if err := c.cfg.Artifacts.Delete(ctx, k); err != nil {
			c.log.Warn("delete orphaned object", "key", k, logErr, err)
			continue
		}
		delete(orphans, k)
		deleted++
	}

	c.sweep.mu.Lock()
	c.sweep.candidates = orphans
	c.sweep.mu.Unlock()
	if deleted > 0 {
		c.log.Info("swept orphaned objects from the artifact store", "deleted", deleted, "candidates", len(orphans))
	}
	return deleted, nil
}
