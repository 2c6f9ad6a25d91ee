package storetest

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// mkUser creates a plain user.
func mkUser(t *testing.T, s store.Store, name string) {
	t.Helper()
	ok(t, s.CreateUser(t.Context(), tasks.User{Name: name, PasswordHash: "hash-" + name}), "CreateUser "+name)
}

func testUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	n, err := s.CountUsers(ctx)
	ok(t, err, "CountUsers")
	if n != 0 {
		t.Fatalf("CountUsers of an empty store = %d; want 0", n)
	}

	// A creation time in another zone must come back as the same instant in UTC.
	zone := time.FixedZone("east", 2*3600)
	zed := tasks.User{Name: "zed", Admin: true, PasswordHash: "$argon2id$zed", CreatedAt: t0.In(zone)}
	ok(t, s.CreateUser(ctx, zed), "CreateUser zed")
	before := time.Now().Add(-time.Second)
	ok(t, s.CreateUser(ctx, tasks.User{Name: "alice", PasswordHash: "$argon2id$alice"}), "CreateUser alice")
	after := time.Now().Add(time.Second)

	got, err := s.GetUser(ctx, "zed")
	ok(t, err, "GetUser zed")
	if got.Name != "zed" || !got.Admin || got.Disabled || got.PasswordHash != "$argon2id$zed" {
		t.Errorf("GetUser zed = %+v; want admin zed with its hash", got)
	}
	wantTime(t, got.CreatedAt, t0, "zed.CreatedAt")

	alice, err := s.GetUser(ctx, "alice")
	ok(t, err, "GetUser alice")
	if alice.CreatedAt.Before(before) || alice.CreatedAt.After(after) {
		t.Errorf("alice.CreatedAt = %v; want the time of CreateUser, since none was given", alice.CreatedAt)
	}

	wantCode(t, s.CreateUser(ctx, tasks.User{Name: "alice"}), tasks.EConflict, "CreateUser alice twice")
	_, err = s.GetUser(ctx, "nobody")
	wantCode(t, err, tasks.ENotFound, "GetUser nobody")

	users, err := s.ListUsers(ctx)
	ok(t, err, "ListUsers")
	if len(users) != 2 || users[0].Name != "alice" || users[1].Name != "zed" {
		t.Fatalf("ListUsers = %+v; want alice, zed", users)
	}
	if users[1].PasswordHash != "$argon2id$zed" || !users[1].Admin {
		t.Errorf("ListUsers[1] = %+v; want zed in full", users[1])
	}

	n, err = s.CountUsers(ctx)
	ok(t, err, "CountUsers")
	if n != 2 {
		t.Errorf("CountUsers = %d; want 2", n)
	}

	// Every user gets a personal group in which they are admin.
	g, err := s.GetGroup(ctx, "alice")
	ok(t, err, "GetGroup alice")
	if want := []tasks.Member{{User: "alice", Role: tasks.RoleAdmin}}; !reflect.DeepEqual(g.Members, want) {
		t.Errorf("personal group members = %+v; want %+v", g.Members, want)
	}
}

// wantUser fails unless user name has exactly the admin flag, disabled
// flag and password hash given, and still its creation time.
func wantUser(t *testing.T, s store.Store, name string, admin, disabled bool, hash string, created time.Time, what string) {
	t.Helper()
	u, err := s.GetUser(t.Context(), name)
	ok(t, err, what+": GetUser "+name)
	if u.Admin != admin || u.Disabled != disabled || u.PasswordHash != hash {
		t.Errorf("%s: %s = admin %t, disabled %t, hash %q; want admin %t, disabled %t, hash %q",
			what, name, u.Admin, u.Disabled, u.PasswordHash, admin, disabled, hash)
	}
	wantTime(t, u.CreatedAt, created, what+": "+name+".CreatedAt")
}

// wantTokens fails unless exactly the tokens of hashes live, of the ones
// in all.
func wantTokens(t *testing.T, s store.Store, all []string, live []string, what string) {
	t.Helper()
	for _, h := range all {
		_, _, err := s.LookupToken(t.Context(), h)
		if slices.Contains(live, h) {
			ok(t, err, what+": LookupToken "+h)
		} else {
			wantCode(t, err, tasks.ENotFound, what+": LookupToken "+h)
		}
	}
}

