package store

import (
	"slices"

	"github.com/mitolab/mito/tasks"
)

// WaitsOn returns the source tasks of ins' task inputs, each once, in
// ascending order: the tasks that must reach a final state before a task
// with these inputs may be claimed. Both stores keep this list beside the
// task (column waits_on), so that Claim can skip a task whose source is
// still queued or running in the same statement that walks the queue,
// instead of handing it to a host that would only fail to fetch the
// input. It returns nil when no input names a task.
func WaitsOn(ins []tasks.Input) []tasks.ID {
	var ids []tasks.ID
	for _, in := range ins {
		if in.Task > 0 {
			ids = append(ids, in.Task)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}
