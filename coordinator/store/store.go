// Package store defines what the coordinator keeps durably: users, tokens,
// groups, tasks with their leases, logs and artifact records, and hosts. Two
// implementations exist, sqlite (the embedded default) and postgres, and
// both pass the conformance suite in storetest.
//
// Every method that changes a running attempt is fenced by its LeaseRef: a
// stale token gets tasks.ErrStaleLease and changes nothing.
package store

import (
	"context"
	"time"

	"github.com/mitolab/mito/tasks"
)

// Store is the coordinator's durable state. Methods return a bare
// *tasks.Error, never wrapped, for domain failures (ENotFound, EConflict,
// EStaleLease, EInvalid), so that callers can pass it through as it is, and
// driver errors wrapped once as "verb object: cause" otherwise. All methods
// are safe for concurrent use.
type Store interface {
	// CreateUser creates a user and their personal group (same name, user
	// is admin) in one transaction. EConflict if a user or group of that
	// name exists.
	CreateUser(ctx context.Context, u tasks.User) error
	// GetUser returns a user, with PasswordHash. ENotFound if none.
	GetUser(ctx context.Context, name string) (tasks.User, error)
	// ListUsers returns all users ordered by name.
	ListUsers(ctx context.Context) ([]tasks.User, error)
	// SetUserPassword sets a user's password hash and deletes all their
	// tokens, in one transaction, so that a leaked token dies with the old
	// password. It changes no other column: a copy of the user read before
	// a concurrent SetUserDisabled cannot undo it. ENotFound if no such user.
	SetUserPassword(ctx context.Context, name, hash string) error
	// SetUserDisabled sets only a user's disabled flag. Disabling also
	// deletes all their tokens, in the same transaction, so that no session
	// outlives it; enabling touches no token. ENotFound if no such user.
	SetUserDisabled(ctx context.Context, name string, disabled bool) error
	// CountUsers returns how many users exist; the coordinator creates the
	// first admin when it is zero.
	CountUsers(ctx context.Context) (int, error)

	// CreateToken stores a token hash.
	CreateToken(ctx context.Context, t tasks.Token) error
	// LookupToken returns the token with this hash and its user.
	// ENotFound if there is none; expiry is the caller's to check.
	LookupToken(ctx context.Context, hash string) (tasks.Token, tasks.User, error)
	// DeleteToken removes one token; removing a missing one is not an error.
	DeleteToken(ctx context.Context, hash string) error
	// DeleteUserTokens removes every token of a user (disable, password reset).
	DeleteUserTokens(ctx context.Context, user string) error

	// CreateGroup creates a group with creator as admin. EConflict if a
	// group or user of that name exists.
	CreateGroup(ctx context.Context, name, creator string) (tasks.Group, error)
	// GetGroup returns a group with its members ordered by user name, and
	// its quota and usage.
	GetGroup(ctx context.Context, name string) (tasks.Group, error)
	// ListUserGroups returns the groups user is a member of, with Role set,
	// ordered by name.
	ListUserGroups(ctx context.Context, user string) ([]tasks.Group, error)
	// SetMember adds a member or changes their role. ENotFound if the
	// group or the user does not exist.
	SetMember(ctx context.Context, group, user string, role tasks.Role) error
	// RemoveMember removes a member. ENotFound if they were not one.
	RemoveMember(ctx context.Context, group, user string) error
	// Role returns user's role in group: RoleNone if not a member,
	// ENotFound if the group does not exist.
	Role(ctx context.Context, user, group string) (tasks.Role, error)

	// CreateTasks stores normalized specs as queued tasks, all or none,
	// and returns them with IDs and CreatedAt set. retryOf is 0 or the task
	// the new ones retry.
	CreateTasks(ctx context.Context, creator string, specs []tasks.Spec, retryOf tasks.ID) ([]tasks.Task, error)
	// GetTask returns one task. ENotFound if none.
	GetTask(ctx context.Context, id tasks.ID) (tasks.Task, error)
	// ListTasks returns the tasks that match f, newest (highest ID) first.
	ListTasks(ctx context.Context, f tasks.Filter) ([]tasks.Task, error)
	// CancelTask moves a queued or running task to cancelled, ending any
	// lease. EConflict if the task is already final.
	CancelTask(ctx context.Context, id tasks.ID, now time.Time) (tasks.Task, error)

	// Claim leases up to p.Max queued tasks that the host may run, best
	// first (priority descending, then ID ascending), in one statement.
	// Each claimed task becomes running with Attempt+1 and a new token.
	Claim(ctx context.Context, p ClaimParams) ([]tasks.Assignment, error)
	// Renew extends the leases that are still current to now+ttl and
	// returns the refs that are not (stale token, or task no longer running).
	Renew(ctx context.Context, refs []tasks.LeaseRef, now time.Time, ttl time.Duration) (stale []tasks.LeaseRef, err error)
	// Finish ends the attempt with its result. EStaleLease if the ref is not
	// current; EInvalid if the result's state is not an end state.
	Finish(ctx context.Context, ref tasks.LeaseRef, r tasks.Result) (tasks.Task, error)
	// RequeueExpired handles every running task whose lease expired before
	// now: back to queued when attempts remain, else failed with Error
	// "host lost". It returns the tasks it changed.
	RequeueExpired(ctx context.Context, now time.Time) ([]tasks.Task, error)

	// ReleaseLeases ends at once those attempts of refs that are current
	// and held by host, as RequeueExpired ends expired ones: back to queued
	// when attempts remain, else failed with Error "host lost: <reason> on
	// attempt N". A host's worker calls it for attempts it knows to be
	// dead (a new shim found them left by an old one and killed them, or
	// a worker stopped them as it stopped), so that they need not wait for
	// their leases to run out. Refs that are not current, or held by
	// another host, are left alone. It returns the tasks it changed,
	// ordered by ID.
	ReleaseLeases(ctx context.Context, host string, refs []tasks.LeaseRef, reason string, now time.Time) ([]tasks.Task, error)

	// AppendLog stores a chunk of an attempt's output at byte offset off.
	// Writing the same offset twice keeps the first (retries are safe).
	// EStaleLease unless ref is current.
	AppendLog(ctx context.Context, ref tasks.LeaseRef, s tasks.Stream, off int64, data []byte) error
	// ReadLog returns up to limit bytes of an attempt's stream from offset
	// off, in order. An attempt with no output returns no bytes and no error.
	ReadLog(ctx context.Context, id tasks.ID, attempt int, s tasks.Stream, off int64, limit int) ([]byte, error)

	// AddArtifact records an artifact whose content is already in the
	// artifact store. EStaleLease unless ref is current; a second record of
	// the same name for the same attempt replaces the first. In the same
	// transaction it charges the task's group for the size (less that of
	// a record it replaces); EQuota, recording nothing, if that would take
	// the group's usage over a non-zero quota. A group that no longer
	// exists is not charged.
	AddArtifact(ctx context.Context, ref tasks.LeaseRef, a tasks.Artifact) error
	// ListArtifacts returns a task's artifacts, of every attempt, ordered
	// by attempt then name.
	ListArtifacts(ctx context.Context, id tasks.ID) ([]tasks.Artifact, error)
	// GetArtifact returns one artifact record of task id: that of attempt
	// named name, or with attempt 0 that of the latest attempt that has
	// one of that name, as a download naming no attempt wants. It is one
	// index probe however many artifacts the task has, so that the paths
	// that need one record (quota checks of uploads, input fetches,
	// downloads) do not list them all. ENotFound, naming the task and the
	// artifact, if there is none (nor any such task); EInvalid if
	// attempt < 0.
	GetArtifact(ctx context.Context, id tasks.ID, attempt int, name string) (tasks.Artifact, error)
	// DeleteArtifacts removes the artifact records of task id, those of
	// attempt (0: every attempt) whose names are in names (empty: every
	// name), and credits their sizes to the task's group, in one
	// transaction, so that deleting is how a group frees quota. Usage
	// never goes below 0, and a group that no longer exists is not
	// credited. It returns the removed records, ordered by attempt then
	// name, for the caller to delete their objects; a name that matches
	// nothing is simply not among them. ENotFound if no such task;
	// EConflict while the task is running, since its shim may still be
	// uploading; EInvalid if attempt < 0.
	DeleteArtifacts(ctx context.Context, id tasks.ID, attempt int, names []string) ([]tasks.Artifact, error)

	// SetGroupQuota sets a group's storage quota in bytes; 0 removes the
	// limit. A quota under the current usage is allowed: it refuses only
	// later uploads. ENotFound if no such group; EInvalid if bytes < 0.
	SetGroupQuota(ctx context.Context, group string, bytes int64) error

	// PutAttachment records an attachment whose bytes are already in the
	// artifact store under a.Object, replacing any of the same group and
	// key, and charges the group a.Size less the replaced one's size, in
	// one transaction. It returns the replaced record's Object ("" if
	// none), for the caller to delete. EQuota, changing nothing, if the
	// charge would take usage over a non-zero quota; ENotFound if the
	// group does not exist.
	PutAttachment(ctx context.Context, a tasks.Attachment) (replaced string, err error)
	// GetAttachment returns one attachment, with Object. ENotFound if none.
	GetAttachment(ctx context.Context, group, key string) (tasks.Attachment, error)
	// ListAttachments returns the page of a group's attachments that q
	// selects, ordered by key (bytewise). A Prefix or After that no stored
	// key could hold (a NUL, invalid UTF-8) is no error: it selects what
	// it would select bytewise.
	ListAttachments(ctx context.Context, group string, q AttachmentQuery) ([]tasks.Attachment, error)
	// DeleteAttachment removes an attachment and credits its size to the
	// group, in one transaction, and returns the removed record (with
	// Object, for the caller to delete). ENotFound if none.
	DeleteAttachment(ctx context.Context, group, key string) (tasks.Attachment, error)

	// ReferencedObjects returns which of keys, artifact store keys, some
	// record still needs, so that the coordinator's sweep deletes only
	// objects nothing points at, asking about many in one query. A key
	// under "attachments/" is referenced when an attachment's Object is
	// it; a key that ParseArtifactKey reads as an attempt's artifact is
	// referenced when that artifact is recorded, or when the task is
	// running that attempt, since its shim may be uploading under the key
	// and record it next. Every other key is reported referenced: what
	// the store cannot account for is never an orphan. EInvalid if keys
	// holds more than MaxObjectBatch keys.
	ReferencedObjects(ctx context.Context, keys []string) (map[string]bool, error)

	// PutHost creates or replaces a host's record.
	PutHost(ctx context.Context, h tasks.Host) error
	// ListHosts returns all hosts ordered by name, with Running counted
	// from the tasks table.
	ListHosts(ctx context.Context) ([]tasks.Host, error)
	// GetHost returns one host. ENotFound if none.
	GetHost(ctx context.Context, name string) (tasks.Host, error)

	// AcquireHost takes or renews the ownership lease of the inventory
	// host name for the coordinator owner, until now+ttl, and reports
	// whether owner holds it now. It succeeds when nobody holds the
	// lease, when owner already does (a renewal), or when the holder's
	// lease expired before now; otherwise it changes nothing and returns
	// false. It is one statement: of concurrent callers exactly one wins.
	// The lease is independent of the host's record (PutHost never
	// touches it, and a host need not have a record yet); ListHosts and
	// GetHost show its holder as Host.Coordinator. EInvalid if name or
	// owner is empty or ttl is not positive.
	AcquireHost(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseHost ends owner's lease of host name at once, so that another
	// coordinator may take it over without waiting for it to expire. It
	// does nothing if owner does not hold the lease.
	ReleaseHost(ctx context.Context, name, owner string) error

	// PinnedHostKey returns the host key pinned for hostport ("host:port")
	// under the accept-new policy, in authorized_keys form ("type base64",
	// no comment); ok is false when none is. EInvalid if hostport is not
	// host:port.
	PinnedHostKey(ctx context.Context, hostport string) (key string, ok bool, err error)
	// PinHostKey pins key (authorized_keys form; a comment is dropped) for
	// hostport if none is pinned yet; if another key is pinned, it returns
	// an EConflict *tasks.Error naming the host and both keys' types and
	// SHA256 fingerprints. Pinning the same key again is not an error. Of
	// concurrent pins of different keys exactly one wins. A pin is never
	// replaced. EInvalid if hostport is not host:port or key does not parse.
	PinHostKey(ctx context.Context, hostport, key string) error

	// ClusterID returns a random id made the first time any caller asks,
	// the same ever after and for every coordinator that shares the store:
	// it tells what one mito installation left on a host from what another
	// one did. Of concurrent first callers, all get the same id.
	ClusterID(ctx context.Context) (string, error)

	// Close releases the store's connections.
	Close() error
}

// ClaimParams describes who claims and for how long.
type ClaimParams struct {
	Host   string
	Groups []string // the groups the host serves
	Tags   []string // the host's tags; a task matches when its tags ⊆ these
	Max    int
	TTL    time.Duration
	Now    time.Time
	// NoInputs claims only tasks without Spec.Inputs, for a worker too
	// old to fetch them (it does not announce tasks.FeatureInputs): it
	// would drop them unread and run the command without its files. The
	// tasks it passes over stay queued, in their place, for other hosts.
	// Default false: every task the host may run.
	NoInputs bool
}
