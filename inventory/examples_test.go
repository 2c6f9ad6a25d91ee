package inventory

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestExamples loads every inventory in examples/inventories, so that the
// examples a user copies from are always valid.
func TestExamples(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	dir := filepath.Join("..", "examples", "inventories")
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d example inventories in %s; want at least 4", len(files), dir)
	}
	loaded := make(map[string]*Inventory)
	for _, f := range files {
		inv, err := Load(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if len(inv.Hosts) == 0 {
			t.Errorf("%s: no hosts", f)
		}
		loaded[filepath.Base(f)] = inv
	}

	check := func(file, host string, f func(h Host) bool, what string) {
		t.Helper()
		inv := loaded[file]
		if inv == nil {
			t.Errorf("%s did not load", file)
			return
		}
		h, ok := inv.Host(host)
		if !ok {
			t.Errorf("%s: no host %s", file, host)
			return
		}
		if !f(h) {
			t.Errorf("%s: host %s: want %s; got %+v", file, host, what, h)
		}
	}
	check("local.yaml", "bench1", func(h Host) bool {
		return h.Transport == TransportLocal && h.Slots == 2 && strings.Join(h.Groups, ",") == "admin,lab" &&
			strings.Join(h.Tags, ",") == "cpu" && h.Env["DEMO_HOST"] == "bench1"
	}, "local, 2 slots, groups admin and lab, tag cpu, env DEMO_HOST")
	if inv := loaded["local.yaml"]; inv != nil && len(inv.Hosts) != 2 {
		t.Errorf("local.yaml: %d hosts; want 2", len(inv.Hosts))
	}
	for i, name := range []string{"lab1", "lab2", "lab3"} {
		addr := "127.0.0." + string(rune('2'+i))
		check("three-host-lab.yaml", name, func(h Host) bool {
			return h.Transport == TransportSSH && h.Address == addr && h.Port == 2222 && h.User == "tester" &&
				h.IdentityFile == "/home/tester/.ssh/id_ed25519"
		}, "ssh to tester@"+addr+":2222")
	}
	check("three-host-lab.yaml", "lab1", func(h Host) bool { return strings.Join(h.Tags, ",") == "10g,bbr,linux" }, "tags 10g,bbr,linux")
	check("bastion.yaml", "node1", func(h Host) bool { return h.Jump == "gw" }, "jump gw")
	check("bastion.yaml", "gw", func(h Host) bool { return h.Jump == "" }, "no jump")
	check("mixed-arch.yaml", "epyc1", func(h Host) bool { return strings.Join(h.Tags, ",") == "amd64" }, "tag amd64")
	check("mixed-arch.yaml", "ampere1", func(h Host) bool {
		return strings.Join(h.Tags, ",") == "arm64,neoverse-n1" && h.Env["GOARCH"] == "arm64"
	}, "tags arm64,neoverse-n1")
}
