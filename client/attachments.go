package client

// The user calls of docs/api.md about a group's attachments (the files its
// tasks take as inputs) and its storage quota.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/mitolab/mito/tasks"
)

// UploadAttachment stores size bytes from r as the attachment key of
// group, replacing any of that key once the upload is complete: until
// then tasks and readers see the old file, and a failed upload leaves it
// as it was. key is a relative path with '/' separators. r is streamed as
// the request goes out, never held in memory whole; a size of -1 sends a
// body of unknown length, which the coordinator can only refuse for its
// quota once it has read past the room left, so give the size when known.
// An upload the group's quota cannot take fails with a tasks.EQuota error.
func (c *Client) UploadAttachment(ctx context.Context, group, key string, r io.Reader, size int64) (tasks.Attachment, error) {
	key, err := cleanKey(key)
	if err != nil {
		return tasks.Attachment{}, err
	}
	body := r
	if size >= 0 {
		body = io.LimitReader(r, size)
	}
	req, err := c.request(ctx, http.MethodPut, attachmentPath(group, key), body)
	if err != nil {
		return tasks.Attachment{}, err
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.send(req)
	if err != nil {
		return tasks.Attachment{}, err
	}
	defer resp.Body.Close()
	var a tasks.Attachment
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return tasks.Attachment{}, fmt.Errorf("decode PUT attachment response: %w", err)
	}
	return a, nil
}

// ListAttachmentsOptions selects one page of a group's attachments.
type ListAttachmentsOptions struct {
	// Prefix keeps the keys that start with it; "" keeps every key.
	Prefix string
	// After keeps the keys after it, bytewise: pass the next-page key of
	// the page before; "" starts from the first key.
	After string
	// Limit bounds the page, at most 10000; 0 leaves it to the
	// coordinator, which sends 1000.
	Limit int
}

// ListAttachments returns one page of a group's attachments, ordered by
// key, each with its size and SHA-256, and the After of the next page: ""
// when this page is the last. A page that came full gives a next-page
// key, and the page after it may then be empty. To list them all, call
// again with that After until it is "".
func (c *Client) ListAttachments(ctx context.Context, group string, opts ListAttachmentsOptions) ([]tasks.Attachment, string, error) {
	q := url.Values{}
	if opts.Prefix != "" {
		q.Set("prefix", opts.Prefix)
	}
	if opts.After != "" {
		q.Set("after", opts.After)
	}
	if opts.Limit != 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	path := attachmentsPath(group)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Attachments []tasks.Attachment `json:"attachments"`
		NextAfter   string             `json:"next_after"`
	}
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, "", err
	}
	return out.Attachments, out.NextAfter, nil
}

// DownloadAttachment opens an attachment for reading, streaming it rather
// than holding it in memory, as attachments may be large. It returns the
// body, which the caller must close, its size (-1 when the coordinator did
// not say) and the hex SHA-256 the coordinator recorded, which the caller
// should check once it has read the whole body: it guards against a
// truncated or corrupted transfer.
func (c *Client) DownloadAttachment(ctx context.Context, group, key string) (io.ReadCloser, int64, string, error) {
	key, err := cleanKey(key)
	if err != nil {
		return nil, 0, "", err
	}
	req, err := c.request(ctx, http.MethodGet, attachmentPath(group, key), nil)
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

// DeleteAttachment removes an attachment and gives its size back to the
// group's quota. Tasks already submitted that take it as an input fail
// when they start.
func (c *Client) DeleteAttachment(ctx context.Context, group, key string) error {
	key, err := cleanKey(key)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, attachmentPath(group, key), nil, nil)
}

// SetGroupQuota bounds the bytes a group's attachments and artifacts may
// take together in the artifact store; 0 removes the limit. Only a global
// admin may, so that a group cannot lift its own limit. A quota under the
// current usage refuses only later uploads. It returns the group with its
// quota and usage.
func (c *Client) SetGroupQuota(ctx context.Context, group string, bytes int64) (*tasks.Group, error) {
	in := struct {
		Bytes int64 `json:"bytes"`
	}{bytes}
	var g tasks.Group
	if err := c.do(ctx, http.MethodPut, "/api/v1/groups/"+url.PathEscape(group)+"/quota", in, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// cleanKey puts a key in the canonical form the coordinator keeps, or
// refuses it as the coordinator would. A key with "." or empty segments
// would otherwise reach it as a path that its router redirects rather
// than serves, and an empty one as the listing's path.
func cleanKey(key string) (string, error) { return tasks.CleanPath("key", key) }

func attachmentsPath(group string) string {
	return "/api/v1/groups/" + url.PathEscape(group) + "/attachments"
}

// attachmentPath escapes each segment of key but keeps its '/'
// separators, which the route takes as part of the key.
func attachmentPath(group, key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return attachmentsPath(group) + "/" + strings.Join(segs, "/")
}