// testSetUser checks that SetUserPassword and SetUserDisabled each change
// their own column only, so that one cannot undo the other from a stale
// copy of the user, and that they revoke tokens as the contract says.
func testSetUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok(t, s.CreateUser(ctx, tasks.User{Name: "zed", Admin: true, PasswordHash: "h0", CreatedAt: t0}), "CreateUser zed")
	ok(t, s.CreateUser(ctx, tasks.User{Name: "bob", PasswordHash: "hb", CreatedAt: t0}), "CreateUser bob")
	token := func(hash, user string) {
		t.Helper()
		ok(t, s.CreateToken(ctx, tasks.Token{Hash: hash, User: user, CreatedAt: t0}), "CreateToken "+hash)
	}
	all := []string{"z1", "z2", "z3", "z4", "b1"}
	token("z1", "zed")
	token("z2", "zed")
	token("b1", "bob")

	ok(t, s.SetUserDisabled(ctx, "zed", true), "SetUserDisabled zed true")
	wantUser(t, s, "zed", true, true, "h0", t0, "after disabling")
	wantTokens(t, s, all, []string{"b1"}, "after disabling zed")
	ok(t, s.SetUserDisabled(ctx, "zed", true), "SetUserDisabled zed true again")
	wantUser(t, s, "zed", true, true, "h0", t0, "after disabling twice")

	// A password change after the disabling, as from a request that read
	// zed before it, must leave zed disabled.
	ok(t, s.SetUserPassword(ctx, "zed", "h1"), "SetUserPassword zed while disabled")
	wantUser(t, s, "zed", true, true, "h1", t0, "after a password change while disabled")

	token("z3", "zed")
	ok(t, s.SetUserDisabled(ctx, "zed", false), "SetUserDisabled zed false")
	wantUser(t, s, "zed", true, false, "h1", t0, "after enabling")
	wantTokens(t, s, all, []string{"z3", "b1"}, "after enabling zed")

	token("z4", "zed")
	ok(t, s.SetUserPassword(ctx, "zed", "h2"), "SetUserPassword zed")
	wantUser(t, s, "zed", true, false, "h2", t0, "after a password change")
	wantTokens(t, s, all, []string{"b1"}, "after zed's password change")
	wantUser(t, s, "bob", false, false, "hb", t0, "after zed's changes")

	wantCode(t, s.SetUserPassword(ctx, "nobody", "h"), tasks.ENotFound, "SetUserPassword nobody")
	wantCode(t, s.SetUserDisabled(ctx, "nobody", true), tasks.ENotFound, "SetUserDisabled nobody true")
	wantCode(t, s.SetUserDisabled(ctx, "nobody", false), tasks.ENotFound, "SetUserDisabled nobody false")
	_, err := s.GetUser(ctx, "nobody")
	wantCode(t, err, tasks.ENotFound, "GetUser after the refused changes")
}

func testNameNamespace(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkUser(t, s, "alice")

	_, err := s.CreateGroup(ctx, "alice", "alice")
	wantCode(t, err, tasks.EConflict, "CreateGroup named like a user")

	g, err := s.CreateGroup(ctx, "lab", "alice")
	ok(t, err, "CreateGroup lab")
	if g.Name != "lab" || g.CreatedAt.IsZero() {
		t.Errorf("CreateGroup = %+v; want lab with its creation time", g)
	}
	_, err = s.CreateGroup(ctx, "lab", "alice")
	wantCode(t, err, tasks.EConflict, "CreateGroup lab twice")

	// A user may not take a group's name, and the failed attempt leaves
	// nothing behind.
	wantCode(t, s.CreateUser(ctx, tasks.User{Name: "lab"}), tasks.EConflict, "CreateUser named like a group")
	_, err = s.GetUser(ctx, "lab")
	wantCode(t, err, tasks.ENotFound, "GetUser after the refused CreateUser")
	lab, err := s.GetGroup(ctx, "lab")
	ok(t, err, "GetGroup lab")
	if want := []tasks.Member{{User: "alice", Role: tasks.RoleAdmin}}; !reflect.DeepEqual(lab.Members, want) {
		t.Errorf("lab members = %+v; want only its creator %+v", lab.Members, want)
	}

	_, err = s.CreateGroup(ctx, "x", "ghost")
	wantCode(t, err, tasks.ENotFound, "CreateGroup by a missing user")
	_, err = s.GetGroup(ctx, "x")
	wantCode(t, err, tasks.ENotFound, "GetGroup after the refused CreateGroup")
}

