package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/tasks"
)

// maxBatch bounds one batch submission.
const maxBatch = 10000

func (c *Coordinator) handleSubmit(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	var spec tasks.Spec
	if err := decodeJSON(w, r, &spec); err != nil {
		return err
	}
	created, err := c.submit(r.Context(), u, []tasks.Spec{spec}, 0)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, created[0])
	return nil
}

type batchRequest struct {
	Tasks []tasks.Spec `json:"tasks"`
}

func (c *Coordinator) handleSubmitBatch(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	var req batchRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	switch {
	case len(req.Tasks) == 0:
		return tasks.Invalid("tasks", "is empty")
	case len(req.Tasks) > maxBatch:
		return &tasks.Error{Code: tasks.ETooLarge, Field: "tasks", Message: fmt.Sprintf("tasks: %d given, over the limit of %d", len(req.Tasks), maxBatch)}
	}
	created, err := c.submit(r.Context(), u, req.Tasks, 0)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string][]tasks.Task{"tasks": created})
	return nil
}

// submit validates every spec, the caller's write role in every group and
// every input (see inputChecker) before storing any, so that a batch is
// stored whole or not at all.
func (c *Coordinator) submit(ctx context.Context, u tasks.User, specs []tasks.Spec, retryOf tasks.ID) ([]tasks.Task, error) {
	checked := make(map[string]bool)
	inputs := c.newInputChecker(u)
	for i := range specs {
		if err := specs[i].Normalize(); err != nil {
			return nil, prefixField(err, len(specs), i)
		}
		if !checked[specs[i].Group] {
			if _, err := c.requireRole(ctx, u, specs[i].Group, tasks.RoleWrite); err != nil {
				return nil, prefixField(err, len(specs), i)
			}
			checked[specs[i].Group] = true
		}
		// After the role check: inputs must not tell a stranger which
		// attachments a group has.
		if err := inputs.check(ctx, specs[i]); err != nil {
			return nil, prefixField(err, len(specs), i)
		}
	}
	created, err := c.store.CreateTasks(ctx, u.Name, specs, retryOf)
	if err != nil {
		return nil, err
	}
	for _, t := range created {
		c.publish(ctx, t)
	}
	if len(created) == 1 {
		c.log.Info("task submitted", logTask, created[0].ID, "group", created[0].Group, logUser, u.Name)
	} else {
		c.log.Info("tasks submitted", "count", len(created), logUser, u.Name)
	}
	return created, nil
}

// prefixField makes an error about one spec of a batch say which one.
func prefixField(err error, n, i int) error {
	var e *tasks.Error
	if n == 1 || !errors.As(err, &e) {
		return err
	}
	cp := *e
	cp.Message = fmt.Sprintf("tasks[%d].%s", i, e.Message)
	if e.Field != "" {
		cp.Field = fmt.Sprintf("tasks[%d].%s", i, e.Field)
	}
	return &cp
}

// readableTask returns a task the caller may read, or "not found" if they
// may not, so that ids of other groups' tasks do not leak.
func (c *Coordinator) readableTask(r *http.Request, u tasks.User, min tasks.Role) (tasks.Task, error) {
	id, err := pathID(r)
	if err != nil {
		return tasks.Task{}, err
	}
	t, err := c.store.GetTask(r.Context(), id)
	if errors.Is(err, tasks.ErrNotFound) {
		return t, tasks.Errorf(tasks.ENotFound, "no task %d", id)
	}
	if err != nil {
		return t, err
	}
	if _, err := c.requireRole(r.Context(), u, t.Group, min); err != nil {
		if errors.Is(err, tasks.ErrNotFound) {
			return t, tasks.Errorf(tasks.ENotFound, "no task %d", id)
		}
		return t, err
	}
	return t, nil
}

