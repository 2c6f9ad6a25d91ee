package tasks

import "time"

// HostFacts is what the coordinator learned about a host's machine by
// reading it: enough to tell whether two hosts are comparable for a
// network experiment. Numbers it could not read are zero (SpeedMbps: -1)
// and named in Missing, so that "0 CPUs" never passes for a fact.
type HostFacts struct {
	// OS is `uname -s` ("Linux"); Distro is /etc/os-release's PRETTY_NAME
	// ("Ubuntu 24.04.1 LTS") when there is one.
	OS     string `json:"os"`
	Distro string `json:"distro,omitempty"`
	Kernel string `json:"kernel"` // uname -r
	Arch   string `json:"arch"`   // uname -m ("x86_64", "aarch64")
	// CPUs is the number of CPUs the SSH user's processes may run on
	// (nproc), else the number listed in /proc/cpuinfo.
	CPUs        int   `json:"cpus"`
	MemoryBytes int64 `json:"memory_bytes"` // MemTotal
	// DiskFreeBytes is the space available to an unprivileged user on the
	// file system of the tasks' work directory ($TMPDIR, else /tmp);
	// HomeFreeBytes that of the SSH user's home, where shims and bootstrap
	// copies go.
	DiskFreeBytes int64 `json:"disk_free_bytes"`
	HomeFreeBytes int64 `json:"home_free_bytes"`
	// ClockOffset is the host's clock minus the coordinator's: the middle
	// of the host's readings against the middle of the round trip.
	// ClockUncertainty bounds its error (half the round trip, less the
	// time the host spent between its readings).
	ClockOffset      Duration `json:"clock_offset"`
	ClockUncertainty Duration `json:"clock_uncertainty"`
	// Interfaces are sorted by name.
	Interfaces        []Interface       `json:"interfaces"`
	CongestionControl CongestionControl `json:"congestion_control"`
	// DefaultQdisc is net.core.default_qdisc ("fq_codel").
	DefaultQdisc string `json:"default_qdisc,omitempty"`
	// Containment says how the watchdog of each task holds what the task
	// starts, so that all of it dies with the attempt: "cgroup DIR" (a
	// cgroup v2 of its own under DIR, killed whole) where the SSH user
	// may create cgroups, else "subreaper (why not a cgroup)": the
	// watchdog finds the task's processes as their subreaper.
	Containment string `json:"containment,omitempty"`
	// Missing names the facts that could not be read ("memory",
	// "congestion_control", "addresses", ...).
	Missing     []string  `json:"missing,omitempty"`
	CollectedAt time.Time `json:"collected_at"`
}

// Interface is one network interface of a host.
type Interface struct {
	Name string `json:"name"`
	// Addresses are in CIDR form ("10.0.0.5/24", "fe80::1/64").
	Addresses []string `json:"addresses"`
	// SpeedMbps is the link speed, -1 when the kernel does not know it
	// (virtual interfaces, links that are down).
	SpeedMbps int    `json:"speed_mbps"`
	MTU       int    `json:"mtu"`
	State     string `json:"state"` // operstate: "up", "down", "unknown", ...
}

// CongestionControl lists the TCP congestion control algorithms a host's
// kernel has loaded and the one new connections use.
type CongestionControl struct {
	Available []string `json:"available"`
	Default   string   `json:"default"`
}

// HostFactsResult is one host's answer when facts of several hosts are
// asked for: its facts, or why there are none.
type HostFactsResult struct {
	Host  string     `json:"host"`
	Facts *HostFacts `json:"facts,omitempty"`
	Error string     `json:"error,omitempty"`
}

// The bootstrap step kinds.
const (
	StepRun  = "run"
	StepCopy = "copy"
)

// StepStatus is what became of one bootstrap step.
type StepStatus string

// The step statuses. A run step that succeeds is StepOK, not StepChanged:
// the coordinator cannot tell whether the command changed anything (which
// is why run steps must be idempotent). A copy step is StepChanged when it
// wrote the file and StepUnchanged when the file was already there.
const (
	StepOK        StepStatus = "ok"
	StepChanged   StepStatus = "changed"
	StepUnchanged StepStatus = "unchanged"
	StepFailed    StepStatus = "failed"
	StepSkipped   StepStatus = "skipped" // after a failed step
	// Dry runs change nothing and say what a real run would do.
	StepWouldRun  StepStatus = "would-run"
	StepWouldCopy StepStatus = "would-copy"
)

// StepResult is the outcome of one bootstrap step on one host.
type StepResult struct {
	// Index counts the host's steps from 1.
	Index int    `json:"index"`
	Kind  string `json:"kind"` // StepRun or StepCopy
	// What is the command of a run step or the destination of a copy step.
	What   string     `json:"what"`
	Status StepStatus `json:"status"`
	// Output is the command's output, cut to its last MaxStepOutput bytes.
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

// MaxStepOutput bounds the output a StepResult keeps.
const MaxStepOutput = 8 << 10

// BootstrapResult is one host's bootstrap. OK is false when a step failed
// or the host could not be reached (Error says why).
type BootstrapResult struct {
	Host  string       `json:"host"`
	Steps []StepResult `json:"steps"`
	OK    bool         `json:"ok"`
	Error string       `json:"error,omitempty"`
}

// Changed reports whether a step changed the host (or, in a dry run,
// would change a file).
func (r BootstrapResult) Changed() bool {
	for _, s := range r.Steps {
		if s.Status == StepChanged || s.Status == StepWouldCopy {
			return true
		}
	}
	return false
}

// BootstrapSummary counts hosts: all of them, those that succeeded, those
// that failed, and those where a step changed something (see Changed).
type BootstrapSummary struct {
	Hosts   int `json:"hosts"`
	OK      int `json:"ok"`
	Failed  int `json:"failed"`
	Changed int `json:"changed"`
}

// BootstrapReport is the answer of a bootstrap call.
type BootstrapReport struct {
	Hosts   []BootstrapResult `json:"hosts"`
	Summary BootstrapSummary  `json:"summary"`
}

// Summarize counts the results.
func Summarize(rs []BootstrapResult) BootstrapSummary {
	s := BootstrapSummary{Hosts: len(rs)}
	for _, r := range rs {
		if r.OK {
			s.OK++
		} else {
			s.Failed++
		}
		if r.Changed() {
			s.Changed++
		}
	}
	return s
}
