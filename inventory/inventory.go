package inventory

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strings"
)

// Transports: how the coordinator reaches a host.
const (
	// TransportSSH connects to the host over SSH and runs the shim there. It
	// is the default, because reaching lab machines over SSH is mito's job.
	TransportSSH = "ssh"
	// TransportLocal runs the shim as a child process of the coordinator,
	// on the coordinator's own machine.
	TransportLocal = "local"
)

// Host key policies: what to do with a host key known_hosts does not list.
const (
	// PolicyStrict refuses any host key that known_hosts does not list.
	PolicyStrict = "strict"
	// PolicyAcceptNew trusts the key a host shows on first contact and pins
	// it; a different key later is refused as under PolicyStrict.
	PolicyAcceptNew = "accept-new"
)

// Artifact routes: how a host's artifacts reach the artifact store.
const (
	// ArtifactsAuto sends artifacts directly where the store allows it and
	// through the coordinator otherwise.
	ArtifactsAuto = "auto"
	// ArtifactsDirect uploads straight to the store (a presigned S3 URL),
	// for hosts with a route to it.
	ArtifactsDirect = "direct"
	// ArtifactsRelay streams artifacts through the host's link to the
	// coordinator, for hosts that can reach nothing else.
	ArtifactsRelay = "relay"
)

// Limits and defaults of host settings.
const (
	DefaultSlots = 1
	MaxSlots     = 1024
	// MaxFileSize bounds an inventory file, so that a wrong path (a log, a
	// disk image) fails fast instead of filling memory.
	MaxFileSize = 8 << 20
	// DefaultCopyMode is the mode of a file a bootstrap copy step writes
	// when the step gives none.
	DefaultCopyMode fs.FileMode = 0o644
)

// Inventory is a validated inventory file: every host with its defaults and
// host group applied, so that nothing downstream re-implements inheritance.
type Inventory struct {
	// File is the path the inventory was parsed from, as given.
	File string `json:"file"`
	// Hosts are in file order.
	Hosts []Host `json:"hosts"`
}

// Host is one machine as the coordinator needs it: fully resolved, with
// inherited settings applied and local paths made absolute.
type Host struct {
	Name string `json:"name"`
	// Transport is TransportSSH or TransportLocal.
	Transport string `json:"transport"`
	// HostGroup is the host group the host inherits from, if any.
	HostGroup string `json:"host_group,omitempty"`
	// Address is a host name, an IP address or a ~/.ssh/config alias; set
	// for SSH hosts only.
	Address string `json:"address,omitempty"`
	// Port is 0 when the inventory leaves it to ~/.ssh/config, whose own
	// default is 22; so an alias's Port is honoured unless overridden.
	Port int `json:"port,omitempty"`
	// User is empty when the inventory leaves it to ~/.ssh/config or the
	// coordinator's own user.
	User string `json:"user,omitempty"`
	// IdentityFile is an absolute path, or empty for ssh-agent and
	// ~/.ssh/config.
	IdentityFile string `json:"identity_file,omitempty"`
	// Jump is the host to go through: the name of another host of this
	// inventory (see Inventory.Host), or "[user@]host[:port]" for a jump
	// host the inventory does not list. Empty means a direct connection.
	Jump string `json:"jump,omitempty"`
	// KnownHosts is an absolute path, or empty for the user's
	// ~/.ssh/known_hosts.
	KnownHosts string `json:"known_hosts,omitempty"`
	// HostKeyPolicy is PolicyStrict or PolicyAcceptNew for SSH hosts, and
	// empty for local ones.
	HostKeyPolicy string `json:"host_key_policy,omitempty"`
	// Tags are the host's capabilities, sorted and de-duplicated; a task
	// runs only on hosts that have all of its tags.
	Tags []string `json:"tags,omitempty"`
	// Groups lists the task groups whose tasks the host runs (the groups
	// it serves), sorted.
	Groups []string `json:"groups"`
	// Slots is how many tasks the host runs at once.
	Slots int `json:"slots"`
	// Env is set for every task the host runs, under the task's own env.
	Env map[string]string `json:"env,omitempty"`
	// Artifacts is ArtifactsAuto, ArtifactsDirect or ArtifactsRelay.
	Artifacts string `json:"artifacts"`
	// Bootstrap steps prepare a fresh host; they run only on request.
	Bootstrap []Step `json:"bootstrap,omitempty"`
	// Line is where the host's entry starts in the file, for messages that
	// point back at it.
	Line int `json:"line"`
}

