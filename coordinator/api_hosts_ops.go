package coordinator

// Host operations: facts (what a host's machine is) and bootstrap (the
// inventory's steps that prepare a fresh host). Both reach the host the way
// its link does: over a new SSH connection for SSH hosts, on this machine
// for local ones.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mitolab/mito/internal/tailbuf"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/transport/ssh"
)

const (
	// factsTimeout bounds gathering one host's facts, connection included.
	factsTimeout = 30 * time.Second
	// opsParallel is how many hosts a multi-host call works on at once.
	opsParallel = 8
	// stepTimeout bounds each bootstrap step. When it passes, the step's
	// command is killed (its SSH session closed; for a local host, its
	// process group) and the step fails "timed out after 10m0s". A copy
	// step notices it between chunks of its upload.
	stepTimeout = 10 * time.Minute
	// outputGrace is how long a run step goes on reading output after its
	// command exited: a command that leaves a daemon holding its stdout
	// ("nohup iperf3 -s &" without redirections) has still succeeded, and
	// what the daemon writes later is dropped.
	outputGrace = ssh.OutputGrace
)

// factsScript prints what HostFacts holds as "@section NAME" blocks of
// key=value lines or of raw file contents, for parseFacts. It is a
// constant: no inventory or user data ever goes into it. It is written so
// that joining its lines with spaces gives the same script (every line
// ends with ";" or a word after which a newline is optional), because an
// SSH host hands it to the login shell, which may be a csh that refuses
// newlines inside quotes. It contains no single quote and no "!".
const factsScript = `LC_ALL=C; export LC_ALL;
echo "@start=$(date +%s.%N 2>/dev/null)";
echo "@section uname";
echo "os=$(uname -s 2>/dev/null)";
echo "kernel=$(uname -r 2>/dev/null)";
echo "arch=$(uname -m 2>/dev/null)";
echo "nproc=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)";
echo "cpuinfo=$(grep -c ^processor /proc/cpuinfo 2>/dev/null)";
grep ^PRETTY_NAME= /etc/os-release 2>/dev/null;
echo "@section meminfo";
cat /proc/meminfo 2>/dev/null;
echo "@section df-work";
df -Pk "${TMPDIR:-/tmp}" 2>/dev/null;
echo "@section df-home";
df -Pk "${HOME:-.}" 2>/dev/null;
echo "@section links";
for d in /sys/class/net/*; do
  if [ -d "$d" ]; then
    echo "if=${d##*/}";
    echo "speed=$(cat "$d/speed" 2>/dev/null)";
    echo "mtu=$(cat "$d/mtu" 2>/dev/null)";
    echo "state=$(cat "$d/operstate" 2>/dev/null)";
  fi;
done;
a=$(ip -o addr show 2>/dev/null);
if [ -n "$a" ]; then
  echo "@section ip-addr"; echo "$a";
else
  echo "@section if_inet6"; cat /proc/net/if_inet6 2>/dev/null;
  echo "@section fib_trie"; cat /proc/net/fib_trie 2>/dev/null;
  echo "@section route"; cat /proc/net/route 2>/dev/null;
fi;
echo "@section tcp";
echo "available=$(cat /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null)";
echo "default=$(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null)";
echo "qdisc=$(cat /proc/sys/net/core/default_qdisc 2>/dev/null)";
echo "@section containment";
cg=$(sed -n "s/^0:://p" /proc/self/cgroup 2>/dev/null);
mnt=$(awk "{for (i = 7; i <= NF; i++) if (\$i == \"-\") { if (\$(i+1) == \"cgroup2\" && \$4 == \"/\") print \$5; break }}" /proc/self/mountinfo 2>/dev/null | head -n 1);
echo "cgroup=$cg";
echo "mount=$mnt";
if [ -n "$mnt" ] && [ -w "$mnt$cg/cgroup.procs" ] && [ -w "$mnt$cg" ]; then echo "writable=yes"; else echo "writable=no"; fi;
echo "@end=$(date +%s.%N 2>/dev/null)";
exit 0;
`

// factsCommand is factsScript as one command line for any login shell.
var factsCommand = "/bin/sh -c '" + oneLine(factsScript) + "'"

