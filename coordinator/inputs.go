package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/mitolab/mito/tasks"
)

// Task inputs: a spec may name group attachments and other tasks'
// artifacts, which the shim fetches into the work directory before the
// command starts (GET /worker/v1/tasks/{id}/inputs/{index}). Submission
// refuses an input that cannot come (no such attachment, no such task, or
// a task that ended without the artifact); one that names a task still
// queued or running is accepted, so that pipelines can be submitted at
// once: the store does not let the task be claimed until every such
// source has ended (store.WaitsOn), and a finish wakes the hosts' claims.
// The fetch checks again, since an attachment may be deleted and a task
// may end without the artifact meanwhile.

// inputChecker checks the inputs of the specs of one submission. It keeps
// what it looked up, since a batch (a parameter sweep) often gives every
// task the same inputs.
type inputChecker struct {
	c *Coordinator
	u tasks.User
	// attachments records whether group/key exists.
	attachments map[[2]string]bool
	// sources holds each task input's source task, readable by u, and its
	// artifact names looked up so far; a nil entry is a task u may not
	// know of.
	sources map[tasks.ID]*inputSource
}

// inputSource is a task another task takes an artifact of.
type inputSource struct {
	task tasks.Task
	// names records, for each name looked up, whether the task's last
	// (succeeded) attempt has an artifact of that name. It is filled one
	// name at a time: the task may have tens of thousands, of which the
	// batch names a few.
	names map[string]bool
}

func (c *Coordinator) newInputChecker(u tasks.User) *inputChecker {
	return &inputChecker{c: c, u: u, attachments: map[[2]string]bool{}, sources: map[tasks.ID]*inputSource{}}
}

// check returns an EInvalid error naming the first input of spec that
// cannot be had.
func (ic *inputChecker) check(ctx context.Context, spec tasks.Spec) error {
	for i, in := range spec.Inputs {
		field := fmt.Sprintf("inputs[%d]", i)
		if in.Attachment != "" {
			k := [2]string{spec.Group, in.Attachment}
			found, seen := ic.attachments[k]
			if !seen {
				_, err := ic.c.store.GetAttachment(ctx, spec.Group, in.Attachment)
				if err != nil && !errors.Is(err, tasks.ErrNotFound) {
					return err
				}
				found = err == nil
				ic.attachments[k] = found
			}
			if !found {
				return tasks.Invalid(field, "%s: no such attachment in group %s", in, spec.Group)
			}
			continue
		}
		src, err := ic.source(ctx, in.Task)
		if err != nil {
			return err
		}
		switch {
		case src == nil:
			// A task of a group the caller cannot read looks missing, as
			// everywhere else.
			return tasks.Invalid(field, "%s: no task %d", in, in.Task)
		case !src.task.State.Final():
			// Accepted: the task waits for its source to end.
		case src.task.State != tasks.Succeeded:
			return tasks.Invalid(field, "%s: task %d ended %s; inputs come only from a task that succeeded", in, in.Task, src.task.State)
		default:
			has, err := ic.has(ctx, src, in.Artifact)
			if err != nil {
				return err
			}
			if !has {
				return tasks.Invalid(field, "%s: task %d succeeded without an artifact %s", in, in.Task, in.Artifact)
			}
		}
	}
	return nil
}

// has reports whether the succeeded attempt of src left an artifact name.
func (ic *inputChecker) has(ctx context.Context, src *inputSource, name string) (bool, error) {
	if found, seen := src.names[name]; seen {
		return found, nil
	}
	_, found, err := ic.c.attemptArtifact(ctx, src.task.ID, src.task.Attempt, name)
	if err != nil {
		return false, err
	}
	src.names[name] = found
	return found, nil
}

