package e2e_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// TestInventoryReload edits the inventory under a running coordinator:
// a new host connects, a removed host drains (its running task finishes,
// it takes nothing new) and goes offline, and a changed tag applies to
// the next claim.
func TestInventoryReload(t *testing.T) {
	const before = `
hosts:
  - {name: alpha, transport: local, groups: [admin], tags: [old]}
  - {name: beta, transport: local, groups: [admin], tags: [b]}
`
	const after = `
hosts:
  - {name: alpha, transport: local, groups: [admin], tags: [new]}
  - {name: gamma, transport: local, groups: [admin], tags: [g]}
`
	l := startLab(t, before, "--reload-every", "200ms")
	l.waitHosts(30*time.Second, tasks.HostReady, "alpha", "beta")
	running := l.submit("-t", "b", "sh", "-c", "sleep 3; echo finished")
	l.waitFor(running, 20*time.Second, tasks.Running)

	inv := filepath.Join(filepath.Dir(l.data), "inventory.yaml")
	if err := os.WriteFile(inv, []byte(after), 0o644); err != nil {
		t.Fatal(err)
	}
	hosts := l.waitHosts(30*time.Second, tasks.HostReady, "alpha", "gamma")
	if st := hosts["beta"].State; st != tasks.HostDraining {
		t.Errorf("beta is %s while its task runs; want draining", st)
	}
	// A task only beta could run waits: a draining host claims nothing.
	stuck := l.submit("-t", "b", "true")
	fresh := l.submit("-t", "new", "true")
	if task := l.waitFor(fresh, 30*time.Second, tasks.Succeeded, tasks.Failed); task.Host != "alpha" {
		t.Errorf("task tagged new ran on %q; want alpha, whose tags changed", task.Host)
	}
	if task := l.waitFor(running, 30*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded || task.Host != "beta" {
		t.Errorf("the draining host's task: %s on %s; want succeeded on beta", task.State, task.Host)
	}
	l.waitHosts(30*time.Second, tasks.HostOffline, "beta")
	if task := l.get(stuck); task.State != tasks.Queued {
		t.Errorf("task for the removed host is %s; want queued", task.State)
	}

	// A broken file is reported and ignored: the hosts stay as they are.
	if err := os.WriteFile(inv, []byte("hosts:\n  - {name: alpha, slots: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	l.waitHosts(5*time.Second, tasks.HostReady, "alpha", "gamma")
}