// oneLine joins a script's lines with spaces, dropping indentation.
func oneLine(script string) string {
	lines := strings.Split(strings.TrimSpace(script), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, " ")
}

// opsTarget is a host as host operations see it: *ssh.Client in
// sshOps for SSH hosts, localOps for local ones.
type opsTarget interface {
	// Run runs a constant command line and returns its stdout.
	Run(ctx context.Context, cmd string) ([]byte, error)
	// RunCombined runs cmd in the host's shell with stdout and stderr
	// both written to w.
	RunCombined(ctx context.Context, cmd string, w io.Writer) error
	// Stat and Upload take paths that are absolute or relative to the
	// home directory ("~/" stripped).
	Stat(ctx context.Context, path string) (fs.FileInfo, error)
	Upload(ctx context.Context, r io.Reader, size int64, dst string, mode fs.FileMode) error
	Close() error
}

// opsState is a coordinator's memory of host operations: one per
// Coordinator, made by newOpsState.
type opsState struct {
	// stepTimeout bounds each bootstrap step: stepTimeout, shorter in
	// tests.
	stepTimeout time.Duration

	// mu guards the fields below.
	mu sync.Mutex
	// copied remembers each file a bootstrap copy step wrote, by host and
	// destination, so that the next run can skip it (see copyStep).
	copied map[copyKey]copyRecord
	// busy holds the hosts being bootstrapped.
	busy map[string]bool
}

func newOpsState() *opsState {
	return &opsState{
		stepTimeout: stepTimeout,
		copied:      make(map[copyKey]copyRecord),
		busy:        make(map[string]bool),
	}
}

// ops returns the coordinator's host operations state.
func (c *Coordinator) ops() *opsState {
	return c.hostOps
}

// copyKey names a file on a host. The connection settings are part of it,
// so that a host that now points at another machine is not trusted to
// hold what the old one did.
type copyKey struct {
	host, transport, address, user string
	port                           int
	dst                            string
}

// copyRecord is what a copy step saw right after it wrote a file.
type copyRecord struct {
	sum   string // SHA-256 of the content written
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

// inventoryHost returns the inventory's current settings for a host.
func (c *Coordinator) inventoryHost(name string) (inventory.Host, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.cfg.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return inventory.Host{}, false
}

// notInventory is the error for a host that exists but that the
// coordinator does not reach itself.
func notInventory(name string) error {
	return tasks.Errorf(tasks.EConflict, "host %q is not in the coordinator's inventory (a standalone `mito worker`, or a host removed from the inventory): facts and bootstrap need an inventory host", name)
}

// visibleInventoryHosts returns the inventory hosts u may see, with the
// tag when tag is not empty, in inventory order.
func (c *Coordinator) visibleInventoryHosts(r *http.Request, u tasks.User, tag string) ([]inventory.Host, error) {
	hs, err := c.visibleHosts(r, u)
	if err != nil {
		return nil, err
	}
	visible := make(map[string]bool, len(hs))
	for _, h := range hs {
		visible[h.Name] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []inventory.Host
	for _, h := range c.cfg.Hosts {
		if (u.Admin || visible[h.Name]) && (tag == "" || slices.Contains(h.Tags, tag)) {
			out = append(out, h)
		}
	}
	return out, nil
}

// queryTag reads the optional tag query parameter.
func queryTag(r *http.Request) (string, error) {
	tag := r.URL.Query().Get("tag")
	if tag == "" {
		return "", nil
	}
	return tag, tasks.ValidName("tag", tag)
}

// openTarget connects to a host for a host operation.
func (c *Coordinator) openTarget(ctx context.Context, h inventory.Host) (opsTarget, error) {
	switch h.Transport {
	case inventory.TransportLocal:
		return localOps{}, nil
	case inventory.TransportSSH:
		cl, err := c.dialSSH(ctx, h)
		if err != nil {
			return nil, err
		}
		return sshOps{cl}, nil
	}
	return nil, fmt.Errorf("transport %q is not supported", h.Transport)
}

// Facts.

func (c *Coordinator) handleHostFacts(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	name := r.PathValue("name")
	hs, err := c.visibleHosts(r, u)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(hs, func(h tasks.Host) bool { return h.Name == name }) {
		return tasks.Errorf(tasks.ENotFound, "no host named %q", name)
	}
	h, ok := c.inventoryHost(name)
	if !ok {
		return notInventory(name)
	}
	f, err := c.hostFacts(r.Context(), h)
	if err != nil {
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		return tasks.Errorf(tasks.EUnavailable, "gather facts of %s: %v", name, err)
	}
	writeJSON(w, http.StatusOK, f)
	return nil
}

func (c *Coordinator) handleFacts(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	tag, err := queryTag(r)
	if err != nil {
		return err
	}
	hs, err := c.visibleInventoryHosts(r, u, tag)
	if err != nil {
		return err
	}
	out := make([]tasks.HostFactsResult, len(hs))
	var g errgroup.Group
	g.SetLimit(opsParallel)
	for i, h := range hs {
		g.Go(func() error {
			out[i].Host = h.Name
			f, err := c.hostFacts(r.Context(), h)
			if err != nil {
				out[i].Error = err.Error()
				return nil
			}
			out[i].Facts = &f
			return nil
		})
	}
	_ = g.Wait() // every host's error is in its result
	if err := r.Context().Err(); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]tasks.HostFactsResult{"hosts": out})
	return nil
}

