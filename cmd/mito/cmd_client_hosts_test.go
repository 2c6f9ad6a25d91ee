package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// hostOpsFake answers the host operations with canned results and records
// the requests.
type hostOpsFake struct {
	mu       sync.Mutex
	requests []string // "METHOD path?query"
}

var labFacts = tasks.HostFacts{
	OS: "Linux", Distro: "Ubuntu 24.04.1 LTS", Kernel: "6.8.0-45-generic", Arch: "x86_64", CPUs: 16,
	MemoryBytes: 64 << 30, DiskFreeBytes: 800 << 30, ClockOffset: tasks.Duration(-1234567 * time.Nanosecond),
	ClockUncertainty: tasks.Duration(150 * time.Microsecond),
	Interfaces: []tasks.Interface{
		{Name: "eno1", Addresses: []string{"10.1.2.3/24", "fe80::1/64"}, SpeedMbps: 10000, MTU: 9000, State: "up"},
		{Name: "lo", Addresses: []string{"127.0.0.1/8"}, SpeedMbps: -1, MTU: 65536, State: "unknown"},
	},
	CongestionControl: tasks.CongestionControl{Available: []string{"reno", "cubic", "bbr"}, Default: "bbr"},
	DefaultQdisc:      "fq",
	Containment:       "subreaper (no cgroup v2)",
}

func (f *hostOpsFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
	f.mu.Unlock()
	answer := func(status int, v any) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	switch p := r.URL.Path; {
	case p == "/api/v1/facts":
		answer(200, map[string]any{"hosts": []tasks.HostFactsResult{
			{Host: "h1", Facts: &labFacts}, {Host: "h2", Error: "ssh h2: connection refused"},
		}})
	case p == "/api/v1/hosts/h1/facts":
		answer(200, labFacts)
	case p == "/api/v1/hosts/h1/bootstrap":
		res := tasks.BootstrapResult{Host: "h1", OK: true, Steps: []tasks.StepResult{
			{Index: 1, Kind: "run", What: "command -v iperf3 || apt-get install -y iperf3", Status: tasks.StepOK, Output: "/usr/bin/iperf3\n"},
			{Index: 2, Kind: "copy", What: "~/.config/x.conf", Status: tasks.StepChanged},
		}}
		answer(200, tasks.BootstrapReport{Hosts: []tasks.BootstrapResult{res}, Summary: tasks.Summarize([]tasks.BootstrapResult{res})})
	case p == "/api/v1/hosts/h2/bootstrap":
		res := tasks.BootstrapResult{Host: "h2", Steps: []tasks.StepResult{
			{Index: 1, Kind: "run", What: "sysctl -w net.core.default_qdisc=fq", Status: tasks.StepFailed,
				Error: "ssh h2: command exited with status 255", Output: "sysctl: permission denied\n"},
			{Index: 2, Kind: "copy", What: "~/.config/x.conf", Status: tasks.StepSkipped},
		}}
		answer(200, tasks.BootstrapReport{Hosts: []tasks.BootstrapResult{res}, Summary: tasks.Summarize([]tasks.BootstrapResult{res})})
	case p == "/api/v1/bootstrap":
		answer(403, map[string]any{"error": tasks.Errorf(tasks.EForbidden, "only global administrators may bootstrap hosts")})
	default:
		answer(404, map[string]any{"error": tasks.Errorf(tasks.ENotFound, "no host named %q", strings.TrimSuffix(strings.TrimPrefix(p, "/api/v1/hosts/"), "/facts"))})
	}
}

// runHostOps runs `mito client args...` against f.
func runHostOps(t *testing.T, f *hostOpsFake, args ...string) (string, string, int) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("MITO_CONFIG_DIR", t.TempDir())
	t.Setenv("MITO_COORDINATOR", srv.URL)
	t.Setenv("MITO_TOKEN", "tok")
	var stdout, stderr bytes.Buffer
	cmd := newClientCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	code := exitCode(cmd.ExecuteContext(t.Context()), &stderr)
	return stdout.String(), stderr.String(), code
}

