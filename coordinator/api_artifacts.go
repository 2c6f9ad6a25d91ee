package coordinator

import (
	"context"
	"net/http"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/tasks"
)

// maxDeleteNames bounds the names one artifact delete may give; a caller
// with more deletes every name, or sends several requests.
const maxDeleteNames = 1000

// handleDeleteArtifacts deletes artifacts of a task: those of query
// attempt (default every attempt) named by the repeated query name
// (default every name). It is how a group frees the quota its tasks'
// outputs take. The store removes the records and credits the quota
// first; the objects are deleted after, and one that fails to go is only
// garbage, as for a deleted attachment.
func (c *Coordinator) handleDeleteArtifacts(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	t, err := c.readableTask(r, u, tasks.RoleWrite)
	if err != nil {
		return err
	}
	attempt, err := queryInt(r, "attempt", 0)
	if err != nil {
		return err
	}
	switch {
	case attempt < 0:
		return tasks.Invalid("attempt", "must be a positive attempt number, or 0 or none for every attempt, got %d", attempt)
	case attempt > int64(t.Attempt) && t.Attempt == 0:
		return tasks.Invalid("attempt", "task %d has not run yet", t.ID)
	case attempt > int64(t.Attempt):
		return tasks.Invalid("attempt", "task %d has attempts 1 to %d, got %d", t.ID, t.Attempt, attempt)
	}
	names := r.URL.Query()["name"]
	if len(names) > maxDeleteNames {
		return &tasks.Error{Code: tasks.ETooLarge, Field: "name", Message: "name: over the limit of 1000 names in one request; delete every name, or send several requests"}
	}
	for i, n := range names {
		if names[i], err = artifacts.CleanName(n); err != nil {
			return err
		}
	}
	deleted, err := c.store.DeleteArtifacts(r.Context(), t.ID, int(attempt), names)
	if err != nil {
		return err
	}
	// The records are gone and the quota credited: the objects are
	// nobody's now, and a failed delete only leaves garbage behind.
	var freed int64
	for _, a := range deleted {
		c.deleteArtifact(context.WithoutCancel(r.Context()), artifactKey(t.ID, a.Attempt, a.Name))
		freed += a.Size
	}
	if deleted == nil {
		deleted = []tasks.Artifact{}
	}
	c.log.Info("artifacts deleted", logTask, t.ID, "count", len(deleted), "bytes", freed, logUser, u.Name)
	writeJSON(w, http.StatusOK, map[string][]tasks.Artifact{"deleted": deleted})
	return nil
}
