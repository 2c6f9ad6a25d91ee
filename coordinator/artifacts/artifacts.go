// Package artifacts stores the files tasks leave in $MITO_OUTPUT_DIR. The
// coordinator talks to one Store; Dir keeps objects in a local directory
// (the embedded default), and an S3 implementation can take its place.
// Every implementation must pass the conformance suite in artifactstest.
//
// Artifact names come from shims and users and are untrusted: CleanName
// and ValidKey are the gate every name and key passes before it reaches a
// Store, so nothing is ever written outside the store's root.
package artifacts

import (
	"context"
	"io"
	"strings"

	"github.com/mitolab/mito/tasks"
)

// Store keeps artifact bytes by key. Keys look like "tasks/42/1/out/result.csv".
type Store interface {
	// Put stores r under key atomically: a reader sees the whole object or none, never a partial one; a failed Put leaves nothing visible. Returns size and hex sha256 of what was stored.
	Put(ctx context.Context, key string, r io.Reader) (size int64, sha256 string, err error)
	// Open returns the object and its size; tasks.ErrNotFound-coded error if missing.
	Open(ctx context.Context, key string) (io.ReadCloser, int64, error)
	// Delete removes the object; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys under prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// MaxKeyLen bounds keys and names, well under the path limits of file
// systems and S3 (1024 bytes).
const MaxKeyLen = tasks.MaxPathLen

// ValidKey checks a store key: a relative slash path of non-empty
// segments, none "." or "..", with no NUL, backslash or control
// character, valid UTF-8, at most MaxKeyLen bytes, and not under the
// reserved top-level ".tmp". Stores call it on every key, so a key that
// passes can be joined to a root without escaping it.
func ValidKey(key string) error {
	if msg := pathProblem(key); msg != "" {
		return tasks.Invalid("key", "%q: %s", key, msg)
	}
	if key == tmpDir || strings.HasPrefix(key, tmpDir+"/") {
		return tasks.Invalid("key", "%q: %s is reserved", key, tmpDir)
	}
	return nil
}

// CleanName checks an artifact name sent by a shim or a user (a path
// relative to the task's output directory) and returns it in canonical
// form. It is tasks.CleanPath for the field "name".
func CleanName(name string) (string, error) { return tasks.CleanPath("name", name) }

// tmpDir is where a Dir keeps objects being written; no key may use it.
const tmpDir = ".tmp"

// pathProblem returns why p is not a safe relative slash path, or "".
func pathProblem(p string) string { return tasks.PathProblem(p) }
