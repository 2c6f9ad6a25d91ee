package inventory

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mitolab/mito/tasks"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestErrors parses each file in testdata/errors and compares the whole
// error text, file:line and field included, with the .err file beside it.
func TestErrors(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	files, err := filepath.Glob("testdata/errors/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Every kind of error the inventory promises to name must have a case.
	for _, want := range []string{
		"unknown-top", "unknown-host", "unknown-step", "wrong-type", "missing-name",
		"duplicate-name", "bad-slots", "bad-port", "bad-tag", "unknown-host-group",
		"unknown-jump", "jump-cycle", "local-address", "bad-policy", "empty-groups", "mito-env", "old-keys",
	} {
		if _, err := os.Stat(filepath.Join("testdata/errors", want+".yaml")); err != nil {
			t.Errorf("missing error case: %v", err)
		}
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			inv, err := Load(file)
			if err == nil {
				t.Fatalf("Load(%s) = %d hosts, nil error; want an error", file, len(inv.Hosts))
			}
			var list *Errors
			if !errors.As(err, &list) || len(list.List) == 0 {
				t.Fatalf("Load(%s) error %T %v; want a non-empty *Errors", file, err, err)
			}
			if !errors.Is(err, tasks.ErrInvalid) {
				t.Errorf("errors.Is(err, tasks.ErrInvalid) = false; want true")
			}
			if got := tasks.ErrorCode(err); got != tasks.EInvalid {
				t.Errorf("ErrorCode = %q; want %q", got, tasks.EInvalid)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("errors of %s:\ngot:\n%s\nwant:\n%s", file, got, want)
			}
		})
	}
}

// TestResolve checks inheritance: defaults, then host group, then host.
func TestResolve(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	src := `
defaults:
  user: tester
  tags: [lab]
  groups: [lab]
  env: {A: from-defaults, B: from-defaults}
  identity_file: ~/.ssh/id_ed25519
host_groups:
  rack1:
    port: 2222
    tags: [10g]
    slots: 4
    env: {B: from-group, C: from-group}
    bootstrap:
      - run: echo group
hosts:
  - name: h1
    host_group: rack1
    address: 10.0.0.1
    tags: [bbr, 10g]
    env: {C: from-host, N: 4}
    groups: [alice, lab, alice]
    bootstrap:
      - run: echo host
      - copy: {src: files/x.conf, dst: /etc//x.conf, mode: 0600}
  - name: h2
    address: 10.0.0.2
    user: ""
    identity_file: keys/h2
    known_hosts: /etc/ssh/ssh_known_hosts
    host_key_policy: accept-new
    artifacts: relay
    jump: h1
  - name: here
    transport: local
    slots: 2
`
	inv, err := Parse("/srv/lab/lab.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []Host{{
		Name: "h1", Transport: "ssh", HostGroup: "rack1", Address: "10.0.0.1", Port: 2222, User: "tester",
		IdentityFile: "/home/tester/.ssh/id_ed25519", HostKeyPolicy: "strict",
		Tags: []string{"10g", "bbr", "lab"}, Groups: []string{"alice", "lab"}, Slots: 4,
		Env:       map[string]string{"A": "from-defaults", "B": "from-group", "C": "from-host", "N": "4"},
		Artifacts: "auto",
		Bootstrap: []Step{{Run: "echo host"}, {Copy: &Copy{Src: "/srv/lab/files/x.conf", Dst: "/etc/x.conf", Mode: 0o600}}},
		Line:      17,
	}, {
		Name: "h2", Transport: "ssh", Address: "10.0.0.2", IdentityFile: "/srv/lab/keys/h2",
		Jump: "h1", KnownHosts: "/etc/ssh/ssh_known_hosts", HostKeyPolicy: "accept-new",
		Tags: []string{"lab"}, Groups: []string{"lab"}, Slots: 1,
		Env:       map[string]string{"A": "from-defaults", "B": "from-defaults"},
		Artifacts: "relay", Line: 26,
	}, {
		Name: "here", Transport: "local", Tags: []string{"lab"}, Groups: []string{"lab"}, Slots: 2,
		Env:       map[string]string{"A": "from-defaults", "B": "from-defaults"},
		Artifacts: "auto", Line: 34,
	}}
	if len(inv.Hosts) != len(want) {
		t.Fatalf("got %d hosts; want %d", len(inv.Hosts), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(inv.Hosts[i], want[i]) {
			t.Errorf("host %d:\ngot  %#v\nwant %#v", i, inv.Hosts[i], want[i])
		}
	}
	if h, ok := inv.Host("h2"); !ok || h.Address != "10.0.0.2" {
		t.Errorf("Host(h2) = %+v, %v; want h2", h, ok)
	}
	if _, ok := inv.Host("nope"); ok {
		t.Errorf("Host(nope) found; want not found")
	}
	if got := names(inv.Select("10g")); !reflect.DeepEqual(got, []string{"h1"}) {
		t.Errorf("Select(10g) = %v; want [h1]", got)
	}
	if got := names(inv.Select("")); len(got) != 3 {
		t.Errorf("Select(\"\") = %v; want all 3", got)
	}
	if got := names(inv.Select("none")); got != nil {
		t.Errorf("Select(none) = %v; want none", got)
	}
}

