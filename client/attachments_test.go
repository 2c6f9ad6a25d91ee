package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
)

func TestAttachmentRequestShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		answer string
		call   func(context.Context, *client.Client) error
		want   recorded
	}{
		{"list", 200, `{"attachments":[{"group":"lab","key":"data/a.csv","size":3}]}`,
			func(ctx context.Context, c *client.Client) error {
				as, next, err := c.ListAttachments(ctx, "lab", client.ListAttachmentsOptions{})
				if err == nil && (len(as) != 1 || as[0].Key != "data/a.csv" || as[0].Size != 3 || next != "") {
					t.Errorf("list: got %+v, next %q; want data/a.csv and no next page", as, next)
				}
				return err
			},
			recorded{Method: "GET", Path: "/api/v1/groups/lab/attachments", Query: url.Values{}}},
		{"list with prefix", 200, `{"attachments":[]}`,
			func(ctx context.Context, c *client.Client) error {
				_, _, err := c.ListAttachments(ctx, "lab", client.ListAttachmentsOptions{Prefix: "data/a b"})
				return err
			},
			recorded{Method: "GET", Path: "/api/v1/groups/lab/attachments", Query: url.Values{"prefix": {"data/a b"}}}},
		{"list a page", 200, `{"attachments":[{"group":"lab","key":"data/c.csv"}],"next_after":"data/c.csv"}`,
			func(ctx context.Context, c *client.Client) error {
				as, next, err := c.ListAttachments(ctx, "lab", client.ListAttachmentsOptions{Prefix: "data/", After: "data/b&c.csv", Limit: 1})
				if err == nil && (len(as) != 1 || next != "data/c.csv") {
					t.Errorf("list a page: got %+v, next %q; want data/c.csv and next data/c.csv", as, next)
				}
				return err
			},
			recorded{Method: "GET", Path: "/api/v1/groups/lab/attachments", Query: url.Values{"prefix": {"data/"}, "after": {"data/b&c.csv"}, "limit": {"1"}}}},
		{"delete", 204, ``,
			func(ctx context.Context, c *client.Client) error {
				return c.DeleteAttachment(ctx, "lab", "data/a b#1.csv")
			},
			recorded{Method: "DELETE", Path: "/api/v1/groups/lab/attachments/data/a%20b%231.csv"}},
		{"delete cleans the key", 204, ``,
			func(ctx context.Context, c *client.Client) error {
				return c.DeleteAttachment(ctx, "lab", "./data/./a.csv")
			},
			recorded{Method: "DELETE", Path: "/api/v1/groups/lab/attachments/data/a.csv"}},
		{"set quota", 200, `{"name":"lab","quota_bytes":1073741824,"used_bytes":5}`,
			func(ctx context.Context, c *client.Client) error {
				g, err := c.SetGroupQuota(ctx, "lab", 1<<30)
				if err == nil && (g.QuotaBytes != 1<<30 || g.UsedBytes != 5) {
					t.Errorf("set quota: got %+v", g)
				}
				return err
			},
			recorded{Method: "PUT", Path: "/api/v1/groups/lab/quota", Body: map[string]any{"bytes": float64(1 << 30)}}},
		{"remove quota", 200, `{"name":"lab"}`,
			func(ctx context.Context, c *client.Client) error {
				_, err := c.SetGroupQuota(ctx, "lab", 0)
				return err
			},
			recorded{Method: "PUT", Path: "/api/v1/groups/lab/quota", Body: map[string]any{"bytes": float64(0)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, got := fake(t, tt.status, tt.answer, nil)
			if err := tt.call(t.Context(), c); err != nil {
				t.Fatalf("got error %v; want none", err)
			}
			if len(*got) != 1 {
				t.Fatalf("got %d requests; want 1", len(*got))
			}
			r := (*got)[0]
			if r.Method != tt.want.Method || r.Path != tt.want.Path {
				t.Errorf("got %s %s; want %s %s", r.Method, r.Path, tt.want.Method, tt.want.Path)
			}
			if r.Auth != "Bearer tok" {
				t.Errorf("got Authorization %q; want %q", r.Auth, "Bearer tok")
			}
			if tt.want.Query != nil && !reflect.DeepEqual(r.Query, tt.want.Query) {
				t.Errorf("got query %v; want %v", r.Query, tt.want.Query)
			}
			if !reflect.DeepEqual(r.Body, tt.want.Body) {
				t.Errorf("got body %v; want %v", r.Body, tt.want.Body)
			}
		})
	}
}

