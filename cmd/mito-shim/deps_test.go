package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoHeavyDependencies keeps the shim small: it is pushed to every lab
// host, so it must not link the coordinator's storage, artifact or event
// backends.
func TestNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/jackc/pgx",
		"modernc.org/sqlite",
		"github.com/minio/minio-go",
		"github.com/redis/go-redis",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages; want the shim's dependencies", len(deps))
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("mito-shim depends on %s; it must link no database, S3 or Redis code", dep)
			}
		}
	}
}
