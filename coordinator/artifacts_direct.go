package coordinator

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
)

// Direct uploads: a shim that can reach the artifact store sends an
// artifact straight to it by a presigned PUT (artifacts-presign), then has
// the coordinator record it (artifacts-commit). The bytes never cross the
// link. Both calls are fenced by the attempt's lease, and the key is the
// relay's, tasks/<id>/<attempt>/<name>.

// presigner is an artifact store that can hand out upload URLs and tell
// the size of what was uploaded (s3.Store).
type presigner interface {
	PresignPut(ctx context.Context, key string, expiry time.Duration) (*url.URL, error)
	Stat(ctx context.Context, key string) (int64, error)
}

const (
	// presignExpiry is how long a presigned upload URL stays valid. The
	// shim asks for one right before it sends, so it only needs to outlast
	// the start of the upload and a retry or two.
	presignExpiry = 15 * time.Minute
	// maxPresignedPut is the largest object one S3 PUT may carry; larger
	// artifacts go through the link, where the store uploads them in parts.
	maxPresignedPut = 5 << 30
)

// presignerOf returns the artifact store as a presigner, if it is one.
func (c *Coordinator) presignerOf() (presigner, bool) {
	p, ok := c.cfg.Artifacts.(presigner)
	return p, ok
}

// artifactsMode is how the session's worker sends artifacts: relay when
// the store cannot presign; else the inventory's `artifacts:` for an
// inventory host (auto by default) and auto for a TCP worker.
func (c *Coordinator) artifactsMode(s *session) string {
	if _, ok := c.presignerOf(); !ok {
		return tasks.ArtifactsRelay
	}
	if !s.linked {
		return tasks.ArtifactsAuto
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	mode := ""
	if d := c.hosts[s.host.Name]; d != nil {
		mode = d.inv.Artifacts
	}
	switch mode {
	case inventory.ArtifactsDirect:
		return tasks.ArtifactsDirect
	case inventory.ArtifactsRelay:
		return tasks.ArtifactsRelay
	}
	return tasks.ArtifactsAuto
}

// errNoPresign answers the direct-upload calls when the store cannot
// presign: the worker must relay.
func errNoPresign() error {
	return &tasks.Error{Code: tasks.EInvalid, Field: "artifacts", Message: "artifacts: the artifact store cannot take direct uploads; send artifacts through the coordinator"}
}

// directArtifact checks what the presign and commit calls share: the path
// matches the lease, the store can presign, the name and size are valid,
// and the lease is current. It returns the canonical name and the key.
func (c *Coordinator) directArtifact(r *http.Request, ref tasks.LeaseRef, name string, size int64) (presigner, string, string, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, "", "", err
	}
	if ref.Task != id {
		return nil, "", "", tasks.Invalid("lease.task", "is %d but the path says %d", ref.Task, id)
	}
	if ref.Attempt < 1 || ref.Token == "" {
		return nil, "", "", tasks.Invalid("lease", "needs an attempt and a token")
	}
	p, ok := c.presignerOf()
	if !ok {
		return nil, "", "", errNoPresign()
	}
	clean, err := artifacts.CleanName(name)
	if err != nil {
		return nil, "", "", err
	}
	switch {
	case size < 0:
		return nil, "", "", tasks.Invalid("size", "must not be negative, got %d", size)
	case size > c.cfg.MaxArtifactSize:
		return nil, "", "", &tasks.Error{Code: tasks.ETooLarge, Field: "size", Message: fmt.Sprintf("artifact %s: %d bytes is over the limit of %d", clean, size, c.cfg.MaxArtifactSize)}
	case size > maxPresignedPut:
		return nil, "", "", tasks.Invalid("size", "artifact %s: %d bytes is over the %d of one direct upload; send it through the coordinator", clean, size, int64(maxPresignedPut))
	}
	return p, clean, artifactKey(ref.Task, ref.Attempt, clean), nil
}

// checkLease renews ref, or says it is stale.
func (c *Coordinator) checkLease(ctx context.Context, ref tasks.LeaseRef) error {
	stale, err := c.store.Renew(ctx, []tasks.LeaseRef{ref}, c.cfg.Now().UTC(), c.cfg.LeaseTTL)
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		return tasks.Errorf(tasks.EStaleLease, "task %d attempt %d: lease is no longer current", ref.Task, ref.Attempt)
	}
	return nil
}