// hostFacts runs factsScript on a host and parses what it prints.
func (c *Coordinator) hostFacts(ctx context.Context, h inventory.Host) (tasks.HostFacts, error) {
	ctx, cancel := context.WithTimeout(ctx, factsTimeout)
	defer cancel()
	t, err := c.openTarget(ctx, h)
	if err != nil {
		return tasks.HostFacts{}, err
	}
	defer t.Close()
	sent := time.Now()
	out, err := t.Run(ctx, factsCommand)
	received := time.Now()
	if err != nil {
		return tasks.HostFacts{}, fmt.Errorf("run the facts script: %w", err)
	}
	f := parseFacts(string(out), sent, received)
	f.CollectedAt = received.UTC()
	return f, nil
}

// containment says how the host's watchdogs will hold its tasks, from
// the facts script's containment section, by the rule the shim follows
// (watchdog.DetectCgroup): a cgroup v2 under the SSH user's own, where
// the user may create cgroups and the kernel can kill one whole, else
// the watchdog as the tasks' subreaper.
func containment(kv map[string]string, kernel string) string {
	if kv == nil {
		return ""
	}
	cg, mnt := kv["cgroup"], kv["mount"]
	switch {
	case mnt == "" || cg == "":
		return "subreaper (no cgroup v2)"
	case kv["writable"] != "yes":
		return "subreaper (cgroup " + path.Join(mnt, cg) + " is not delegated to this user)"
	case !kernelAtLeast(kernel, 5, 14):
		return "subreaper (cgroup.kill needs Linux 5.14, this is " + kernel + ")"
	}
	return "cgroup " + path.Join(mnt, cg)
}

