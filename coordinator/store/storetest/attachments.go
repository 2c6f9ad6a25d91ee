package storetest

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// mkGroup creates user creator, if need be, and group name with them as
// admin.
func mkGroup(t *testing.T, s store.Store, name, creator string) {
	t.Helper()
	if _, err := s.GetUser(t.Context(), creator); tasks.ErrorCode(err) == tasks.ENotFound {
		mkUser(t, s, creator)
	}
	_, err := s.CreateGroup(t.Context(), name, creator)
	ok(t, err, "CreateGroup "+name)
}

// attachment returns an attachment of group at key of size bytes, kept in
// object.
func attachment(group, key, object string, size int64) tasks.Attachment {
	return tasks.Attachment{Group: group, Key: key, Object: object, Size: size,
		SHA256: "sha-" + object, Creator: "alice", CreatedAt: t0}
}

// put calls PutAttachment, fails the test on error, and returns the
// replaced object.
func put(t *testing.T, s store.Store, a tasks.Attachment) string {
	t.Helper()
	replaced, err := s.PutAttachment(t.Context(), a)
	ok(t, err, "PutAttachment "+a.Key)
	return replaced
}

// wantUsage fails unless group's quota and usage, as GetGroup and the
// members' ListUserGroups show them, are quota and used.
func wantUsage(t *testing.T, s store.Store, group string, quota, used int64, what string) {
	t.Helper()
	g, err := s.GetGroup(t.Context(), group)
	ok(t, err, what+": GetGroup")
	if g.QuotaBytes != quota || g.UsedBytes != used {
		t.Errorf("%s: GetGroup(%s) quota, usage = %d, %d; want %d, %d", what, group, g.QuotaBytes, g.UsedBytes, quota, used)
	}
	for _, m := range g.Members {
		gs, err := s.ListUserGroups(t.Context(), m.User)
		ok(t, err, what+": ListUserGroups")
		for _, ug := range gs {
			if ug.Name == group && (ug.QuotaBytes != quota || ug.UsedBytes != used) {
				t.Errorf("%s: ListUserGroups(%s) shows %s with quota, usage = %d, %d; want %d, %d",
					what, m.User, group, ug.QuotaBytes, ug.UsedBytes, quota, used)
			}
		}
	}
}

// wantAttachment fails unless GetAttachment returns want.
func wantAttachment(t *testing.T, s store.Store, want tasks.Attachment, what string) {
	t.Helper()
	got, err := s.GetAttachment(t.Context(), want.Group, want.Key)
	ok(t, err, what+": GetAttachment "+want.Key)
	wantTime(t, got.CreatedAt, want.CreatedAt, what+": CreatedAt")
	got.CreatedAt, want.CreatedAt = us(want.CreatedAt), us(want.CreatedAt)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: GetAttachment = %+v; want %+v", what, got, want)
	}
}

// wantKeys fails unless ListAttachments(group, prefix) lists keys, in order.
func wantKeys(t *testing.T, s store.Store, group, prefix string, keys ...string) {
	t.Helper()
	wantPage(t, s, group, store.AttachmentQuery{Prefix: prefix}, keys...)
}

// wantPage fails unless ListAttachments(group, q) lists keys, in order.
func wantPage(t *testing.T, s store.Store, group string, q store.AttachmentQuery, keys ...string) {
	t.Helper()
	got, err := s.ListAttachments(t.Context(), group, q)
	ok(t, err, fmt.Sprintf("ListAttachments(%s, %#v)", group, q))
	var gotKeys []string
	for _, a := range got {
		gotKeys = append(gotKeys, a.Key)
		if a.Group != group || a.Object == "" {
			t.Errorf("ListAttachments(%s, %#v) gave %+v; want group %s and its object", group, q, a, group)
		}
	}
	if !reflect.DeepEqual(gotKeys, keys) && !(len(gotKeys) == 0 && len(keys) == 0) {
		t.Errorf("ListAttachments(%s, %#v) keys = %q; want %q", group, q, gotKeys, keys)
	}
}

