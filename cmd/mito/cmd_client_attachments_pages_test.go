package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mitolab/mito/tasks"
)

// pagedAttachments answers listings a page of 2 at a time, as the
// coordinator does with its limit, and records the queries.
type pagedAttachments struct {
	keys    []string // sorted
	mu      sync.Mutex
	queries []url.Values
}

func (p *pagedAttachments) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/api/v1/groups/lab/attachments" {
		apiError(w, http.StatusNotFound, tasks.ENotFound, "no route %s %s", r.Method, r.URL.Path)
		return
	}
	q := r.URL.Query()
	p.mu.Lock()
	p.queries = append(p.queries, q)
	p.mu.Unlock()
	out := struct {
		Attachments []tasks.Attachment `json:"attachments"`
		NextAfter   string             `json:"next_after,omitempty"`
	}{Attachments: []tasks.Attachment{}}
	for _, k := range p.keys {
		if strings.HasPrefix(k, q.Get("prefix")) && k > q.Get("after") && len(out.Attachments) < 2 {
			out.Attachments = append(out.Attachments, tasks.Attachment{Group: "lab", Key: k, Size: 1})
		}
	}
	if len(out.Attachments) == 2 {
		out.NextAfter = out.Attachments[1].Key
	}
	_ = json.NewEncoder(w).Encode(out)
}

func TestAttachmentsListPages(t *testing.T) {
	tests := []struct {
		name     string
		keys     []string
		prefix   string
		want     []string
		wantReqs int
	}{
		{"pages", []string{"a", "b", "c", "d", "e"}, "", []string{"a", "b", "c", "d", "e"}, 3},
		{"last page full", []string{"a", "b", "c", "d"}, "", []string{"a", "b", "c", "d"}, 3},
		{"one page", []string{"a"}, "", []string{"a"}, 1},
		{"with a prefix", []string{"a", "d/1", "d/2", "d/3", "e"}, "d/", []string{"d/1", "d/2", "d/3"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &pagedAttachments{keys: tt.keys}
			out, errOut, code := runClientOn(t, h, t.TempDir(), "attachments", "list", "-g", "lab", "-q", "--prefix", tt.prefix)
			if got := strings.Fields(out); code != 0 || !slices.Equal(got, tt.want) {
				t.Errorf("list -q: exit %d, %q %q; want %q", code, out, errOut, tt.want)
			}
			if len(h.queries) != tt.wantReqs {
				t.Errorf("sent %d listings %v; want %d", len(h.queries), h.queries, tt.wantReqs)
			}
			for i, q := range h.queries {
				if q.Get("prefix") != tt.prefix {
					t.Errorf("listing %d: prefix %q; want %q", i, q.Get("prefix"), tt.prefix)
				}
				if i > 0 && q.Get("after") != tt.want[2*i-1] {
					t.Errorf("listing %d: after %q; want %q", i, q.Get("after"), tt.want[2*i-1])
				}
			}
		})
	}
}
