package client

// Host operations: facts and bootstrap. They reach the hosts themselves,
// so they take as long as the slowest host (facts at most 30 s a host).

import (
	"context"
	"net/http"
	"net/url"

	"github.com/mitolab/mito/tasks"
)

// HostFacts reads one host's machine now: OS, kernel, CPUs, memory, free
// disk, clock offset, interfaces, TCP congestion control and default qdisc.
// It needs the read role in a group the host serves (or global admin); a
// host that cannot be reached gives an EUnavailable error.
func (c *Client) HostFacts(ctx context.Context, name string) (*tasks.HostFacts, error) {
	var f tasks.HostFacts
	if err := c.do(ctx, http.MethodGet, "/api/v1/hosts/"+url.PathEscape(name)+"/facts", nil, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// HostsFacts reads the facts of every inventory host the caller can see
// that has tag (all of them when tag is empty). A host that cannot be
// reached has Error set instead of Facts; the call itself fails only when
// the coordinator does.
func (c *Client) HostsFacts(ctx context.Context, tag string) ([]tasks.HostFactsResult, error) {
	q := url.Values{}
	if tag != "" {
		q.Set("tag", tag)
	}
	var out struct {
		Hosts []tasks.HostFactsResult `json:"hosts"`
	}
	if err := c.do(ctx, http.MethodGet, withQuery("/api/v1/facts", q), nil, &out); err != nil {
		return nil, err
	}
	return out.Hosts, nil
}

// Bootstrap runs the inventory's bootstrap steps on one host, or with
// dryRun says what they would do. Only a global admin may. A step that
// fails is reported in the result (OK false), not as an error.
func (c *Client) Bootstrap(ctx context.Context, name string, dryRun bool) (*tasks.BootstrapReport, error) {
	return c.bootstrap(ctx, "/api/v1/hosts/"+url.PathEscape(name)+"/bootstrap", url.Values{}, dryRun)
}

// BootstrapTag runs Bootstrap on every inventory host with tag, several at
// a time. A tag no host has gives an ENotFound error.
func (c *Client) BootstrapTag(ctx context.Context, tag string, dryRun bool) (*tasks.BootstrapReport, error) {
	return c.bootstrap(ctx, "/api/v1/bootstrap", url.Values{"tag": {tag}}, dryRun)
}

func (c *Client) bootstrap(ctx context.Context, path string, q url.Values, dryRun bool) (*tasks.BootstrapReport, error) {
	if dryRun {
		q.Set("dry_run", "true")
	}
	var rep tasks.BootstrapReport
	if err := c.do(ctx, http.MethodPost, withQuery(path, q), nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}
