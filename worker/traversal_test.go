package worker

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// TestArtifactsNeverLeaveOutputDir has a task plant symbolic links in its
// output directory to files and directories outside it: absolute and
// relative, at the top and nested, to a file and to a directory (one of
// the test's own with a secret in it, the attempt's directory, the root).
// Relayed or direct, only the regular file the task wrote is uploaded,
// and no uploaded byte comes from outside.
func TestArtifactsNeverLeaveOutputDir(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	const secret = "secret-outside-the-output-dir"
	secretFile := filepath.Join(outside, "secret.txt")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the parallel subtests
		if b, err := os.ReadFile(secretFile); err != nil || string(b) != secret+"\n" {
			t.Errorf("the file outside: %q, %v; want it untouched", b, err)
		}
	})
	script := fmt.Sprintf(`
		cd "$MITO_OUTPUT_DIR"
		echo fine > real.txt
		echo %[1]s-sibling > ../sibling
		ln -s %[2]q abs-file
		ln -s ../sibling rel-file
		mkdir -p sub/deeper
		ln -s ../../sibling sub/rel-file
		ln -s %[2]q sub/deeper/abs-file
		ln -s %[3]q abs-dir
		ln -s .. up-dir
		ln -s / root
		ln -s ../../.. sub/deeper/up3
		ln -s real.txt inside-link`, secret, secretFile, outside)
	for _, mode := range []string{tasks.ArtifactsRelay, tasks.ArtifactsDirect} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			reg := testReg()
			reg.Artifacts = mode
			f := newFake(t, reg)
			w := startWorker(t, f, nil)
			id := f.submit(tasks.Spec{Shell: script})
			if res := f.waitResult(t, id, 10*time.Second); res.State != tasks.Succeeded {
				t.Fatalf("state: got %s; want %s", res.State, tasks.Succeeded)
			}
			_, arts, _ := f.snapshotTask(id)
			if names := keys(arts); !slices.Equal(names, []string{"real.txt"}) || arts["real.txt"] != "fine\n" {
				t.Errorf("artifacts: got %q; want only real.txt (symlinks are not uploaded)", names)
			}
			for name, body := range arts {
				if strings.Contains(body, secret) {
					t.Errorf("artifact %q holds bytes from outside the output directory", name)
				}
			}
			f.mu.Lock()
			uploaded := append(slices.Clone(f.relayedNames), f.directNames...)
			objects := len(f.s3obj)
			f.mu.Unlock()
			if !slices.Equal(uploaded, []string{"real.txt"}) {
				t.Errorf("uploads: got %q; want only real.txt", uploaded)
			}
			if want := map[string]int{tasks.ArtifactsRelay: 0, tasks.ArtifactsDirect: 1}[mode]; objects != want {
				t.Errorf("fake S3 holds %d objects; want %d", objects, want)
			}
			assertEmptyDir(t, w.workDir)
		})
	}
}
