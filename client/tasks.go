package client

// The user calls of docs/api.md that are about tasks: submit, follow,
// cancel and retry them, read their logs and fetch their artifacts.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mitolab/mito/tasks"
)

// maxLogChunk bounds what ReadLog keeps in memory when the caller leaves
// the page size to the coordinator; no stream is longer than its log cap,
// so a well-behaved coordinator never comes near it.
const maxLogChunk = 256 << 20

// Submit queues one task. The coordinator fills the spec's defaults and
// validates it; an invalid spec comes back as a *tasks.Error whose Field
// names what to fix.
func (c *Client) Submit(ctx context.Context, spec tasks.Spec) (*tasks.Task, error) {
	var t tasks.Task
	if err := c.do(ctx, http.MethodPost, "/api/v1/tasks", spec, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// SubmitBatch queues many tasks in one call, all or none: a parameter
// sweep either starts whole or not at all, and a failed batch can simply be
// sent again. The tasks come back in the order of specs.
func (c *Client) SubmitBatch(ctx context.Context, specs []tasks.Spec) ([]tasks.Task, error) {
	in := struct {
		Tasks []tasks.Spec `json:"tasks"`
	}{specs}
	var out struct {
		Tasks []tasks.Task `json:"tasks"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/tasks/batch", in, &out); err != nil {
		return nil, err
	}
	return out.Tasks, nil
}

// GetTask returns a task as it is now.
func (c *Client) GetTask(ctx context.Context, id tasks.ID) (*tasks.Task, error) {
	return c.WaitTask(ctx, id, 0)
}

// WaitTask returns a task once it is final, or as it is when wait runs out,
// whichever comes first; the coordinator holds the request meanwhile. It
// lets a client follow a task without polling in a loop of sleeps. Call it
// again while the task is not final; keep wait well under any proxy's idle
// timeout (30s is a good value). Zero wait is GetTask.
func (c *Client) WaitTask(ctx context.Context, id tasks.ID, wait time.Duration) (*tasks.Task, error) {
	path := taskPath(id)
	if wait > 0 {
		path += "?wait=" + url.QueryEscape(wait.String())
	}
	var t tasks.Task
	if err := c.do(ctx, http.MethodGet, path, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// ListTasks returns one page of the tasks that match filter, newest first,
// and the Before of the next page: 0 when this page is the last. The
// coordinator limits the listing to the groups the caller may read, whatever
// filter.Groups says.
func (c *Client) ListTasks(ctx context.Context, filter tasks.Filter) ([]tasks.Task, tasks.ID, error) {
	var out struct {
		Tasks []tasks.Task `json:"tasks"`
		Next  tasks.ID     `json:"next"`
	}
	path := "/api/v1/tasks"
	if q := filterQuery(filter).Encode(); q != "" {
		path += "?" + q
	}
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, 0, err
	}
	return out.Tasks, out.Next, nil
}

// filterQuery encodes a Filter as the query of GET /api/v1/tasks.
func filterQuery(f tasks.Filter) url.Values {
	q := url.Values{}
	for _, g := range f.Groups {
		q.Add("group", g)
	}
	if len(f.States) > 0 {
		s := make([]string, len(f.States))
		for i, st := range f.States {
			s[i] = string(st)
		}
		q.Set("state", strings.Join(s, ","))
	}
	for _, t := range f.Tags {
		q.Add("tag", t)
	}
	for _, l := range f.Labels {
		q.Add("label", l)
	}
	if f.Creator != "" {
		q.Set("creator", f.Creator)
	}
	if f.Host != "" {
		q.Set("host", f.Host)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	if f.Before > 0 {
		q.Set("before", strconv.FormatInt(int64(f.Before), 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// CancelTask stops a task: a queued one never starts, a running one has its
// process group killed. It returns the task, which may still be running
// until its host confirms the kill; WaitTask tells when it is final.
// Cancelling a final task is a conflict.
func (c *Client) CancelTask(ctx context.Context, id tasks.ID) (*tasks.Task, error) {
	var t tasks.Task
	if err := c.do(ctx, http.MethodPost, taskPath(id)+"/cancel", nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// RetryTask queues a new task with the same spec as id, whose RetryOf
// points back to it. Tasks never leave a final state, so this is how a
// failed or cancelled run is repeated while its history stays intact.
func (c *Client) RetryTask(ctx context.Context, id tasks.ID) (*tasks.Task, error) {
	var t tasks.Task
	if err := c.do(ctx, http.MethodPost, taskPath(id)+"/retry", nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// ReadLog reads up to limit bytes of one output stream of a task from
// offset on, and returns them with the offset to ask for next. attempt 0
// means the latest attempt; limit 0 leaves the page size to the
// coordinator. Reading from the returned offset until a call returns no
// bytes pages through what has been written so far; a running task's log
// grows, so a follower calls again later, best with ReadLogWait.
func (c *Client) ReadLog(ctx context.Context, id tasks.ID, attempt int, stream tasks.Stream, offset, limit int64) ([]byte, int64, error) {
	p, err := c.ReadLogWait(ctx, id, attempt, stream, offset, limit, 0)
	if err != nil {
		return nil, 0, err
	}
	return p.Data, p.Next, nil
}

// LogPage is one read of a task's log.
type LogPage struct {
	// Data are the bytes read, from the offset asked for.
	Data []byte
	// Next is the offset to ask for next.
	Next int64
	// Attempt is the attempt read (0 for a task that has not started).
	Attempt int
	// State is the task's state when the log was read, empty if the
	// coordinator did not say. The state is read before the log: a final
	// state with no Data means the log is complete.
	State tasks.State
}

// ReadLogWait is ReadLog for a follower: with wait > 0, a read of the
// live attempt that finds nothing new waits on the coordinator until
// output arrives, the task ends or wait runs out (the coordinator holds it
// at most 25 s), and may then come back empty. Keep wait well under any
// proxy's idle timeout. A follower calls it in a loop from Next until a
// page comes back empty with a final State.
func (c *Client) ReadLogWait(ctx context.Context, id tasks.ID, attempt int, stream tasks.Stream, offset, limit int64, wait time.Duration) (LogPage, error) {
	q := url.Values{}
	if stream != "" {
		q.Set("stream", string(stream))
	}
	if attempt > 0 {
		q.Set("attempt", strconv.Itoa(attempt))
	}
	if offset > 0 {
		q.Set("offset", strconv.FormatInt(offset, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.FormatInt(limit, 10))
	}
	if wait > 0 {
		q.Set("follow", "true")
		q.Set("wait", wait.String())
	}
	path := taskPath(id) + "/logs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	req, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return LogPage{}, err
	}
	resp, err := c.send(req)
	if err != nil {
		return LogPage{}, err
	}
	defer resp.Body.Close()
	keep := int64(maxLogChunk)
	if limit > 0 && limit < keep {
		keep = limit
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, keep))
	if err != nil {
		return LogPage{}, fmt.Errorf("read log of task %d: %w", id, err)
	}
	p := LogPage{Data: b, Next: offset + int64(len(b)), Attempt: attempt, State: tasks.State(resp.Header.Get("X-Mito-Task-State"))}
	if h := resp.Header.Get("X-Mito-Next-Offset"); h != "" {
		n, err := strconv.ParseInt(h, 10, 64)
		if err != nil || n < offset {
			return LogPage{}, fmt.Errorf("read log of task %d: bad X-Mito-Next-Offset %q", id, h)
		}
		p.Next = n
	}
	if h := resp.Header.Get("X-Mito-Attempt"); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 0 {
			return LogPage{}, fmt.Errorf("read log of task %d: bad X-Mito-Attempt %q", id, h)
		}
		p.Attempt = n
	}
	return p, nil
}

// ListArtifacts lists the files the task's attempts left in their output
// directories, each with its size and SHA-256.
func (c *Client) ListArtifacts(ctx context.Context, id tasks.ID) ([]tasks.Artifact, error) {
	var out struct {
		Artifacts []tasks.Artifact `json:"artifacts"`
	}
	if err := c.do(ctx, http.MethodGet, taskPath(id)+"/artifacts", nil, &out); err != nil {
		return nil, err
	}
	return out.Artifacts, nil
}

// DownloadArtifact opens one artifact for reading, streaming it rather than
// holding it in memory, as artifacts may be large. attempt 0 means the
// latest attempt that wrote name. It returns the body, which the caller
// must close, its size (-1 when the coordinator did not say) and the
// hex SHA-256 the coordinator recorded, which the caller should check once
// it has read the whole body: it guards against a truncated or corrupted
// transfer. name is the artifact's path with '/' separators; it comes from
// a task, so treat it as untrusted before using it as a local file name.
func (c *Client) DownloadArtifact(ctx context.Context, id tasks.ID, attempt int, name string) (io.ReadCloser, int64, string, error) {
	if name == "" {
		return nil, 0, "", tasks.Invalid("name", "is empty")
	}
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	path := taskPath(id) + "/artifacts/" + strings.Join(segs, "/")
	if attempt > 0 {
		path += "?attempt=" + strconv.Itoa(attempt)
	}
	req, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, 0, "", err
	}
	// Ask for the bytes as stored: a transparently decompressed body would
	// not match the recorded size.
	req.Header.Set("Accept", "application/octet-stream")
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.send(req)
	if err != nil {
		return nil, 0, "", err
	}
	return resp.Body, resp.ContentLength, strings.ToLower(resp.Header.Get("X-Mito-SHA256")), nil
}

// DeleteArtifacts deletes artifacts of a finished task, so that its group
// gets back the quota they take: those of attempt (0: every attempt)
// named in names (none: every name). It returns the deleted records; a
// name that matched nothing is simply not among them, for the caller to
// report. The coordinator refuses (EConflict) while the task runs, as its
// worker may still be uploading. Tasks submitted later that take a
// deleted artifact as an input cannot have it.
func (c *Client) DeleteArtifacts(ctx context.Context, id tasks.ID, attempt int, names []string) ([]tasks.Artifact, error) {
	if attempt < 0 {
		return nil, tasks.Invalid("attempt", "must be 0 (every attempt) or positive, got %d", attempt)
	}
	q := url.Values{}
	if attempt > 0 {
		q.Set("attempt", strconv.Itoa(attempt))
	}
	for _, n := range names {
		// In the canonical form the coordinator keeps, or refused as it
		// would refuse it.
		clean, err := tasks.CleanPath("name", n)
		if err != nil {
			return nil, err
		}
		q.Add("name", clean)
	}
	path := taskPath(id) + "/artifacts"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Deleted []tasks.Artifact `json:"deleted"`
	}
	if err := c.do(ctx, http.MethodDelete, path, nil, &out); err != nil {
		return nil, err
	}
	return out.Deleted, nil
}

func taskPath(id tasks.ID) string {
	return "/api/v1/tasks/" + strconv.FormatInt(int64(id), 10)
}
