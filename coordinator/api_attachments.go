package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/mitolab/mito/tasks"
)

// Attachments are files a group keeps for its tasks to take as inputs.
// Their bytes live in the artifact store under attachments/<group>/<random
// hex>, a fresh object for every upload: the record, written only once the
// object is complete, is what makes an upload visible, so a refused or
// failed upload never disturbs the attachment it would have replaced.
// Attachments and artifacts are charged to the group's storage quota.

// attachmentObject returns a new artifact store key for an upload to group.
func attachmentObject(group string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random object name: %w", err)
	}
	return "attachments/" + group + "/" + hex.EncodeToString(b), nil
}

// attachmentKey reads the {key...} path value in canonical form.
func attachmentKey(r *http.Request) (string, error) {
	return tasks.CleanPath("key", r.PathValue("key"))
}

func (c *Coordinator) handlePutAttachment(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group := r.PathValue("name")
	key, err := attachmentKey(r)
	if err != nil {
		return err
	}
	if _, err := c.requireRole(r.Context(), u, group, tasks.RoleWrite); err != nil {
		return err
	}
	if r.ContentLength > c.cfg.MaxArtifactSize {
		return &tasks.Error{Code: tasks.ETooLarge, Field: "key", Message: fmt.Sprintf("attachment %s: %d bytes is over the limit of %d", key, r.ContentLength, c.cfg.MaxArtifactSize)}
	}
	rm, err := c.quotaRoom(r.Context(), group)
	if err != nil {
		return err
	}
	if rm.limited {
		// What the replaced attachment takes is freed by the upload, so
		// it counts as room.
		if a, err := c.store.GetAttachment(r.Context(), group, key); err == nil {
			rm.left += a.Size
		} else if !errors.Is(err, tasks.ErrNotFound) {
			return err
		}
	}
	if err := rm.check(r.ContentLength); err != nil {
		return err
	}
	object, err := attachmentObject(group)
	if err != nil {
		return err
	}
	body := rm.limit(http.MaxBytesReader(w, r.Body, c.cfg.MaxArtifactSize))
	size, sum, err := c.cfg.Artifacts.Put(r.Context(), object, body)
	if err != nil {
		return fmt.Errorf("store attachment %s: %w", key, err)
	}
	a := tasks.Attachment{Group: group, Key: key, Object: object, Size: size, SHA256: sum, Creator: u.Name, CreatedAt: c.cfg.Now().UTC()}
	replaced, err := c.store.PutAttachment(r.Context(), a)
	if err != nil {
		c.deleteArtifact(context.WithoutCancel(r.Context()), object)
		return err
	}
	if replaced != "" {
		c.deleteArtifact(context.WithoutCancel(r.Context()), replaced)
	}
	c.log.Info("attachment stored", "group", group, "key", key, "size", size, logUser, u.Name)
	writeJSON(w, http.StatusCreated, a)
	return nil
}

func (c *Coordinator) handleListAttachments(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group := r.PathValue("name")
	if _, err := c.requireRole(r.Context(), u, group, tasks.RoleRead); err != nil {
		return err
	}
	as, err := c.store.ListAttachments(r.Context(), group, r.URL.Query().Get("prefix"))
	if err != nil {
		return err
	}
	if as == nil {
		as = []tasks.Attachment{}
	}
	writeJSON(w, http.StatusOK, map[string][]tasks.Attachment{"attachments": as})
	return nil
}

func (c *Coordinator) handleGetAttachment(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group := r.PathValue("name")
	key, err := attachmentKey(r)
	if err != nil {
		return err
	}
	if _, err := c.requireRole(r.Context(), u, group, tasks.RoleRead); err != nil {
		return err
	}
	a, err := c.store.GetAttachment(r.Context(), group, key)
	if errors.Is(err, tasks.ErrNotFound) {
		return noAttachment(group, key)
	}
	if err != nil {
		return err
	}
	return c.sendObject(w, r, "attachment", a.Object, a.SHA256, "group", group, "key", key)
}

