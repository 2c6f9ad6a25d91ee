// Package client is the typed Go client of mito's coordinator API, and so
// its Go SDK. The CLI uses it for everything a user does and the shim uses
// it for the worker protocol, over TCP or over its SSH or pipe link.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/mitolab/mito/tasks"
)

// Client talks to one coordinator. Its zero value is not usable; call New.
type Client struct {
	base  string
	token string
	hc    *http.Client
	// session is the worker session, sent by worker-protocol calls.
	session string
}

// Option configures a Client.
type Option func(*Client)

// WithToken authenticates every call with an API token.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient replaces the HTTP client, for example with one whose
// transport runs over a shim's pipe.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client of the coordinator at baseURL ("http://host:port").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid coordinator URL %q: want http://host:port or https://host:port", baseURL)
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the coordinator URL the client was made for.
func (c *Client) BaseURL() string { return c.base }

// Token returns the API token the client sends, if any.
func (c *Client) Token() string { return c.token }

// request builds a request with the client's credentials.
func (c *Client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.session != "" {
		req.Header.Set("X-Mito-Session", c.session)
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// do sends in (JSON, if not nil) and decodes the answer into out (if not
// nil). An error answer comes back as a *tasks.Error.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return nil
}

// send performs req and turns an error status into a *tasks.Error. The
// caller closes the body of a successful response.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, &tasks.Error{Code: tasks.EUnavailable, Message: fmt.Sprintf("cannot reach coordinator at %s: %v", c.base, unwrapURLError(err))}
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

// decodeError reads {"error":{...}} from an error response, or makes an
// error from the status when the body is something else (a proxy's page).
func decodeError(resp *http.Response) error {
	var env struct {
		Error *tasks.Error `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &env) == nil && env.Error != nil && env.Error.Code != "" {
		return env.Error
	}
	code := tasks.EInternal
	switch resp.StatusCode {
	case http.StatusBadRequest:
		code = tasks.EInvalid
	case http.StatusUnauthorized:
		code = tasks.EUnauthorized
	case http.StatusForbidden:
		code = tasks.EForbidden
	case http.StatusNotFound:
		code = tasks.ENotFound
	case http.StatusConflict:
		code = tasks.EConflict
	case http.StatusRequestEntityTooLarge:
		code = tasks.ETooLarge
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		code = tasks.EUnavailable
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return &tasks.Error{Code: code, Message: fmt.Sprintf("coordinator answered %s: %s", resp.Status, msg)}
}

// unwrapURLError drops net/url's "Post \"http://...\":" prefix, which
// repeats what the caller already says.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
