package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// maxShimSize is the budget of one shim binary: it is pushed to every
// host over SSH, often over slow lab links.
const maxShimSize = 8 << 20

// TestShimSize builds the static, stripped shims `make shims` ships and
// checks each fits the budget.
func TestShimSize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries")
	}
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "shim")
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, b)
			}
			fi, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() > maxShimSize {
				t.Errorf("linux/%s shim is %d bytes; the budget is %d", arch, fi.Size(), maxShimSize)
			}
			t.Logf("linux/%s shim: %.1f MiB", arch, float64(fi.Size())/(1<<20))
		})
	}
}