// kernelAtLeast reports whether a `uname -r` release ("6.8.0-45-generic")
// is at least major.minor; one it cannot read is not.
func kernelAtLeast(release string, major, minor int) bool {
	f := strings.SplitN(release, ".", 3)
	if len(f) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(f[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(f[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// parseFacts reads factsScript's output. sent and received bracket the
// script's run, for the clock offset. Whatever cannot be read is left
// zero (speeds -1) and named in Missing; it never fails, because a host
// that hides a few files still has facts worth showing.
func parseFacts(out string, sent, received time.Time) tasks.HostFacts {
	var (
		f          tasks.HostFacts
		section    string
		start, end string
		kv         = map[string]map[string]string{}
		raw        = map[string][]string{}
		links      []tasks.Interface
	)
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, "@section "):
			section = strings.TrimSpace(strings.TrimPrefix(line, "@section "))
			continue
		case strings.HasPrefix(line, "@start="):
			start = strings.TrimPrefix(line, "@start=")
			continue
		case strings.HasPrefix(line, "@end="):
			end = strings.TrimPrefix(line, "@end=")
			continue
		case section == "":
			continue
		}
		raw[section] = append(raw[section], line)
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if section == "links" {
			switch k {
			case "if":
				links = append(links, tasks.Interface{Name: v, SpeedMbps: -1})
			case "speed", "mtu", "state":
				if len(links) > 0 {
					setLink(&links[len(links)-1], k, strings.TrimSpace(v))
				}
			}
			continue
		}
		if kv[section] == nil {
			kv[section] = map[string]string{}
		}
		kv[section][k] = strings.TrimSpace(v)
	}
	missing := func(name string) { f.Missing = append(f.Missing, name) }

	u := kv["uname"]
	f.OS, f.Kernel, f.Arch = u["os"], u["kernel"], u["arch"]
	f.Distro = strings.Trim(u["PRETTY_NAME"], `"'`)
	for k, v := range map[string]string{"os": f.OS, "kernel": f.Kernel, "arch": f.Arch} {
		if v == "" {
			missing(k)
		}
	}
	if n, err := strconv.Atoi(u["nproc"]); err == nil && n > 0 {
		f.CPUs = n
	} else if n, err := strconv.Atoi(u["cpuinfo"]); err == nil && n > 0 {
		f.CPUs = n
	} else {
		missing("cpus")
	}
	if f.MemoryBytes = meminfo(raw["meminfo"], "MemTotal"); f.MemoryBytes == 0 {
		missing("memory")
	}
	var ok bool
	if f.DiskFreeBytes, ok = dfAvailable(raw["df-work"]); !ok {
		missing("disk_free")
	}
	if f.HomeFreeBytes, ok = dfAvailable(raw["df-home"]); !ok {
		missing("home_free")
	}

	var addrs map[string][]string
	switch {
	case raw["ip-addr"] != nil:
		addrs = ipAddrs(raw["ip-addr"])
	case raw["if_inet6"] != nil || raw["fib_trie"] != nil:
		addrs = procAddrs(raw["if_inet6"], raw["fib_trie"], raw["route"])
	}
	if len(addrs) == 0 {
		missing("addresses")
	}
	if len(links) == 0 {
		missing("interfaces")
	}
	for name, as := range addrs {
		i := slices.IndexFunc(links, func(l tasks.Interface) bool { return l.Name == name })
		if i < 0 {
			links = append(links, tasks.Interface{Name: name, SpeedMbps: -1})
			i = len(links) - 1
		}
		links[i].Addresses = as
	}
	for i := range links {
		if links[i].Addresses == nil {
			links[i].Addresses = []string{}
		}
	}
	slices.SortFunc(links, func(a, b tasks.Interface) int { return strings.Compare(a.Name, b.Name) })
	f.Interfaces = links
	f.Containment = containment(kv["containment"], f.Kernel)
	if f.Containment == "" {
		missing("containment")
	}
	if f.Interfaces == nil {
		f.Interfaces = []tasks.Interface{}
	}

	tcp := kv["tcp"]
	f.CongestionControl.Available = strings.Fields(tcp["available"])
	if f.CongestionControl.Available == nil {
		f.CongestionControl.Available = []string{}
	}
	f.CongestionControl.Default = tcp["default"]
	if len(f.CongestionControl.Available) == 0 || f.CongestionControl.Default == "" {
		missing("congestion_control")
	}
	if f.DefaultQdisc = tcp["qdisc"]; f.DefaultQdisc == "" {
		missing("default_qdisc")
	}

	rs, ok1 := parseUnixTime(start)
	re, ok2 := parseUnixTime(end)
	if ok1 && ok2 && !re.Before(rs) && !received.Before(sent) {
		// The host read its clock at rs and re; we sent at sent and had
		// the answer at received. With equal delays both ways, the
		// middle of the host's readings happened at the middle of ours.
		remoteMid := rs.Add(re.Sub(rs) / 2)
		localMid := sent.Add(received.Sub(sent) / 2)
		f.ClockOffset = tasks.Duration(remoteMid.Sub(localMid))
		f.ClockUncertainty = tasks.Duration(max(0, (received.Sub(sent)-re.Sub(rs))/2))
	} else {
		missing("clock_offset")
	}
	slices.Sort(f.Missing)
	return f
}

func setLink(l *tasks.Interface, k, v string) {
	switch k {
	case "speed":
		// The kernel gives -1 or refuses to answer (EINVAL) when it does
		// not know; a few drivers give 0 or 65535 for "unknown" too.
		if n, err := strconv.Atoi(v); err == nil && n > 0 && n != 65535 && n != math.MaxUint32 {
			l.SpeedMbps = n
		}
	case "mtu":
		l.MTU, _ = strconv.Atoi(v)
	case "state":
		l.State = v
	}
}

// meminfo returns a /proc/meminfo field in bytes, 0 when absent.
func meminfo(lines []string, field string) int64 {
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok || k != field {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0
		}
		if len(f) > 1 && strings.EqualFold(f[1], "kB") {
			n *= 1024
		}
		return n
	}
	return 0
}

// dfAvailable returns the Available column of `df -Pk` in bytes. It
// finds the columns as the first "N N N N%" run of fields, so that spaces
// in a file system name or a mount point do not shift them.
func dfAvailable(lines []string) (int64, bool) {
	num := func(s string) bool { _, err := strconv.ParseUint(s, 10, 64); return err == nil }
	for _, l := range slices.Backward(lines) {
		f := strings.Fields(l)
		for i := 4; i < len(f); i++ {
			pct, ok := strings.CutSuffix(f[i], "%")
			if !ok || !(num(pct) || pct == "-") || !num(f[i-3]) || !num(f[i-2]) || !num(f[i-1]) {
				continue
			}
			n, _ := strconv.ParseInt(f[i-1], 10, 64)
			return n * 1024, true
		}
	}
	return 0, false
}

// ipAddrs reads `ip -o addr show`: "2: eth0    inet 10.0.0.5/24 brd ...".
func ipAddrs(lines []string) map[string][]string {
	out := map[string][]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 || (f[2] != "inet" && f[2] != "inet6") {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		if _, err := netip.ParsePrefix(f[3]); err != nil {
			continue
		}
		if !slices.Contains(out[name], f[3]) {
			out[name] = append(out[name], f[3])
		}
	}
	return out
}

// procAddrs reads the addresses from /proc/net when `ip` is missing: IPv6
// from if_inet6; IPv4 from the LOCAL host entries of fib_trie, each given
// the interface and prefix of the narrowest route in /proc/net/route that
// holds it (loopback addresses have no route there: they belong to lo).
func procAddrs(inet6, fibTrie, route []string) map[string][]string {
	out := map[string][]string{}
	add := func(name, a string) {
		if !slices.Contains(out[name], a) {
			out[name] = append(out[name], a)
		}
	}
	for _, l := range inet6 {
		f := strings.Fields(l)
		if len(f) < 6 || len(f[0]) != 32 {
			continue
		}
		b, err := hex.DecodeString(f[0])
		plen, err2 := strconv.ParseUint(f[2], 16, 8)
		if err != nil || err2 != nil {
			continue
		}
		a := netip.AddrFrom16([16]byte(b))
		add(f[5], netip.PrefixFrom(a, int(plen)).String())
	}
	type rt struct {
		iface string
		net   netip.Prefix
	}
	var routes []rt
	for _, l := range route {
		f := strings.Fields(l)
		if len(f) < 8 || f[0] == "Iface" {
			continue
		}
		dst, ok1 := procIPv4(f[1])
		mask, ok2 := procIPv4(f[7])
		if !ok1 || !ok2 {
			continue
		}
		m := mask.As4()
		ones := 0
		for _, x := range m {
			for ; x&0x80 != 0; x <<= 1 {
				ones++
			}
		}
		if ones == 0 {
			continue // the default route holds every address
		}
		routes = append(routes, rt{f[0], netip.PrefixFrom(dst, ones).Masked()})
	}
	var last string
	for _, l := range fibTrie {
		t := strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(t, "|-- "); ok {
			last = rest
			continue
		}
		if !strings.HasPrefix(t, "/32 host LOCAL") || last == "" {
			continue
		}
		a, err := netip.ParseAddr(last)
		if err != nil || !a.Is4() {
			continue
		}
		if a.IsLoopback() {
			add("lo", netip.PrefixFrom(a, 8).String())
			continue
		}
		best := -1
		for i, r := range routes {
			if r.net.Contains(a) && (best < 0 || r.net.Bits() > routes[best].net.Bits()) {
				best = i
			}
		}
		if best >= 0 {
			add(routes[best].iface, netip.PrefixFrom(a, routes[best].net.Bits()).String())
		}
	}
	return out
}

// procIPv4 reads an address of /proc/net/route: 8 hex digits in host
// (little-endian on every Linux mito supports) byte order.
func procIPv4(s string) (netip.Addr, bool) {
	n, err := strconv.ParseUint(s, 16, 32)
	if err != nil || len(s) != 8 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}), true
}

