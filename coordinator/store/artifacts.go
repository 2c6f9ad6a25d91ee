package store

import "github.com/mitolab/mito/tasks"

// CheckArtifactSelection returns DeleteArtifacts' EInvalid error for
// attempt, or nil.
func CheckArtifactSelection(attempt int) error {
	if attempt < 0 {
		return tasks.Invalid("attempt", "must be 0 (every attempt) or a positive attempt number, got %d", attempt)
	}
	return nil
}

// ArtifactsInUse is DeleteArtifacts' EConflict error for task id while it
// runs: its shim may still be uploading, and a record deleted now could
// come back, or its object be deleted under an upload that then records
// it.
func ArtifactsInUse(id tasks.ID) *tasks.Error {
	return tasks.Errorf(tasks.EConflict, "task %d is running: its shim may still be uploading artifacts; delete them once it has ended, or cancel it first", id)
}

// CheckArtifactAttempt returns GetArtifact's EInvalid error for attempt,
// or nil.
func CheckArtifactAttempt(attempt int) error {
	if attempt < 0 {
		return tasks.Invalid("attempt", "must be 0 (the latest that has the artifact) or a positive attempt number, got %d", attempt)
	}
	return nil
}

// ArtifactNotFound is GetArtifact's ENotFound error, the same from every
// store.
func ArtifactNotFound(id tasks.ID, attempt int, name string) *tasks.Error {
	if attempt == 0 {
		return tasks.Errorf(tasks.ENotFound, "task %d has no artifact %q", id, name)
	}
	return tasks.Errorf(tasks.ENotFound, "task %d attempt %d has no artifact %q", id, attempt, name)
}
