package tasks

import "time"

// Messages of the worker protocol, spoken by a shim (over its SSH or pipe
// link) or a standalone `mito worker` (over TCP) to the coordinator. Every
// write for a task carries its LeaseRef.
//
//	POST /worker/v1/register             RegisterRequest  → RegisterResponse
//	POST /worker/v1/claim                ClaimRequest     → ClaimResponse     (long poll)
//	POST /worker/v1/heartbeat            HeartbeatRequest → HeartbeatResponse (long poll)
//	POST /worker/v1/tasks/{id}/log       raw bytes; query attempt, stream, offset; header X-Mito-Lease
//	PUT  /worker/v1/tasks/{id}/artifacts/{name...}  raw bytes; query attempt; header X-Mito-Lease
//	POST /worker/v1/tasks/{id}/artifacts-presign  PresignRequest → PresignResponse
//	POST /worker/v1/tasks/{id}/artifacts-commit   CommitRequest  → Artifact
//	GET  /worker/v1/tasks/{id}/inputs/{index}      → raw bytes; query attempt; header X-Mito-Lease
//	POST /worker/v1/tasks/{id}/inputs-presign      InputPresignRequest → InputPresignResponse
//	POST /worker/v1/tasks/{id}/finish    FinishRequest    → Task
//	POST /worker/v1/release              ReleaseRequest   → ReleaseResponse
//	POST /worker/v1/deregister           ReleaseRequest   → 204
//
// Calls after register carry the session in the X-Mito-Session header.
//
// The release call ends attempts the worker knows to be dead before their
// leases run out, so that they are queued again at once: a new shim found
// them left on its host by an old one and killed them (see
// RegisterResponse.RunScope), or a stopping worker killed them. The
// deregister call is a worker's last: it releases what it names, and the
// coordinator shows the host offline at once.
//
// The inputs call streams Spec.Inputs[index] with Content-Length and
// X-Mito-Sha256 (lowercase hex), which the worker checks. An input that
// cannot be had now (an attachment deleted since submission, a source
// task that ended without the artifact or has not made it yet) is a 404
// whose message names the input; the worker fails the attempt with that
// message without running the command.
//
// The inputs-presign call is the direct way to the same bytes, for a
// session whose Artifacts mode is not relay: it resolves the input as the
// inputs call does (the same 404s) and answers a presigned GET URL on the
// artifact store with the size and sha256 to check, so that the bytes
// need not cross the link. A store that cannot presign, or a relay
// session, gets a 400 on the field "artifacts": fetch through the
// coordinator then.

// RegisterRequest starts a worker session. Over a pipe or SSH link the
// coordinator already knows the host and ignores Name, Groups, Tags and Slots.
type RegisterRequest struct {
	Name    string   `json:"name"`
	Groups  []string `json:"groups,omitempty"`
	Tags    []string `json:"tags,omitempty"`
	Slots   int      `json:"slots,omitempty"`
	Version string   `json:"version,omitempty"`
	OS      string   `json:"os,omitempty"`
	Arch    string   `json:"arch,omitempty"`
	// Running lists attempts the worker still runs from an earlier session,
	// so that a reconnecting host can keep them if their leases still hold.
	Running []LeaseRef `json:"running,omitempty"`
	// Features lists what the worker can do beyond the first protocol
	// (FeatureInputs, ...). An older worker drops the fields of a task it
	// does not know and would run it wrong, so the coordinator gives a
	// worker only the tasks its features cover; a worker that sends none
	// is taken for the oldest.
	Features []string `json:"features,omitempty"`
	// Instance is random and new for every start of the worker process.
	// A standalone worker that registers under the Name of a live worker
	// of another Instance is refused (a second worker of one name), while
	// the same process registering again (the coordinator restarted) is
	// not.
	Instance string `json:"instance,omitempty"`
}

// Worker features, as in RegisterRequest.Features. Each names a part of
// a task that a worker without it would silently ignore.
const (
	// FeatureInputs: the worker fetches Spec.Inputs (the inputs call)
	// into the work directory before the command starts.
	FeatureInputs = "inputs"
)