func names(hs []Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Name)
	}
	return out
}

func TestOutsideJump(t *testing.T) {
	for _, tc := range []struct {
		jump, err string
	}{
		{"alice@gw.example.org", ""},
		{"gw.example.org:2222", ""},
		{"alice@[2001:db8::1]:22", ""},
		{"alice@2001:db8::1", ""},
		{"alice@gw:0", `jump "alice@gw:0": port must be 1 to 65535`},
		{"@gw", `jump "@gw": "" is not a valid user name`},
		{"alice@", `jump "alice@" has no host`},
		{"a b@gw", `jump "a b@gw": "a b" is not a valid user name`},
	} {
		t.Run(tc.jump, func(t *testing.T) {
			src := "hosts:\n  - name: h1\n    address: 10.0.0.1\n    groups: [lab]\n    jump: \"" + tc.jump + "\"\n"
			inv, err := Parse("x.yaml", []byte(src))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tc.err == "" && inv.Hosts[0].Jump != tc.jump:
				t.Errorf("Jump = %q; want %q", inv.Hosts[0].Jump, tc.jump)
			case tc.err != "":
				want := "x.yaml:5: hosts[0].jump: " + tc.err
				if err == nil || err.Error() != want {
					t.Errorf("got error %v; want %s", err, want)
				}
			}
		})
	}
}

func TestHomeUnset(t *testing.T) {
	t.Setenv("HOME", "")
	_, err := Parse("x.yaml", []byte("hosts:\n  - {name: h1, address: a, groups: [lab], identity_file: ~/.ssh/id}\n"))
	want := "x.yaml:2: hosts[0].identity_file: cannot expand ~: the home directory is unknown (HOME is not set)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v; want an os.ErrNotExist error", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("Load(big) = %v; want over the limit", err)
	}
}

func TestAliases(t *testing.T) {
	src := `
hosts:
  - name: h1
    transport: local
    groups: &groups [lab, ci]
    tags: &tags [cpu]
  - name: h2
    transport: local
    groups: *groups
    tags: *tags
`
	inv, err := Parse("x.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := inv.Hosts[1].Groups; !reflect.DeepEqual(got, []string{"ci", "lab"}) {
		t.Errorf("h2 groups %v; want [ci lab]", got)
	}
}

func TestDiff(t *testing.T) {
	parse := func(src string) *Inventory {
		t.Helper()
		inv, err := Parse("x.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return inv
	}
	old := parse(`
defaults: {transport: local, groups: [lab]}
hosts:
  - {name: a}
  - {name: b, tags: [x]}
  - {name: c}
`)
	new := parse(`
defaults: {transport: local, groups: [lab]}
hosts:
  - {name: d}
  - {name: c}
  - {name: b, tags: [y]}
`)
	added, removed, changed := Diff(old, new)
	if !reflect.DeepEqual(added, []string{"d"}) || !reflect.DeepEqual(removed, []string{"a"}) || !reflect.DeepEqual(changed, []string{"b"}) {
		t.Errorf("Diff = %v, %v, %v; want [d], [a], [b] (c only moved)", added, removed, changed)
	}
	added, removed, changed = Diff(nil, old)
	if len(added) != 3 || removed != nil || changed != nil {
		t.Errorf("Diff(nil, old) = %v, %v, %v; want 3 added", added, removed, changed)
	}
	if SSHChanged(old.Hosts[1], new.Hosts[2]) {
		t.Errorf("SSHChanged = true for a tag change; want false")
	}
}

func TestHostString(t *testing.T) {
	for _, tc := range []struct {
		h    Host
		want string
	}{
		{Host{Transport: "local"}, "local"},
		{Host{Transport: "ssh", Address: "h"}, "h"},
		{Host{Transport: "ssh", Address: "h", User: "u", Port: 2222}, "u@h:2222"},
		{Host{Transport: "ssh", Address: "::1", Port: 22}, "[::1]:22"},
	} {
		if got := tc.h.String(); got != tc.want {
			t.Errorf("%+v.String() = %q; want %q", tc.h, got, tc.want)
		}
	}
}

func TestCopyJSON(t *testing.T) {
	b, err := json.Marshal(Step{Copy: &Copy{Src: "/a", Dst: "/b", Mode: 0o640}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"copy":{"src":"/a","dst":"/b","mode":"0640"}}`; string(b) != want {
		t.Errorf("got %s; want %s", b, want)
	}
}

func TestSuggest(t *testing.T) {
	for key, want := range map[string]string{
		"tgas":    ` (did you mean "tags"?)`,
		"slot":    ` (did you mean "slots"?)`,
		"adress":  ` (did you mean "address"?)`,
		"zzzzzzz": "",
	} {
		if got := suggest(key, settingFields); got != want {
			t.Errorf("suggest(%q) = %q; want %q", key, got, want)
		}
	}
}