// source looks up a task input's source task, or returns nil when it does
// not exist or the caller may not read it.
func (ic *inputChecker) source(ctx context.Context, id tasks.ID) (*inputSource, error) {
	if src, ok := ic.sources[id]; ok {
		return src, nil
	}
	t, err := ic.c.store.GetTask(ctx, id)
	if errors.Is(err, tasks.ErrNotFound) {
		ic.sources[id] = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if _, err := ic.c.requireRole(ctx, ic.u, t.Group, tasks.RoleRead); err != nil {
		if errors.Is(err, tasks.ErrNotFound) || errors.Is(err, tasks.ErrForbidden) {
			ic.sources[id] = nil
			return nil, nil
		}
		return nil, err
	}
	src := &inputSource{task: t, names: map[string]bool{}}
	ic.sources[id] = src
	return src, nil
}

// resolveInput finds the object behind input in of task t, or returns an
// ENotFound error naming the input and saying why it cannot be had.
func (c *Coordinator) resolveInput(ctx context.Context, t tasks.Task, in tasks.Input) (storedObject, error) {
	if in.Attachment != "" {
		a, err := c.store.GetAttachment(ctx, t.Group, in.Attachment)
		if errors.Is(err, tasks.ErrNotFound) {
			return storedObject{}, tasks.Errorf(tasks.ENotFound, "input %s: no such attachment in group %s", in, t.Group)
		}
		if err != nil {
			return storedObject{}, err
		}
		return storedObject{key: a.Object, sha256: a.SHA256}, nil
	}
	missing := tasks.Errorf(tasks.ENotFound, "input %s: no task %d", in, in.Task)
	src, err := c.store.GetTask(ctx, in.Task)
	if errors.Is(err, tasks.ErrNotFound) {
		return storedObject{}, missing
	}
	if err != nil {
		return storedObject{}, err
	}
	if src.Group != t.Group {
		// The creator may have lost the right to read the other group
		// since submission; the task gets nothing its creator could not.
		role, err := c.store.Role(ctx, t.Creator, src.Group)
		if err != nil && !errors.Is(err, tasks.ErrNotFound) {
			return storedObject{}, err
		}
		if role < tasks.RoleRead {
			return storedObject{}, missing
		}
	}
	switch {
	case !src.State.Final():
		return storedObject{}, tasks.Errorf(tasks.ENotFound, "input %s: task %d has not ended (it is %s)", in, src.ID, src.State)
	case src.State != tasks.Succeeded:
		return storedObject{}, tasks.Errorf(tasks.ENotFound, "input %s: task %d ended %s; inputs come only from a task that succeeded", in, src.ID, src.State)
	}
	// The succeeded attempt's, not an earlier one's.
	a, found, err := c.attemptArtifact(ctx, src.ID, src.Attempt, in.Artifact)
	if err != nil {
		return storedObject{}, err
	}
	if !found {
		return storedObject{}, tasks.Errorf(tasks.ENotFound, "input %s: task %d succeeded without an artifact %s", in, src.ID, in.Artifact)
	}
	return storedObject{key: artifactKey(src.ID, a.Attempt, a.Name), sha256: a.SHA256}, nil
}

// attemptArtifact looks up the artifact name of one attempt of task id,
// and reports whether there is one. Attempts are numbered from 1: an
// attempt below that has none, and is not the store's 0, "the latest".
func (c *Coordinator) attemptArtifact(ctx context.Context, id tasks.ID, attempt int, name string) (tasks.Artifact, bool, error) {
	if attempt < 1 {
		return tasks.Artifact{}, false, nil
	}
	a, err := c.store.GetArtifact(ctx, id, attempt, name)
	if errors.Is(err, tasks.ErrNotFound) {
		return tasks.Artifact{}, false, nil
	}
	if err != nil {
		return tasks.Artifact{}, false, err
	}
	return a, true, nil
}

// handleFetchInput streams one input of a running attempt, for the shim to
// put in the work directory. It is fenced by the lease like the writes,
// so that only the attempt that runs the task reads what its creator may.
func (c *Coordinator) handleFetchInput(w http.ResponseWriter, r *http.Request, s *session) error {
	ref, err := leaseFromRequest(r)
	if err != nil {
		return err
	}
	index, err := strconv.Atoi(r.PathValue("index"))
	if err != nil || index < 0 {
		return tasks.Invalid("index", "%q is not an input index", r.PathValue("index"))
	}
	in, err := c.leasedInput(r.Context(), ref, index)
	if err != nil {
		return err
	}
	return c.sendCurrent(w, r, "input", in.resolve, in.gone, in.logArgs...)
}

// leasedInput is one input of a leased attempt, as the fetch and presign
// calls resolve it.
type leasedInput struct {
	resolve func(context.Context) (storedObject, error)
	// gone is the ENotFound error, naming the input, for an object that is
	// missing though its record is there.
	gone    error
	logArgs []any
}

// leasedInput renews ref, or says it is stale, and finds input number
// index of its task.
func (c *Coordinator) leasedInput(ctx context.Context, ref tasks.LeaseRef, index int) (leasedInput, error) {
	if err := c.checkLease(ctx, ref); err != nil {
		return leasedInput{}, err
	}
	t, err := c.store.GetTask(ctx, ref.Task)
	if err != nil {
		return leasedInput{}, err
	}
	if index < 0 || index >= len(t.Inputs) {
		return leasedInput{}, tasks.Invalid("index", "task %d has %d inputs, numbered from 0", t.ID, len(t.Inputs))
	}
	in := t.Inputs[index]
	// An attachment replaced while it is fetched is fetched anew (see
	// sendCurrent); an artifact's object key never changes, so a missing
	// one is gone.
	gone := tasks.Errorf(tasks.ENotFound, "input %s: task %d's artifact %s is no longer stored", in, in.Task, in.Artifact)
	if in.Attachment != "" {
		gone = tasks.Errorf(tasks.ENotFound, "input %s: the bytes of attachment %s of group %s are no longer stored", in, in.Attachment, t.Group)
	}
	return leasedInput{
		resolve: func(ctx context.Context) (storedObject, error) { return c.resolveInput(ctx, t, in) },
		gone:    gone,
		logArgs: []any{logTask, t.ID, logAttempt, ref.Attempt, "input", in.String()},
	}, nil
}

// getPresigner is an artifact store that can hand out download URLs and
// tell the size of an object (s3.Store).
type getPresigner interface {
	PresignGet(ctx context.Context, key string, expiry time.Duration, filename string) (*url.URL, error)
	Stat(ctx context.Context, key string) (int64, error)
}

// errNoPresignGet answers the presigned input fetch when the worker must
// fetch through the coordinator. The field is the one the artifact
// presign refuses on, which the worker takes for "relay".
func errNoPresignGet(why string) error {
	return &tasks.Error{Code: tasks.EInvalid, Field: "artifacts", Message: "inputs: " + why + "; fetch inputs through the coordinator"}
}

// handlePresignInput answers a presigned GET of one input of a running
// attempt, so that the shim fetches it straight from the store rather
// than through its link. It is fenced and resolves the input exactly as
// handleFetchInput does; the size comes from the store (Stat also finds an
// object deleted since it was resolved), the sha256 from the record.
func (c *Coordinator) handlePresignInput(w http.ResponseWriter, r *http.Request, s *session) error {
	var req tasks.InputPresignRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ref := req.Lease
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if ref.Task != id {
		return tasks.Invalid("lease.task", "is %d but the path says %d", ref.Task, id)
	}
	if ref.Attempt < 1 || ref.Token == "" {
		return tasks.Invalid("lease", "needs an attempt and a token")
	}
	if req.Index < 0 {
		return tasks.Invalid("index", "%d is not an input index", req.Index)
	}
	p, ok := c.cfg.Artifacts.(getPresigner)
	if !ok {
		return errNoPresignGet("the artifact store cannot serve direct downloads")
	}
	if c.artifactsMode(s) == tasks.ArtifactsRelay {
		return errNoPresignGet("this host relays through the coordinator")
	}
	in, err := c.leasedInput(r.Context(), ref, req.Index)
	if err != nil {
		return err
	}
	var resp tasks.InputPresignResponse
	err = c.withCurrent(r.Context(), "input", in.resolve, in.gone, func(obj storedObject) error {
		size, err := p.Stat(r.Context(), obj.key)
		if err != nil {
			return fmt.Errorf("stat input: %w", err)
		}
		expires := c.cfg.Now().UTC().Add(presignExpiry)
		u, err := p.PresignGet(r.Context(), obj.key, presignExpiry, "")
		if err != nil {
			return fmt.Errorf("presign input download: %w", err)
		}
		resp = tasks.InputPresignResponse{URL: u.String(), Method: http.MethodGet, Expires: expires, Size: size, SHA256: obj.sha256}
		return nil
	}, in.logArgs...)
	if err != nil {
		return err
	}
	c.log.Debug("input presigned", append(in.logArgs, "size", resp.Size)...)
	writeJSON(w, http.StatusOK, resp)
	return nil
}
