// Package testbin builds the mito binaries for the tests that run them as
// a user would (e2e, faults): once per test binary, into a directory of
// its own, as `make build` makes them.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Build builds, from the module whose cmd/ directory is cmdDir, mito and
// mito-shim for this machine, and the static shim the coordinator pushes
// to SSH hosts of this architecture (mito-shim-linux-<arch>), into a new
// temporary directory whose name starts with prefix. It returns the
// directory, which the caller removes.
func Build(cmdDir, prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	for _, b := range []struct {
		out string
		env []string
		pkg []string
	}{
		{dir + "/", nil, []string{filepath.Join(cmdDir, "mito"), filepath.Join(cmdDir, "mito-shim")}},
		{filepath.Join(dir, "mito-shim-linux-"+runtime.GOARCH), []string{"CGO_ENABLED=0"}, []string{filepath.Join(cmdDir, "mito-shim")}},
	} {
		build := exec.Command("go", append([]string{"build", "-trimpath", "-o", b.out}, b.pkg...)...)
		build.Env = append(os.Environ(), b.env...)
		if out, err := build.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("build %v: %v\n%s", b.pkg, err, out)
		}
	}
	return dir, nil
}