// parseUnixTime reads `date +%s.%N`; a date without %N ("1700000000.N",
// "1700000000.%N") still gives whole seconds.
func parseUnixTime(s string) (time.Time, bool) {
	secs, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	var ns int64
	if len(frac) > 0 && strings.Trim(frac, "0123456789") == "" {
		frac = (frac + "000000000")[:9]
		ns, _ = strconv.ParseInt(frac, 10, 64)
	}
	return time.Unix(n, ns), true
}

// Bootstrap.

func (c *Coordinator) handleHostBootstrap(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	if err := requireBootstrapper(u); err != nil {
		return err
	}
	dry, err := queryDryRun(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	h, ok := c.inventoryHost(name)
	if !ok {
		if _, err := c.store.GetHost(r.Context(), name); err == nil {
			return notInventory(name)
		}
		return tasks.Errorf(tasks.ENotFound, "no host named %q", name)
	}
	return c.writeBootstrap(w, r, u, []inventory.Host{h}, dry)
}

func (c *Coordinator) handleBootstrap(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	if err := requireBootstrapper(u); err != nil {
		return err
	}
	dry, err := queryDryRun(r)
	if err != nil {
		return err
	}
	tag, err := queryTag(r)
	if err != nil {
		return err
	}
	if tag == "" {
		return tasks.Invalid("tag", "required: bootstrap the hosts with this tag (or one host with POST /api/v1/hosts/{name}/bootstrap)")
	}
	hs, err := c.visibleInventoryHosts(r, u, tag)
	if err != nil {
		return err
	}
	if len(hs) == 0 {
		return tasks.Errorf(tasks.ENotFound, "no inventory host has tag %q", tag)
	}
	return c.writeBootstrap(w, r, u, hs, dry)
}

// requireBootstrapper lets only global admins bootstrap: steps run
// commands on hosts as their SSH user, which no group role covers.
func requireBootstrapper(u tasks.User) error {
	if !u.Admin {
		return tasks.Errorf(tasks.EForbidden, "only global administrators may bootstrap hosts")
	}
	return nil
}

func queryDryRun(r *http.Request) (bool, error) {
	s := r.URL.Query().Get("dry_run")
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, tasks.Invalid("dry_run", "%q is not true or false", s)
	}
	return b, nil
}

