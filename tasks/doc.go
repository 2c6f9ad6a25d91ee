// Package tasks holds mito's domain: tasks and their specs, the task state
// machine, leases and results, users, groups and roles, hosts, the messages of
// the worker protocol, and the error type every layer speaks.
//
// It imports nothing of mito's and does no I/O, so the coordinator, the shim
// and the client can all share one definition of what a task is and what may
// happen to it.
package tasks
