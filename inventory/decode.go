package inventory

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/mitolab/mito/tasks"
	"gopkg.in/yaml.v3"
)

// layer is one level of settings as written in the file: the defaults, a
// host group, or a host. set records which fields the layer gives, and on
// which line, because inheritance and error messages both need to know
// where a value came from.
type layer struct {
	path string // "defaults", "host_groups.rack1", "hosts[0]"
	line int
	// given holds every known field written, valid or not; set holds the
	// valid ones with their lines. A bad value is reported once, where it
	// is, and not again as "missing".
	given map[string]bool
	set   map[string]int

	name          string // hosts only
	hostGroup     string // hosts only
	transport     string
	address       string
	port          int
	user          string
	identityFile  string
	jump          string
	knownHosts    string
	hostKeyPolicy string
	tags          []string
	groups        []string
	slots         int
	env           map[string]string
	artifacts     string
	bootstrap     []Step
}

func (l *layer) has(field string) bool { _, ok := l.set[field]; return ok }

// sshFields are the settings that only mean something for SSH hosts.
var sshFields = []string{"address", "port", "user", "identity_file", "jump", "known_hosts", "host_key_policy"}

// settingFields are the fields of every layer; hosts add name and host_group.
var settingFields = []string{
	"transport", "address", "port", "user", "identity_file", "jump", "known_hosts",
	"host_key_policy", "tags", "groups", "slots", "env", "artifacts", "bootstrap",
}

// decoder walks the YAML node tree and collects every problem it meets
// instead of stopping at the first.
type decoder struct {
	file    string
	baseDir string // directory against which relative local paths resolve
	home    string // the user's home, for "~/"
	errs    []*FieldError
}

func (d *decoder) errorf(line int, field, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// deref follows aliases (*anchor) to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// describe names what a node holds, for "must be X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "an unexpected node"
}

// entry is one key of a mapping with its value.
type entry struct {
	key  string
	line int
	val  *yaml.Node
}

// mapping returns the entries of a mapping node, reporting a node of
// another kind, a key given twice and keys that are not plain strings.
func (d *decoder) mapping(n *yaml.Node, field string) ([]entry, bool) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			return nil, true // "key:" with nothing under it is an empty mapping
		}
		d.errorf(n.Line, field, "must be a mapping, got %s", describe(n))
		return nil, false
	}
	seen := make(map[string]int)
	out := make([]entry, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, field, "keys must be strings, got %s", describe(k))
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			d.errorf(k.Line, field, "merge keys (<<) are not supported: use defaults or host groups")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k.Line, join(field, k.Value), "given twice (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, entry{key: k.Value, line: k.Line, val: v})
	}
	return out, true
}

// str reads a scalar as text. Any scalar but null is accepted, so that
// `user: 1000` or `tags: [2024]` mean what they say.
func (d *decoder) str(n *yaml.Node, field string) (string, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		d.errorf(n.Line, field, "must be a string, got %s", describe(n))
		return "", false
	}
	if strings.IndexByte(n.Value, 0) >= 0 {
		d.errorf(n.Line, field, "contains a NUL byte")
		return "", false
	}
	return n.Value, true
}

// integer reads an integer in [min, max].
func (d *decoder) integer(n *yaml.Node, field string, min, max int) (int, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.errorf(n.Line, field, "must be an integer, got %s", describe(n))
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if err != nil {
		d.errorf(n.Line, field, "must be an integer, got %s", describe(n))
		return 0, false
	}
	if v < int64(min) {
		d.errorf(n.Line, field, "must be at least %d, got %d", min, v)
		return 0, false
	}
	if v > int64(max) {
		d.errorf(n.Line, field, "must be at most %d, got %d", max, v)
		return 0, false
	}
	return int(v), true
}

// oneOf reads a string that must be one of choices.
func (d *decoder) oneOf(n *yaml.Node, field string, choices ...string) (string, bool) {
	s, ok := d.str(n, field)
	if !ok {
		return "", false
	}
	if !slices.Contains(choices, s) {
		d.errorf(deref(n).Line, field, "%q is not %s", s, orList(choices))
		return "", false
	}
	return s, true
}

// names reads a list of names (tags, task groups), sorted and de-duplicated.
func (d *decoder) names(n *yaml.Node, field string) ([]string, bool) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		d.errorf(n.Line, field, "must be a list, got %s", describe(n))
		return nil, false
	}
	ok := true
	out := make([]string, 0, len(n.Content))
	for i, e := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		s, good := d.str(e, f)
		if good {
			if msg := nameProblem(s); msg != "" {
				d.errorf(deref(e).Line, f, "%s", msg)
				good = false
			}
		}
		if !good {
			ok = false
			continue
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), ok
}

