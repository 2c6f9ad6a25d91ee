package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// yamlLineRE pulls the line out of yaml.v3's syntax errors, which look like
// "yaml: line 3: mapping values are not allowed in this context".
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse parses and validates an inventory. filename is used in messages
// and to resolve relative paths; nothing is read from disk but the home
// directory's location. A file with problems gives an *Errors listing all
// of them, in line order.
func Parse(filename string, data []byte) (*Inventory, error) {
	d := &decoder{file: filename, baseDir: filepath.Dir(filename)}
	if abs, err := filepath.Abs(d.baseDir); err == nil {
		d.baseDir = abs
	}
	if home, err := os.UserHomeDir(); err == nil {
		d.home = home
	}
	inv := d.parse(data)
	if len(d.errs) > 0 {
		return nil, d.result()
	}
	inv.File = filename
	return inv, nil
}

// result sorts the problems by line, drops repeats (an inherited bad value
// is reported once, where it is written) and wraps them in *Errors.
func (d *decoder) result() error {
	slices.SortStableFunc(d.errs, func(a, b *FieldError) int { return a.Line - b.Line })
	seen := make(map[string]bool)
	out := d.errs[:0]
	for _, e := range d.errs {
		if s := e.Error(); !seen[s] {
			seen[s] = true
			out = append(out, e)
		}
	}
	return &Errors{List: out}
}

func (d *decoder) parse(data []byte) *Inventory {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.errorf(1, "hosts", "is required (the file is empty)")
		} else {
			d.syntaxError(err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errorf(extra.Line, "", "a second YAML document: an inventory is one document")
		return nil
	} else if !errors.Is(err, io.EOF) {
		d.syntaxError(err)
		return nil
	}
	if len(doc.Content) == 0 {
		d.errorf(1, "hosts", "is required (the file is empty)")
		return nil
	}
	top := deref(doc.Content[0])
	if top.Kind != yaml.MappingNode {
		d.errorf(top.Line, "", "the file must be a mapping with a hosts: list, got %s", describe(top))
		return nil
	}
	entries, _ := d.mapping(top, "")
	var (
		defaults   *layer
		hostGroups = make(map[string]*layer)
		hostNodes  *yaml.Node
		hostsLine  int
	)
	for _, e := range entries {
		switch e.key {
		case "defaults":
			defaults = d.layer(e.val, "defaults", false)
		case "host_groups":
			gs, _ := d.mapping(e.val, "host_groups")
			for _, g := range gs {
				f := join("host_groups", g.key)
				if msg := nameProblem(g.key); msg != "" {
					d.errorf(g.line, f, "%s", msg)
					continue
				}
				if l := d.layer(g.val, f, false); l != nil {
					hostGroups[g.key] = l
				}
			}
		case "hosts":
			hostNodes, hostsLine = deref(e.val), e.line
			if hostNodes.Kind != yaml.SequenceNode && !(hostNodes.Kind == yaml.ScalarNode && hostNodes.ShortTag() == "!!null") {
				d.errorf(hostNodes.Line, "hosts", "must be a list, got %s", describe(hostNodes))
				hostNodes = nil
			}
		default:
			d.errorf(e.line, "", "unknown field %q%s", e.key, suggest(e.key, []string{"defaults", "host_groups", "hosts"}))
		}
	}
	if hostsLine == 0 {
		d.errorf(top.Line, "hosts", "is required")
	}
	if defaults == nil {
		defaults = &layer{path: "defaults", set: map[string]int{}}
	}
	r := &resolver{decoder: d, defaults: defaults, hostGroups: hostGroups}
	r.checkLocalLayer(defaults)
	for _, name := range slices.Sorted(maps.Keys(hostGroups)) {
		r.checkLocalLayer(defaults, hostGroups[name])
	}
	inv := &Inventory{Hosts: []Host{}}
	if hostNodes != nil {
		for i, hn := range hostNodes.Content {
			if l := d.layer(hn, fmt.Sprintf("hosts[%d]", i), true); l != nil {
				if h, ok := r.host(l); ok {
					inv.Hosts = append(inv.Hosts, h)
				}
			}
		}
	}
	r.checkJumps(inv)
	return inv
}