func (c *Coordinator) handleGetTask(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	t, err := c.readableTask(r, u, tasks.RoleRead)
	if err != nil {
		return err
	}
	if s := r.URL.Query().Get("wait"); s != "" && !t.State.Final() {
		wait, err := tasks.ParseDuration(s)
		if err != nil || wait < 0 {
			return tasks.Invalid("wait", "%q is not a duration", s)
		}
		if t, err = c.waitFinal(r.Context(), t, min(wait, c.cfg.MaxWait)); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

// waitFinal waits until t is final or wait runs out, and returns its
// latest state.
func (c *Coordinator) waitFinal(ctx context.Context, t tasks.Task, wait time.Duration) (tasks.Task, error) {
	err := c.waitFor(ctx, wait, func(ev events.Event) bool {
		return ev.Task == t.ID && ev.State.Final()
	}, func() (bool, error) {
		cur, err := c.store.GetTask(ctx, t.ID)
		if err != nil {
			return false, err
		}
		t = cur
		return cur.State.Final(), nil
	})
	return t, err
}

func (c *Coordinator) handleListTasks(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	f, err := parseFilter(r)
	if err != nil {
		return err
	}
	if len(f.Groups) > 0 {
		for _, g := range f.Groups {
			if _, err := c.requireRole(r.Context(), u, g, tasks.RoleRead); err != nil {
				return err
			}
		}
	} else {
		gs, err := c.store.ListUserGroups(r.Context(), u.Name)
		if err != nil {
			return err
		}
		for _, g := range gs {
			f.Groups = append(f.Groups, g.Name)
		}
		if len(f.Groups) == 0 {
			writeJSON(w, http.StatusOK, taskList{Tasks: []tasks.Task{}})
			return nil
		}
	}
	ts, err := c.store.ListTasks(r.Context(), f)
	if err != nil {
		return err
	}
	resp := taskList{Tasks: ts}
	if resp.Tasks == nil {
		resp.Tasks = []tasks.Task{}
	}
	if len(ts) > 0 && len(ts) == f.Limit {
		resp.Next = ts[len(ts)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

type taskList struct {
	Tasks []tasks.Task `json:"tasks"`
	// Next is the "before" of the next page; zero at the end.
	Next tasks.ID `json:"next"`
}

func parseFilter(r *http.Request) (tasks.Filter, error) {
	q := r.URL.Query()
	var f tasks.Filter
	for _, g := range q["group"] {
		if err := tasks.ValidName("group", g); err != nil {
			return f, err
		}
		f.Groups = append(f.Groups, g)
	}
	for _, list := range q["state"] {
		for _, s := range strings.Split(list, ",") {
			st, err := tasks.ParseState(strings.TrimSpace(s))
			if err != nil {
				return f, err
			}
			f.States = append(f.States, st)
		}
	}
	f.Tags, f.Labels = q["tag"], q["label"]
	f.Creator, f.Host = q.Get("creator"), q.Get("host")
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if s := q.Get(name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return f, tasks.Invalid(name, "%q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", s)
			}
			*dst = t
		}
	}
	before, err := queryInt(r, "before", 0)
	if err != nil {
		return f, err
	}
	limit, err := queryInt(r, "limit", tasks.DefaultListLimit)
	if err != nil {
		return f, err
	}
	if limit < 1 || limit > tasks.MaxListLimit {
		return f, tasks.Invalid("limit", "must be between 1 and %d, got %d", tasks.MaxListLimit, limit)
	}
	f.Before, f.Limit = tasks.ID(before), int(limit)
	return f, nil
}

func (c *Coordinator) handleCancel(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	t, err := c.readableTask(r, u, tasks.RoleWrite)
	if err != nil {
		return err
	}
	t, err = c.store.CancelTask(r.Context(), t.ID, c.cfg.Now().UTC())
	if err != nil {
		return err
	}
	c.log.Info("task cancelled", logTask, t.ID, logUser, u.Name)
	c.publish(r.Context(), t)
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (c *Coordinator) handleRetry(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	t, err := c.readableTask(r, u, tasks.RoleWrite)
	if err != nil {
		return err
	}
	if !t.State.Final() {
		return tasks.Errorf(tasks.EConflict, "task %d is %s; only a finished task can be retried", t.ID, t.State)
	}
	created, err := c.submit(r.Context(), u, []tasks.Spec{t.Spec}, t.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, created[0])
	return nil
}

// maxLogRead bounds one log read.
const maxLogRead = 4 << 20

func (c *Coordinator) handleLogs(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	t, err := c.readableTask(r, u, tasks.RoleRead)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	stream := tasks.Stdout
	if s := q.Get("stream"); s != "" {
		if stream, err = tasks.ParseStream(s); err != nil {
			return err
		}
	}
	attempt, err := queryInt(r, "attempt", int64(t.Attempt))
	if err != nil {
		return err
	}
	if attempt < 0 || attempt > int64(t.Attempt) {
		return tasks.Invalid("attempt", "task %d has attempts 1 to %d", t.ID, t.Attempt)
	}
	off, err := queryInt(r, "offset", 0)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", maxLogRead)
	if err != nil {
		return err
	}
	if off < 0 || limit < 1 {
		return tasks.Invalid("offset", "offset must be ≥ 0 and limit ≥ 1")
	}
	follow := false
	if s := q.Get("follow"); s != "" {
		if follow, err = strconv.ParseBool(s); err != nil {
			return tasks.Invalid("follow", "%q is not true or false", s)
		}
	}
	wait := c.cfg.MaxWait
	if s := q.Get("wait"); s != "" {
		if wait, err = tasks.ParseDuration(s); err != nil || wait < 0 {
			return tasks.Invalid("wait", "%q is not a duration", s)
		}
	}
	var data []byte
	if follow && int(attempt) == t.Attempt && !t.State.Final() {
		// A follower of the live attempt: answer as soon as bytes come or
		// the task ends, else when the wait runs out.
		data, t, err = c.waitLog(r.Context(), t, int(attempt), stream, off, int(min(limit, maxLogRead)), min(wait, c.cfg.MaxWait))
	} else {
		data, err = c.store.ReadLog(r.Context(), t.ID, int(attempt), stream, off, int(min(limit, maxLogRead)))
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Mito-Attempt", strconv.FormatInt(attempt, 10))
	w.Header().Set("X-Mito-Next-Offset", strconv.FormatInt(off+int64(len(data)), 10))
	w.Header().Set("X-Mito-Task-State", string(t.State))
	_, err = w.Write(data)
	return err
}

func (c *Coordinator) handleListArtifacts(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	t, err := c.readableTask(r, u, tasks.RoleRead)
	if err != nil {
		return err
	}
	as, err := c.store.ListArtifacts(r.Context(), t.ID)
	if err != nil {
		return err
	}
	if as == nil {
		as = []tasks.Artifact{}
	}
	writeJSON(w, http.StatusOK, map[string][]tasks.Artifact{"artifacts": as})
	return nil
}

func artifactKey(id tasks.ID, attempt int, name string) string {
	return fmt.Sprintf("tasks/%d/%d/%s", id, attempt, name)
}

func (c *Coordinator) handleDownloadArtifact(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	t, err := c.readableTask(r, u, tasks.RoleRead)
	if err != nil {
		return err
	}
	name, err := artifacts.CleanName(r.PathValue("name"))
	if err != nil {
		return err
	}
	attempt, err := queryInt(r, "attempt", 0)
	if err != nil {
		return err
	}
	notFound := tasks.Errorf(tasks.ENotFound, "task %d has no artifact %q", t.ID, name)
	if attempt < 0 || attempt > math.MaxInt32 { // no attempt is numbered so
		return notFound
	}
	found, err := c.store.GetArtifact(r.Context(), t.ID, int(attempt), name) // 0: the latest that has it
	if errors.Is(err, tasks.ErrNotFound) {
		return notFound
	}
	if err != nil {
		return err
	}
	w.Header().Set("X-Mito-Attempt", strconv.Itoa(found.Attempt))
	return c.sendObject(w, r, "artifact", artifactKey(t.ID, found.Attempt, found.Name), found.SHA256, logTask, t.ID, "name", name)
}
