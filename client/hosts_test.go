package client_test

import (
	"context"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
)

func TestHostOpsRequests(t *testing.T) {
	t.Parallel()
	report := `{"hosts":[{"host":"h 1","steps":[{"index":1,"kind":"copy","what":"~/x","status":"changed"}],"ok":true}],"summary":{"hosts":1,"ok":1,"failed":0,"changed":1}}`
	tests := []struct {
		name   string
		answer string
		call   func(context.Context, *client.Client) error
		want   recorded
	}{
		{"facts", `{"kernel":"6.8.0","clock_offset":"-1.5ms","speed_mbps":1}`,
			func(ctx context.Context, c *client.Client) error {
				f, err := c.HostFacts(ctx, "h 1")
				if err == nil && (f.Kernel != "6.8.0" || time.Duration(f.ClockOffset) != -1500*time.Microsecond) {
					t.Errorf("facts: got %+v", f)
				}
				return err
			},
			recorded{Method: "GET", Path: "/api/v1/hosts/h%201/facts", Query: url.Values{}}},
		{"facts of a tag", `{"hosts":[{"host":"h1","facts":{"arch":"aarch64"}},{"host":"h2","error":"no route"}]}`,
			func(ctx context.Context, c *client.Client) error {
				rs, err := c.HostsFacts(ctx, "net")
				if err == nil && (len(rs) != 2 || rs[0].Facts.Arch != "aarch64" || rs[1].Facts != nil || rs[1].Error != "no route") {
					t.Errorf("facts of a tag: got %+v", rs)
				}
				return err
			},
			recorded{Method: "GET", Path: "/api/v1/facts", Query: url.Values{"tag": {"net"}}}},
		{"facts of all", `{"hosts":[]}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.HostsFacts(ctx, ""); return err },
			recorded{Method: "GET", Path: "/api/v1/facts", Query: url.Values{}}},
		{"bootstrap", report,
			func(ctx context.Context, c *client.Client) error {
				rep, err := c.Bootstrap(ctx, "h 1", false)
				if err == nil && (len(rep.Hosts) != 1 || rep.Hosts[0].Steps[0].Status != tasks.StepChanged || rep.Summary.Changed != 1) {
					t.Errorf("bootstrap: got %+v", rep)
				}
				return err
			},
			recorded{Method: "POST", Path: "/api/v1/hosts/h%201/bootstrap", Query: url.Values{}}},
		{"bootstrap dry run", report,
			func(ctx context.Context, c *client.Client) error { _, err := c.Bootstrap(ctx, "h1", true); return err },
			recorded{Method: "POST", Path: "/api/v1/hosts/h1/bootstrap", Query: url.Values{"dry_run": {"true"}}}},
		{"bootstrap a tag", report,
			func(ctx context.Context, c *client.Client) error {
				_, err := c.BootstrapTag(ctx, "new", true)
				return err
			},
			recorded{Method: "POST", Path: "/api/v1/bootstrap", Query: url.Values{"tag": {"new"}, "dry_run": {"true"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, got := fake(t, 200, tt.answer, nil)
			if err := tt.call(t.Context(), c); err != nil {
				t.Fatalf("got error %v; want none", err)
			}
			if len(*got) != 1 {
				t.Fatalf("got %d requests; want 1", len(*got))
			}
			r := (*got)[0]
			if r.Method != tt.want.Method || r.Path != tt.want.Path || !reflect.DeepEqual(r.Query, tt.want.Query) || r.Body != nil {
				t.Errorf("got %s %s?%v body %v; want %s %s?%v and no body", r.Method, r.Path, r.Query, r.Body, tt.want.Method, tt.want.Path, tt.want.Query)
			}
		})
	}
}

func TestBootstrapForbidden(t *testing.T) {
	t.Parallel()
	c, _ := fake(t, 403, `{"error":{"code":"forbidden","message":"only global administrators may bootstrap hosts"}}`, nil)
	_, err := c.BootstrapTag(t.Context(), "x", false)
	if tasks.ErrorCode(err) != tasks.EForbidden {
		t.Errorf("got %v; want a forbidden error", err)
	}
}