// nameProblem returns why s is not a valid name, or "". It reuses the
// domain's rule so the inventory accepts exactly the names the API does.
func nameProblem(s string) string {
	err := tasks.ValidName("name", s)
	var te *tasks.Error
	if errors.As(err, &te) {
		return strings.TrimPrefix(te.Message, te.Field+": ")
	}
	return ""
}

// localPath expands "~/" to the user's home and makes a relative path
// relative to the inventory's directory, so that an inventory means the
// same whatever directory the coordinator starts in.
func (d *decoder) localPath(n *yaml.Node, field string) (string, bool) {
	s, ok := d.str(n, field)
	if !ok || s == "" {
		return s, ok
	}
	line := deref(n).Line
	switch {
	case s == "~" || strings.HasPrefix(s, "~/"):
		if d.home == "" {
			d.errorf(line, field, "cannot expand ~: the home directory is unknown (HOME is not set)")
			return "", false
		}
		s = filepath.Join(d.home, s[1:])
	case strings.HasPrefix(s, "~"):
		d.errorf(line, field, "%q: only ~/ (your own home) is supported", s)
		return "", false
	case !filepath.IsAbs(s):
		s = filepath.Join(d.baseDir, s)
	}
	return filepath.Clean(s), true
}

// layer decodes the settings of the defaults, a host group or a host.
func (d *decoder) layer(n *yaml.Node, field string, isHost bool) *layer {
	l := &layer{path: field, line: deref(n).Line, given: make(map[string]bool), set: make(map[string]int)}
	entries, ok := d.mapping(n, field)
	if !ok {
		return nil
	}
	for _, e := range entries {
		f := join(field, e.key)
		good := true
		l.given[e.key] = true
		switch e.key {
		case "name", "host_group":
			if !isHost {
				d.errorf(e.line, f, "can only be set on a host")
				continue
			}
			var s string
			if s, good = d.str(e.val, f); good {
				if msg := nameProblem(s); msg != "" {
					d.errorf(deref(e.val).Line, f, "%s", msg)
					good = false
				}
			}
			if e.key == "name" {
				l.name = s
			} else {
				l.hostGroup = s
			}
		case "transport":
			l.transport, good = d.oneOf(e.val, f, TransportSSH, TransportLocal)
		case "address":
			if l.address, good = d.str(e.val, f); good && l.address != "" {
				if msg := addressProblem(l.address); msg != "" {
					d.errorf(deref(e.val).Line, f, "%s", msg)
					good = false
				}
			}
		case "port":
			l.port, good = d.integer(e.val, f, 1, 65535)
		case "user":
			if l.user, good = d.str(e.val, f); good && l.user != "" {
				if msg := userProblem(l.user); msg != "" {
					d.errorf(deref(e.val).Line, f, "%s", msg)
					good = false
				}
			}
		case "identity_file":
			l.identityFile, good = d.localPath(e.val, f)
		case "jump":
			l.jump, good = d.str(e.val, f)
		case "known_hosts":
			l.knownHosts, good = d.localPath(e.val, f)
		case "host_key_policy":
			l.hostKeyPolicy, good = d.oneOf(e.val, f, PolicyStrict, PolicyAcceptNew)
		case "tags":
			l.tags, good = d.names(e.val, f)
		case "groups":
			l.groups, good = d.names(e.val, f)
			if good && len(l.groups) == 0 {
				d.errorf(e.line, f, "must list at least one task group")
				good = false
			}
		case "slots":
			l.slots, good = d.integer(e.val, f, 1, MaxSlots)
		case "env":
			l.env, good = d.env(e.val, f)
		case "artifacts":
			l.artifacts, good = d.oneOf(e.val, f, ArtifactsAuto, ArtifactsDirect, ArtifactsRelay)
		case "bootstrap":
			l.bootstrap, good = d.steps(e.val, f)
		default:
			d.unknown(e, field, isHost)
			continue
		}
		if good {
			l.set[e.key] = e.line
		}
	}
	return l
}

// unknown reports an unknown field, with a hint when it looks like a typo.
func (d *decoder) unknown(e entry, field string, isHost bool) {
	known := settingFields
	if isHost {
		known = append([]string{"name", "host_group"}, settingFields...)
	}
	d.errorf(e.line, field, "unknown field %q%s", e.key, suggest(e.key, known))
}

// env reads a map of environment variables. Scalar values of any type are
// taken as written, so `GOMAXPROCS: 4` works.
func (d *decoder) env(n *yaml.Node, field string) (map[string]string, bool) {
	entries, ok := d.mapping(n, field)
	if !ok {
		return nil, false
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		f := join(field, e.key)
		switch {
		case !tasks.ValidEnvName(e.key):
			d.errorf(e.line, field, "invalid variable name %q (want letters, digits and '_', not starting with a digit)", e.key)
			ok = false
			continue
		case strings.HasPrefix(e.key, "MITO_"):
			d.errorf(e.line, f, "names starting with MITO_ are reserved for mito")
			ok = false
			continue
		}
		v, good := d.str(e.val, f)
		if !good {
			ok = false
			continue
		}
		out[e.key] = v
	}
	return out, ok
}

