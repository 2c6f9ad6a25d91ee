package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/tasks"
)

// openHookStore is an artifact store that runs the next queued hook
// before each Open, with the key about to be opened, to change the world
// between resolving a file and opening its object. It records the keys
// opened.
type openHookStore struct {
	artifacts.Store
	mu     sync.Mutex
	hooks  []func(key string)
	opened []string
}

func (h *openHookStore) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	h.mu.Lock()
	var hook func(string)
	if len(h.hooks) > 0 {
		hook, h.hooks = h.hooks[0], h.hooks[1:]
	}
	h.opened = append(h.opened, key)
	h.mu.Unlock()
	if hook != nil {
		hook(key)
	}
	return h.Store.Open(ctx, key)
}

// before queues hooks for the next Opens and forgets what was opened.
func (h *openHookStore) before(hooks ...func(key string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hooks, h.opened = hooks, nil
}

// openedKeys returns the keys opened since before.
func (h *openHookStore) openedKeys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.opened)
}

func newOpenHookEnv(t *testing.T) (*env, *openHookStore) {
	t.Helper()
	dir, err := artifacts.NewDir(filepath.Join(t.TempDir(), "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	arts := &openHookStore{Store: dir}
	return newEnv(t, coordinator.Config{Artifacts: arts}), arts
}

// hookErrs collects the failures of hooks, which run on the server's
// goroutines where the test must not stop.
type hookErrs struct {
	mu   sync.Mutex
	errs []error
}

func (h *hookErrs) add(err error) {
	if err != nil {
		h.mu.Lock()
		h.errs = append(h.errs, err)
		h.mu.Unlock()
	}
}

func (h *hookErrs) check(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, err := range h.errs {
		t.Error(err)
	}
	h.errs = nil
}

// send does one request from a hook and returns an error unless it
// answers want.
func (e *env) send(token, method, path, body string, want int) error {
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s from a hook: %s; want %d", method, path, resp.Status, want)
	}
	return nil
}

// TestAttachmentReplacedWhileOpened: an upload that commits, and deletes
// the object it replaced, between a reader's resolving the attachment and
// its opening the object does not fail the reader: it gets the new bytes.
// Only when the attachment itself went, or its object is missing still,
// does it get a 404, which names the attachment and never the object.
func TestAttachmentReplacedWhileOpened(t *testing.T) {
	e, arts := newOpenHookEnv(t)
	alice := e.user("alice")
	var errs hookErrs
	replace := func(content string) func(string) {
		return func(string) {
			errs.add(e.send(alice, "PUT", attachmentURL("alice", "data.csv"), content, http.StatusCreated))
		}
	}
	remove := func(string) {
		errs.add(e.send(alice, "DELETE", attachmentURL("alice", "data.csv"), "", http.StatusNoContent))
	}
	lose := func(key string) { errs.add(arts.Store.Delete(context.Background(), key)) }

	// A task that takes the attachment as an input, claimed by a worker.
	attach(e, alice, "alice", "data.csv", "v0")
	task := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Inputs: []tasks.Input{{Attachment: "data.csv"}}})
	w := e.worker(alice, "h", []string{"alice"}, 1)
	claimed := w.claim(1, 0)
	if len(claimed) != 1 || claimed[0].Task.ID != task.ID {
		t.Fatalf("claimed %+v; want task %d", claimed, task.ID)
	}
	ref := claimed[0].Lease.LeaseRef

	get := func() (int, string, string, *tasks.Error) {
		status, h, body := e.fetch(alice, attachmentURL("alice", "data.csv"))
		if status != http.StatusOK {
			var answer struct{ Error *tasks.Error }
			if err := json.Unmarshal([]byte(body), &answer); err != nil || answer.Error == nil {
				t.Fatalf("GET data.csv: %d with a body that is not an error: %q", status, body)
			}
			return status, "", "", answer.Error
		}
		return status, body, h.Get("X-Mito-Sha256"), nil
	}
	fetch := func() (int, string, string, *tasks.Error) {
		status, h, body, err := w.fetchInput(ref, 0)
		return status, body, h.Get("X-Mito-Sha256"), err
	}
	const (
		noAttachment = `group alice has no attachment "data.csv"`
		bytesGone    = `group alice: the bytes of attachment "data.csv" are no longer stored`
		noInput      = "input attachment:data.csv: no such attachment in group alice"
		inputGone    = "input attachment:data.csv: the bytes of attachment data.csv of group alice are no longer stored"
	)
	for _, reader := range []struct {
		name           string
		read           func() (int, string, string, *tasks.Error)
		missing, stale string // the 404 messages: attachment gone, bytes gone
	}{
		{"user GET", get, noAttachment, bytesGone},
		{"input fetch", fetch, noInput, inputGone},
	} {
		for _, tt := range []struct {
			name        string
			hooks       []func(string)
			wantBody    string // "" for a 404
			wantMsg     string
			wantOpens   int
			wantSameKey bool // every open was of one object
		}{
			{"replaced", []func(string){replace("v1 of " + reader.name)}, "v1 of " + reader.name, "", 2, false},
			{"replaced twice", []func(string){replace("v2"), replace("v3 of " + reader.name)}, "v3 of " + reader.name, "", 3, false},
			{"replaced at every open", []func(string){replace("a"), replace("b"), replace("c"), replace("d"), replace("e")}, "", reader.stale, 4, false},
			{"bytes lost", []func(string){lose}, "", reader.stale, 1, true},
			{"deleted", []func(string){remove}, "", reader.missing, 1, true},
		} {
			t.Run(reader.name+"/"+tt.name, func(t *testing.T) {
				attach(e, alice, "alice", "data.csv", "before "+tt.name)
				arts.before(tt.hooks...)
				status, body, sum, err := reader.read()
				errs.check(t)
				opened := arts.openedKeys()
				switch {
				case tt.wantBody != "" && (err != nil || body != tt.wantBody || sum != sha(tt.wantBody)):
					t.Errorf("got %d %q sha256 %s, error %+v; want %q with sha256 %s", status, body, sum, err, tt.wantBody, sha(tt.wantBody))
				case tt.wantBody == "" && (status != http.StatusNotFound || err == nil || err.Code != tasks.ENotFound || err.Message != tt.wantMsg):
					t.Errorf("got %d %+v; want 404 %q", status, err, tt.wantMsg)
				}
				if err != nil {
					for _, key := range opened {
						if strings.Contains(err.Message, key) {
							t.Errorf("the answer %q names the object key %s", err.Message, key)
						}
					}
				}
				if len(opened) != tt.wantOpens {
					t.Errorf("opened %q; want %d opens", opened, tt.wantOpens)
				}
				if distinct := len(slices.Compact(slices.Clone(opened))); (distinct == 1) != tt.wantSameKey {
					t.Errorf("opened %q; want them all of one key: %v", opened, tt.wantSameKey)
				}
				arts.before()
			})
		}
	}
}

