package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
)

// recorded is what the fake coordinator saw of one request.
type recorded struct {
	Method string
	Path   string // escaped, as sent
	Query  url.Values
	Auth   string
	Body   map[string]any
}

// fake starts a coordinator stand-in that records each request and
// answers with status and body.
func fake(t *testing.T, status int, body string, header http.Header) (*client.Client, *[]recorded) {
	t.Helper()
	var got []recorded
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := recorded{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(), Auth: r.Header.Get("Authorization")}
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			if err := json.Unmarshal(b, &rec.Body); err != nil {
				t.Errorf("%s %s: body is not a JSON object: %v: %s", r.Method, r.URL, err, b)
			}
		}
		got = append(got, rec)
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL+"/", client.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	return c, &got
}

func TestRequestShapes(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		status int
		answer string
		call   func(context.Context, *client.Client) error
		want   recorded
	}{
		{"login", 200, `{"token":"t","user":{"name":"ann"},"expires":"2026-01-02T03:04:05Z"}`,
			func(ctx context.Context, c *client.Client) error {
				cred, err := c.Login(ctx, "ann", "pw", 2*time.Hour)
				if err == nil && (cred.Token != "t" || cred.User.Name != "ann" || !cred.Expires.Equal(since)) {
					t.Errorf("login: got %+v", cred)
				}
				return err
			},
			recorded{Method: "POST", Path: "/api/v1/auth/login", Body: map[string]any{"user": "ann", "password": "pw", "expires": "2h0m0s"}}},
		{"login default expiry", 200, `{"token":"t"}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.Login(ctx, "ann", "pw", 0); return err },
			recorded{Method: "POST", Path: "/api/v1/auth/login", Body: map[string]any{"user": "ann", "password": "pw"}}},
		{"logout", 204, ``,
			func(ctx context.Context, c *client.Client) error { return c.Logout(ctx) },
			recorded{Method: "POST", Path: "/api/v1/auth/logout"}},
		{"whoami", 200, `{"name":"ann"}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.Whoami(ctx); return err },
			recorded{Method: "GET", Path: "/api/v1/auth/whoami"}},
		{"change password", 204, ``,
			func(ctx context.Context, c *client.Client) error { return c.ChangePassword(ctx, "a", "b") },
			recorded{Method: "PUT", Path: "/api/v1/auth/password", Body: map[string]any{"old_password": "a", "new_password": "b"}}},
		{"list users", 200, `{"users":[]}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.ListUsers(ctx); return err },
			recorded{Method: "GET", Path: "/api/v1/users"}},
		{"create user", 201, `{"name":"bob"}`,
			func(ctx context.Context, c *client.Client) error {
				_, err := c.CreateUser(ctx, "bob", "pw", true)
				return err
			},
			recorded{Method: "POST", Path: "/api/v1/users", Body: map[string]any{"name": "bob", "password": "pw", "admin": true}}},
		{"disable user", 200, `{"name":"bob"}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.DisableUser(ctx, "bob"); return err },
			recorded{Method: "POST", Path: "/api/v1/users/bob/disable"}},
		{"enable user", 200, `{"name":"bob"}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.EnableUser(ctx, "bob"); return err },
			recorded{Method: "POST", Path: "/api/v1/users/bob/enable"}},
		{"reset password", 204, ``,
			func(ctx context.Context, c *client.Client) error { return c.ResetPassword(ctx, "bob", "new") },
			recorded{Method: "POST", Path: "/api/v1/users/bob/password", Body: map[string]any{"password": "new"}}},
		{"list groups", 200, `{"groups":[{"name":"ann","role":"admin"}]}`,
			func(ctx context.Context, c *client.Client) error {
				gs, err := c.ListGroups(ctx)
				if err == nil && (len(gs) != 1 || gs[0].Role != tasks.RoleAdmin) {
					t.Errorf("list groups: got %+v", gs)
				}
				return err
			},
			recorded{Method: "GET", Path: "/api/v1/groups"}},
		{"create group", 201, `{"name":"lab"}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.CreateGroup(ctx, "lab"); return err },
			recorded{Method: "POST", Path: "/api/v1/groups", Body: map[string]any{"name": "lab"}}},
		{"get group", 200, `{"name":"lab"}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.GetGroup(ctx, "lab"); return err },
			recorded{Method: "GET", Path: "/api/v1/groups/lab"}},
		{"set member", 200, `{"name":"lab"}`,
			func(ctx context.Context, c *client.Client) error {
				_, err := c.SetMember(ctx, "lab", "bob", tasks.RoleWrite)
				return err
			},
			recorded{Method: "PUT", Path: "/api/v1/groups/lab/members/bob", Body: map[string]any{"role": "write"}}},
		{"remove member", 204, ``,
			func(ctx context.Context, c *client.Client) error { return c.RemoveMember(ctx, "lab", "bob") },
			recorded{Method: "DELETE", Path: "/api/v1/groups/lab/members/bob"}},
		{"submit", 201, `{"id":42,"group":"ann","command":["true"],"state":"queued"}`,
			func(ctx context.Context, c *client.Client) error {
				task, err := c.Submit(ctx, tasks.Spec{Group: "ann", Command: []string{"echo", "hi"}, Timeout: tasks.Duration(time.Minute), Tags: []string{"gpu"}})
				if err == nil && (task.ID != 42 || task.State != tasks.Queued) {
					t.Errorf("submit: got %+v", task)
				}
				return err
			},
			recorded{Method: "POST", Path: "/api/v1/tasks", Body: map[string]any{"group": "ann", "command": []any{"echo", "hi"}, "timeout": "1m0s", "tags": []any{"gpu"}}}},
		{"submit batch", 201, `{"tasks":[{"id":1},{"id":2}]}`,
			func(ctx context.Context, c *client.Client) error {
				ts, err := c.SubmitBatch(ctx, []tasks.Spec{{Group: "g", Shell: "a"}, {Group: "g", Shell: "b"}})
				if err == nil && len(ts) != 2 {
					t.Errorf("submit batch: got %d tasks; want 2", len(ts))
				}
				return err
			},
			recorded{Method: "POST", Path: "/api/v1/tasks/batch", Body: map[string]any{"tasks": []any{
				map[string]any{"group": "g", "shell": "a"}, map[string]any{"group": "g", "shell": "b"}}}}},
		{"get task", 200, `{"id":7}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.GetTask(ctx, 7); return err },
			recorded{Method: "GET", Path: "/api/v1/tasks/7", Query: url.Values{}}},
		{"wait task", 200, `{"id":7,"state":"failed","exit_code":3}`,
			func(ctx context.Context, c *client.Client) error {
				task, err := c.WaitTask(ctx, 7, 30*time.Second)
				if err == nil && (task.ExitCode == nil || *task.ExitCode != 3) {
					t.Errorf("wait: got %+v", task)
				}
				return err
			},
			recorded{Method: "GET", Path: "/api/v1/tasks/7", Query: url.Values{"wait": {"30s"}}}},
		{"list tasks", 200, `{"tasks":[{"id":9}],"next":9}`,
			func(ctx context.Context, c *client.Client) error {
				ts, next, err := c.ListTasks(ctx, tasks.Filter{
					Groups: []string{"a", "b"}, States: []tasks.State{tasks.Queued, tasks.Running},
					Tags: []string{"x", "y"}, Labels: []string{"exp=1"}, Creator: "ann", Host: "h1",
					Since: since, Until: since.Add(time.Hour), Before: 100, Limit: 10,
				})
				if err == nil && (len(ts) != 1 || next != 9) {
					t.Errorf("list: got %v, next %d", ts, next)
				}
				return err
			},
			recorded{Method: "GET", Path: "/api/v1/tasks", Query: url.Values{
				"group": {"a", "b"}, "state": {"queued,running"}, "tag": {"x", "y"}, "label": {"exp=1"},
				"creator": {"ann"}, "host": {"h1"}, "since": {"2026-01-02T03:04:05Z"}, "until": {"2026-01-02T04:04:05Z"},
				"before": {"100"}, "limit": {"10"},
			}}},
		{"cancel", 200, `{"id":7,"state":"cancelled"}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.CancelTask(ctx, 7); return err },
			recorded{Method: "POST", Path: "/api/v1/tasks/7/cancel"}},
		{"retry", 201, `{"id":8,"retry_of":7}`,
			func(ctx context.Context, c *client.Client) error {
				task, err := c.RetryTask(ctx, 7)
				if err == nil && task.RetryOf != 7 {
					t.Errorf("retry: got %+v", task)
				}
				return err
			},
			recorded{Method: "POST", Path: "/api/v1/tasks/7/retry"}},
		{"list artifacts", 200, `{"artifacts":[{"task":7,"name":"a/b.txt","size":3}]}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.ListArtifacts(ctx, 7); return err },
			recorded{Method: "GET", Path: "/api/v1/tasks/7/artifacts"}},
		{"list hosts", 200, `{"hosts":[{"name":"h1","state":"ready"}]}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.ListHosts(ctx); return err },
			recorded{Method: "GET", Path: "/api/v1/hosts"}},
		{"get host", 200, `{"name":"h1"}`,
			func(ctx context.Context, c *client.Client) error { _, err := c.GetHost(ctx, "h1"); return err },
			recorded{Method: "GET", Path: "/api/v1/hosts/h1"}},
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

func TestErrorDecoding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		body      string
		wantCode  tasks.Code
		wantField string
		wantMsg   string
	}{
		{"api error keeps code and field", 400,
			`{"error":{"code":"invalid","field":"timeout","message":"timeout: must be positive, got -1s"}}`,
			tasks.EInvalid, "timeout", "timeout: must be positive, got -1s"},
		{"not found", 404, `{"error":{"code":"not_found","message":"task 9 not found"}}`,
			tasks.ENotFound, "", "task 9 not found"},
		{"stale lease is not a plain conflict", 409, `{"error":{"code":"stale_lease","message":"stale"}}`,
			tasks.EStaleLease, "", "stale"},
		{"proxy page on 502 is unavailable", 502,
			"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
			tasks.EUnavailable, "", "502 Bad Gateway"},
		{"plain 401 without body", 401, "", tasks.EUnauthorized, "", "401"},
		{"unexpected 500 text", 500, "boom", tasks.EInternal, "", "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := fake(t, tt.status, tt.body, nil)
			_, err := c.GetTask(t.Context(), 9)
			var te *tasks.Error
			if !errors.As(err, &te) {
				t.Fatalf("got %T %v; want a *tasks.Error", err, err)
			}
			if te.Code != tt.wantCode || te.Field != tt.wantField {
				t.Errorf("got code %q field %q; want %q %q", te.Code, te.Field, tt.wantCode, tt.wantField)
			}
			if !strings.Contains(te.Message, tt.wantMsg) {
				t.Errorf("got message %q; want it to contain %q", te.Message, tt.wantMsg)
			}
			if !errors.Is(err, &tasks.Error{Code: tt.wantCode}) {
				t.Errorf("errors.Is(err, code %q) = false; want true", tt.wantCode)
			}
		})
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	c, err := client.New(base)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Whoami(t.Context())
	if got := tasks.ErrorCode(err); got != tasks.EUnavailable {
		t.Fatalf("got code %q (%v); want %q", got, err, tasks.EUnavailable)
	}
}

func TestReadLog(t *testing.T) {
	t.Parallel()
	c, got := fake(t, 200, "hello", http.Header{"X-Mito-Next-Offset": {"15"}})
	b, next, err := c.ReadLog(t.Context(), 7, 2, tasks.Stderr, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "hello" || next != 15 {
		t.Errorf("got %q, next %d; want %q, 15", b, next, "hello")
	}
	r := (*got)[0]
	want := url.Values{"stream": {"stderr"}, "attempt": {"2"}, "offset": {"10"}, "limit": {"100"}}
	if r.Path != "/api/v1/tasks/7/logs" || !reflect.DeepEqual(r.Query, want) {
		t.Errorf("got %s?%v; want /api/v1/tasks/7/logs?%v", r.Path, r.Query, want)
	}

	// Without the header the next offset follows from the bytes read.
	c, _ = fake(t, 200, "abc", nil)
	if _, next, err = c.ReadLog(t.Context(), 7, 0, "", 4, 0); err != nil || next != 7 {
		t.Errorf("got next %d, err %v; want 7, nil", next, err)
	}

	// A next offset that goes backwards would loop a reader forever.
	c, _ = fake(t, 200, "", http.Header{"X-Mito-Next-Offset": {"3"}})
	if _, _, err = c.ReadLog(t.Context(), 7, 0, "", 4, 0); err == nil {
		t.Error("got no error for a next offset before the offset; want one")
	}
}

func TestDownloadArtifact(t *testing.T) {
	t.Parallel()
	content := "artifact bytes"
	sum := sha256.Sum256([]byte(content))
	c, got := fake(t, 200, content, http.Header{"X-Mito-Sha256": {strings.ToUpper(hex.EncodeToString(sum[:]))}})
	rc, size, sha, err := c.DownloadArtifact(t.Context(), 7, 1, "out/a b#1.txt")
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
	r := (*got)[0]
	if want := "/api/v1/tasks/7/artifacts/out/a%20b%231.txt"; r.Path != want {
		t.Errorf("got path %s; want %s", r.Path, want)
	}
	if r.Query.Get("attempt") != "1" {
		t.Errorf("got attempt %q; want 1", r.Query.Get("attempt"))
	}

	c, _ = fake(t, 404, `{"error":{"code":"not_found","message":"no artifact"}}`, nil)
	if _, _, _, err := c.DownloadArtifact(t.Context(), 7, 0, "x"); tasks.ErrorCode(err) != tasks.ENotFound {
		t.Errorf("got %v; want a not_found error", err)
	}
}