func (c *Coordinator) writeBootstrap(w http.ResponseWriter, r *http.Request, u tasks.User, hs []inventory.Host, dry bool) error {
	out := make([]tasks.BootstrapResult, len(hs))
	var g errgroup.Group
	g.SetLimit(opsParallel)
	for i, h := range hs {
		g.Go(func() error {
			out[i] = c.bootstrap(r.Context(), u, h, dry)
			return nil
		})
	}
	_ = g.Wait() // every host's error is in its result
	if err := r.Context().Err(); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tasks.BootstrapReport{Hosts: out, Summary: tasks.Summarize(out)})
	return nil
}

// bootstrap runs a host's bootstrap steps in order and stops at the first
// that fails; the rest are reported skipped. A dry run connects and looks
// (so that it finds unreachable hosts and missing source files) but
// changes nothing.
func (c *Coordinator) bootstrap(ctx context.Context, u tasks.User, h inventory.Host, dry bool) tasks.BootstrapResult {
	res := tasks.BootstrapResult{Host: h.Name, Steps: make([]tasks.StepResult, len(h.Bootstrap))}
	for i, s := range h.Bootstrap {
		res.Steps[i] = tasks.StepResult{Index: i + 1, Kind: tasks.StepRun, What: s.Run, Status: tasks.StepSkipped}
		if s.Copy != nil {
			res.Steps[i].Kind, res.Steps[i].What = tasks.StepCopy, s.Copy.Dst
		}
	}
	fail := func(err error) tasks.BootstrapResult {
		res.Error = err.Error()
		return res
	}
	if !dry {
		st := c.ops()
		st.mu.Lock()
		busy := st.busy[h.Name]
		st.busy[h.Name] = true
		st.mu.Unlock()
		if busy {
			return fail(fmt.Errorf("a bootstrap of %s is already running", h.Name))
		}
		defer func() {
			st.mu.Lock()
			delete(st.busy, h.Name)
			st.mu.Unlock()
		}()
	}
	if len(h.Bootstrap) == 0 {
		res.OK = true
		return res
	}
	t, err := c.openTarget(ctx, h)
	if err != nil {
		return fail(err)
	}
	defer t.Close()
	timeout := c.ops().stepTimeout
	for i, s := range h.Bootstrap {
		sr := &res.Steps[i]
		sctx, cancel := context.WithTimeout(ctx, timeout)
		if s.Copy != nil {
			c.copyStep(sctx, t, h, *s.Copy, dry, sr)
		} else {
			c.runStep(sctx, t, s.Run, dry, sr)
		}
		if sr.Status == tasks.StepFailed && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
			sr.Error = fmt.Sprintf("timed out after %s", timeout)
		}
		cancel()
		if !dry {
			c.log.Info("bootstrap step", logHost, h.Name, logUser, u.Name, "step", sr.Index, "kind", sr.Kind, "status", sr.Status)
		}
		if sr.Status == tasks.StepFailed {
			return res
		}
	}
	res.OK = true
	return res
}

