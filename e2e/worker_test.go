package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
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

// TestPostgresAndS3 runs the coordinator on the production backends: its
// state in PostgreSQL, the artifacts in a real S3 server, events on Redis.
func TestPostgresAndS3(t *testing.T) {
	pg, s3 := os.Getenv("MITO_TEST_PG_URL"), os.Getenv("MITO_TEST_S3_ENDPOINT")
	if pg == "" || s3 == "" {
		msg := "needs MITO_TEST_PG_URL and MITO_TEST_S3_*: run `make test`, or `bash .ci/services-up.sh && source .ci/tmp/env`"
		skipOrFail(t, msg)
	}
	db := freshSchema(t, pg, "e2e")
	t.Setenv("MITO_S3_ACCESS_KEY", os.Getenv("MITO_TEST_S3_ACCESS_KEY"))
	t.Setenv("MITO_S3_SECRET_KEY", os.Getenv("MITO_TEST_S3_SECRET_KEY"))
	bucket := fmt.Sprintf("mito-e2e-%d", time.Now().UnixNano())
	args := []string{"--db", db, "--s3-endpoint", s3, "--s3-bucket", bucket}
	if r := os.Getenv("MITO_TEST_REDIS_URL"); r != "" {
		args = append(args, "--redis", r)
	}
	l := startLab(t, "hosts:\n  - {name: h, transport: local, groups: [admin]}\n", args...)
	if os.Getenv("MITO_TEST_REDIS_URL") != "" && !strings.Contains(l.logs.String(), "events=\"redis") {
		t.Errorf("the coordinator does not say it uses Redis for events")
	}
	if logs := l.logs.String(); strings.Contains(logs, os.Getenv("MITO_TEST_S3_SECRET_KEY")) {
		t.Error("the coordinator logged the S3 secret key")
	}
	tid := l.submit("sh", "-c", `head -c 3000000 /dev/urandom > "$MITO_OUTPUT_DIR/blob"; sha256sum "$MITO_OUTPUT_DIR/blob" | cut -d" " -f1`)
	if task := l.waitFor(tid, 30*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
		t.Fatalf("task %s: %s", task.State, task.Error)
	}
	want := strings.TrimSpace(l.mustRun(nil, "client", "tasks", "logs", id(tid)))
	dir := t.TempDir()
	l.mustRun(nil, "client", "tasks", "artifacts", "download", "-o", dir, id(tid))
	b, err := os.ReadFile(filepath.Join(dir, "blob"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != want {
		t.Errorf("downloaded blob has sha256 %s; the task wrote %s", got, want)
	}
	if _, err := os.Stat(filepath.Join(l.data, "artifacts")); err == nil {
		t.Errorf("artifacts went to the data directory, not to S3")
	}
}

// workerProc is a `mito worker` the test started.
type workerProc struct {
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

// startWorker starts `mito worker` for the lab under name, serving the
// admin group with the tag "remote", with its run directory (where it
// holds its name) under cache: "" for a new one, as on another machine.
func (l *lab) startWorker(name, cache string, args ...string) *workerProc {
	l.t.Helper()
	if cache == "" {
		cache = l.t.TempDir()
	}
	w := &workerProc{logs: &syncBuffer{}, exited: make(chan struct{})}
	w.cmd = exec.Command(filepath.Join(bin, "mito"), append([]string{"worker", "--coordinator", l.url, "--name", name, "-g", "admin", "-t", "remote", "--work-dir", l.t.TempDir()}, args...)...)
	w.cmd.Env = append(os.Environ(), "MITO_CONFIG_DIR="+l.cfgDir, "XDG_CACHE_HOME="+cache)
	w.cmd.Stdout, w.cmd.Stderr = w.logs, w.logs
	if err := w.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	go func() { _ = w.cmd.Wait(); close(w.exited) }()
	l.t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.exited
		if l.t.Failed() {
			l.t.Logf("worker %s log:\n%s", name, w.logs.String())
		}
	})
	return w
}

// TestWorkerGoneWhileCoordinatorDown stops a worker while its
// coordinator is down: once the coordinator is back, the worker must show
// offline within a lease TTL of the restart, not ready for ever.
func TestWorkerGoneWhileCoordinatorDown(t *testing.T) {
	l := startLab(t, "hosts: []\n")
	w := l.startWorker("gone-host", "")
	l.waitHosts(60*time.Second, tasks.HostReady, "gone-host")
	l.stop()
	if err := w.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-w.exited
	l.startCoordinator()
	h := l.waitHosts(60*time.Second, tasks.HostOffline, "gone-host")["gone-host"]
	if !strings.Contains(h.LastError, "stopped calling") {
		t.Errorf("offline worker's last error %q; want it to say it stopped calling", h.LastError)
	}

	// One that is alive across the restart comes back ready by itself.
	l.startWorker("live-host", "")
	l.waitHosts(60*time.Second, tasks.HostReady, "live-host")
	l.restart()
	l.waitHosts(60*time.Second, tasks.HostReady, "live-host")
	tid := l.submit("-t", "remote", "--", "true")
	if task := l.waitFor(tid, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded || task.Host != "live-host" {
		t.Errorf("task after the restart: %s on %q; want succeeded on live-host", task.State, task.Host)
	}
}

// TestWorkerDuplicateNameRefused starts a second worker under the name of
// a live one, on this machine and as from another: both must exit 5 at
// once and say to use --name, and the first must keep its session. A
// worker killed and started again takes its name back at once.
func TestWorkerDuplicateNameRefused(t *testing.T) {
	l := startLab(t, "hosts: []\n")
	cache := t.TempDir()
	first := l.startWorker("dup-host", cache)
	l.waitHosts(60*time.Second, tasks.HostReady, "dup-host")
	for where, c := range map[string]string{"this machine": cache, "another machine": ""} {
		second := l.startWorker("dup-host", c)
		select {
		case <-second.exited:
		case <-time.After(60 * time.Second):
			t.Fatalf("a second worker named dup-host on %s still runs after 60s; want it refused at once", where)
		}
		if code := second.cmd.ProcessState.ExitCode(); code != 5 {
			t.Errorf("second worker of one name on %s: exit %d; want 5\n%s", where, code, second.logs.String())
		}
		if out := second.logs.String(); !strings.Contains(out, "--name") || !strings.Contains(out, "dup-host") {
			t.Errorf("second worker on %s said %q; want the name and a hint to use --name", where, out)
		}
	}
	tid := l.submit("-t", "remote", "--", "true")
	if task := l.waitFor(tid, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded || task.Host != "dup-host" {
		t.Errorf("task: %s on %q; want succeeded on dup-host", task.State, task.Host)
	}
	if strings.Contains(first.logs.String(), "registering again") {
		t.Errorf("the first worker lost its session:\n%s", first.logs.String())
	}

	// Killed and started again on its machine: it registers at once.
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	again := l.startWorker("dup-host", cache)
	tid = l.submit("-t", "remote", "--", "true")
	if task := l.waitFor(tid, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded || task.Host != "dup-host" {
		t.Errorf("task after the restart: %s on %q; want succeeded on dup-host", task.State, task.Host)
	}
	select {
	case <-again.exited:
		t.Errorf("the restarted worker exited %d:\n%s", again.cmd.ProcessState.ExitCode(), again.logs.String())
	default:
	}
}

// TestWorkerSIGTERMDeregisters stops a worker that runs a task with
// SIGTERM: its host must be offline as soon as it has exited, and the
// task queued again at once, not when its lease runs out.
func TestWorkerSIGTERMDeregisters(t *testing.T) {
	l := startLab(t, "hosts: []\n", "--lease-ttl", "60s")
	w := l.startWorker("term-host", "")
	l.waitHosts(60*time.Second, tasks.HostReady, "term-host")
	tid := l.submit("-t", "remote", "--", "sleep", "600")
	l.waitFor(tid, 60*time.Second, tasks.Running)
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-w.exited
	if code := w.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("worker exit %d after SIGTERM; want 0", code)
	}
	var hosts []tasks.Host
	if err := json.Unmarshal([]byte(l.mustRun(nil, "client", "hosts", "list", "-o", "json")), &hosts); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.Name == "term-host" && h.State != tasks.HostOffline {
			t.Errorf("host right after its worker exited: %s; want offline", h.State)
		}
	}
	if task := l.get(tid); task.State != tasks.Queued || task.Attempt != 1 {
		t.Errorf("task right after its worker exited: %s at attempt %d; want queued again (lease TTL 60s)", task.State, task.Attempt)
	}
}
