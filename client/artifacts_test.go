package client_test

import (
	"net/url"
	"reflect"
	"testing"

	"github.com/mitolab/mito/tasks"
)

func TestDeleteArtifacts(t *testing.T) {
	t.Parallel()
	const answer = `{"deleted":[{"task":7,"attempt":1,"name":"a b.txt","size":3,"sha256":"ab"}]}`
	tests := []struct {
		name    string
		attempt int
		names   []string
		query   url.Values
	}{
		{"everything", 0, nil, url.Values{}},
		{"one attempt", 2, nil, url.Values{"attempt": {"2"}}},
		{"names, cleaned", 0, []string{"a b.txt", "./out/./x&y"}, url.Values{"name": {"a b.txt", "out/x&y"}}},
		{"names of one attempt", 1, []string{"a"}, url.Values{"attempt": {"1"}, "name": {"a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, got := fake(t, 200, answer, nil)
			deleted, err := c.DeleteArtifacts(t.Context(), 7, tt.attempt, tt.names)
			if err != nil {
				t.Fatalf("got error %v; want none", err)
			}
			want := []tasks.Artifact{{Task: 7, Attempt: 1, Name: "a b.txt", Size: 3, SHA256: "ab"}}
			if !reflect.DeepEqual(deleted, want) {
				t.Errorf("got %+v; want %+v", deleted, want)
			}
			if len(*got) != 1 {
				t.Fatalf("got %d requests; want 1", len(*got))
			}
			r := (*got)[0]
			if r.Method != "DELETE" || r.Path != "/api/v1/tasks/7/artifacts" || !reflect.DeepEqual(r.Query, tt.query) {
				t.Errorf("got %s %s ?%v; want DELETE /api/v1/tasks/7/artifacts ?%v", r.Method, r.Path, r.Query, tt.query)
			}
		})
	}

	// Refused before anything is sent.
	for _, tt := range []struct {
		name    string
		attempt int
		names   []string
	}{
		{"negative attempt", -1, nil},
		{"climbing name", 0, []string{"../x"}},
		{"absolute name", 0, []string{"/etc/passwd"}},
		{"empty name", 0, []string{""}},
	} {
		c, got := fake(t, 200, answer, nil)
		_, err := c.DeleteArtifacts(t.Context(), 7, tt.attempt, tt.names)
		if tasks.ErrorCode(err) != tasks.EInvalid || len(*got) != 0 {
			t.Errorf("%s: got %v after %d requests; want invalid, none sent", tt.name, err, len(*got))
		}
	}

	// The coordinator's refusal comes back as it is.
	c, _ := fake(t, 409, `{"error":{"code":"conflict","message":"task 7 is running"}}`, nil)
	if _, err := c.DeleteArtifacts(t.Context(), 7, 0, nil); tasks.ErrorCode(err) != tasks.EConflict {
		t.Errorf("running task: got %v; want conflict", err)
	}
}