// runStep runs a step's command as given: it is the inventory's, written
// by the administrator for the host's shell, and it must be idempotent
// ("command -v iperf3 || apt-get install -y iperf3"), since the
// coordinator cannot tell what it changed.
func (c *Coordinator) runStep(ctx context.Context, t opsTarget, cmd string, dry bool, sr *tasks.StepResult) {
	if dry {
		sr.Status = tasks.StepWouldRun
		return
	}
	out := tailbuf.New(tasks.MaxStepOutput)
	err := t.RunCombined(ctx, cmd, out)
	sr.Output = strings.ToValidUTF8(out.String(), "\uFFFD")
	if err != nil {
		sr.Status, sr.Error = tasks.StepFailed, err.Error()
		return
	}
	sr.Status = tasks.StepOK
}

// copyStep makes a file on the host hold the source file's content and
// mode. The transport can stat a remote file but not read it back, so the
// step counts a file as already there when its size and mode are right
// AND its modification time is the one this coordinator saw right after
// it last wrote the same content there. Anything else (a first run, a new
// source, a remote edit, a restarted coordinator) uploads again, which is
// atomic and so always safe; the price of the shortcut is that an edit
// keeping size and mtime (to the second) goes unnoticed.
func (c *Coordinator) copyStep(ctx context.Context, t opsTarget, h inventory.Host, cp inventory.Copy, dry bool, sr *tasks.StepResult) {
	failf := func(format string, args ...any) {
		sr.Status, sr.Error = tasks.StepFailed, fmt.Sprintf(format, args...)
	}
	dst := strings.TrimPrefix(cp.Dst, "~/") // SFTP paths are relative to the home
	mode := cp.Mode.Perm()
	f, err := os.Open(cp.Src)
	if err != nil {
		failf("open source: %v", err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		failf("stat source: %v", err)
		return
	}
	if !fi.Mode().IsRegular() {
		failf("source %s is not a regular file", cp.Src)
		return
	}
	hash := sha256.New()
	size, err := io.Copy(hash, f)
	if err != nil {
		failf("read source: %v", err)
		return
	}
	sum := hex.EncodeToString(hash.Sum(nil))
	key := copyKey{host: h.Name, transport: h.Transport, address: h.Address, user: h.User, port: h.Port, dst: dst}

	st := c.ops()
	remote, err := t.Stat(ctx, dst)
	switch {
	case err == nil:
		st.mu.Lock()
		rec, ok := st.copied[key]
		st.mu.Unlock()
		if ok && rec.sum == sum && rec.size == size && rec.mode == mode &&
			remote.Size() == size && remote.Mode().Perm() == mode && remote.ModTime().Equal(rec.mtime) {
			sr.Status = tasks.StepUnchanged
			return
		}
	case !errors.Is(err, fs.ErrNotExist):
		failf("look at the destination: %v", err)
		return
	}
	if dry {
		sr.Status = tasks.StepWouldCopy
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		failf("read source: %v", err)
		return
	}
	if err := t.Upload(ctx, f, size, dst, mode); err != nil {
		failf("%v", err)
		return
	}
	sr.Status = tasks.StepChanged
	after, err := t.Stat(ctx, dst)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		delete(st.copied, key) // the next run uploads again
		return
	}
	st.copied[key] = copyRecord{sum: sum, size: size, mode: mode, mtime: after.ModTime()}
}

