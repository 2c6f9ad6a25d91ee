package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that its two
// outcomes keep their promises: a valid inventory of well-formed hosts, or
// a non-empty list of located errors.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/errors/*.yaml", "../examples/inventories/*.yaml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("hosts: [{name: a, address: b, groups: [c], jump: a}]"))
	f.Add([]byte("a: &a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := Parse("fuzz.yaml", data)
		if err != nil {
			var list *Errors
			if !errors.As(err, &list) || len(list.List) == 0 {
				t.Fatalf("error %T %v; want a non-empty *Errors", err, err)
			}
			for _, e := range list.List {
				if e.File != "fuzz.yaml" || e.Msg == "" {
					t.Fatalf("badly formed error %#v", e)
				}
			}
			return
		}
		seen := make(map[string]bool)
		for _, h := range inv.Hosts {
			if h.Name == "" || seen[h.Name] || len(h.Groups) == 0 || h.Slots < 1 || h.Slots > MaxSlots {
				t.Fatalf("invalid host accepted: %+v", h)
			}
			if h.Transport == TransportSSH && h.Address == "" {
				t.Fatalf("ssh host without address accepted: %+v", h)
			}
			seen[h.Name] = true
		}
	})
}
