// Package faults is mito's fault suite, tests only. Each scenario starts
// the real binaries on real services of its own (OpenSSH sshd hosts, one
// of them in a network namespace, PostgreSQL, Redis), submits tasks that
// run longer than their lease and write a ledger of what they did when
// (see package ledger), injects one kind of fault again and again while
// they run (a shim killed or frozen, an SSH connection cut, the
// coordinator or PostgreSQL or Redis down, a host partitioned, a CPU hog)
// and then counts, per task, what went wrong: lost, finished twice, two
// attempts at once, stale writes accepted, requeues no fault explains,
// processes that outlived their attempt.
//
// `make test` runs a short version (three scenarios, a few tasks each).
// `make faults` runs them all on SQLite and PostgreSQL with the sizes of
// docs/reliability.md and rewrites its table (MITO_FAULTS=full,
// MITO_FAULTS_DOC=docs/reliability.md).
package faults
