package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mitolab/mito/tasks"
)

// The helpers below hold the parts of the contract that do not depend on
// the database, so that sqlite and postgres share one copy of each and
// cannot drift apart: a rule changed here changes for both.

// MaxClaim bounds one Claim whatever ClaimParams.Max asks, since a lease
// token is made for every task a claim may take; a host asks for as many
// tasks as it has free slots.
const MaxClaim = 1000

// NewLeaseToken returns a new 128-bit random lease token in hex. Tokens come
// from crypto/rand, not from the database, so that a stale holder can never
// guess the current one.
func NewLeaseToken() string {
	var b [16]byte
	rand.Read(b[:]) // never fails: it panics rather than return an error
	return hex.EncodeToString(b[:])
}

// NewClusterID returns a new 64-bit random cluster id in hex (see
// Store.ClusterID).
func NewClusterID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SortAssignments puts the assignments of one claim in the order Claim
// promises, best first (priority descending, then ID ascending), since
// UPDATE … RETURNING gives its rows in no promised order.
func SortAssignments(as []tasks.Assignment) {
	sort.Slice(as, func(i, j int) bool {
		a, b := as[i].Task, as[j].Task
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.ID < b.ID
	})
}

// StaleLease explains why ref is not the current lease of a task that is
// in state st at attempt attempt with lease token token ("" for none), or
// returns nil if it is. The reason goes into the EStaleLease message so that
// a shim's log says why a write was refused.
func StaleLease(ref tasks.LeaseRef, st tasks.State, attempt int, token string) error {
	switch {
	case st != tasks.Running:
		return tasks.Errorf(tasks.EStaleLease, "task %d attempt %d: lease is no longer current: the task is %s", ref.Task, ref.Attempt, st)
	case attempt != ref.Attempt:
		return tasks.Errorf(tasks.EStaleLease, "task %d attempt %d: lease is no longer current: attempt %d runs now", ref.Task, ref.Attempt, attempt)
	case token == "" || token != ref.Token:
		// A stored token is never empty, so "" means the task has none
		// and no ref can match it.
		return tasks.Errorf(tasks.EStaleLease, "task %d attempt %d: lease is no longer current: wrong lease token", ref.Task, ref.Attempt)
	}
	return nil
}

// CheckResult returns the error Finish gives for r without touching the
// database: r's own EInvalid error, or EInvalid when r.State is not one a
// running task may move to. Nil means the result may end an attempt.
func CheckResult(r tasks.Result) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if !tasks.CanTransition(tasks.Running, r.State) {
		return tasks.Invalid("state", "a running task cannot become %s", r.State)
	}
	return nil
}

// ListLimit applies ListTasks' default (tasks.DefaultListLimit for n <= 0)
// and cap (tasks.MaxListLimit) to a requested page size, so that every
// store pages alike.
func ListLimit(n int) int {
	switch {
	case n <= 0:
		return tasks.DefaultListLimit
	case n > tasks.MaxListLimit:
		return tasks.MaxListLimit
	}
	return n
}

// SpecError names the spec of a batch of n that err is about, as
// "tasks[i].", so that a user who submitted many specs learns which one to
// fix. A lone spec, or an error that is not a *tasks.Error, is returned as
// is. The result is a new *tasks.Error, never a wrapped one.
func SpecError(err error, i, n int) error {
	var te *tasks.Error
	if n == 1 || !errors.As(err, &te) {
		return err
	}
	e := *te
	prefix := fmt.Sprintf("tasks[%d]", i)
	if e.Field != "" {
		e.Field = prefix + "." + e.Field
	}
	e.Message = prefix + "." + e.Message
	return &e
}

// LogChunks is what JoinLog reads: rows of (offset, data) in offset order.
// Both *sql.Rows and pgx.Rows have these methods.
type LogChunks interface {
	Next() bool
	Scan(dest ...any) error
}

