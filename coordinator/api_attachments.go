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
	"unicode/utf8"

	"github.com/mitolab/mito/coordinator/store"
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
	group, key, err := c.attachmentTarget(r, u, tasks.RoleWrite)
	if err != nil {
		return err
	}
	if r.ContentLength > c.cfg.MaxArtifactSize {
		return &tasks.Error{Code: tasks.ETooLarge, Field: "key", Message: fmt.Sprintf("attachment %s: %d bytes is over the limit of %d", key, r.ContentLength, c.cfg.MaxArtifactSize)}
	}
	rm, err := c.quotaRoom(r.Context(), group, "attachment "+strconv.Quote(key))
	if err != nil {
		return err
	}
	if rm.limited {
		// What the replaced attachment takes is freed by the upload.
		if a, err := c.store.GetAttachment(r.Context(), group, key); err == nil {
			rm.replaced = a.Size
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

// Listing limits: a page holds listDefault attachments unless the caller
// asks for up to listMax, so that no request reads a whole large group at
// once; the caller pages on with after.
const (
	listDefault = 1000
	listMax     = 10000
)

// attachmentList is the answer of a listing. NextAfter, set when the page
// is full, is the after of the next page; a page that is not full is the
// last.
type attachmentList struct {
	Attachments []tasks.Attachment `json:"attachments"`
	NextAfter   string             `json:"next_after,omitempty"`
}

func (c *Coordinator) handleListAttachments(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group := r.PathValue("name")
	q, err := attachmentQuery(r)
	if err != nil {
		return err
	}
	if _, err := c.requireRole(r.Context(), u, group, tasks.RoleRead); err != nil {
		return err
	}
	as, err := c.store.ListAttachments(r.Context(), group, q)
	if err != nil {
		return err
	}
	out := attachmentList{Attachments: as}
	if out.Attachments == nil {
		out.Attachments = []tasks.Attachment{}
	}
	if len(as) == q.Limit {
		out.NextAfter = as[len(as)-1].Key
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// attachmentQuery reads a listing's query parameters. prefix and after
// are checked as keys are, but for being partial: no key has a control
// character or invalid UTF-8, and PostgreSQL cannot even compare text
// that has them.
func attachmentQuery(r *http.Request) (store.AttachmentQuery, error) {
	q := store.AttachmentQuery{Prefix: r.URL.Query().Get("prefix"), After: r.URL.Query().Get("after")}
	for _, p := range []struct{ name, value string }{{"prefix", q.Prefix}, {"after", q.After}} {
		if msg := keyPartProblem(p.value); msg != "" {
			return store.AttachmentQuery{}, tasks.Invalid(p.name, "%q: %s", p.value, msg)
		}
	}
	limit, err := queryInt(r, "limit", listDefault)
	if err != nil {
		return store.AttachmentQuery{}, err
	}
	if limit < 1 || limit > listMax {
		return store.AttachmentQuery{}, tasks.Invalid("limit", "must be 1 to %d, got %d", listMax, limit)
	}
	q.Limit = int(limit)
	return q, nil
}

// keyPartProblem returns why s cannot be part of an attachment key, in
// tasks.PathProblem's words, or "".
func keyPartProblem(s string) string {
	switch {
	case len(s) > tasks.MaxPathLen:
		return fmt.Sprintf("is over the limit of %d bytes", tasks.MaxPathLen)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case r == 0:
			return "contains a NUL byte"
		case r < 0x20 || r == 0x7f:
			return "contains a control character"
		}
	}
	return ""
}

func (c *Coordinator) handleGetAttachment(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group, key, err := c.attachmentTarget(r, u, tasks.RoleRead)
	if err != nil {
		return err
	}
	resolve := func(ctx context.Context) (storedObject, error) {
		a, err := c.store.GetAttachment(ctx, group, key)
		if errors.Is(err, tasks.ErrNotFound) {
			return storedObject{}, noAttachment(group, key)
		}
		if err != nil {
			return storedObject{}, err
		}
		return storedObject{key: a.Object, sha256: a.SHA256}, nil
	}
	gone := &tasks.Error{Code: tasks.ENotFound, Field: "key", Message: fmt.Sprintf("group %s: the bytes of attachment %q are no longer stored", group, key)}
	return c.sendCurrent(w, r, "attachment", resolve, gone, "group", group, "key", key)
}

func (c *Coordinator) handleDeleteAttachment(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group, key, err := c.attachmentTarget(r, u, tasks.RoleWrite)
	if err != nil {
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

// storedObject is where a file's bytes are in the artifact store, with
// the SHA-256 recorded for them.
type storedObject struct {
	key    string
	sha256 string
}

// resolveRetries bounds how often sendCurrent resolves a file again after
// its object went missing. Each retry needs an upload of the file that
// committed meanwhile, so running out takes a file replaced faster than
// it can be opened.
const resolveRetries = 3

// sendCurrent streams the file that resolve finds now (see sendObject).
// An attachment takes a new object with every upload, and the replaced
// object is deleted once the new record is committed, so the object a
// reader resolved may be gone by the time it opens it though the file is
// there: sendCurrent then resolves again and retries while that gives
// another object, up to resolveRetries times. It answers resolve's error
// when the record went too, and gone (ENotFound, naming the file) when
// the object is missing still under the same key: both say what the user
// asked for, never the object key, which is internal.
func (c *Coordinator) sendCurrent(w http.ResponseWriter, r *http.Request, what string, resolve func(context.Context) (storedObject, error), gone error, logArgs ...any) error {
	return c.withCurrent(r.Context(), what, resolve, gone, func(obj storedObject) error {
		return c.sendObject(w, r, what, obj.key, obj.sha256, logArgs...)
	}, logArgs...)
}

// withCurrent calls use with the object resolve finds now, resolving
// again as sendCurrent says while use finds the object missing
// (tasks.ErrNotFound): the presigned input fetch needs the same care.
func (c *Coordinator) withCurrent(ctx context.Context, what string, resolve func(context.Context) (storedObject, error), gone error, use func(storedObject) error, logArgs ...any) error {
	obj, err := resolve(ctx)
	if err != nil {
		return err
	}
	for retry := 0; ; retry++ {
		err := use(obj)
		if !errors.Is(err, tasks.ErrNotFound) {
			return err
		}
		if retry == resolveRetries {
			return gone
		}
		again, err := resolve(ctx)
		if err != nil {
			return err
		}
		if again.key == obj.key {
			return gone
		}
		c.log.Debug(what+" replaced while opened; sending the new one", logArgs...)
		obj = again
	}
}

// room is what an upload may add under its group's quota. The test is
// the store's (store.ChargeAllowed on the size less what the upload
// replaces), and so is the refusal, so that the early check refuses
// exactly what the store would: an upload that adds nothing passes even
// while the group is over a lowered quota.
type room struct {
	group    string
	what     string // the upload, as store.QuotaError describes it
	limited  bool   // the group has a quota
	quota    int64  // its quota, when limited
	used     int64  // its usage, when limited; may be over the quota
	replaced int64  // the size of the record the upload replaces, which it frees
}

// quotaRoom reads what group may still store, for an upload described by
// what; the caller sets what it replaces. The store charges the quota
// again in the transaction that records the upload, which is what holds
// under concurrent uploads; this check only refuses early, before the
// bytes are sent. A group that does not exist has no limit here.
func (c *Coordinator) quotaRoom(ctx context.Context, group, what string) (room, error) {
	g, err := c.store.GetGroup(ctx, group)
	if errors.Is(err, tasks.ErrNotFound) {
		return room{group: group, what: what}, nil
	}
	if err != nil {
		return room{}, err
	}
	if g.QuotaBytes <= 0 {
		return room{group: group, what: what}, nil
	}
	return room{group: group, what: what, limited: true, quota: g.QuotaBytes, used: g.UsedBytes}, nil
}

// fits reports whether an upload of size bytes fits.
func (rm room) fits(size int64) bool {
	return !rm.limited || store.ChargeAllowed(rm.quota, rm.used, size-rm.replaced)
}

// refuse is the EQuota error for an upload of size bytes that does not
// fit; with atLeast, size is what was read of a body of unknown length
// when it stopped fitting.
func (rm room) refuse(size int64, atLeast bool) error {
	if atLeast {
		return store.QuotaErrorAtLeast(rm.group, rm.what, size, rm.used, size-rm.replaced, rm.quota)
	}
	return store.QuotaError(rm.group, rm.what, size, rm.used, size-rm.replaced, rm.quota)
}

// quotaReader fails a body with EQuota as soon as it stops fitting, so
// that a body of unknown length is not stored whole first.
type quotaReader struct {
	r    io.Reader
	room room
	n    int64
}

func (q *quotaReader) Read(p []byte) (int, error) {
	n, err := q.r.Read(p)
	q.n += int64(n)
	if !q.room.fits(q.n) {
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
	if size >= 0 && !rm.fits(size) {
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
	rm, err := c.quotaRoom(ctx, t.Group, strconv.Quote(name))
	if err != nil || !rm.limited {
		return rm, err
	}
	a, found, err := c.attemptArtifact(ctx, ref.Task, ref.Attempt, name)
	if err != nil {
		return room{}, err
	}
	if found {
		rm.replaced = a.Size
	}
	return rm, nil
}

// attachmentTarget reads the group and the cleaned key of an attachment
// route and checks that u has at least role min in the group.
func (c *Coordinator) attachmentTarget(r *http.Request, u tasks.User, min tasks.Role) (group, key string, err error) {
	group = r.PathValue("name")
	if key, err = attachmentKey(r); err != nil {
		return "", "", err
	}
	if _, err := c.requireRole(r.Context(), u, group, min); err != nil {
		return "", "", err
	}
	return group, key, nil
}