// TestQuotaPrecheckAllowsWhatTheStoreAllows: with the quota lowered under
// the usage, the early check lets through what the store does, an upload
// that does not add bytes, and refuses what adds, in the store's words.
func TestQuotaPrecheckAllowsWhatTheStoreAllows(t *testing.T) {
	e, _ := newAttachmentEnv(t)
	alice := e.user("alice")
	attach(e, alice, "alice", "big", strings.Repeat("x", 50))
	attach(e, alice, "alice", "other", strings.Repeat("x", 40))
	e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})
	w := e.worker(alice, "h", []string{"alice"}, 1)
	ref := w.claim(1, 0)[0].Lease.LeaseRef
	if status, err := w.putArtifact(ref, "out.bin", strings.Repeat("y", 30)); status != http.StatusCreated {
		t.Fatalf("artifact under no quota: %d %+v", status, err)
	}
	e.must(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 10}, nil)
	used := int64(120)

	chunked := func(key, body string) (int, *tasks.Error) {
		req, _ := http.NewRequest("PUT", e.srv.URL+attachmentURL("alice", key), io.MultiReader(strings.NewReader(body)))
		req.Header.Set("Authorization", "Bearer "+alice)
		req.ContentLength = -1
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var answer struct{ Error *tasks.Error }
		_ = json.NewDecoder(resp.Body).Decode(&answer)
		return resp.StatusCode, answer.Error
	}
	put := func(key, body string) (int, *tasks.Error) {
		return e.call(alice, "PUT", attachmentURL("alice", key), body, nil)
	}
	relay := func(name, body string) (int, *tasks.Error) { return w.putArtifact(ref, name, body) }
	const hint = "; delete attachments or task artifacts (mito client tasks artifacts delete), or ask a global admin to raise the quota"

	for _, tt := range []struct {
		name    string
		upload  func(string, string) (int, *tasks.Error)
		key     string
		size    int
		delta   int64
		wantMsg string // "" when it is stored
	}{
		{"shrink an attachment", put, "big", 20, -30, ""},
		{"shrink an attachment, length unknown", chunked, "big", 15, -5, ""},
		{"empty attachment", put, "done", 0, 0, ""},
		{"empty attachment, length unknown", chunked, "done2", 0, 0, ""},
		{"replace with as much", put, "other", 40, 0, ""},
		{"empty artifact", relay, "done", 0, 0, ""},
		{"shrink an artifact", relay, "out.bin", 10, -20, ""},
		{"grow an attachment", put, "other", 41, 0,
			`group alice: storing attachment "other" (41 B) would take its usage to 66 B, over its quota of 10 B` + hint},
		{"grow an attachment, length unknown", chunked, "other", 64 << 10, 0,
			`group alice: storing attachment "other" (at least `},
		{"new attachment", put, "new", 1, 0,
			`group alice: storing attachment "new" (1 B) would take its usage to 66 B, over its quota of 10 B` + hint},
		{"grow an artifact", relay, "out.bin", 11, 0,
			`group alice: storing "out.bin" (11 B) would take its usage to 66 B, over its quota of 10 B` + hint},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, err := tt.upload(tt.key, strings.Repeat("z", tt.size))
			if tt.wantMsg == "" {
				if status != http.StatusCreated {
					t.Fatalf("got %d %+v; want 201", status, err)
				}
				used += tt.delta
			} else if status != http.StatusRequestEntityTooLarge || err == nil || err.Code != tasks.EQuota || !strings.HasPrefix(err.Message, tt.wantMsg) {
				t.Errorf("got %d %+v; want 413 %q", status, err, tt.wantMsg)
			}
			if g := e.group(alice, "alice"); g.UsedBytes != used {
				t.Errorf("used_bytes = %d; want %d", g.UsedBytes, used)
			}
		})
	}
}