// RegisterResponse configures the worker for its session.
type RegisterResponse struct {
	Session string `json:"session"`
	Host    string `json:"host"`
	Slots   int    `json:"slots"`
	// Env is the host's environment from the inventory, set for every task.
	Env map[string]string `json:"env,omitempty"`
	// LeaseTTL is how long a lease lasts without renewal. A worker that has
	// not renewed for that long kills the attempt itself.
	LeaseTTL Duration `json:"lease_ttl"`
	// Heartbeat is how often the worker must renew, at the latest.
	Heartbeat Duration `json:"heartbeat"`
	// LogCap bounds each output stream of an attempt, in bytes.
	LogCap int64 `json:"log_cap"`
	// KillGrace is the time between SIGTERM and SIGKILL.
	KillGrace Duration `json:"kill_grace"`
	// Stop lists attempts from RegisterRequest.Running that must be killed.
	Stop []Stop `json:"stop,omitempty"`
	// Artifacts is how the worker sends artifacts: ArtifactsRelay (through
	// the coordinator, the PUT call), ArtifactsDirect (straight to the
	// store by a presigned URL: the presign and commit calls) or
	// ArtifactsAuto (direct where the store can be reached, else relay).
	// Empty, from an older coordinator, means relay.
	Artifacts string `json:"artifacts,omitempty"`
	// DirectInputs says the coordinator answers the inputs-presign call,
	// so that a worker not in relay mode may fetch inputs straight from
	// the store. False from an older coordinator, which would answer the
	// call with a 404 the worker would take for a missing input.
	DirectInputs bool `json:"direct_inputs,omitempty"`
	// RunScope names the directory (under ~/.cache/mito/run/ on the
	// host) where the worker keeps a record of each attempt it runs, for
	// as long as the attempt's watchdog lives: a worker starting on the
	// host finds there what an earlier one of the same mito installation
	// (the same store) and the same host left, kills it and releases it.
	// It is one path element: the store's cluster id and the host's name.
	// Empty from an older coordinator: no records are kept.
	RunScope string `json:"run_scope,omitempty"`
}

// ReleaseRequest names attempts that are dead on the worker's host and
// why, for the release and deregister calls.
type ReleaseRequest struct {
	Attempts []LeaseRef `json:"attempts,omitempty"`
	Reason   string     `json:"reason,omitempty"`
}

// ReleaseResponse lists the attempts the coordinator ended: those of
// the request that still held their leases on the worker's host. Each
// task went back to the queue, or failed if it had no attempts left.
type ReleaseResponse struct {
	Released []LeaseRef `json:"released"`
}

// Artifact upload modes, as in RegisterResponse.Artifacts and the
// inventory's `artifacts:`.
const (
	ArtifactsAuto   = "auto"
	ArtifactsDirect = "direct"
	ArtifactsRelay  = "relay"
)

// PresignRequest asks for a URL to upload an artifact of Size bytes
// straight to the artifact store.
type PresignRequest struct {
	Lease LeaseRef `json:"lease"`
	Name  string   `json:"name"`
	Size  int64    `json:"size"`
}

// PresignResponse says how to upload the artifact: send Method to URL
// with Headers and a body of exactly the announced size, before Expires.
// The URL is a credential: it is never logged.
type PresignResponse struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers,omitempty"`
	Expires time.Time         `json:"expires"`
}

// InputPresignRequest asks for a URL to fetch input number Index (in
// Spec.Inputs order) of the leased attempt straight from the artifact
// store.
type InputPresignRequest struct {
	Lease LeaseRef `json:"lease"`
	Index int      `json:"index"`
}

// InputPresignResponse says how to fetch an input: send Method (GET) to
// URL before Expires, and check that the body is Size bytes with the
// lowercase hex SHA256. Unlike the inputs call, it carries the size and
// sum in the body, since the store's headers are not the coordinator's.
// The URL is a credential: it is never logged.
type InputPresignResponse struct {
	URL     string    `json:"url"`
	Method  string    `json:"method"`
	Expires time.Time `json:"expires"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"`
}

// CommitRequest records an artifact uploaded by a presigned URL. The
// coordinator checks Size against the stored object; SHA256 is the
// worker's, computed while it sent the bytes, and recorded as is.
type CommitRequest struct {
	Lease  LeaseRef `json:"lease"`
	Name   string   `json:"name"`
	Size   int64    `json:"size"`
	SHA256 string   `json:"sha256"`
}

// ClaimRequest asks for up to Max tasks, waiting up to Wait for one to come.
type ClaimRequest struct {
	Max  int      `json:"max"`
	Wait Duration `json:"wait,omitempty"`
}

// Assignment is one claimed attempt: what to run and the lease to run it under.
type Assignment struct {
	Lease Lease `json:"lease"`
	Task  Task  `json:"task"`
}

// ClaimResponse carries zero or more assignments; zero means the wait ran out.
type ClaimResponse struct {
	Assignments []Assignment `json:"assignments"`
}

// HeartbeatRequest renews the leases of the running attempts, then waits up
// to Wait for one of them to be stopped.
type HeartbeatRequest struct {
	Running []LeaseRef `json:"running"`
	Wait    Duration   `json:"wait,omitempty"`
}

// Stop tells a worker to kill an attempt: it was cancelled, or its lease is
// no longer current.
type Stop struct {
	Task    ID     `json:"task"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
}

// HeartbeatResponse lists the attempts to kill; all others were renewed.
type HeartbeatResponse struct {
	Stop []Stop `json:"stop,omitempty"`
}

// FinishRequest reports the end of an attempt.
type FinishRequest struct {
	Lease  LeaseRef `json:"lease"`
	Result Result   `json:"result"`
}