func testAttachments(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkGroup(t, s, "lab", "alice")
	mkGroup(t, s, "other", "alice")

	data := attachment("lab", "data/set.csv", "obj-1", 10)
	if r := put(t, s, data); r != "" {
		t.Errorf("PutAttachment of a new key replaced %q; want \"\"", r)
	}
	wantAttachment(t, s, data, "after the first put")
	wantUsage(t, s, "lab", 0, 10, "after the first put")

	// Keys that LIKE would misread: '%' and '_' are wildcards there, and
	// SQLite's LIKE ignores case.
	for i, k := range []string{"a%b/x", "a_b/y", "axb/z", "aXb/w", `a\b/v`, "A/u", "data/set.csv.bak", "datum"} {
		put(t, s, attachment("lab", k, fmt.Sprintf("obj-k%d", i), 1))
	}
	put(t, s, attachment("other", "data/other.csv", "obj-other", 100))
	wantUsage(t, s, "lab", 0, 18, "after the puts")
	wantUsage(t, s, "other", 0, 100, "other group")

	// Bytewise order: '%' < 'X' < '\' < '_' < 'x'.
	wantKeys(t, s, "lab", "", "A/u", "a%b/x", "aXb/w", `a\b/v`, "a_b/y", "axb/z", "data/set.csv", "data/set.csv.bak", "datum")
	wantKeys(t, s, "lab", "data/", "data/set.csv", "data/set.csv.bak")
	wantKeys(t, s, "lab", "data/set.csv", "data/set.csv", "data/set.csv.bak")
	wantKeys(t, s, "lab", "a%", "a%b/x")
	wantKeys(t, s, "lab", "a_", "a_b/y")
	wantKeys(t, s, "lab", `a\`, `a\b/v`)
	wantKeys(t, s, "lab", "ax", "axb/z")
	wantKeys(t, s, "lab", "A", "A/u")
	wantKeys(t, s, "lab", "nothing/")
	wantKeys(t, s, "other", "", "data/other.csv")
	wantKeys(t, s, "missing", "")
	testAttachmentPages(t, s)

	// Replacing returns the old object and charges only the difference.
	data2 := attachment("lab", "data/set.csv", "obj-2", 25)
	data2.Creator, data2.SHA256, data2.CreatedAt = "bob", "sha-new", t0.Add(time.Minute)
	if r := put(t, s, data2); r != "obj-1" {
		t.Errorf("PutAttachment over data/set.csv replaced %q; want obj-1", r)
	}
	wantAttachment(t, s, data2, "after the replacement")
	wantUsage(t, s, "lab", 0, 33, "after the replacement")
	// The same object recorded again is not the caller's to delete.
	if r := put(t, s, data2); r != "" {
		t.Errorf("PutAttachment of the same object again replaced %q; want \"\"", r)
	}
	wantUsage(t, s, "lab", 0, 33, "after recording the same object again")

	// Delete returns the record, with its object, and credits its size.
	got, err := s.DeleteAttachment(ctx, "lab", "data/set.csv")
	ok(t, err, "DeleteAttachment")
	if got.Object != "obj-2" || got.Size != 25 || got.Key != "data/set.csv" || got.Group != "lab" {
		t.Errorf("DeleteAttachment = %+v; want the record of obj-2, 25 bytes", got)
	}
	wantUsage(t, s, "lab", 0, 8, "after the delete")
	_, err = s.GetAttachment(ctx, "lab", "data/set.csv")
	wantCode(t, err, tasks.ENotFound, "GetAttachment of a deleted key")
	_, err = s.DeleteAttachment(ctx, "lab", "data/set.csv")
	wantCode(t, err, tasks.ENotFound, "DeleteAttachment twice")
	_, err = s.DeleteAttachment(ctx, "missing", "k")
	wantCode(t, err, tasks.ENotFound, "DeleteAttachment in a missing group")
	wantKeys(t, s, "lab", "data/", "data/set.csv.bak")

	// Keys are per group.
	_, err = s.GetAttachment(ctx, "lab", "data/other.csv")
	wantCode(t, err, tasks.ENotFound, "GetAttachment of another group's key")
	_, err = s.GetAttachment(ctx, "nosuch", "k")
	wantCode(t, err, tasks.ENotFound, "GetAttachment in a missing group")

	_, err = s.PutAttachment(ctx, attachment("nosuch", "k", "obj-x", 1))
	wantCode(t, err, tasks.ENotFound, "PutAttachment to a missing group")
	_, err = s.PutAttachment(ctx, attachment("lab", "neg", "obj-x", -1))
	wantCode(t, err, tasks.EInvalid, "PutAttachment of a negative size")
	wantUsage(t, s, "lab", 0, 8, "after refused puts")
}

// testAttachmentPages pages through the keys testAttachments stored in
// lab and other, with prefixes and cursors that PostgreSQL text cannot
// hold (NUL, invalid UTF-8): both stores compare them bytewise.
func testAttachmentPages(t *testing.T, s store.Store) {
	all := []string{"A/u", "a%b/x", "aXb/w", `a\b/v`, "a_b/y", "axb/z", "data/set.csv", "data/set.csv.bak", "datum"}
	for _, tt := range []struct {
		name string
		q    store.AttachmentQuery
		want []string
	}{
		{"limit", store.AttachmentQuery{Limit: 3}, all[:3]},
		{"limit over the count", store.AttachmentQuery{Limit: 100}, all},
		{"after a key", store.AttachmentQuery{After: "aXb/w", Limit: 2}, []string{`a\b/v`, "a_b/y"}},
		{"after no key", store.AttachmentQuery{After: "a"}, all[1:]},
		{"after the last", store.AttachmentQuery{After: "datum"}, nil},
		{"prefix and after", store.AttachmentQuery{Prefix: "data/", After: "data/set.csv"}, []string{"data/set.csv.bak"}},
		{"after before the prefix", store.AttachmentQuery{Prefix: "data/", After: "a", Limit: 1}, []string{"data/set.csv"}},
		{"after a LIKE wildcard", store.AttachmentQuery{Prefix: "a", After: "a%"}, []string{"a%b/x", "aXb/w", `a\b/v`, "a_b/y", "axb/z"}},
		{"prefix with a NUL", store.AttachmentQuery{Prefix: "data/\x00"}, nil},
		{"prefix of a NUL", store.AttachmentQuery{Prefix: "\x00"}, nil},
		{"after with a NUL", store.AttachmentQuery{After: "data/set.csv\x00x"}, []string{"data/set.csv.bak", "datum"}},
		{"prefix and after with a NUL", store.AttachmentQuery{Prefix: "data/\x00", After: "\x00"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) { wantPage(t, s, "lab", tt.q, tt.want...) })
	}

	// Pages of 2, each after the last key of the one before, list every
	// key once.
	var paged []string
	q := store.AttachmentQuery{Limit: 2}
	for range len(all) {
		page, err := s.ListAttachments(t.Context(), "lab", q)
		ok(t, err, fmt.Sprintf("ListAttachments(lab, %#v)", q))
		if len(page) > q.Limit {
			t.Fatalf("ListAttachments(lab, %#v) gave %d; want at most %d", q, len(page), q.Limit)
		}
		for _, a := range page {
			paged = append(paged, a.Key)
		}
		if len(page) < q.Limit {
			break
		}
		q.After = page[len(page)-1].Key
	}
	if !reflect.DeepEqual(paged, all) {
		t.Errorf("paging by 2 listed %q; want %q", paged, all)
	}

	// A prefix that ends inside a UTF-8 sequence is no valid text, yet
	// the keys that start with its bytes have it as a prefix.
	put(t, s, attachment("other", "é/1", "obj-e1", 0))
	put(t, s, attachment("other", "f", "obj-f", 0))
	for _, tt := range []struct {
		name string
		q    store.AttachmentQuery
		want []string
	}{
		{"whole rune", store.AttachmentQuery{Prefix: "é"}, []string{"é/1"}},
		{"half a rune", store.AttachmentQuery{Prefix: "\xc3"}, []string{"é/1"}},
		{"invalid byte", store.AttachmentQuery{Prefix: "\xff"}, nil},
		{"after half a rune", store.AttachmentQuery{After: "\xc3"}, []string{"é/1"}},
		{"after an invalid byte", store.AttachmentQuery{After: "e\xff"}, []string{"f", "é/1"}},
		{"after the invalid last", store.AttachmentQuery{After: "\xff"}, nil},
	} {
		t.Run("utf-8/"+tt.name, func(t *testing.T) { wantPage(t, s, "other", tt.q, tt.want...) })
	}
	_, err := s.DeleteAttachment(t.Context(), "other", "é/1")
	ok(t, err, "DeleteAttachment é/1")
	_, err = s.DeleteAttachment(t.Context(), "other", "f")
	ok(t, err, "DeleteAttachment f")
}

func testAttachmentQuota(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkGroup(t, s, "lab", "alice")

	wantCode(t, s.SetGroupQuota(ctx, "nosuch", 100), tasks.ENotFound, "SetGroupQuota of a missing group")
	wantCode(t, s.SetGroupQuota(ctx, "lab", -1), tasks.EInvalid, "SetGroupQuota -1")
	ok(t, s.SetGroupQuota(ctx, "lab", 100), "SetGroupQuota 100")
	wantUsage(t, s, "lab", 100, 0, "after SetGroupQuota")

	k1 := attachment("lab", "k1", "obj-1", 60)
	put(t, s, k1)
	_, err := s.PutAttachment(ctx, attachment("lab", "k2", "obj-2", 50))
	wantCode(t, err, tasks.EQuota, "PutAttachment over the quota")
	mention(t, err, "EQuota of a put", "lab", `"k2"`, "50 B", "110 B", "100 B")
	_, err = s.GetAttachment(ctx, "lab", "k2")
	wantCode(t, err, tasks.ENotFound, "GetAttachment of a refused key")
	wantUsage(t, s, "lab", 100, 60, "after a refused put")

	// Up to the quota exactly.
	k1.Object, k1.Size = "obj-1b", 100
	if r := put(t, s, k1); r != "obj-1" {
		t.Errorf("PutAttachment up to the quota replaced %q; want obj-1", r)
	}
	wantUsage(t, s, "lab", 100, 100, "at the quota")

	// A refused replacement leaves the old record whole.
	_, err = s.PutAttachment(ctx, attachment("lab", "k1", "obj-1c", 101))
	wantCode(t, err, tasks.EQuota, "replacement over the quota")
	mention(t, err, "EQuota of a replacement", "lab", `"k1"`, "101 B", "100 B")
	wantAttachment(t, s, k1, "after a refused replacement")
	wantUsage(t, s, "lab", 100, 100, "after a refused replacement")

	// A quota under the usage is allowed; it refuses only what adds.
	ok(t, s.SetGroupQuota(ctx, "lab", 50), "SetGroupQuota under the usage")
	wantUsage(t, s, "lab", 50, 100, "after lowering the quota")
	_, err = s.PutAttachment(ctx, attachment("lab", "k3", "obj-3", 1))
	wantCode(t, err, tasks.EQuota, "PutAttachment while over the quota")
	k1.Object, k1.Size = "obj-1d", 70
	put(t, s, k1) // shrinks: allowed though still over the quota
	wantUsage(t, s, "lab", 50, 70, "after shrinking while over the quota")
	put(t, s, attachment("lab", "empty", "obj-e", 0)) // adds nothing
	wantUsage(t, s, "lab", 50, 70, "after an empty put")

	_, err = s.DeleteAttachment(ctx, "lab", "k1")
	ok(t, err, "DeleteAttachment")
	wantUsage(t, s, "lab", 50, 0, "after the delete")

	// Quota 0 is no limit.
	ok(t, s.SetGroupQuota(ctx, "lab", 0), "SetGroupQuota 0")
	put(t, s, attachment("lab", "huge", "obj-h", 5<<40))
	wantUsage(t, s, "lab", 0, 5<<40, "without a quota")

	// The message is in human units.
	ok(t, s.SetGroupQuota(ctx, "lab", 6<<40), "SetGroupQuota 6 TiB")
	_, err = s.PutAttachment(ctx, attachment("lab", "more", "obj-m", 3<<39))
	wantCode(t, err, tasks.EQuota, "PutAttachment over 6 TiB")
	mention(t, err, "EQuota in human units", "lab", `"more"`, "1.5 TiB", "6.5 TiB", "6 TiB")
}

func testArtifactQuota(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkGroup(t, s, "lab", "alice")
	ok(t, s.SetGroupQuota(ctx, "lab", 100), "SetGroupQuota")
	id := submit(t, s, "alice", spec("lab"))[0].ID
	ref := claimOne(t, s, "h", "lab").Lease.LeaseRef

	ok(t, s.AddArtifact(ctx, ref, tasks.Artifact{Name: "out/a", Size: 40, SHA256: "a1", CreatedAt: t0}), "AddArtifact out/a")
	wantUsage(t, s, "lab", 100, 40, "after an artifact")
	// A record of the same name replaces the first, charging the difference.
	ok(t, s.AddArtifact(ctx, ref, tasks.Artifact{Name: "out/a", Size: 70, SHA256: "a2", CreatedAt: t0}), "AddArtifact out/a again")
	wantUsage(t, s, "lab", 100, 70, "after replacing an artifact")

	err := s.AddArtifact(ctx, ref, tasks.Artifact{Name: "out/big.bin", Size: 40, SHA256: "b", CreatedAt: t0})
	wantCode(t, err, tasks.EQuota, "AddArtifact over the quota")
	mention(t, err, "EQuota of an artifact", "lab", `"out/big.bin"`, "40 B", "110 B", "100 B")
	err = s.AddArtifact(ctx, ref, tasks.Artifact{Name: "out/a", Size: 101, SHA256: "a3", CreatedAt: t0})
	wantCode(t, err, tasks.EQuota, "replacing an artifact over the quota")
	arts, err := s.ListArtifacts(ctx, id)
	ok(t, err, "ListArtifacts")
	if len(arts) != 1 || arts[0].Name != "out/a" || arts[0].Size != 70 || arts[0].SHA256 != "a2" {
		t.Errorf("ListArtifacts after refusals = %+v; want out/a alone, 70 bytes, a2", arts)
	}
	wantUsage(t, s, "lab", 100, 70, "after refused artifacts")

	// Attachments and artifacts share the quota.
	_, err = s.PutAttachment(ctx, attachment("lab", "k", "obj", 31))
	wantCode(t, err, tasks.EQuota, "PutAttachment over what artifacts left")
	put(t, s, attachment("lab", "k", "obj", 30))
	wantUsage(t, s, "lab", 100, 100, "artifacts and attachments together")

	// A smaller replacement credits, whatever the quota.
	ok(t, s.SetGroupQuota(ctx, "lab", 10), "SetGroupQuota under the usage")
	ok(t, s.AddArtifact(ctx, ref, tasks.Artifact{Name: "out/a", Size: 5, SHA256: "a4", CreatedAt: t0}), "AddArtifact smaller")
	wantUsage(t, s, "lab", 10, 35, "after a smaller artifact")

	// A stale lease records and charges nothing.
	bad := ref
	bad.Token = "ffffffffffffffffffffffffffffffff"
	ok(t, s.SetGroupQuota(ctx, "lab", 0), "SetGroupQuota 0")
	wantCode(t, s.AddArtifact(ctx, bad, tasks.Artifact{Name: "evil", Size: 1, SHA256: "e", CreatedAt: t0}), tasks.EStaleLease, "AddArtifact with a wrong token")
	wantCode(t, s.AddArtifact(ctx, ref, tasks.Artifact{Name: "neg", Size: -1, SHA256: "n", CreatedAt: t0}), tasks.EInvalid, "AddArtifact of a negative size")
	wantUsage(t, s, "lab", 0, 35, "after refused artifacts")

	// Tasks outlive groups: an artifact of a task whose group does not
	// exist is recorded and charged to nobody.
	submit(t, s, "alice", spec("gone"))
	ghost := claimOne(t, s, "h", "gone").Lease.LeaseRef
	ok(t, s.AddArtifact(ctx, ghost, tasks.Artifact{Name: "out", Size: 1 << 40, SHA256: "g", CreatedAt: t0}), "AddArtifact in a missing group")
}

// testQuotaConcurrent races uploads against one quota: whatever the
// interleaving, exactly as many fit as the quota holds.
func testQuotaConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkGroup(t, s, "lab", "alice")
	ok(t, s.SetGroupQuota(ctx, "lab", 100), "SetGroupQuota")
	const n = 20
	specs := make([]tasks.Spec, n)
	for i := range specs {
		specs[i] = spec("lab")
	}
	submit(t, s, "alice", specs...)
	// One task each, so that only the group's row orders the charges.
	as := claim(t, s, store.ClaimParams{Host: "h", Groups: []string{"lab"}, Max: n})
	if len(as) != n {
		t.Fatalf("Claim gave %d tasks; want %d", len(as), n)
	}
	ref := as[0].Lease.LeaseRef

	race := func(what string, upload func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = upload(i)
			}()
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch tasks.ErrorCode(err) {
			case "":
				won++
			case tasks.EQuota:
			default:
				t.Errorf("%s %d: %v; want success or %s", what, i, err, tasks.EQuota)
			}
		}
		if won != 10 {
			t.Errorf("%s: %d of %d uploads of 10 bytes succeeded against a quota of 100; want 10", what, won, n)
		}
	}

	race("PutAttachment", func(i int) error {
		_, err := s.PutAttachment(ctx, attachment("lab", fmt.Sprintf("k%02d", i), fmt.Sprintf("obj-%d", i), 10))
		return err
	})
	wantUsage(t, s, "lab", 100, 100, "after racing puts")
	atts, err := s.ListAttachments(ctx, "lab", store.AttachmentQuery{})
	ok(t, err, "ListAttachments")
	if len(atts) != 10 {
		t.Errorf("ListAttachments after racing puts gave %d; want 10", len(atts))
	}

	// Make room again by deleting all, concurrently with nothing else.
	for _, a := range atts {
		_, err := s.DeleteAttachment(ctx, "lab", a.Key)
		ok(t, err, "DeleteAttachment")
	}
	wantUsage(t, s, "lab", 100, 0, "after deleting them")

	race("AddArtifact", func(i int) error {
		return s.AddArtifact(ctx, as[i].Lease.LeaseRef, tasks.Artifact{Name: "out", Size: 10, SHA256: "x", CreatedAt: t0})
	})
	wantUsage(t, s, "lab", 100, 100, "after racing artifacts")
	recorded := 0
	for _, a := range as {
		arts, err := s.ListArtifacts(ctx, a.Task.ID)
		ok(t, err, "ListArtifacts")
		recorded += len(arts)
	}
	if recorded != 10 {
		t.Errorf("ListArtifacts after racing uploads found %d; want 10", recorded)
	}

	// Racing replacements of one name are each charged the difference
	// from the record they replace, never the full size twice.
	ok(t, s.SetGroupQuota(ctx, "lab", 0), "SetGroupQuota 0")
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.AddArtifact(ctx, ref, tasks.Artifact{Name: "same", Size: int64(i + 1), SHA256: "s", CreatedAt: t0}); err != nil {
				t.Errorf("AddArtifact same %d: %v", i, err)
			}
			if _, err := s.PutAttachment(ctx, attachment("lab", "same", fmt.Sprintf("obj-s%d", i), int64(i+1))); err != nil {
				t.Errorf("PutAttachment same %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	arts, err := s.ListArtifacts(ctx, ref.Task)
	ok(t, err, "ListArtifacts")
	a, err := s.GetAttachment(ctx, "lab", "same")
	ok(t, err, "GetAttachment same")
	total := int64(100) // the racing artifacts'
	for _, art := range arts {
		if art.Name == "same" {
			total += art.Size
		}
	}
	wantUsage(t, s, "lab", 0, total+a.Size, "after racing replacements")
}