// sshOps is an SSH host for host operations. Its RunCombined stops
// reading output ssh.OutputGrace after the command exited.
type sshOps struct{ *ssh.Client }

// localOps is the coordinator's own machine, for local hosts: commands
// run with /bin/sh in the home directory, as over SSH, and relative paths
// are relative to the home directory.
type localOps struct{}

func (localOps) Close() error { return nil }

func (localOps) Run(ctx context.Context, cmd string) ([]byte, error) {
	out := tailbuf.New(64 << 20)
	stderr := tailbuf.New(ssh.MaxStderr)
	if err := runLocal(ctx, cmd, out, stderr); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return out.Bytes(), err
	}
	return out.Bytes(), nil
}

func (localOps) RunCombined(ctx context.Context, cmd string, w io.Writer) error {
	return runLocal(ctx, cmd, w, w)
}

// runLocal runs cmd with /bin/sh -c in its own process group, which is
// killed when ctx ends.
func runLocal(ctx context.Context, cmd string, stdout, stderr io.Writer) error {
	home, err := os.UserHomeDir()
	if err != nil {
		return fmt.Errorf("find the home directory: %w", err)
	}
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.Dir, c.Stdout, c.Stderr = home, stdout, stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	// A command that leaves a daemon holding its output open has still
	// succeeded; stop waiting for that output after a while.
	c.WaitDelay = outputGrace
	err = c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil, errors.Is(err, exec.ErrWaitDelay):
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &ee) && ee.Exited():
		return fmt.Errorf("command exited with status %d", ee.ExitCode())
	}
	return fmt.Errorf("run command: %w", err)
}

// localPath makes a path relative to the home directory absolute.
func localPath(p string) (string, error) {
	if filepath.IsAbs(p) {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the home directory: %w", err)
	}
	return filepath.Join(home, p), nil
}

func (localOps) Stat(_ context.Context, p string) (fs.FileInfo, error) {
	lp, err := localPath(p)
	if err != nil {
		return nil, err
	}
	return os.Stat(lp)
}

// Upload writes the file atomically, as the SSH transport does: to a
// temporary file beside dst, checked for length, given its mode, synced,
// then renamed onto dst.
func (localOps) Upload(ctx context.Context, r io.Reader, size int64, dst string, mode fs.FileMode) (err error) {
	lp, err := localPath(dst)
	if err != nil {
		return err
	}
	dir, base := filepath.Split(lp)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	n, err := io.Copy(f, io.LimitReader(r, size+1))
	switch {
	case err != nil:
		return fmt.Errorf("write %s: %w", dst, err)
	case n != size:
		return fmt.Errorf("write %s: source gave %d bytes, want %d", dst, n, size)
	}
	if err := f.Chmod(mode.Perm()); err != nil {
		return fmt.Errorf("chmod %s: %w", dst, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dst, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", dst, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), lp); err != nil {
		return fmt.Errorf("rename onto %s: %w", dst, err)
	}
	return nil
}