// attachmentPage is the answer of a listing.
type attachmentPage struct {
	Attachments []tasks.Attachment `json:"attachments"`
	NextAfter   *string            `json:"next_after"`
}

func (e *env) listPage(token, group string, query url.Values) (int, attachmentPage, *tasks.Error) {
	e.t.Helper()
	var p attachmentPage
	status, err := e.call(token, "GET", "/api/v1/groups/"+group+"/attachments?"+query.Encode(), nil, &p)
	return status, p, err
}

func pageKeys(p attachmentPage) []string {
	var keys []string
	for _, a := range p.Attachments {
		keys = append(keys, a.Key)
	}
	return keys
}

func TestListAttachmentsPages(t *testing.T) {
	e, _ := newAttachmentEnv(t)
	alice := e.user("alice")
	all := []string{"a/1", "a/2", "b", "c/x", "c/y"}
	for _, k := range all {
		attach(e, alice, "alice", k, k)
	}
	str := func(s string) *string { return &s }

	for _, tt := range []struct {
		name     string
		query    url.Values
		want     []string
		wantNext *string
	}{
		{"default", url.Values{}, all, nil},
		{"first page", url.Values{"limit": {"2"}}, all[:2], str("a/2")},
		{"next page", url.Values{"limit": {"2"}, "after": {"a/2"}}, all[2:4], str("c/x")},
		{"last page", url.Values{"limit": {"2"}, "after": {"c/x"}}, all[4:], nil},
		{"full last page", url.Values{"limit": {"1"}, "after": {"c/x"}}, all[4:], str("c/y")},
		{"after the last", url.Values{"limit": {"1"}, "after": {"c/y"}}, nil, nil},
		{"prefix and after", url.Values{"prefix": {"c/"}, "after": {"b"}}, all[3:], nil},
		{"most", url.Values{"limit": {"10000"}}, all, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, p, err := e.listPage(alice, "alice", tt.query)
			if err != nil {
				t.Fatalf("got %d %+v", status, err)
			}
			if got := pageKeys(p); !slices.Equal(got, tt.want) || p.Attachments == nil {
				t.Errorf("keys %q; want %q (as a list, never null)", got, tt.want)
			}
			if (p.NextAfter == nil) != (tt.wantNext == nil) || (p.NextAfter != nil && *p.NextAfter != *tt.wantNext) {
				t.Errorf("next_after %v; want %v", deref(p.NextAfter), deref(tt.wantNext))
			}
		})
	}

	for _, tt := range []struct {
		name  string
		query url.Values
		field string
	}{
		{"prefix with a NUL", url.Values{"prefix": {"a\x00"}}, "prefix"},
		{"prefix of invalid UTF-8", url.Values{"prefix": {"a\xff"}}, "prefix"},
		{"prefix with a control character", url.Values{"prefix": {"a\x1b"}}, "prefix"},
		{"prefix too long", url.Values{"prefix": {strings.Repeat("p", tasks.MaxPathLen+1)}}, "prefix"},
		{"after with a NUL", url.Values{"after": {"a\x00"}}, "after"},
		{"limit 0", url.Values{"limit": {"0"}}, "limit"},
		{"limit over the most", url.Values{"limit": {"10001"}}, "limit"},
		{"limit negative", url.Values{"limit": {"-1"}}, "limit"},
		{"limit not a number", url.Values{"limit": {"all"}}, "limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, _, err := e.listPage(alice, "alice", tt.query)
			if status != http.StatusBadRequest || err == nil || err.Code != tasks.EInvalid || err.Field != tt.field {
				t.Errorf("got %d %+v; want 400 invalid naming %s", status, err, tt.field)
			}
		})
	}
	// The longest prefix a key can have is fine.
	if status, p, err := e.listPage(alice, "alice", url.Values{"prefix": {strings.Repeat("p", tasks.MaxPathLen)}}); err != nil || len(p.Attachments) != 0 {
		t.Errorf("prefix of %d bytes: %d %+v %+v; want an empty list", tasks.MaxPathLen, status, err, p)
	}
}

