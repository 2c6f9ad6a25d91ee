package coordinator_test

import (
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestAuthorizationMatrix walks every user endpoint as every kind of
// caller and checks who is let in. The group "lab" is administered by
// gadmin; owner (who submitted the task) and writer have write, reader has
// read; stranger has no role; admin is a global admin with no role in lab.
func TestAuthorizationMatrix(t *testing.T) {
	var skew atomic.Int64 // moves the coordinator's clock
	e := newEnv(t, coordinator.Config{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})

	tok := map[string]string{"admin": e.admin}
	for _, u := range []string{"gadmin", "owner", "writer", "reader", "stranger"} {
		tok[u] = e.user(u)
	}
	e.must(tok["gadmin"], "POST", "/api/v1/groups", map[string]string{"name": "lab"}, nil)
	for u, role := range map[string]string{"owner": "write", "writer": "write", "reader": "read"} {
		e.must(tok["gadmin"], "PUT", "/api/v1/groups/lab/members/"+u, map[string]string{"role": role}, nil)
	}
	task := e.submit(tok["owner"], tasks.Spec{Group: "lab", Command: []string{"true"}})
	done := e.submit(tok["owner"], tasks.Spec{Group: "lab", Command: []string{"true"}})
	e.must(tok["owner"], "POST", fmt.Sprintf("/api/v1/tasks/%d/cancel", done.ID), nil, nil)

	// An expired token: log in with a 1h token, then move the clock past it.
	e.user("target")
	var lr struct{ Token string }
	e.must("", "POST", "/api/v1/auth/login", map[string]any{"user": "writer", "password": "writer-password", "expires": "1h"}, &lr)
	tok["expired"] = lr.Token
	tok["anonymous"] = ""

	callers := []string{"owner", "reader", "writer", "gadmin", "stranger", "admin", "anonymous", "expired"}
	signedIn := []string{"owner", "reader", "writer", "gadmin", "stranger", "admin"}
	readers := []string{"owner", "reader", "writer", "gadmin"}
	writers := []string{"owner", "writer", "gadmin"}
	only := func(who ...string) []string { return who }

	id := itoa(int64(task.ID))
	doneID := itoa(int64(done.ID))
	type endpoint struct {
		method, path string
		body         func(caller string) any
		allowed      []string
	}
	spec := func(string) any { return tasks.Spec{Group: "lab", Command: []string{"true"}} }
	endpoints := []endpoint{
		{"GET", "/api/v1/auth/whoami", nil, signedIn},
		{"GET", "/api/v1/users", nil, only("admin")},
		{"POST", "/api/v1/users", func(c string) any { return map[string]any{"name": "new-" + c, "password": "long-enough-pw"} }, only("admin")},
		{"POST", "/api/v1/users/target/disable", nil, only("admin")},
		{"POST", "/api/v1/users/target/enable", nil, only("admin")},
		{"POST", "/api/v1/users/target/password", func(string) any { return map[string]string{"password": "another-password"} }, only("admin")},
		{"GET", "/api/v1/groups", nil, signedIn},
		{"POST", "/api/v1/groups", func(c string) any { return map[string]string{"name": "g-" + c} }, signedIn},
		{"GET", "/api/v1/groups/lab", nil, append(readers, "admin")}, // global admins set quotas, so they see any group
		{"PUT", "/api/v1/groups/lab/members/target", func(string) any { return map[string]string{"role": "read"} }, only("gadmin")},
		{"DELETE", "/api/v1/groups/lab/members/target", nil, only("gadmin")},
		{"POST", "/api/v1/tasks", spec, writers},
		{"POST", "/api/v1/tasks/batch", func(c string) any { return map[string]any{"tasks": []any{spec(c)}} }, writers},
		{"GET", "/api/v1/tasks", nil, signedIn}, // filtered to the caller's groups
		{"GET", "/api/v1/tasks?group=lab", nil, readers},
		{"GET", "/api/v1/tasks/" + id, nil, readers},
		{"GET", "/api/v1/tasks/" + id + "/logs", nil, readers},
		{"GET", "/api/v1/tasks/" + id + "/artifacts", nil, readers},
		{"POST", "/api/v1/tasks/" + doneID + "/retry", nil, writers},
		{"GET", "/api/v1/hosts", nil, signedIn},
		// Cancel last: it changes the task.
		{"POST", "/api/v1/tasks/" + id + "/cancel", nil, writers},
	}

	skew.Store(int64(2 * time.Hour)) // the 1h token has expired; the others last 30 days
	for _, ep := range endpoints {
		for _, caller := range callers {
			t.Run(ep.method+" "+ep.path+" as "+caller, func(t *testing.T) {
				var body any
				if ep.body != nil {
					body = ep.body(caller)
				}
				path := ep.path
				if path == "/api/v1/tasks/"+id+"/cancel" {
					// Each caller gets a fresh task to cancel.
					fresh := e.submit(tok["owner"], tasks.Spec{Group: "lab", Command: []string{"true"}})
					path = fmt.Sprintf("/api/v1/tasks/%d/cancel", fresh.ID)
				}
				status, err := e.call(tok[caller], ep.method, path, body, nil)
				allowed := false
				for _, a := range ep.allowed {
					allowed = allowed || a == caller
				}
				switch {
				case allowed && err != nil:
					t.Errorf("got %d %s; want allowed", status, err.Message)
				case !allowed && err == nil:
					t.Errorf("got %d; want denied", status)
				case !allowed && (caller == "anonymous" || caller == "expired") && status != http.StatusUnauthorized:
					t.Errorf("got %d; want 401", status)
				case !allowed && caller != "anonymous" && caller != "expired" && status != http.StatusForbidden && status != http.StatusNotFound:
					t.Errorf("got %d; want 403 or 404", status)
				}
			})
		}
	}

	// Strangers learn nothing: a task of another group is "not found",
	// exactly like a task that does not exist.
	_, err1 := e.call(tok["stranger"], "GET", "/api/v1/tasks/"+id, nil, nil)
	_, err2 := e.call(tok["stranger"], "GET", "/api/v1/tasks/999999", nil, nil)
	if err1 == nil || err2 == nil || err1.Code != tasks.ENotFound || err2.Code != tasks.ENotFound {
		t.Errorf("stranger on existing/missing task: %v / %v; want not_found for both", err1, err2)
	}
}

func TestTokensAreRevocable(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	second := e.login("alice", "alice-password")
	e.must(alice, "POST", "/api/v1/auth/logout", nil, nil)
	if status, _ := e.call(alice, "GET", "/api/v1/auth/whoami", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("after logout: %d; want 401", status)
	}
	e.must(second, "GET", "/api/v1/auth/whoami", nil, nil) // other sessions live on

	e.must(e.admin, "POST", "/api/v1/users/alice/disable", nil, nil)
	if status, _ := e.call(second, "GET", "/api/v1/auth/whoami", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("after disable: %d; want 401", status)
	}
	if status, _ := e.call("", "POST", "/api/v1/auth/login", map[string]string{"user": "alice", "password": "alice-password"}, nil); status != http.StatusUnauthorized {
		t.Errorf("login of a disabled user: %d; want 401", status)
	}
	e.must(e.admin, "POST", "/api/v1/users/alice/enable", nil, nil)
	third := e.login("alice", "alice-password")
	e.must(third, "PUT", "/api/v1/auth/password", map[string]string{"old_password": "alice-password", "new_password": "brand-new-password"}, nil)
	if status, _ := e.call(third, "GET", "/api/v1/auth/whoami", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("after password change: %d; want 401 (tokens revoked)", status)
	}
	e.login("alice", "brand-new-password")
}

func TestPasswordHashing(t *testing.T) {
	h, err := coordinator.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !coordinator.CheckPassword(h, "correct horse") {
		t.Error("right password refused")
	}
	if coordinator.CheckPassword(h, "correct hors") {
		t.Error("wrong password accepted")
	}
	h2, _ := coordinator.HashPassword("correct horse")
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	if coordinator.CheckPassword("", "") || coordinator.CheckPassword("$argon2id$garbage", "x") {
		t.Error("malformed hash accepted")
	}
}