func (c *Coordinator) handleDeleteAttachment(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group := r.PathValue("name")
	key, err := attachmentKey(r)
	if err != nil {
		return err
	}
	if _, err := c.requireRole(r.Context(), u, group, tasks.RoleWrite); err != nil {
		return err
	}
	a, err := c.store.DeleteAttachment(r.Context(), group, key)
	if errors.Is(err, tasks.ErrNotFound) {
		return noAttachment(group, key)
	}
	if err != nil {
		return err
	}
	// The record is gone and the quota credited: the object is nobody's
	// now, and a failed delete only leaves garbage behind.
	c.deleteArtifact(context.WithoutCancel(r.Context()), a.Object)
	c.log.Info("attachment deleted", "group", group, "key", key, logUser, u.Name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func noAttachment(group, key string) error {
	return &tasks.Error{Code: tasks.ENotFound, Field: "key", Message: fmt.Sprintf("group %s has no attachment %q", group, key)}
}

type setQuotaRequest struct {
	// Bytes is a pointer so that a missing field is told from 0, which
	// removes the limit.
	Bytes *int64 `json:"bytes"`
}

// handleSetQuota sets a group's storage quota. Only global admins may: a
// quota bounds what a group takes of a shared store, so the group's own
// admins must not be able to lift it.
func (c *Coordinator) handleSetQuota(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group := r.PathValue("name")
	if !u.Admin {
		return tasks.Errorf(tasks.EForbidden, "only global administrators may set group quotas")
	}
	var req setQuotaRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	switch {
	case req.Bytes == nil:
		return tasks.Invalid("bytes", "is required: the quota in bytes, 0 for no limit")
	case *req.Bytes < 0:
		return tasks.Invalid("bytes", "must not be negative, got %d", *req.Bytes)
	}
	err := c.store.SetGroupQuota(r.Context(), group, *req.Bytes)
	if errors.Is(err, tasks.ErrNotFound) {
		return &tasks.Error{Code: tasks.ENotFound, Field: "group", Message: fmt.Sprintf("group: no group named %q", group)}
	}
	if err != nil {
		return err
	}
	g, err := c.store.GetGroup(r.Context(), group)
	if err != nil {
		return err
	}
	c.log.Info("group quota set", "group", group, "bytes", *req.Bytes, logUser, u.Name)
	writeJSON(w, http.StatusOK, g)
	return nil
}

// sendObject streams an artifact store object (what: "artifact" or
// "attachment") with its size and the SHA-256 recorded for it, which the
// client checks once it has read the whole body. A failure after the
// headers went out can only be logged, with logArgs.
func (c *Coordinator) sendObject(w http.ResponseWriter, r *http.Request, what, key, sum string, logArgs ...any) error {
	rc, size, err := c.cfg.Artifacts.Open(r.Context(), key)
	if err != nil {
		return fmt.Errorf("open %s: %w", what, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("X-Mito-SHA256", sum)
	if _, err := io.Copy(w, rc); err != nil {
		c.log.Warn("send "+what, append(logArgs, logErr, err)...)
	}
	return nil
}

// room is what a group may still store under its quota.
type room struct {
	group   string
	limited bool  // the group has a quota
	quota   int64 // its quota, when limited
	left    int64 // bytes it may still store, when limited; may be negative
}

// quotaRoom reads how much group may still store; the caller adds the
// size of what the upload replaces. The store charges the quota again in
// the transaction that records the upload, which is what holds under
// concurrent uploads; this check only refuses early, before the bytes are
// sent. A group that does not exist has no limit here.
func (c *Coordinator) quotaRoom(ctx context.Context, group string) (room, error) {
	g, err := c.store.GetGroup(ctx, group)
	if errors.Is(err, tasks.ErrNotFound) {
		return room{group: group}, nil
	}
	if err != nil {
		return room{}, err
	}
	if g.QuotaBytes <= 0 {
		return room{group: group}, nil
	}
	return room{group: group, limited: true, quota: g.QuotaBytes, left: g.QuotaBytes - g.UsedBytes}, nil
}

// refuse is the EQuota error for an upload of size bytes that does not
// fit; with atLeast, size is what was read of a body of unknown length
// when it passed the room left.
func (rm room) refuse(size int64, atLeast bool) error {
	what := humanize.IBytes(uint64(size))
	if atLeast {
		what = "more than " + what
	}
	return &tasks.Error{Code: tasks.EQuota, Message: fmt.Sprintf(
		"group %s: %s would take it over its storage quota of %s (%s left); delete attachments or task artifacts, or ask a global admin to raise the quota",
		rm.group, what, humanize.IBytes(uint64(rm.quota)), humanize.IBytes(uint64(max(rm.left, 0))))}
}

// quotaReader fails a body with EQuota as soon as it passes the room
// left, so that a body of unknown length is not stored whole first.
type quotaReader struct {
	r    io.Reader
	room room
	n    int64
}

func (q *quotaReader) Read(p []byte) (int, error) {
	n, err := q.r.Read(p)
	q.n += int64(n)
	if q.n > q.room.left {
		return n, q.room.refuse(q.n, true)
	}
	return n, err
}

// limit wraps body in a quotaReader when the group has a quota.
func (rm room) limit(body io.Reader) io.Reader {
	if !rm.limited {
		return body
	}
	return &quotaReader{r: body, room: rm}
}

// check refuses early an upload whose announced size (-1: unknown) does
// not fit.
func (rm room) check(size int64) error {
	if rm.limited && size >= 0 && size > rm.left {
		return rm.refuse(size, false)
	}
	return nil
}

// artifactRoom is quotaRoom for an artifact of an attempt, in the group of
// its task; an artifact of the same name and attempt is replaced.
func (c *Coordinator) artifactRoom(ctx context.Context, ref tasks.LeaseRef, name string) (room, error) {
	t, err := c.store.GetTask(ctx, ref.Task)
	if err != nil {
		return room{}, err
	}
	rm, err := c.quotaRoom(ctx, t.Group)
	if err != nil || !rm.limited {
		return rm, err
	}
	as, err := c.store.ListArtifacts(ctx, ref.Task)
	if err != nil {
		return room{}, err
	}
	for _, a := range as {
		if a.Attempt == ref.Attempt && a.Name == name {
			rm.left += a.Size
		}
	}
	return rm, nil
}