// TestListAttachmentsDefaultLimit: without limit a page holds 1000.
func TestListAttachmentsDefaultLimit(t *testing.T) {
	e, _ := newAttachmentEnv(t)
	alice := e.user("alice")
	const n = 1001
	var wg sync.WaitGroup
	var errs hookErrs
	keys := make(chan string)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				errs.add(e.send(alice, "PUT", attachmentURL("alice", k), "", http.StatusCreated))
			}
		}()
	}
	for i := range n {
		keys <- fmt.Sprintf("k%04d", i)
	}
	close(keys)
	wg.Wait()
	errs.check(t)

	_, p, err := e.listPage(alice, "alice", url.Values{})
	if err != nil || len(p.Attachments) != 1000 || p.NextAfter == nil || *p.NextAfter != "k0999" {
		t.Fatalf("first page: %+v, %d attachments, next_after %v; want 1000 and k0999", err, len(p.Attachments), deref(p.NextAfter))
	}
	_, p, err = e.listPage(alice, "alice", url.Values{"after": {"k0999"}})
	if got := pageKeys(p); err != nil || !slices.Equal(got, []string{"k1000"}) || p.NextAfter != nil {
		t.Errorf("second page: %+v, %q, next_after %v; want k1000 alone and no next page", err, got, deref(p.NextAfter))
	}
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return fmt.Sprintf("%q", *s)
}
