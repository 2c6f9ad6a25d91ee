package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

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
	if stale, err := c.store.Renew(r.Context(), []tasks.LeaseRef{ref}, c.cfg.Now().UTC(), c.cfg.LeaseTTL); err != nil {
		return err
	} else if len(stale) > 0 {
		return tasks.Errorf(tasks.EStaleLease, "task %d attempt %d: lease is no longer current", ref.Task, ref.Attempt)
	}
	t, err := c.store.GetTask(r.Context(), ref.Task)
	if err != nil {
		return err
	}
	if index >= len(t.Inputs) {
		return tasks.Invalid("index", "task %d has %d inputs, numbered from 0", t.ID, len(t.Inputs))
	}
	in := t.Inputs[index]
	// An attachment replaced while it is fetched is fetched anew (see
	// sendCurrent); an artifact's object key never changes, so a missing
	// one is gone.
	gone := tasks.Errorf(tasks.ENotFound, "input %s: task %d's artifact %s is no longer stored", in, in.Task, in.Artifact)
	if in.Attachment != "" {
		gone = tasks.Errorf(tasks.ENotFound, "input %s: the bytes of attachment %s of group %s are no longer stored", in, in.Attachment, t.Group)
	}
	resolve := func(ctx context.Context) (storedObject, error) { return c.resolveInput(ctx, t, in) }
	return c.sendCurrent(w, r, "input", resolve, gone, logTask, t.ID, logAttempt, ref.Attempt, "input", in.String())
}
