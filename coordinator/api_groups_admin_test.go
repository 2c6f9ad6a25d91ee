package coordinator_test

import (
	"net/http"
	"testing"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

// TestGlobalAdminSeesAnyGroup: a global admin sets quotas on groups they
// are no member of, so they must be able to read those groups' usage;
// other users still see only their own groups.
func TestGlobalAdminSeesAnyGroup(t *testing.T) {
	e := newEnv(t, coordinator.Config{})
	e.user("alice") // and her personal group
	bob := e.user("bob")
	var g tasks.Group
	if status, err := e.call(e.admin, "PUT", "/api/v1/groups/alice/quota", map[string]int64{"bytes": 1 << 20}, &g); status != http.StatusOK {
		t.Fatalf("set quota: %d %+v", status, err)
	}
	g = tasks.Group{}
	if status, err := e.call(e.admin, "GET", "/api/v1/groups/alice", nil, &g); status != http.StatusOK || g.QuotaBytes != 1<<20 || g.Role != tasks.RoleNone || len(g.Members) != 1 {
		t.Errorf("admin reads alice's group: %d %+v %+v; want it, with the quota, alice as member and no role of the admin's", status, err, g)
	}
	if status, err := e.call(bob, "GET", "/api/v1/groups/alice", nil, nil); status != http.StatusNotFound || err == nil || err.Code != tasks.ENotFound {
		t.Errorf("bob reads alice's group: %d %+v; want 404", status, err)
	}
	if status, err := e.call(e.admin, "GET", "/api/v1/groups/nosuch", nil, nil); status != http.StatusNotFound {
		t.Errorf("admin reads a missing group: %d %+v; want 404", status, err)
	}
}
