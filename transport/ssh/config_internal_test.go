package ssh

import (
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseJump(t *testing.T) {
	tests := []struct {
		in      string
		want    Target
		wantErr bool
	}{
		{"bastion", Target{Address: "bastion"}, false},
		{"ops@bastion:2200", Target{Address: "bastion", User: "ops", Port: 2200}, false},
		{"[fd00::1]:22", Target{Address: "fd00::1", Port: 22}, false},
		{"ssh://ops@10.0.0.1:2022", Target{Address: "10.0.0.1", User: "ops", Port: 2022}, false},
		{"", Target{}, true},
		{"host:notaport", Target{}, true},
		{"user@", Target{}, true},
		{"[fd00::1]", Target{Address: "fd00::1"}, false},
		{"fd00::1", Target{Address: "fd00::1"}, false},
		{"ops@[fd00::1]:2222", Target{Address: "fd00::1", User: "ops", Port: 2222}, false},
		{"ssh://ops@[fd00::1]:2022", Target{Address: "fd00::1", User: "ops", Port: 2022}, false},
		{"ssh://bastion", Target{Address: "bastion"}, false},
		{"a@b@bastion:22", Target{Address: "bastion", User: "a@b", Port: 22}, false},
		{"host:", Target{}, true},
		{"host:0", Target{}, true},
		{"host:65536", Target{}, true},
		{"host:+22", Target{}, true},
		{"host:22x", Target{}, true},
		{"[fd00::1]:", Target{}, true},
		{"[fd00::1]x", Target{}, true},
		{"[fd00::1]:abc", Target{}, true},
		{"[fd00::1", Target{}, true},
		{"[]:22", Target{}, true},
		{":22", Target{}, true},
		{"a:b:c", Target{}, true},
		{"ssh://ops:secret@bastion", Target{}, true},
		{"ssh://bastion/path", Target{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseJump(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseJump(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseJump(%q) = %+v; want %+v", tt.in, got, tt.want)
			}
			user, host, port, err := ParseJump(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseJump(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && (user != tt.want.User || host != tt.want.Address || port != tt.want.Port) {
				t.Errorf("ParseJump(%q) = %q, %q, %d; want %q, %q, %d", tt.in, user, host, port, tt.want.User, tt.want.Address, tt.want.Port)
			}
		})
	}
}

func TestResolveDefaults(t *testing.T) {
	home := t.TempDir()
	sc := &sshConfig{home: home}
	chain, err := resolveChain(Target{Address: "lab1"}, sc, "me")
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 {
		t.Fatalf("chain has %d hops; want 1", len(chain))
	}
	h := chain[0]
	if h.addr != "lab1:22" || h.user != "me" || h.policy != PolicyStrict || h.name != "lab1" {
		t.Errorf("hop = %+v; want lab1:22 as me, strict", h)
	}
	if want := []string{filepath.Join(home, ".ssh", "known_hosts")}; !reflect.DeepEqual(h.knownHosts, want) {
		t.Errorf("knownHosts = %v; want %v", h.knownHosts, want)
	}
	if !h.defaultIDs || len(h.identityFiles) != 3 {
		t.Errorf("identity files = %v (default %v); want the three ~/.ssh/id_* defaults", h.identityFiles, h.defaultIDs)
	}
}

func TestExpandPath(t *testing.T) {
	tok := tokens{h: "10.0.0.5", p: "22", r: "ops", u: "me", d: "/home/me", n: "lab"}
	tests := map[string]string{
		"~/.ssh/id_%n":  "/home/me/.ssh/id_lab",
		"%d/kh-%h-%p":   "/home/me/kh-10.0.0.5-22",
		`"/keys/%r@%h"`: "/keys/ops@10.0.0.5",
		"/x/100%%":      "/x/100%",
		"/plain/path":   "/plain/path",
	}
	for in, want := range tests {
		if got := expandPath(in, tok); got != want {
			t.Errorf("expandPath(%q) = %q; want %q", in, got, want)
		}
	}
}
