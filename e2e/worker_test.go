package e2e_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// TestStandaloneWorker runs `mito worker` over TCP, as on a host that can
// dial the coordinator, authenticated by the token `mito client login`
// stored.
func TestStandaloneWorker(t *testing.T) {
	l := startLab(t, "hosts: []\n")
	var logs bytes.Buffer
	w := exec.Command(filepath.Join(bin, "mito"), "worker", "--coordinator", l.url, "--name", "tcp-host", "-g", "admin", "-t", "remote", "--slots", "2", "--work-dir", t.TempDir())
	w.Env = append(os.Environ(), "MITO_CONFIG_DIR="+l.cfgDir)
	w.Stdout, w.Stderr = &logs, &logs
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = w.Process.Signal(syscall.SIGTERM)
		_ = w.Wait()
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	}()

	tid := l.submit("-t", "remote", "--", "sh", "-c", "echo from-worker")
	task := l.waitFor(tid, 30*time.Second, tasks.Succeeded, tasks.Failed)
	if task.State != tasks.Succeeded || task.Host != "tcp-host" {
		t.Fatalf("task %s on %q; want succeeded on tcp-host", task.State, task.Host)
	}
	if out := l.mustRun(nil, "client", "tasks", "logs", id(tid)); out != "from-worker\n" {
		t.Errorf("logs = %q; want %q", out, "from-worker\n")
	}
}

// TestDataDirIsLocked keeps a second coordinator off a data directory in
// use: it would drive the same hosts and share the SQLite file.
func TestDataDirIsLocked(t *testing.T) {
	l := startLab(t, "hosts: []\n")
	out, errOut, code := l.run(nil, "coordinator", "--data-dir", l.data, "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "in use by another coordinator") {
		t.Errorf("second coordinator on %s: exit %d, stdout %q, stderr %q; want a refusal", l.data, code, out, errOut)
	}
}

// TestInventoryGroupsAreCreated lets a fresh coordinator serve the groups
// its inventory names, without a manual `groups create`.
func TestInventoryGroupsAreCreated(t *testing.T) {
	l := startLab(t, "hosts:\n  - {name: h, transport: local, groups: [netlab]}\n")
	tid := l.submit("-g", "netlab", "--", "true")
	if task := l.waitFor(tid, 30*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Errorf("task in the inventory's group: %s; want succeeded", task.State)
	}
}