func TestHostsFactsCommand(t *testing.T) {
	f := &hostOpsFake{}
	out, errOut, code := runHostOps(t, f, "hosts", "facts", "--tag", "net")
	if code != exitFailure || !strings.Contains(errOut, "host h2: ssh h2: connection refused") {
		t.Errorf("got exit %d, stderr %q; want 1 and h2's error", code, errOut)
	}
	for _, want := range []string{
		"HOST  OS                  KERNEL            ARCH    CPUS  MEM       DISK-FREE  CLOCK-OFFSET   CC(default/available)  QDISC  TASKS-HELD-BY\n",
		"h1    Ubuntu 24.04.1 LTS  6.8.0-45-generic  x86_64  16    64.0 GiB  800.0 GiB  -1.23ms±150µs  bbr/reno,cubic,bbr     fq     subreaper (no cgroup v2)\n",
		"h1    eno1       up       10Gb/s  9000   10.1.2.3/24,fe80::1/64\n",
		"h1    lo         unknown  -       65536  127.0.0.1/8\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "h2") {
		t.Errorf("a host without facts has a row:\n%s", out)
	}
	if len(f.requests) != 1 || f.requests[0] != "GET /api/v1/facts?tag=net" {
		t.Errorf("requests: got %q", f.requests)
	}

	out, errOut, code = runHostOps(t, f, "hosts", "facts", "h1", "-o", "json")
	var got tasks.HostFacts
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.Kernel != labFacts.Kernel || got.CongestionControl.Default != "bbr" {
		t.Errorf("facts h1 -o json: got exit %d, %q, %q", code, out, errOut)
	}
	_, errOut, code = runHostOps(t, f, "hosts", "facts", "h1", "nope")
	if code != exitNotFound || !strings.Contains(errOut, `no host named "nope"`) {
		t.Errorf("facts of a missing host: got exit %d, %q", code, errOut)
	}
}

func TestHostsBootstrapCommand(t *testing.T) {
	f := &hostOpsFake{}
	out, errOut, code := runHostOps(t, f, "hosts", "bootstrap", "h1", "h2", "--dry-run")
	if code != exitFailure || !strings.Contains(errOut, "bootstrap failed on 1 of 2 hosts: h2") {
		t.Errorf("got exit %d, stderr %q; want 1 and the failed host", code, errOut)
	}
	want := `h1  [1/2]  run   command -v iperf3 || apt-get install -y iperf3  ok
h1  [2/2]  copy  ~/.config/x.conf                                changed
h2  [1/2]  run   sysctl -w net.core.default_qdisc=fq             failed
h2  [2/2]  copy  ~/.config/x.conf                                skipped

h2 [1/2] run: ssh h2: command exited with status 255
  | sysctl: permission denied

2 hosts: 1 ok, 1 failed, 1 would change
`
	if out != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	if len(f.requests) != 2 || f.requests[0] != "POST /api/v1/hosts/h1/bootstrap?dry_run=true" {
		t.Errorf("requests: got %q", f.requests)
	}

	out, _, _ = runHostOps(t, f, "hosts", "bootstrap", "h1", "-o", "json")
	var rep tasks.BootstrapReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Summary != (tasks.BootstrapSummary{Hosts: 1, OK: 1, Changed: 1}) {
		t.Errorf("-o json: got %q (%v)", out, err)
	}

	_, errOut, code = runHostOps(t, f, "hosts", "bootstrap", "--tag", "new")
	if code != exitAuth || !strings.Contains(errOut, "only global administrators") {
		t.Errorf("non-admin: got exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{{"hosts", "bootstrap"}, {"hosts", "bootstrap", "h1", "--tag", "x"}, {"hosts", "facts", "--tag", "a b"}} {
		if _, errOut, code := runHostOps(t, f, args...); code != exitUsage {
			t.Errorf("%q: got exit %d, %q; want %d", args, code, errOut, exitUsage)
		}
	}
}

func TestFmtClockOffset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		off, unc time.Duration
		missing  []string
		want     string
	}{
		{1234567 * time.Nanosecond, 50 * time.Microsecond, nil, "+1.235ms±50µs"},
		{-2*time.Second - 345*time.Millisecond, 20 * time.Millisecond, nil, "-2.345s±20ms"},
		{0, 0, nil, "+0s±0s"},
		{0, 0, []string{"clock_offset"}, "-"},
	}
	for _, tt := range tests {
		f := &tasks.HostFacts{ClockOffset: tasks.Duration(tt.off), ClockUncertainty: tasks.Duration(tt.unc), Missing: tt.missing}
		if got := fmtClockOffset(f); got != tt.want {
			t.Errorf("fmtClockOffset(%v±%v) = %q; want %q", tt.off, tt.unc, got, tt.want)
		}
	}
}