func testGroupsAndRoles(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		mkUser(t, s, u)
	}
	_, err := s.CreateGroup(ctx, "lab", "alice")
	ok(t, err, "CreateGroup")
	ok(t, s.SetMember(ctx, "lab", "carol", tasks.RoleRead), "SetMember carol")
	ok(t, s.SetMember(ctx, "lab", "bob", tasks.RoleWrite), "SetMember bob")
	ok(t, s.SetMember(ctx, "lab", "carol", tasks.RoleAdmin), "SetMember carol again")
	wantCode(t, s.SetMember(ctx, "nolab", "bob", tasks.RoleRead), tasks.ENotFound, "SetMember in a missing group")
	wantCode(t, s.SetMember(ctx, "lab", "ghost", tasks.RoleRead), tasks.ENotFound, "SetMember of a missing user")

	g, err := s.GetGroup(ctx, "lab")
	ok(t, err, "GetGroup")
	want := []tasks.Member{{User: "alice", Role: tasks.RoleAdmin}, {User: "bob", Role: tasks.RoleWrite}, {User: "carol", Role: tasks.RoleAdmin}}
	if !reflect.DeepEqual(g.Members, want) {
		t.Errorf("GetGroup members = %+v; want %+v", g.Members, want)
	}
	_, err = s.GetGroup(ctx, "nolab")
	wantCode(t, err, tasks.ENotFound, "GetGroup missing")

	for _, c := range []struct {
		user, group string
		want        tasks.Role
		code        tasks.Code
	}{
		{"alice", "lab", tasks.RoleAdmin, ""},
		{"bob", "lab", tasks.RoleWrite, ""},
		{"dave", "lab", tasks.RoleNone, ""},
		{"ghost", "lab", tasks.RoleNone, ""},
		{"bob", "bob", tasks.RoleAdmin, ""},
		{"bob", "alice", tasks.RoleNone, ""},
		{"bob", "nolab", tasks.RoleNone, tasks.ENotFound},
	} {
		got, err := s.Role(ctx, c.user, c.group)
		wantCode(t, err, c.code, "Role("+c.user+", "+c.group+")")
		if got != c.want {
			t.Errorf("Role(%s, %s) = %v; want %v", c.user, c.group, got, c.want)
		}
	}

	groups, err := s.ListUserGroups(ctx, "bob")
	ok(t, err, "ListUserGroups")
	if len(groups) != 2 || groups[0].Name != "bob" || groups[0].Role != tasks.RoleAdmin ||
		groups[1].Name != "lab" || groups[1].Role != tasks.RoleWrite {
		t.Errorf("ListUserGroups(bob) = %+v; want bob (admin), lab (write)", groups)
	}
	for _, g := range groups {
		if g.CreatedAt.IsZero() {
			t.Errorf("ListUserGroups(bob): group %s has no creation time", g.Name)
		}
	}
	groups, err = s.ListUserGroups(ctx, "ghost")
	ok(t, err, "ListUserGroups ghost")
	if len(groups) != 0 {
		t.Errorf("ListUserGroups(ghost) = %+v; want none", groups)
	}

	ok(t, s.RemoveMember(ctx, "lab", "bob"), "RemoveMember")
	if r, err := s.Role(ctx, "bob", "lab"); err != nil || r != tasks.RoleNone {
		t.Errorf("Role after RemoveMember = %v, %v; want none", r, err)
	}
	wantCode(t, s.RemoveMember(ctx, "lab", "bob"), tasks.ENotFound, "RemoveMember twice")
	wantCode(t, s.RemoveMember(ctx, "nolab", "bob"), tasks.ENotFound, "RemoveMember from a missing group")
}

func testTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkUser(t, s, "alice")
	mkUser(t, s, "bob")
	tok := tasks.Token{Hash: "h1", User: "alice", CreatedAt: t0, Expires: t0.Add(time.Hour)}
	ok(t, s.CreateToken(ctx, tok), "CreateToken h1")
	ok(t, s.CreateToken(ctx, tasks.Token{Hash: "h2", User: "alice", CreatedAt: t0}), "CreateToken h2")
	ok(t, s.CreateToken(ctx, tasks.Token{Hash: "h3", User: "bob", CreatedAt: t0}), "CreateToken h3")
	wantCode(t, s.CreateToken(ctx, tasks.Token{Hash: "h1", User: "bob", CreatedAt: t0}), tasks.EConflict, "CreateToken with a used hash")
	wantCode(t, s.CreateToken(ctx, tasks.Token{Hash: "h4", User: "ghost", CreatedAt: t0}), tasks.ENotFound, "CreateToken for a missing user")

	got, u, err := s.LookupToken(ctx, "h1")
	ok(t, err, "LookupToken h1")
	if got.Hash != "h1" || got.User != "alice" {
		t.Errorf("LookupToken(h1) = %+v; want h1 of alice", got)
	}
	wantTime(t, got.CreatedAt, t0, "token.CreatedAt")
	wantTime(t, got.Expires, t0.Add(time.Hour), "token.Expires")
	if u.Name != "alice" || u.PasswordHash != "hash-alice" {
		t.Errorf("LookupToken(h1) user = %+v; want alice in full", u)
	}
	got, _, err = s.LookupToken(ctx, "h2")
	ok(t, err, "LookupToken h2")
	if !got.Expires.IsZero() {
		t.Errorf("token without expiry: Expires = %v; want zero", got.Expires)
	}
	_, _, err = s.LookupToken(ctx, "nope")
	wantCode(t, err, tasks.ENotFound, "LookupToken nope")

	ok(t, s.DeleteToken(ctx, "h1"), "DeleteToken")
	_, _, err = s.LookupToken(ctx, "h1")
	wantCode(t, err, tasks.ENotFound, "LookupToken after DeleteToken")
	ok(t, s.DeleteToken(ctx, "h1"), "DeleteToken of a missing token")

	ok(t, s.DeleteUserTokens(ctx, "alice"), "DeleteUserTokens")
	_, _, err = s.LookupToken(ctx, "h2")
	wantCode(t, err, tasks.ENotFound, "LookupToken of alice's after DeleteUserTokens")
	_, u, err = s.LookupToken(ctx, "h3")
	ok(t, err, "LookupToken of bob's after DeleteUserTokens(alice)")
	if u.Name != "bob" {
		t.Errorf("LookupToken(h3) user = %s; want bob", u.Name)
	}
}
