package store

import (
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/mitolab/mito/tasks"
)

// QuotaError is the EQuota error of an upload of size bytes, described by
// what (`"out/big.bin"`, `attachment "data/x.csv"`), that would take
// group's usage from used to used+delta, over quota. Both stores refuse
// with it, and so does the coordinator's early check before the bytes
// come, so that a user reads the same sentence whichever refuses, and
// learns what frees room.
func QuotaError(group, what string, size, used, delta, quota int64) *tasks.Error {
	return quotaError(group, what, HumanBytes(size), HumanBytes(used+delta), quota)
}

// QuotaErrorAtLeast is QuotaError for a body of unknown length, refused
// once the size bytes read of it would take the usage over quota: the
// body, and the usage it would make, are at least that.
func QuotaErrorAtLeast(group, what string, size, used, delta, quota int64) *tasks.Error {
	return quotaError(group, what, "at least "+HumanBytes(size), "at least "+HumanBytes(used+delta), quota)
}

// quotaHint tells a user refused for the quota how to make room.
const quotaHint = "delete attachments or task artifacts (mito client tasks artifacts delete), or ask a global admin to raise the quota"

func quotaError(group, what, size, usage string, quota int64) *tasks.Error {
	return tasks.Errorf(tasks.EQuota, "group %s: storing %s (%s) would take its usage to %s, over its quota of %s; %s",
		group, what, size, usage, HumanBytes(quota), quotaHint)
}

// HumanBytes writes n bytes in binary units as people read them: "10 B",
// "1.2 GiB", and "5 GiB" rather than "5.0 GiB", since quotas are mostly
// round numbers.
func HumanBytes(n int64) string {
	if n < 0 {
		return "-" + HumanBytes(-n)
	}
	return strings.Replace(humanize.IBytes(uint64(n)), ".0 ", " ", 1)
}

// ChargeAllowed reports whether a group with quota and used bytes may be
// charged delta more: always when there is no quota (0) or the charge
// does not add (delta <= 0), else when the new usage stays within the
// quota. The stores test the same condition in SQL, in the UPDATE that
// charges, so that concurrent charges can never together pass the quota;
// this copy tells a refusal from a race that a credit won.
func ChargeAllowed(quota, used, delta int64) bool {
	return quota == 0 || delta <= 0 || used+delta <= quota
}
