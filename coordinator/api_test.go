package coordinator_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

func TestBadInputIsRefusedNamingTheFieldAndStoresNothing(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	big := `{"group":"alice","command":["echo","` + strings.Repeat("x", 9<<20) + `"]}`
	cases := []struct {
		name   string
		path   string
		body   any
		status int
		field  string // must appear in the message
	}{
		{"unknown group", "/api/v1/tasks", tasks.Spec{Group: "nosuch", Command: []string{"true"}}, 404, "group"},
		{"missing group", "/api/v1/tasks", tasks.Spec{Command: []string{"true"}}, 400, "group"},
		{"empty command", "/api/v1/tasks", tasks.Spec{Group: "alice"}, 400, "command"},
		{"empty program", "/api/v1/tasks", tasks.Spec{Group: "alice", Command: []string{""}}, 400, "command[0]"},
		{"negative timeout", "/api/v1/tasks", `{"group":"alice","command":["true"],"timeout":"-5s"}`, 400, "timeout"},
		{"bad timeout", "/api/v1/tasks", `{"group":"alice","command":["true"],"timeout":"soon"}`, 400, "timeout: \"soon\" is not a duration"},
		{"huge timeout", "/api/v1/tasks", `{"group":"alice","command":["true"],"timeout":1e300}`, 400, "timeout"},
		{"negative attempts", "/api/v1/tasks", `{"group":"alice","command":["true"],"max_attempts":-1}`, 400, "max_attempts"},
		{"malformed JSON", "/api/v1/tasks", `{"group":"alice","command":`, 400, "JSON"},
		{"not JSON", "/api/v1/tasks", `group=alice`, 400, "JSON"},
		{"wrong type", "/api/v1/tasks", `{"group":"alice","command":"true"}`, 400, "command: must be an array"},
		{"unknown field", "/api/v1/tasks", `{"group":"alice","command":["true"],"comand":["x"]}`, 400, "comand"},
		{"trailing data", "/api/v1/tasks", `{"group":"alice","command":["true"]} {}`, 400, "after the JSON value"},
		{"trailing brace", "/api/v1/tasks", `{"group":"alice","command":["true"]} }`, 400, "after the JSON value"},
		{"empty body", "/api/v1/tasks", ``, 400, "empty"},
		{"oversized body", "/api/v1/tasks", big, 413, "limit"},
		{"NUL in argv", "/api/v1/tasks", tasks.Spec{Group: "alice", Command: []string{"echo", "a\x00b"}}, 400, "command[1]"},
		{"NUL in env", "/api/v1/tasks", tasks.Spec{Group: "alice", Command: []string{"true"}, Env: map[string]string{"A": "x\x00"}}, 400, "env"},
		{"reserved env", "/api/v1/tasks", tasks.Spec{Group: "alice", Command: []string{"true"}, Env: map[string]string{"MITO_TASK_ID": "1"}}, 400, "env"},
		{"bad tag", "/api/v1/tasks", tasks.Spec{Group: "alice", Command: []string{"true"}, Tags: []string{"has space"}}, 400, "tags"},
		{"command and shell", "/api/v1/tasks", tasks.Spec{Group: "alice", Command: []string{"true"}, Shell: "true"}, 400, "command"},
		{"batch with one bad spec", "/api/v1/tasks/batch", map[string]any{"tasks": []tasks.Spec{
			{Group: "alice", Command: []string{"true"}},
			{Group: "alice"},
		}}, 400, "tasks[1].command"},
		{"batch with unknown group", "/api/v1/tasks/batch", map[string]any{"tasks": []tasks.Spec{
			{Group: "alice", Command: []string{"true"}},
			{Group: "nosuch", Command: []string{"true"}},
		}}, 404, "tasks[1].group"},
		{"empty batch", "/api/v1/tasks/batch", map[string]any{"tasks": []tasks.Spec{}}, 400, "tasks"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, err := e.call(alice, "POST", tc.path, tc.body, nil)
			if status != tc.status || err == nil {
				t.Fatalf("got status %d; want %d", status, tc.status)
			}
			if !strings.Contains(err.Message, tc.field) {
				t.Errorf("message %q does not name %q", err.Message, tc.field)
			}
		})
	}
	var list struct{ Tasks []tasks.Task }
	e.must(alice, "GET", "/api/v1/tasks", nil, &list)
	if len(list.Tasks) != 0 {
		t.Errorf("%d tasks stored after only bad submissions; want 0", len(list.Tasks))
	}
}

func TestQueryParametersAreValidated(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	for path, field := range map[string]string{
		"/api/v1/tasks?state=done":        "state",
		"/api/v1/tasks?limit=0":           "limit",
		"/api/v1/tasks?limit=x":           "limit",
		"/api/v1/tasks?since=yesterday":   "since",
		"/api/v1/tasks/abc":               "id",
		"/api/v1/tasks?group=bad%20group": "group",
	} {
		status, err := e.call(alice, "GET", path, nil, nil)
		if status != http.StatusBadRequest || err == nil || !strings.Contains(err.Message, field) {
			t.Errorf("GET %s: %d %v; want 400 naming %s", path, status, err, field)
		}
	}
}

func TestListFiltersAndPages(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	for i := range 5 {
		labels := []string{"sweep"}
		if i%2 == 0 {
			labels = append(labels, "even")
		}
		e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Labels: labels})
	}
	var page struct {
		Tasks []tasks.Task
		Next  tasks.ID
	}
	e.must(alice, "GET", "/api/v1/tasks?label=even", nil, &page)
	if len(page.Tasks) != 3 {
		t.Errorf("label=even: %d tasks; want 3", len(page.Tasks))
	}
	e.must(alice, "GET", "/api/v1/tasks?limit=2", nil, &page)
	if len(page.Tasks) != 2 || page.Next != page.Tasks[1].ID {
		t.Fatalf("first page: %d tasks, next %d", len(page.Tasks), page.Next)
	}
	seen := len(page.Tasks)
	for page.Next != 0 {
		before := page.Next
		page.Tasks, page.Next = nil, 0
		e.must(alice, "GET", "/api/v1/tasks?limit=2&before="+itoa(int64(before)), nil, &page)
		seen += len(page.Tasks)
	}
	if seen != 5 {
		t.Errorf("paged through %d tasks; want 5", seen)
	}
}