// steps reads a bootstrap list.
func (d *decoder) steps(n *yaml.Node, field string) ([]Step, bool) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		d.errorf(n.Line, field, "must be a list, got %s", describe(n))
		return nil, false
	}
	ok := true
	out := make([]Step, 0, len(n.Content))
	for i, sn := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		entries, good := d.mapping(sn, f)
		if !good {
			ok = false
			continue
		}
		var st Step
		kinds := 0
		for _, e := range entries {
			ef := join(f, e.key)
			switch e.key {
			case "run":
				kinds++
				var s string
				if s, good = d.str(e.val, ef); good && strings.TrimSpace(s) == "" {
					d.errorf(e.line, ef, "is empty")
					good = false
				}
				st.Run = s
			case "copy":
				kinds++
				st.Copy, good = d.copyStep(e.val, ef)
			default:
				d.errorf(e.line, f, "unknown field %q%s", e.key, suggest(e.key, []string{"run", "copy"}))
				good = false
			}
			ok = ok && good
		}
		if kinds != 1 {
			if len(entries) == kinds { // not already reported as unknown fields
				d.errorf(deref(sn).Line, f, "give exactly one of run or copy")
			}
			ok = false
			continue
		}
		out = append(out, st)
	}
	return out, ok
}

// copyStep reads a `copy: {src, dst, mode}` step.
func (d *decoder) copyStep(n *yaml.Node, field string) (*Copy, bool) {
	entries, ok := d.mapping(n, field)
	if !ok {
		return nil, false
	}
	c := &Copy{Mode: DefaultCopyMode}
	given := make(map[string]bool)
	for _, e := range entries {
		f := join(field, e.key)
		given[e.key] = true
		good := true
		switch e.key {
		case "src":
			if c.Src, good = d.localPath(e.val, f); good && c.Src == "" {
				d.errorf(e.line, f, "is empty")
				good = false
			}
		case "dst":
			if c.Dst, good = d.str(e.val, f); good {
				switch {
				case strings.HasPrefix(c.Dst, "/"):
					c.Dst = path.Clean(c.Dst)
				case !strings.HasPrefix(c.Dst, "~/"):
					d.errorf(e.line, f, "%q must be an absolute path or start with ~/", c.Dst)
					good = false
				}
			}
		case "mode":
			c.Mode, good = d.mode(e.val, f)
		default:
			d.errorf(e.line, field, "unknown field %q%s", e.key, suggest(e.key, []string{"src", "dst", "mode"}))
			good = false
		}
		ok = ok && good
	}
	for _, req := range []string{"src", "dst"} {
		if !given[req] {
			d.errorf(deref(n).Line, join(field, req), "is required")
			ok = false
		}
	}
	return c, ok
}

// mode reads permission bits written in octal: "0644", 0644, "0o644" or 644.
func (d *decoder) mode(n *yaml.Node, field string) (fs.FileMode, bool) {
	s, ok := d.str(n, field)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O"), 8, 32)
	if err != nil || v > 0o777 {
		d.errorf(deref(n).Line, field, "%q is not a file mode (octal 0000 to 0777, such as \"0644\")", s)
		return 0, false
	}
	return fs.FileMode(v), true
}

// addressProblem checks an SSH address: a host name, an IP address or an
// ssh_config alias, without a port or a user.
func addressProblem(s string) string {
	switch {
	case strings.ContainsAny(s, " \t\r\n"):
		return fmt.Sprintf("%q contains white space", s)
	case strings.HasPrefix(s, "-"):
		return fmt.Sprintf("%q must not start with '-'", s)
	case strings.Contains(s, "@"):
		return fmt.Sprintf("%q: give the user under user:, not in the address", s)
	case strings.Contains(s, ":") && net.ParseIP(s) == nil:
		return fmt.Sprintf("%q: give the port under port:, not in the address", s)
	case strings.ContainsAny(s, "/\\"):
		return fmt.Sprintf("%q is not a host name or IP address", s)
	}
	return ""
}

var userRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$`)

// userProblem checks a remote user name.
func userProblem(s string) string {
	if len(s) > 64 || !userRE.MatchString(s) {
		return fmt.Sprintf("%q is not a valid user name", s)
	}
	return ""
}

// join appends a key to a field path.
func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// orList formats choices as `"a", "b" or "c"`.
func orList(choices []string) string {
	q := make([]string, len(choices))
	for i, c := range choices {
		q[i] = strconv.Quote(c)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// suggest returns ` (did you mean "x"?)` when one known field is within
// two edits of key.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dist := editDistance(key, k); dist < bestD {
			best, bestD = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Damerau–Levenshtein (optimal string alignment)
// distance, so that a swapped pair of letters ("tgas") counts as one typo.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