// rawUpload is what the upload stand-in saw of one request.
type rawUpload struct {
	method, path string
	length       int64
	body         string
}

// uploadFake answers every request with status and answer and records
// the raw body.
func uploadFake(t *testing.T, status int, answer string) (*client.Client, func() []rawUpload) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []rawUpload
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, rawUpload{r.Method, r.URL.EscapedPath(), r.ContentLength, string(b)})
		mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	return c, func() []rawUpload {
		mu.Lock()
		defer mu.Unlock()
		return append([]rawUpload(nil), got...)
	}
}

func TestUploadAttachment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		key        string
		src        string
		size       int64
		wantPath   string
		wantLength int64
		wantBody   string
	}{
		{"known size", "data/a b.csv", "1,2,3\n", 6, "/api/v1/groups/lab/attachments/data/a%20b.csv", 6, "1,2,3\n"},
		{"only size bytes are sent", "x", "abcdef", 3, "/api/v1/groups/lab/attachments/x", 3, "abc"},
		{"unknown size", "x", "streamed", -1, "/api/v1/groups/lab/attachments/x", -1, "streamed"},
		{"empty", "empty", "", 0, "/api/v1/groups/lab/attachments/empty", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, got := uploadFake(t, 201, `{"group":"lab","key":"k","size":6,"sha256":"ab"}`)
			a, err := c.UploadAttachment(t.Context(), "lab", tt.key, strings.NewReader(tt.src), tt.size)
			if err != nil {
				t.Fatal(err)
			}
			if a.Group != "lab" || a.Key != "k" || a.Size != 6 || a.SHA256 != "ab" {
				t.Errorf("got %+v; want the attachment the coordinator answered", a)
			}
			reqs := got()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests; want 1", len(reqs))
			}
			want := rawUpload{"PUT", tt.wantPath, tt.wantLength, tt.wantBody}
			if reqs[0] != want {
				t.Errorf("got %+v; want %+v", reqs[0], want)
			}
		})
	}
}

func TestUploadAttachmentErrors(t *testing.T) {
	t.Parallel()
	c, got := uploadFake(t, 413, `{"error":{"code":"quota_exceeded","message":"group lab: 6 B would take it over its storage quota of 4 B (4 B left)"}}`)
	_, err := c.UploadAttachment(t.Context(), "lab", "k", strings.NewReader("123456"), 6)
	if tasks.ErrorCode(err) != tasks.EQuota || !strings.Contains(err.Error(), "quota") {
		t.Errorf("got %v; want a quota_exceeded error", err)
	}
	for _, key := range []string{"", "../x", "/etc/passwd", "a\\b"} {
		if _, err := c.UploadAttachment(t.Context(), "lab", key, strings.NewReader("x"), 1); tasks.ErrorCode(err) != tasks.EInvalid {
			t.Errorf("key %q: got %v; want an invalid error", key, err)
		}
	}
	if n := len(got()); n != 1 {
		t.Errorf("got %d requests; want only the first: bad keys are refused before sending", n)
	}
}

func TestDownloadAttachment(t *testing.T) {
	t.Parallel()
	content := "attachment bytes"
	sum := sha256.Sum256([]byte(content))
	c, got := fake(t, 200, content, http.Header{"X-Mito-Sha256": {strings.ToUpper(hex.EncodeToString(sum[:]))}})
	rc, size, sha, err := c.DownloadAttachment(t.Context(), "lab", "in/a b#1.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != content || size != int64(len(content)) || sha != hex.EncodeToString(sum[:]) {
		t.Errorf("got %q, size %d, sha %s; want %q, %d, %x", b, size, sha, content, len(content), sum)
	}
	if want := "/api/v1/groups/lab/attachments/in/a%20b%231.bin"; (*got)[0].Path != want {
		t.Errorf("got path %s; want %s", (*got)[0].Path, want)
	}

	c, _ = fake(t, 404, `{"error":{"code":"not_found","message":"group lab has no attachment \"x\""}}`, nil)
	if _, _, _, err := c.DownloadAttachment(t.Context(), "lab", "x"); tasks.ErrorCode(err) != tasks.ENotFound {
		t.Errorf("got %v; want a not_found error", err)
	}
}