func (c *Coordinator) handlePresignArtifact(w http.ResponseWriter, r *http.Request, s *session) error {
	var req tasks.PresignRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	p, name, key, err := c.directArtifact(r, req.Lease, req.Name, req.Size)
	if err != nil {
		return err
	}
	if err := c.checkLease(r.Context(), req.Lease); err != nil {
		return err
	}
	// Refuse what the group's quota cannot take before the worker sends
	// it; the commit charges the quota for good.
	if rm, err := c.artifactRoom(r.Context(), req.Lease, name); err != nil {
		return err
	} else if err := rm.check(req.Size); err != nil {
		return err
	}
	expires := c.cfg.Now().UTC().Add(presignExpiry)
	u, err := p.PresignPut(r.Context(), key, presignExpiry)
	if err != nil {
		return fmt.Errorf("presign artifact upload: %w", err)
	}
	writeJSON(w, http.StatusOK, tasks.PresignResponse{
		URL:     u.String(),
		Method:  http.MethodPut,
		Headers: map[string]string{"Content-Type": "application/octet-stream"},
		Expires: expires,
	})
	return nil
}

// handleCommitArtifact records an artifact the worker uploaded by a
// presigned URL. The store checks only the size: S3 computes no sha256 of
// a plain PUT that we could compare, so the recorded sha256 is the
// worker's, computed while it sent the bytes. (A worker can write any
// bytes it likes to its own attempt's artifacts anyway, relayed or not.)
func (c *Coordinator) handleCommitArtifact(w http.ResponseWriter, r *http.Request, s *session) error {
	var req tasks.CommitRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	p, name, key, err := c.directArtifact(r, req.Lease, req.Name, req.Size)
	if err != nil {
		return err
	}
	if b, err := hex.DecodeString(req.SHA256); err != nil || len(b) != 32 || hex.EncodeToString(b) != req.SHA256 {
		return tasks.Invalid("sha256", "want 64 lowercase hex digits")
	}
	ref := req.Lease
	if err := c.checkLease(r.Context(), ref); err != nil {
		if tasks.ErrorCode(err) == tasks.EStaleLease {
			c.dropOrphan(context.WithoutCancel(r.Context()), ref, name, key)
		}
		return err
	}
	size, err := p.Stat(r.Context(), key)
	switch {
	case tasks.ErrorCode(err) == tasks.ENotFound:
		// Not not_found: the worker would take that for a lost task.
		return tasks.Invalid("name", "artifact %s: nothing was uploaded under it", name)
	case err != nil:
		return fmt.Errorf("stat artifact %s: %w", name, err)
	case size != req.Size:
		c.dropUnrecorded(context.WithoutCancel(r.Context()), ref, name, key)
		return tasks.Invalid("size", "artifact %s: the store holds %d bytes, not %d; upload it again", name, size, req.Size)
	}
	a := tasks.Artifact{Task: ref.Task, Attempt: ref.Attempt, Name: name, Size: size, SHA256: req.SHA256, CreatedAt: c.cfg.Now().UTC()}
	if err := c.store.AddArtifact(r.Context(), ref, a); err != nil {
		if errors.Is(err, tasks.ErrStaleLease) || errors.Is(err, tasks.ErrQuota) {
			c.dropUnrecorded(context.WithoutCancel(r.Context()), ref, name, key)
		}
		return err
	}
	c.log.Debug("artifact committed", logTask, ref.Task, logAttempt, ref.Attempt, "artifact", name, "size", size)
	writeJSON(w, http.StatusCreated, a)
	return nil
}

// dropOrphan deletes what a stale attempt uploaded directly but could not
// commit. Only when that attempt is over and the artifact was never
// recorded: the lease token may be wrong rather than old, and neither a
// running attempt's uploads nor recorded artifacts are anyone's to delete.
func (c *Coordinator) dropOrphan(ctx context.Context, ref tasks.LeaseRef, name, key string) {
	t, err := c.store.GetTask(ctx, ref.Task)
	if err != nil || (t.Attempt == ref.Attempt && t.State == tasks.Running) {
		return
	}
	c.dropUnrecorded(ctx, ref, name, key)
}

// dropUnrecorded deletes the object of an upload the store refused (stale
// lease, quota, wrong size), unless a record of the same attempt and name
// exists: artifact keys are fixed per attempt and name, so the refused
// upload went over a recorded artifact's object, and deleting it would
// leave that record pointing at nothing. (The bytes may be the refused
// upload's then: a shim re-uploading a name within one attempt sends the
// same file.)
func (c *Coordinator) dropUnrecorded(ctx context.Context, ref tasks.LeaseRef, name, key string) {
	_, found, err := c.attemptArtifact(ctx, ref.Task, ref.Attempt, name)
	if err != nil {
		c.log.Warn("get artifact; refused upload left in place", logTask, ref.Task, "key", key, logErr, err)
		return
	}
	if !found {
		c.deleteArtifact(ctx, key)
	}
}

func (c *Coordinator) deleteArtifact(ctx context.Context, key string) {
	if err := c.cfg.Artifacts.Delete(ctx, key); err != nil {
		c.log.Warn("delete artifact", "key", key, logErr, err)
	}
}
