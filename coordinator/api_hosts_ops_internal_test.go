package coordinator

import (
	"bytes"
	"context"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// sampleIP is factsScript's output on a lab machine with `ip`.
const sampleIP = `@start=1700000000.250000000
@section uname
os=Linux
kernel=6.8.0-45-generic
arch=x86_64
nproc=16
cpuinfo=32
PRETTY_NAME="Ubuntu 24.04.1 LTS"
@section meminfo
MemTotal:       65755508 kB
MemFree:        12345678 kB
@section df-work
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/nvme0n1p2   982862268 52345600 880500000       6% /
@section df-home
Filesystem                  1024-blocks  Used Available Capacity Mounted on
nas:/export/home with space  2000000000 10000      1000       1% /home
@section links
if=eno1
speed=10000
mtu=9000
state=up
if=lo
speed=
mtu=65536
state=unknown
if=wlp3s0
speed=-1
mtu=1500
state=down
@section ip-addr
1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host \       valid_lft forever preferred_lft forever
2: eno1    inet 10.1.2.3/24 brd 10.1.2.255 scope global eno1\       valid_lft forever preferred_lft forever
2: eno1    inet6 fe80::1/64 scope link \       valid_lft forever preferred_lft forever
5: veth0@if4    inet 172.17.0.1/16 scope global veth0\       valid_lft forever preferred_lft forever
@section tcp
available=reno cubic bbr
default=bbr
qdisc=fq
@section containment
cgroup=/user.slice/user-1000.slice/user@1000.service/app.slice/mito.scope
mount=/sys/fs/cgroup
writable=yes
@end=1700000000.270000000
`

// sampleProc is the output on a host without `ip`, where the addresses
// come from /proc/net.
const sampleProc = `@start=1700000000.5
@section uname
os=Linux
kernel=5.10.0
arch=aarch64
nproc=
cpuinfo=4
@section meminfo
MemTotal:        3884376 kB
@section df-work
Filesystem     1024-blocks     Used Available Capacity Mounted on
tmpfs               102400        0    102400       0% /tmp
@section df-home
@section links
if=eth0
speed=1000
mtu=1500
state=up
if=lo
speed=
mtu=65536
state=unknown
@section if_inet6
fe8000000000000000fc00fffe000001 02 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
@section fib_trie
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.168.7.0/24 2 0 2
        |-- 192.168.7.0
           /24 link UNICAST
        |-- 192.168.7.42
           /32 host LOCAL
        |-- 192.168.7.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 192.168.7.0/24 2 0 2
        |-- 192.168.7.42
           /32 host LOCAL
@section route
Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	0107A8C0	0003	0	0	0	00000000	0	0	0
eth0	0007A8C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
@section tcp
available=
default=
qdisc=
@section containment
cgroup=/user.slice/user-1000.slice/session-3.scope
mount=/sys/fs/cgroup
writable=no
@end=1700000000.5
`

func TestParseFacts(t *testing.T) {
	t.Parallel()
	sent := time.Unix(1700000000, 0).Add(200 * time.Millisecond)
	tests := []struct {
		name     string
		out      string
		sent     time.Time
		received time.Time
		want     tasks.HostFacts
	}{
		{
			name: "with ip", out: sampleIP, sent: sent, received: sent.Add(100 * time.Millisecond),
			want: tasks.HostFacts{
				OS: "Linux", Distro: "Ubuntu 24.04.1 LTS", Kernel: "6.8.0-45-generic", Arch: "x86_64", CPUs: 16,
				MemoryBytes: 65755508 * 1024, DiskFreeBytes: 880500000 * 1024, HomeFreeBytes: 1000 * 1024,
				// host middle 0.260, ours 0.250; 100ms round trip, 20ms of it on the host
				ClockOffset: tasks.Duration(10 * time.Millisecond), ClockUncertainty: tasks.Duration(40 * time.Millisecond),
				Interfaces: []tasks.Interface{
					{Name: "eno1", Addresses: []string{"10.1.2.3/24", "fe80::1/64"}, SpeedMbps: 10000, MTU: 9000, State: "up"},
					{Name: "lo", Addresses: []string{"127.0.0.1/8", "::1/128"}, SpeedMbps: -1, MTU: 65536, State: "unknown"},
					{Name: "veth0", Addresses: []string{"172.17.0.1/16"}, SpeedMbps: -1},
					{Name: "wlp3s0", Addresses: []string{}, SpeedMbps: -1, MTU: 1500, State: "down"},
				},
				CongestionControl: tasks.CongestionControl{Available: []string{"reno", "cubic", "bbr"}, Default: "bbr"},
				DefaultQdisc:      "fq",
				Containment:       "cgroup /sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/mito.scope",
			},
		},
		{
			name: "from /proc/net, with files missing", out: sampleProc, sent: sent.Add(time.Second), received: sent.Add(time.Second),
			want: tasks.HostFacts{
				OS: "Linux", Kernel: "5.10.0", Arch: "aarch64", CPUs: 4,
				MemoryBytes: 3884376 * 1024, DiskFreeBytes: 102400 * 1024,
				ClockOffset: tasks.Duration(-700 * time.Millisecond),
				Interfaces: []tasks.Interface{
					{Name: "eth0", Addresses: []string{"fe80::fc:ff:fe00:1/64", "192.168.7.42/24"}, SpeedMbps: 1000, MTU: 1500, State: "up"},
					{Name: "lo", Addresses: []string{"::1/128", "127.0.0.1/8"}, SpeedMbps: -1, MTU: 65536, State: "unknown"},
				},
				CongestionControl: tasks.CongestionControl{Available: []string{}},
				Containment:       "subreaper (cgroup /sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope is not delegated to this user)",
				Missing:           []string{"congestion_control", "default_qdisc", "home_free"},
			},
		},
		{
			name: "nothing readable", out: "sh: 1: syntax error\n", sent: sent, received: sent,
			want: tasks.HostFacts{
				Interfaces:        []tasks.Interface{},
				CongestionControl: tasks.CongestionControl{Available: []string{}},
				Missing: []string{"addresses", "arch", "clock_offset", "congestion_control", "containment", "cpus", "default_qdisc",
					"disk_free", "home_free", "interfaces", "kernel", "memory", "os"},
			},
		},
		{
			name: "date without nanoseconds", out: "@start=1700000001.N\n@end=1700000001.%N\n", sent: sent, received: sent.Add(time.Second),
			want: tasks.HostFacts{
				Interfaces:        []tasks.Interface{},
				CongestionControl: tasks.CongestionControl{Available: []string{}},
				ClockOffset:       tasks.Duration(300 * time.Millisecond), ClockUncertainty: tasks.Duration(500 * time.Millisecond),
				Missing: []string{"addresses", "arch", "congestion_control", "containment", "cpus", "default_qdisc",
					"disk_free", "home_free", "interfaces", "kernel", "memory", "os"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseFacts(tt.out, tt.sent, tt.received)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestDfAvailable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		lines []string
		want  int64
		ok    bool
	}{
		{[]string{"Filesystem 1024-blocks Used Available Capacity Mounted on", "/dev/sda1 100 40 60 40% /"}, 60 << 10, true},
		{[]string{"Filesystem 1024-blocks Used Available Capacity Mounted on", "overlay 100 0 100 0% /mnt/a 50% dir"}, 100 << 10, true},
		{[]string{"Filesystem 1024-blocks Used Available Capacity Mounted on"}, 0, false},
		{[]string{"Filesystem 1024-blocks Used Available Capacity Mounted on", "my disk 7 100 1 99 1% /mnt/x"}, 99 << 10, true},
		{nil, 0, false},
		{[]string{"df: /nope: No such file or directory"}, 0, false},
	}
	for _, tt := range tests {
		if got, ok := dfAvailable(tt.lines); got != tt.want || ok != tt.ok {
			t.Errorf("dfAvailable(%q) = %d, %v; want %d, %v", tt.lines, got, ok, tt.want, tt.ok)
		}
	}
}

// TestFactsScriptIsOneLine checks what makes the script safe to hand to
// any login shell: no quote or "!" to escape, and the same meaning when
// its lines are joined, as they are for SSH hosts.
func TestFactsScriptIsOneLine(t *testing.T) {
	t.Parallel()
	if strings.ContainsAny(factsScript, "'!") {
		t.Fatal("factsScript holds a single quote or a '!'")
	}
	ctx := context.Background()
	sections := func(script string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, "/bin/sh", "-c", script).Output()
		if err != nil {
			t.Fatalf("run %q: %v", script, err)
		}
		var b bytes.Buffer
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "@section ") || strings.HasPrefix(l, "if=") || strings.HasPrefix(l, "kernel=") {
				b.WriteString(l + "\n")
			}
		}
		return b.String()
	}
	multi := sections(factsScript)
	if !strings.Contains(multi, "@section tcp") || !strings.Contains(multi, "kernel=") {
		t.Fatalf("the script printed no tcp section or kernel:\n%s", multi)
	}
	if one := sections(oneLine(factsScript)); one != multi {
		t.Errorf("joined into one line the script prints\n%s\nwant\n%s", one, multi)
	}
	// factsCommand is what SSH hosts get: run it with a shell, as sshd does.
	if cmd := sections(factsCommand); cmd != multi {
		t.Errorf("factsCommand prints\n%s\nwant\n%s", cmd, multi)
	}
}