// Step is one bootstrap step: exactly one of Run and Copy is set.
type Step struct {
	// Run is a command line for the host's shell.
	Run string `json:"run,omitempty"`
	// Copy uploads a file from the coordinator's machine.
	Copy *Copy `json:"copy,omitempty"`
}

// Copy is a file to upload by a bootstrap step.
type Copy struct {
	// Src is an absolute path on the coordinator's machine.
	Src string `json:"src"`
	// Dst is an absolute path on the host, or one starting with "~/" for
	// the remote user's home.
	Dst string `json:"dst"`
	// Mode is the permission bits (0 to 0777) of the written file.
	Mode fs.FileMode `json:"-"`
}

// MarshalJSON writes Mode in octal ("0644"), the way people read modes.
func (c Copy) MarshalJSON() ([]byte, error) {
	type plain Copy
	return json.Marshal(struct {
		plain
		Mode string `json:"mode"`
	}{plain(c), fmt.Sprintf("%04o", uint32(c.Mode.Perm()))})
}

// Load reads and parses the inventory file at path. A file with problems
// gives an *Errors listing all of them.
func Load(path string) (*Inventory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load inventory: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load inventory: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, &Errors{List: []*FieldError{{File: path, Msg: fmt.Sprintf("file is over the limit of %d bytes", MaxFileSize)}}}
	}
	return Parse(path, data)
}

// Host returns the host named name, so that callers can resolve a Jump or
// look up a host named in a request.
func (inv *Inventory) Host(name string) (Host, bool) {
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// Select returns the hosts that have tag, in file order; an empty tag
// selects every host. Commands such as `hosts bootstrap --tag T` use it.
func (inv *Inventory) Select(tag string) []Host {
	var out []Host
	for _, h := range inv.Hosts {
		if tag == "" || slices.Contains(h.Tags, tag) {
			out = append(out, h)
		}
	}
	return out
}

// Diff compares two versions of an inventory by host name, so that a
// reload can connect added hosts, drain removed ones and update changed
// ones. A host is changed when any resolved setting differs; a move within
// the file (Line) alone is no change. Each list is sorted; a nil inventory
// counts as empty.
func Diff(old, new *Inventory) (added, removed, changed []string) {
	byName := func(inv *Inventory) map[string]Host {
		m := make(map[string]Host)
		if inv != nil {
			for _, h := range inv.Hosts {
				h.Line = 0
				m[h.Name] = h
			}
		}
		return m
	}
	o, n := byName(old), byName(new)
	for name, nh := range n {
		oh, ok := o[name]
		switch {
		case !ok:
			added = append(added, name)
		case !reflect.DeepEqual(oh, nh):
			changed = append(changed, name)
		}
	}
	for name := range o {
		if _, ok := n[name]; !ok {
			removed = append(removed, name)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

// SSHChanged reports whether old and new differ in how the host is
// reached, so that a reload reconnects only hosts whose link changed and
// lets tag, slot and env changes apply to the next claim.
func SSHChanged(old, new Host) bool {
	return old.Transport != new.Transport || old.Address != new.Address ||
		old.Port != new.Port || old.User != new.User ||
		old.IdentityFile != new.IdentityFile || old.Jump != new.Jump ||
		old.KnownHosts != new.KnownHosts || old.HostKeyPolicy != new.HostKeyPolicy
}

// String returns "user@address:port" for SSH hosts and "local" for local
// ones, for tables and log lines.
func (h Host) String() string {
	if h.Transport == TransportLocal {
		return TransportLocal
	}
	var b strings.Builder
	if h.User != "" {
		b.WriteString(h.User)
		b.WriteString("@")
	}
	if strings.Contains(h.Address, ":") {
		b.WriteString("[" + h.Address + "]")
	} else {
		b.WriteString(h.Address)
	}
	if h.Port != 0 {
		fmt.Fprintf(&b, ":%d", h.Port)
	}
	return b.String()
}
