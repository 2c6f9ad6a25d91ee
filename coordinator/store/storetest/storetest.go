// Package storetest is the conformance suite of store.Store: one set of
// tests that every implementation runs, so that sqlite and postgres keep
// the same contract and the coordinator can use either without knowing
// which it has.
package storetest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// Run runs the whole suite against the store that open returns. open must
// give a fresh, empty store for every call and close it in t.Cleanup; the
// subtests run in parallel, each with its own store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s store.Store)
	}{
		{"Users", testUsers},
		{"NameNamespace", testNameNamespace},
		{"GroupsAndRoles", testGroupsAndRoles},
		{"Tokens", testTokens},
		{"SetUser", testSetUser},
		{"CreateTasks", testCreateTasks},
		{"CreateTasksAllOrNone", testCreateTasksAllOrNone},
		{"TaskInputs", testTaskInputs},
		{"ListTasksFilters", testListTasksFilters},
		{"ListTasksLimits", testListTasksLimits},
		{"ClaimOrder", testClaimOrder},
		{"ClaimTags", testClaimTags},
		{"ClaimGroups", testClaimGroups},
		{"ClaimMax", testClaimMax},
		{"ClaimConcurrent", testClaimConcurrent},
		{"ClaimWaitsOnSources", testClaimWaitsOnSources},
		{"ClaimNoInputs", testClaimNoInputs},
		{"Renew", testRenew},
		{"FinishFencing", testFinishFencing},
		{"RequeueExpired", testRequeueExpired},
		{"MaxAttemptsExhausted", testMaxAttemptsExhausted},
		{"ReleaseLeases", testReleaseLeases},
		{"ClusterID", testClusterID},
		{"Cancel", testCancel},
		{"Logs", testLogs},
		{"Artifacts", testArtifacts},
		{"DeleteArtifacts", testDeleteArtifacts},
		{"GetArtifact", testGetArtifact},
		{"Attachments", testAttachments},
		{"AttachmentQuota", testAttachmentQuota},
		{"ArtifactQuota", testArtifactQuota},
		{"QuotaConcurrent", testQuotaConcurrent},
		{"ReferencedObjects", testReferencedObjects},
		{"Hosts", testHosts},
		{"HostKeys", testHostKeys},
		{"HostKeysConcurrent", testHostKeysConcurrent},
		{"HostOwnership", testHostOwnership},
		{"HostOwnershipConcurrent", testHostOwnershipConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, open(t))
		})
	}
}

// t0 is the suite's clock: nanoseconds set, so that a store that keeps
// less than microseconds, or does not truncate consistently, shows it.
var t0 = time.Date(2031, 3, 4, 5, 6, 7, 123456789, time.UTC)

// us truncates to the precision the contract promises.
func us(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

// wantCode fails the test unless err carries code. A domain error must be
// a bare *tasks.Error, not one wrapped, since the contract lets callers
// pass it through as it is.
func wantCode(t *testing.T, err error, code tasks.Code, what string) {
	t.Helper()
	if got := tasks.ErrorCode(err); got != code {
		t.Fatalf("%s: got error %v (code %q); want code %q", what, err, got, code)
	}
	if _, bare := err.(*tasks.Error); code != "" && !bare {
		t.Fatalf("%s: got %T %v; want a bare *tasks.Error", what, err, err)
	}
}

// ok fails the test on err.
func ok(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantTime fails unless got is want at microsecond precision, in UTC.
func wantTime(t *testing.T, got, want time.Time, what string) {
	t.Helper()
	if !got.Equal(us(want)) {
		t.Errorf("%s = %v; want %v", what, got, us(want))
	}
	if got.Location() != time.UTC {
		t.Errorf("%s location = %v; want UTC", what, got.Location())
	}
}

// wantTimePtr is wantTime for an optional time; want nil means unset.
func wantTimePtr(t *testing.T, got *time.Time, want *time.Time, what string) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil:
		t.Errorf("%s = nil; want %v", what, us(*want))
	case want == nil:
		t.Errorf("%s = %v; want nil", what, *got)
	default:
		wantTime(t, *got, *want, what)
	}
}

func ptr[T any](v T) *T { return &v }

// spec returns a minimal normalized spec in group.
func spec(group string) tasks.Spec {
	return tasks.Spec{Group: group, Command: []string{"true"}, Timeout: tasks.Duration(time.Hour), MaxAttempts: 3}
}

// submit creates tasks and fails the test on error.
func submit(t *testing.T, s store.Store, creator string, specs ...tasks.Spec) []tasks.Task {
	t.Helper()
	got, err := s.CreateTasks(t.Context(), creator, specs, 0)
	ok(t, err, "CreateTasks")
	if len(got) != len(specs) {
		t.Fatalf("CreateTasks returned %d tasks; want %d", len(got), len(specs))
	}
	return got
}

// claim claims and fails the test on error.
func claim(t *testing.T, s store.Store, p store.ClaimParams) []tasks.Assignment {
	t.Helper()
	if p.TTL == 0 {
		p.TTL = time.Minute
	}
	if p.Now.IsZero() {
		p.Now = t0
	}
	got, err := s.Claim(t.Context(), p)
	ok(t, err, "Claim")
	return got
}

// claimOne claims the one task t.Helper expects for host in group.
func claimOne(t *testing.T, s store.Store, host, group string) tasks.Assignment {
	t.Helper()
	got := claim(t, s, store.ClaimParams{Host: host, Groups: []string{group}, Max: 1})
	if len(got) != 1 {
		t.Fatalf("Claim by %s in %s gave %d tasks; want 1", host, group, len(got))
	}
	return got[0]
}

// getTask returns a task and fails the test on error.
func getTask(t *testing.T, s store.Store, id tasks.ID) tasks.Task {
	t.Helper()
	got, err := s.GetTask(t.Context(), id)
	ok(t, err, "GetTask")
	return got
}

// ids lists the IDs of ts, in order.
func ids(ts []tasks.Task) []tasks.ID {
	out := make([]tasks.ID, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

// assignedIDs lists the task IDs of as, in order.
func assignedIDs(as []tasks.Assignment) []tasks.ID {
	out := make([]tasks.ID, len(as))
	for i, a := range as {
		out[i] = a.Task.ID
	}
	return out
}

// wantIDs fails unless got is want, in order.
func wantIDs(t *testing.T, got, want []tasks.ID, what string) {
	t.Helper()
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Errorf("%s: got tasks %v; want %v", what, got, want)
	}
}

// mention fails unless err's message names each of words.
func mention(t *testing.T, err error, what string, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error; want one naming %q", what, words)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not name %q", what, err, w)
		}
	}
}