// JoinLog reads the stored chunks of a stream from rows and returns up to
// limit bytes (all if limit <= 0) from offset off on: ReadLog's answer,
// whatever the database, so that both stores return the same bytes. Where
// chunks overlap (a retry cut differently) the first bytes win, and a gap
// ends the read, since what follows it cannot be placed yet. It stops
// reading rows as soon as no later chunk can add bytes; closing rows and
// checking their Err is the caller's. An error is that of Scan, unwrapped.
func JoinLog(rows LogChunks, off int64, limit int) ([]byte, error) {
	if limit <= 0 {
		limit = -1 // no limit
	}
	pos := off // the offset of the next byte wanted
	var out []byte
	for limit != 0 && rows.Next() {
		var at int64
		var data []byte
		if err := rows.Scan(&at, &data); err != nil {
			return nil, err
		}
		if at > pos {
			break // a gap
		}
		if at+int64(len(data)) <= pos {
			continue // wholly before pos: overlapped by earlier chunks
		}
		part := data[pos-at:]
		if limit > 0 && len(part) > limit {
			part = part[:limit]
		}
		out = append(out, part...)
		pos += int64(len(part))
		if limit > 0 {
			limit -= len(part)
		}
	}
	return out, nil
}

// CheckHostPort returns EInvalid unless hostport is "host:port" with a
// host and a port number, as host keys are pinned by.
func CheckHostPort(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return tasks.Invalid("hostport", "%q is not host:port", hostport)
	}
	if host == "" {
		return tasks.Invalid("hostport", "%q has no host", hostport)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return tasks.Invalid("hostport", "%q has no valid port", hostport)
	}
	return nil
}

// NormalizeHostKey parses key in authorized_keys form and returns it as
// the stores keep it: "type base64", without options or comment, so that
// the same key given twice, with or without a comment or the trailing
// newline of ssh.MarshalAuthorizedKey, compares equal.
func NormalizeHostKey(key string) (string, error) {
	key = strings.TrimSpace(key)
	if strings.ContainsAny(key, "\r\n") {
		return "", tasks.Invalid("key", "must be one line in authorized_keys form")
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil {
		return "", tasks.Invalid("key", "is not a public key in authorized_keys form: %v", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), nil
}

// HostKeyConflict is PinHostKey's error when offered is not the key
// pinned for hostport: both keys named by type and SHA256 fingerprint, as
// ssh names them, so that a user can compare them with ssh-keygen -lf.
func HostKeyConflict(hostport, pinned, offered string) *tasks.Error {
	return tasks.Errorf(tasks.EConflict, "host key of %s changed: it offers %s, but %s is pinned (accept-new pins the first key seen)",
		hostport, describeKey(offered), describeKey(pinned))
}

// describeKey names a normalized key by type and fingerprint, or gives it
// as it is if it does not parse.
func describeKey(key string) string {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil {
		return strconv.Quote(key)
	}
	return pub.Type() + " " + ssh.FingerprintSHA256(pub)
}

// CheckHostLease returns AcquireHost's EInvalid error for its arguments,
// or nil.
func CheckHostLease(name, owner string, ttl time.Duration) error {
	switch {
	case name == "":
		return tasks.Invalid("name", "a host name is required")
	case owner == "":
		return tasks.Invalid("owner", "a coordinator id is required")
	case ttl <= 0:
		return tasks.Invalid("ttl", "must be positive, got %s", ttl)
	}
	return nil
}

// CheckSchemaVersion refuses a database whose schema is newer than the
// migration files this binary carries (names, "migrations/0004_x.sql"): an older
// coordinator would run on it without the columns it does not know of,
// and so drop task inputs, skip quotas or claim tasks that must wait,
// which is worse than not starting during a rolling upgrade.
func CheckSchemaVersion(applied []int, names []string) error {
	known := 0
	for _, name := range names {
		base := name[strings.LastIndexByte(name, '/')+1:]
		num, _, _ := strings.Cut(base, "_")
		if v, err := strconv.Atoi(num); err == nil {
			known = max(known, v)
		}
	}
	newest := 0
	for _, v := range applied {
		newest = max(newest, v)
	}
	if newest > known {
		return fmt.Errorf("the database schema is at version %d, newer than this mito knows (%d): upgrade this coordinator (every coordinator sharing a database must run the same release)", newest, known)
	}
	return nil
}
