package coordinator_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
)

// localHost is an inventory host with transport local: host operations run
// on this machine. Without a shim command its link never comes up, which
// facts and bootstrap do not need.
func localHost(name string, tags []string, steps ...inventory.Step) inventory.Host {
	return inventory.Host{Name: name, Transport: inventory.TransportLocal, Groups: []string{"admin"},
		Tags: tags, Slots: 1, Artifacts: inventory.ArtifactsAuto, Bootstrap: steps}
}

// waitHost waits until the host manager has recorded the host.
func (e *env) waitHost(name string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if status, _ := e.call(e.admin, "GET", "/api/v1/hosts/"+name, nil, nil); status == 200 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("host %s was not recorded within 10s", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func uname(t *testing.T, flag string) string {
	t.Helper()
	out, err := exec.Command("uname", flag).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func TestLocalHostFacts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, coordinator.Config{Hosts: []inventory.Host{localHost("lab1", []string{"net"}), localHost("lab2", nil)}})
	e.waitHost("lab1")
	e.waitHost("lab2")

	var f tasks.HostFacts
	e.must(e.admin, "GET", "/api/v1/hosts/lab1/facts", nil, &f)
	if want := uname(t, "-r"); f.Kernel != want {
		t.Errorf("kernel: got %q; want %q", f.Kernel, want)
	}
	if want := uname(t, "-m"); f.Arch != want {
		t.Errorf("arch: got %q; want %q", f.Arch, want)
	}
	if f.OS != "Linux" {
		t.Errorf("os: got %q; want Linux", f.OS)
	}
	if f.CPUs != runtime.NumCPU() {
		t.Errorf("cpus: got %d; want %d", f.CPUs, runtime.NumCPU())
	}
	if len(f.CongestionControl.Available) == 0 || !slices.Contains(f.CongestionControl.Available, f.CongestionControl.Default) {
		t.Errorf("congestion control: got %+v; want a default among the available ones", f.CongestionControl)
	}
	if f.MemoryBytes < 64<<20 || f.DiskFreeBytes <= 0 || f.HomeFreeBytes <= 0 {
		t.Errorf("got memory %d, disk free %d, home free %d; want them all read", f.MemoryBytes, f.DiskFreeBytes, f.HomeFreeBytes)
	}
	if off := time.Duration(f.ClockOffset); off < -time.Second || off > time.Second || f.ClockUncertainty < 0 {
		t.Errorf("clock offset %v ± %v on this very machine; want under a second", off, time.Duration(f.ClockUncertainty))
	}
	i := slices.IndexFunc(f.Interfaces, func(i tasks.Interface) bool { return i.Name == "lo" })
	if i < 0 || !slices.Contains(f.Interfaces[i].Addresses, "127.0.0.1/8") {
		t.Errorf("interfaces: got %+v; want lo with 127.0.0.1/8", f.Interfaces)
	}
	if len(f.Missing) > 0 {
		t.Logf("facts missing on this machine: %v", f.Missing)
	}
	if f.CollectedAt.IsZero() || time.Since(f.CollectedAt) > time.Minute {
		t.Errorf("collected at %v", f.CollectedAt)
	}

	var all struct{ Hosts []tasks.HostFactsResult }
	e.must(e.admin, "GET", "/api/v1/facts?tag=net", nil, &all)
	if len(all.Hosts) != 1 || all.Hosts[0].Host != "lab1" || all.Hosts[0].Facts == nil || all.Hosts[0].Facts.Kernel != f.Kernel {
		t.Errorf("facts of tag net: got %+v; want lab1's", all.Hosts)
	}
	e.must(e.admin, "GET", "/api/v1/facts", nil, &all)
	if len(all.Hosts) != 2 || all.Hosts[0].Host != "lab1" || all.Hosts[1].Host != "lab2" || all.Hosts[1].Facts == nil {
		t.Errorf("facts of all hosts: got %+v; want lab1 and lab2", all.Hosts)
	}
	if status, err := e.call(e.admin, "GET", "/api/v1/facts?tag=no%20tag", nil, nil); status != 400 {
		t.Errorf("bad tag: got %d %v; want 400", status, err)
	}
}

func TestHostOpsAuthorization(t *testing.T) {
	t.Parallel()
	e := newEnv(t, coordinator.Config{Hosts: []inventory.Host{localHost("lab1", []string{"net"}, inventory.Step{Run: "true"})}})
	e.waitHost("lab1")
	ann := e.user("ann")
	bob := e.user("bob")
	e.must(e.admin, "PUT", "/api/v1/groups/admin/members/bob", map[string]string{"role": "read"}, nil)

	// A stranger learns nothing of the host; a reader sees its facts.
	if status, err := e.call(ann, "GET", "/api/v1/hosts/lab1/facts", nil, nil); status != 404 {
		t.Errorf("stranger's facts: got %d %v; want 404", status, err)
	}
	var all struct{ Hosts []tasks.HostFactsResult }
	e.must(ann, "GET", "/api/v1/facts", nil, &all)
	if len(all.Hosts) != 0 {
		t.Errorf("stranger's facts of all hosts: got %+v; want none", all.Hosts)
	}
	var f tasks.HostFacts
	e.must(bob, "GET", "/api/v1/hosts/lab1/facts", nil, &f)
	if f.Kernel == "" {
		t.Errorf("reader's facts: got %+v", f)
	}

	// Only a global admin bootstraps, whatever the role in the groups.
	for _, tok := range []string{ann, bob} {
		for _, path := range []string{"/api/v1/hosts/lab1/bootstrap", "/api/v1/bootstrap?tag=net", "/api/v1/hosts/lab1/bootstrap?dry_run=true"} {
			if status, err := e.call(tok, "POST", path, nil, nil); status != 403 {
				t.Errorf("non-admin POST %s: got %d %v; want 403", path, status, err)
			}
		}
	}

	// A standalone worker is a host, but not one the coordinator reaches.
	e.worker(e.admin, "w1", []string{"admin"}, 1)
	if status, err := e.call(e.admin, "GET", "/api/v1/hosts/w1/facts", nil, nil); status != 409 {
		t.Errorf("worker's facts: got %d %v; want 409", status, err)
	}
	if status, err := e.call(e.admin, "POST", "/api/v1/hosts/w1/bootstrap", nil, nil); status != 409 {
		t.Errorf("worker's bootstrap: got %d %v; want 409", status, err)
	}
	for path, want := range map[string]int{
		"/api/v1/hosts/nope/bootstrap":           404,
		"/api/v1/bootstrap?tag=none":             404,
		"/api/v1/bootstrap":                      400,
		"/api/v1/hosts/lab1/bootstrap?dry_run=x": 400,
	} {
		if status, err := e.call(e.admin, "POST", path, nil, nil); status != want {
			t.Errorf("POST %s: got %d %v; want %d", path, status, err, want)
		}
	}
}

// TestLocalHostBootstrap runs a run step and a copy step on the local
// host: the first run changes the file, the second finds it unchanged, and
// dry runs change nothing. It sets HOME, as "~/" destinations and the
// steps' working directory are the home.
func TestLocalHostBootstrap(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	src := filepath.Join(t.TempDir(), "sysctl.conf")
	if err := os.WriteFile(src, []byte("net.core.default_qdisc = fq\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	steps := []inventory.Step{
		{Run: `echo "ran in $(pwd)"; echo warning >&2; echo x >> runs`},
		{Copy: &inventory.Copy{Src: src, Dst: "~/etc/mito/sysctl.conf", Mode: 0o640}},
	}
	e := newEnv(t, coordinator.Config{Hosts: []inventory.Host{
		localHost("lab1", []string{"boot"}, steps...),
		localHost("lab2", []string{"boot"}, inventory.Step{Run: "echo before; exit 3"}, inventory.Step{Run: "touch never"}),
	}})
	e.waitHost("lab1")
	e.waitHost("lab2")
	dst := filepath.Join(home, "etc/mito/sysctl.conf")

	bootstrap := func(path string, want ...tasks.StepStatus) tasks.BootstrapReport {
		t.Helper()
		var rep tasks.BootstrapReport
		e.must(e.admin, "POST", path, nil, &rep)
		if len(rep.Hosts) != 1 || rep.Hosts[0].Host != "lab1" || len(rep.Hosts[0].Steps) != len(want) {
			t.Fatalf("POST %s: got %+v; want lab1 with %d steps", path, rep, len(want))
		}
		for i, s := range rep.Hosts[0].Steps {
			if s.Status != want[i] || s.Index != i+1 {
				t.Errorf("POST %s: step %d is %d %s (%s); want %d %s", path, i, s.Index, s.Status, s.Error, i+1, want[i])
			}
		}
		return rep
	}
	runs := func() int {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(home, "runs"))
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "x")
	}

	rep := bootstrap("/api/v1/hosts/lab1/bootstrap?dry_run=true", tasks.StepWouldRun, tasks.StepWouldCopy)
	if _, err := os.Stat(dst); !os.IsNotExist(err) || runs() != 0 {
		t.Fatalf("a dry run changed the host: stat %v, %d runs", err, runs())
	}
	if !rep.Hosts[0].OK || rep.Summary != (tasks.BootstrapSummary{Hosts: 1, OK: 1, Changed: 1}) {
		t.Errorf("dry run: got %+v", rep)
	}

	rep = bootstrap("/api/v1/hosts/lab1/bootstrap", tasks.StepOK, tasks.StepChanged)
	run, cp := rep.Hosts[0].Steps[0], rep.Hosts[0].Steps[1]
	if run.Kind != "run" || run.What != steps[0].Run || !strings.Contains(run.Output, "ran in "+home) || !strings.Contains(run.Output, "warning") {
		t.Errorf("run step: got %+v; want its command, and stdout and stderr run in %s", run, home)
	}
	if cp.Kind != "copy" || cp.What != "~/etc/mito/sysctl.conf" {
		t.Errorf("copy step: got %+v", cp)
	}
	if rep.Summary != (tasks.BootstrapSummary{Hosts: 1, OK: 1, Changed: 1}) {
		t.Errorf("summary: got %+v", rep.Summary)
	}
	checkFile := func(want string) {
		t.Helper()
		b, err := os.ReadFile(dst)
		fi, err2 := os.Stat(dst)
		if err != nil || err2 != nil || string(b) != want || fi.Mode().Perm() != 0o640 {
			t.Fatalf("copied file: got %q (%v, %v, mode %v); want %q, mode 0640", b, err, err2, fi, want)
		}
	}
	checkFile("net.core.default_qdisc = fq\n")
	if runs() != 1 {
		t.Errorf("runs: got %d; want 1", runs())
	}

	rep = bootstrap("/api/v1/hosts/lab1/bootstrap", tasks.StepOK, tasks.StepUnchanged)
	if rep.Summary.Changed != 0 || runs() != 2 {
		t.Errorf("second bootstrap: got summary %+v, %d runs; want nothing changed and 2 runs", rep.Summary, runs())
	}
	bootstrap("/api/v1/hosts/lab1/bootstrap?dry_run=true", tasks.StepWouldRun, tasks.StepUnchanged)

	// A new source: a dry run says so and writes nothing; a run writes it.
	if err := os.WriteFile(src, []byte("net.core.default_qdisc = fq_codel\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bootstrap("/api/v1/hosts/lab1/bootstrap?dry_run=true", tasks.StepWouldRun, tasks.StepWouldCopy)
	checkFile("net.core.default_qdisc = fq\n")
	bootstrap("/api/v1/hosts/lab1/bootstrap", tasks.StepOK, tasks.StepChanged)
	checkFile("net.core.default_qdisc = fq_codel\n")

	// Someone edits the file on the host: it is written again.
	if err := os.WriteFile(dst, []byte("net.core.default_qdisc = xx_codel\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dst, time.Time{}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	bootstrap("/api/v1/hosts/lab1/bootstrap", tasks.StepOK, tasks.StepChanged)
	checkFile("net.core.default_qdisc = fq_codel\n")

	// Both hosts by tag: lab2 stops at its failed step.
	var tagRep tasks.BootstrapReport
	e.must(e.admin, "POST", "/api/v1/bootstrap?tag=boot", nil, &tagRep)
	if tagRep.Summary != (tasks.BootstrapSummary{Hosts: 2, OK: 1, Failed: 1}) || len(tagRep.Hosts) != 2 {
		t.Fatalf("bootstrap by tag: got %+v", tagRep)
	}
	lab2 := tagRep.Hosts[1]
	if lab2.Host != "lab2" || lab2.OK || len(lab2.Steps) != 2 ||
		lab2.Steps[0].Status != tasks.StepFailed || !strings.Contains(lab2.Steps[0].Error, "status 3") || lab2.Steps[0].Output != "before\n" ||
		lab2.Steps[1].Status != tasks.StepSkipped {
		t.Errorf("lab2: got %+v; want step 1 failed with status 3 and step 2 skipped", lab2)
	}
	if _, err := os.Stat(filepath.Join(home, "never")); !os.IsNotExist(err) {
		t.Errorf("a step after a failed one ran")
	}

	// A missing source fails the copy step, in a dry run too.
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	rep = bootstrap("/api/v1/hosts/lab1/bootstrap?dry_run=true", tasks.StepWouldRun, tasks.StepFailed)
	if rep.Hosts[0].OK || !strings.Contains(rep.Hosts[0].Steps[1].Error, "no such file") {
		t.Errorf("missing source: got %+v", rep.Hosts[0])
	}
}