// syntaxError reports a YAML syntax error at its line. yaml.v3 gives some
// parser errors the line where the enclosing block starts, which can be a
// line early (yaml/go-yaml#135); scanner errors are exact.
func (d *decoder) syntaxError(err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		d.errorf(line, "", "invalid YAML: %s", m[2])
		return
	}
	d.errorf(0, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

// resolver applies inheritance and checks what only the whole file can
// tell: unique names, known host groups and jump hosts, no jump cycles.
type resolver struct {
	*decoder
	defaults   *layer
	hostGroups map[string]*layer
	// names maps each host name to the line of its name, for duplicates.
	names map[string]int
	// jumpOrigin records, per host name, where its jump was written.
	jumpOrigin map[string]origin
}

// origin is where a value was written: the layer's path and the line.
type origin struct {
	field string
	line  int
}

// transportOf returns the transport that applies to a layer: its own, or
// the nearest inherited one, or ssh.
func transportOf(ls ...*layer) string {
	t := TransportSSH
	for _, l := range ls {
		if l != nil && l.has("transport") {
			t = l.transport
		}
	}
	return t
}

// checkLocalLayer reports SSH settings written in the last layer of chain
// when its transport (its own or inherited) is local: they would be
// silently ignored, which hides mistakes. Inherited SSH settings are
// simply unused by local hosts.
func (r *resolver) checkLocalLayer(chain ...*layer) {
	if transportOf(chain...) != TransportLocal {
		return
	}
	l := chain[len(chain)-1]
	for _, f := range sshFields {
		if line, ok := l.set[f]; ok {
			r.errorf(line, join(l.path, f), "is an SSH setting, but transport is local")
		}
	}
}

// host resolves one host: defaults, then its host group, then its own
// settings. Scalars: the last one given wins. tags: union. env: merged key
// by key, the last one given wins. groups and bootstrap: the last list
// given replaces earlier ones.
func (r *resolver) host(l *layer) (Host, bool) {
	ok := true
	if !l.has("name") {
		if !l.given["name"] {
			r.errorf(l.line, join(l.path, "name"), "is required")
		}
		return Host{}, false
	}
	if r.names == nil {
		r.names = make(map[string]int)
	}
	if first, dup := r.names[l.name]; dup {
		r.errorf(l.set["name"], join(l.path, "name"), "duplicate host name %q (first at line %d)", l.name, first)
		ok = false
	} else {
		r.names[l.name] = l.set["name"]
	}

	chain := []*layer{r.defaults}
	if l.has("host_group") {
		g, found := r.hostGroups[l.hostGroup]
		if !found {
			r.errorf(l.set["host_group"], join(l.path, "host_group"), "unknown host group %q%s", l.hostGroup, r.hostGroupHint())
			ok = false
		} else {
			chain = append(chain, g)
		}
	}
	chain = append(chain, l)
	r.checkLocalLayer(chain...)

	h := Host{Name: l.name, HostGroup: l.hostGroup, Line: l.line, Transport: transportOf(chain...), Slots: DefaultSlots, Artifacts: ArtifactsAuto}
	var (
		env      = make(map[string]string)
		tags     []string
		groupsAt = origin{field: join(l.path, "groups"), line: l.line}
		jumpAt   origin
	)
	for _, c := range chain {
		if c.has("slots") {
			h.Slots = c.slots
		}
		if c.has("artifacts") {
			h.Artifacts = c.artifacts
		}
		if c.has("groups") {
			h.Groups = c.groups
			groupsAt = origin{join(c.path, "groups"), c.set["groups"]}
		}
		if c.has("bootstrap") {
			h.Bootstrap = c.bootstrap
		}
		tags = append(tags, c.tags...)
		maps.Copy(env, c.env)
		if h.Transport != TransportSSH {
			continue
		}
		if c.has("address") {
			h.Address = c.address
		}
		if c.has("port") {
			h.Port = c.port
		}
		if c.has("user") {
			h.User = c.user
		}
		if c.has("identity_file") {
			h.IdentityFile = c.identityFile
		}
		if c.has("jump") {
			h.Jump = c.jump
			jumpAt = origin{join(c.path, "jump"), c.set["jump"]}
		}
		if c.has("known_hosts") {
			h.KnownHosts = c.knownHosts
		}
		if c.has("host_key_policy") {
			h.HostKeyPolicy = c.hostKeyPolicy
		}
	}
	slices.Sort(tags)
	h.Tags = slices.Compact(tags)
	if len(env) > 0 {
		h.Env = env
	}
	if len(h.Groups) == 0 && !l.given["groups"] {
		r.errorf(groupsAt.line, groupsAt.field, "is required: list the task groups whose tasks host %s runs", l.name)
		ok = false
	}
	if h.Transport == TransportSSH {
		if h.HostKeyPolicy == "" {
			h.HostKeyPolicy = PolicyStrict
		}
		badTransport := l.given["transport"] && !l.has("transport")
		if h.Address == "" && !l.given["address"] && !badTransport {
			r.errorf(l.line, join(l.path, "address"), "is required for transport ssh (or set transport: local)")
			ok = false
		}
		if h.Jump != "" {
			if r.jumpOrigin == nil {
				r.jumpOrigin = make(map[string]origin)
			}
			r.jumpOrigin[h.Name] = jumpAt
		}
	}
	return h, ok
}

// hostGroupHint lists the defined host groups for an "unknown host group" error.
func (r *resolver) hostGroupHint() string {
	if len(r.hostGroups) == 0 {
		return " (the file defines no host groups)"
	}
	return " (defined: " + strings.Join(slices.Sorted(maps.Keys(r.hostGroups)), ", ") + ")"
}

// checkJumps resolves every jump: a value with '@' or ':' is an outside
// jump host "[user@]host[:port]"; any other value must name an SSH host of
// this inventory, and following such names must not come back to a host.
func (r *resolver) checkJumps(inv *Inventory) {
	byName := make(map[string]Host, len(inv.Hosts))
	index := make(map[string]int, len(inv.Hosts))
	for i, h := range inv.Hosts {
		byName[h.Name] = h
		index[h.Name] = i
	}
	for _, h := range inv.Hosts {
		if h.Jump == "" {
			continue
		}
		at := r.jumpOrigin[h.Name]
		j, found := byName[h.Jump]
		switch {
		case !found && strings.ContainsAny(h.Jump, "@:"):
			if msg := outsideJumpProblem(h.Jump); msg != "" {
				r.errorf(at.line, at.field, "%s", msg)
			}
			continue
		case !found:
			r.errorf(at.line, at.field, "unknown jump host %q: name a host of this inventory, or give user@host:port", h.Jump)
			continue
		case j.Transport != TransportSSH:
			r.errorf(at.line, at.field, "jump host %q has transport %s; a jump host must be an SSH host", h.Jump, j.Transport)
			continue
		}
		// Walk the chain; report a cycle once, at the member that comes
		// first in the file.
		path := []string{h.Name}
		seen := map[string]bool{h.Name: true}
		for cur := j; ; {
			path = append(path, cur.Name)
			if cur.Name == h.Name {
				first := true
				for _, n := range path {
					if index[n] < index[h.Name] {
						first = false
					}
				}
				if first {
					hint := ""
					if !strings.HasPrefix(at.field, "hosts[") {
						hint = fmt.Sprintf(" (%s inherits this jump; give it jump: \"\" to connect directly)", h.Name)
					}
					r.errorf(at.line, at.field, "jump cycle: %s%s", strings.Join(path, " -> "), hint)
				}
				break
			}
			next, ok := byName[cur.Jump]
			if seen[cur.Name] || !ok {
				break // the chain ends, leaves the inventory, or joins a cycle its members report
			}
			seen[cur.Name] = true
			cur = next
		}
	}
}

// outsideJumpProblem checks "[user@]host[:port]".
func outsideJumpProblem(s string) string {
	hostport := s
	if i := strings.LastIndex(s, "@"); i >= 0 {
		if msg := userProblem(s[:i]); msg != "" {
			return fmt.Sprintf("jump %q: %s", s, msg)
		}
		hostport = s[i+1:]
	}
	host := hostport
	if strings.Contains(hostport, ":") && net.ParseIP(hostport) == nil {
		h, p, err := net.SplitHostPort(hostport)
		if err != nil {
			return fmt.Sprintf("jump %q is not [user@]host[:port]", s)
		}
		port, err := strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 {
			return fmt.Sprintf("jump %q: port must be 1 to 65535", s)
		}
		host = h
	}
	if host == "" {
		return fmt.Sprintf("jump %q has no host", s)
	}
	if msg := addressProblem(host); msg != "" && net.ParseIP(host) == nil {
		return fmt.Sprintf("jump %q: %s", s, msg)
	}
	return ""
}
