package coordinator

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/transport/ssh"
	"github.com/mitolab/mito/transport/ssh/sshtest"
)

// opsCoordinator is a coordinator for calling bootstrap directly, with
// the step timeout given (0: the default), that dials SSH hosts
// hermetically.
func opsCoordinator(t *testing.T, timeout time.Duration) *Coordinator {
	t.Helper()
	c := New(Config{SSH: ssh.Config{SSHConfig: "none", Agent: "none", KeepAlive: -1}})
	if timeout > 0 {
		c.ops().stepTimeout = timeout
	}
	return c
}

// sshtestHost starts an sshtest server and returns an inventory host that
// reaches it with a fresh key, trusted through a known_hosts file.
func sshtestHost(t *testing.T, opts sshtest.Options, steps ...inventory.Step) inventory.Host {
	t.Helper()
	dir := t.TempDir()
	id, signer := sshtest.WriteIdentity(t, dir, "id_ed25519")
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, signer.PublicKey())
	srv := sshtest.New(t, opts)
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return inventory.Host{Name: "lab1", Transport: inventory.TransportSSH, Address: srv.Host(), Port: srv.Port(),
		User: "ops", IdentityFile: id, KnownHosts: kh, Bootstrap: steps}
}

var opsAdmin = tasks.User{Name: "admin", Admin: true}

// bootstrapWithin runs a host's bootstrap and fails the test when it takes
// longer than limit.
func bootstrapWithin(t *testing.T, c *Coordinator, h inventory.Host, limit time.Duration) (tasks.BootstrapResult, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan tasks.BootstrapResult, 1)
	go func() { done <- c.bootstrap(context.Background(), opsAdmin, h, false) }()
	select {
	case res := <-done:
		return res, time.Since(start)
	case <-time.After(limit):
		t.Fatalf("bootstrap of %s still running after %s", h.Name, limit)
	}
	panic("unreachable")
}

// TestBootstrapSSHStepLeavesDaemon is a run step whose command exits but
// leaves a process holding its stdout, as `nohup iperf3 -s &` does: the
// step succeeds shortly after the exit, and its session is closed.
func TestBootstrapSSHStepLeavesDaemon(t *testing.T) {
	t.Parallel()
	lingerEnded := make(chan struct{}, 1)
	h := sshtestHost(t, sshtest.Options{
		Handler: func(_ context.Context, cmd string, _ io.Reader, stdout, _ io.Writer) int {
			io.WriteString(stdout, "started "+cmd+"\n")
			return 0
		},
		Linger: func(ctx context.Context, stdout, _ io.Writer) {
			io.WriteString(stdout, "Server listening on 5201\n")
			<-ctx.Done()
			lingerEnded <- struct{}{}
		},
	}, inventory.Step{Run: "nohup iperf3 -s &"})
	c := opsCoordinator(t, 0)

	res, took := bootstrapWithin(t, c, h, outputGrace+10*time.Second)
	if !res.OK || len(res.Steps) != 1 || res.Steps[0].Status != tasks.StepOK {
		t.Fatalf("bootstrap: got %+v; want the step ok", res)
	}
	if want := "started nohup iperf3 -s &\nServer listening on 5201\n"; res.Steps[0].Output != want {
		t.Errorf("output %q; want %q", res.Steps[0].Output, want)
	}
	if took > outputGrace+5*time.Second {
		t.Errorf("bootstrap took %s; want about %s after the command exited", took, outputGrace)
	}
	select {
	case <-lingerEnded:
	case <-time.After(5 * time.Second):
		t.Error("the step's session was not closed")
	}
}

// TestBootstrapSSHStepTimeout is a run step that never ends: it fails
// when the step timeout passes, its session closed, and the next step is
// skipped.
func TestBootstrapSSHStepTimeout(t *testing.T) {
	t.Parallel()
	ended := make(chan struct{}, 1)
	h := sshtestHost(t, sshtest.Options{
		Handler: func(ctx context.Context, _ string, _ io.Reader, stdout, _ io.Writer) int {
			io.WriteString(stdout, "waiting\n")
			<-ctx.Done()
			ended <- struct{}{}
			return 0
		},
	}, inventory.Step{Run: "hang"}, inventory.Step{Run: "never"})
	c := opsCoordinator(t, 300*time.Millisecond)

	res, _ := bootstrapWithin(t, c, h, 10*time.Second)
	if res.OK || len(res.Steps) != 2 || res.Steps[0].Status != tasks.StepFailed || res.Steps[1].Status != tasks.StepSkipped {
		t.Fatalf("bootstrap: got %+v; want step 1 failed, step 2 skipped", res)
	}
	if got := res.Steps[0]; got.Error != "timed out after 300ms" || got.Output != "waiting\n" {
		t.Errorf("step 1: error %q, output %q; want %q and the output so far", got.Error, got.Output, "timed out after 300ms")
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the step's session was not closed")
	}
}

// TestBootstrapLocalStepLeavesDaemon: a local run step that starts a
// background process without redirecting its output succeeds shortly
// after the shell exits.
func TestBootstrapLocalStepLeavesDaemon(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	h := inventory.Host{Name: "local1", Transport: inventory.TransportLocal,
		Bootstrap: []inventory.Step{{Run: "echo starting; sleep 100 & echo $! > " + pidFile}}}
	c := opsCoordinator(t, 0)

	res, took := bootstrapWithin(t, c, h, 30*time.Second)
	if !res.OK || res.Steps[0].Status != tasks.StepOK || res.Steps[0].Output != "starting\n" {
		t.Fatalf("bootstrap: got %+v; want the step ok", res)
	}
	if took > outputGrace+3*time.Second {
		t.Errorf("bootstrap took %s; want about %s", took, outputGrace)
	}
}

// TestBootstrapLocalStepTimeout: a local run step that never ends is
// killed when the step timeout passes.
func TestBootstrapLocalStepTimeout(t *testing.T) {
	t.Parallel()
	h := inventory.Host{Name: "local1", Transport: inventory.TransportLocal,
		Bootstrap: []inventory.Step{{Run: "echo waiting; sleep 100"}, {Run: "true"}}}
	c := opsCoordinator(t, 300*time.Millisecond)

	res, took := bootstrapWithin(t, c, h, 10*time.Second)
	if res.OK || res.Steps[0].Status != tasks.StepFailed || res.Steps[1].Status != tasks.StepSkipped {
		t.Fatalf("bootstrap: got %+v; want step 1 failed, step 2 skipped", res)
	}
	if got := res.Steps[0]; got.Error != "timed out after 300ms" || got.Output != "waiting\n" {
		t.Errorf("step 1: error %q, output %q; want %q and the output so far", got.Error, got.Output, "timed out after 300ms")
	}
	if took > outputGrace+3*time.Second {
		t.Errorf("bootstrap took %s", took)
	}
}

func TestOpsStateDefaults(t *testing.T) {
	t.Parallel()
	st := newOpsState()
	if st.stepTimeout != 10*time.Minute || st.copied == nil || st.busy == nil {
		t.Errorf("newOpsState() = %+v; want a 10 minute step timeout and empty maps", st)
	}
	c := New(Config{})
	if c.ops() != c.ops() {
		t.Error("ops() returns a new state on each call")
	}
	if New(Config{}).ops() == c.ops() {
		t.Error("two coordinators share their ops state")
	}
}
