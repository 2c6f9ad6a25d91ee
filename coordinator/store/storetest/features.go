package storetest

import (
	"testing"

	"github.com/mitolab/mito/coordinator/store"
	"github.com/mitolab/mito/tasks"
)

// testClaimNoInputs checks ClaimParams.NoInputs, the claim of a worker too
// old to fetch inputs: it passes over every task with inputs, of either
// kind, and takes the tasks queued behind them, those submitted with an
// empty input list included; the tasks it passed over stay queued for a
// claim without NoInputs, which takes tasks with and without inputs alike.
func testClaimNoInputs(t *testing.T, s store.Store) {
	withInputs := func(group string, ins ...tasks.Input) tasks.Spec {
		sp := spec(group)
		sp.Priority = 10 // at the head of the queue
		sp.Inputs = ins
		return sp
	}
	fromAttachment := tasks.Input{Attachment: "data.csv", Path: "data.csv"}
	// A source that does not exist never makes the task wait (see
	// testClaimWaitsOnSources), so only NoInputs can hold it back.
	fromTask := tasks.Input{Task: 1 << 40, Artifact: "result", Path: "result"}
	emptyList := func(group string) tasks.Spec {
		sp := spec(group)
		sp.Inputs = []tasks.Input{} // stored as '[]', not 'null'
		return sp
	}
	p := func(group string, max int, noInputs bool) store.ClaimParams {
		return store.ClaimParams{Host: "h", Groups: []string{group}, Max: max, NoInputs: noInputs}
	}

	t.Run("without inputs only", func(t *testing.T) {
		ts := submit(t, s, "alice", withInputs("old", fromAttachment), withInputs("old", fromTask),
			emptyList("old"), spec("old"))
		att, task, empty, none := ts[0].ID, ts[1].ID, ts[2].ID, ts[3].ID

		wantIDs(t, assignedIDs(claim(t, s, p("old", 1, true))), []tasks.ID{empty}, "first claim without inputs")
		wantIDs(t, assignedIDs(claim(t, s, p("old", 10, true))), []tasks.ID{none}, "second claim without inputs")
		wantIDs(t, assignedIDs(claim(t, s, p("old", 10, true))), nil, "claim without inputs of a queue holding only tasks with inputs")
		for _, id := range []tasks.ID{att, task} {
			if st := getTask(t, s, id).State; st != tasks.Queued {
				t.Errorf("task %d with inputs: %s; want still queued", id, st)
			}
		}
		wantIDs(t, assignedIDs(claim(t, s, p("old", 10, false))), []tasks.ID{att, task}, "claim with inputs after them")
	})

	t.Run("all", func(t *testing.T) {
		ts := submit(t, s, "alice", withInputs("new", fromAttachment), emptyList("new"), withInputs("new", fromTask), spec("new"))
		wantIDs(t, assignedIDs(claim(t, s, p("new", 10, false))), []tasks.ID{ts[0].ID, ts[2].ID, ts[1].ID, ts[3].ID}, "claim with inputs")
	})
}
