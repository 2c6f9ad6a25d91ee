package e2e_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// TestS3ArtifactsSkipSymlinks: a task that plants symbolic links in its
// output directory, to a file (/etc/passwd) and to a directory (/) outside
// it, ships neither to S3, directly or relayed: the artifacts listed and
// downloaded are the regular files it wrote, and nothing else.
func TestS3ArtifactsSkipSymlinks(t *testing.T) {
	for _, mode := range []string{"direct", "relay"} {
		t.Run(mode, func(t *testing.T) {
			l := s3Lab(t, mode)
			tid := l.submit("--shell", `cd "$MITO_OUTPUT_DIR"
echo fine > real.txt
mkdir -p sub && echo deep > sub/deep.txt
ln -s /etc/passwd leak
ln -s / root
ln -s /etc/passwd sub/leak
ln -s ../.. sub/up`)
			if task := l.waitFor(tid, 60*time.Second, tasks.Succeeded, tasks.Failed); task.State != tasks.Succeeded {
				t.Fatalf("task %s: %s", task.State, task.Error)
			}
			out := l.mustRun(nil, "client", "tasks", "artifacts", "list", "-o", "json", id(tid))
			var arts []tasks.Artifact
			if err := json.Unmarshal([]byte(out), &arts); err != nil {
				t.Fatalf("artifacts list printed %q: %v", out, err)
			}
			var names []string
			for _, a := range arts {
				names = append(names, a.Name)
			}
			slices.Sort(names)
			if want := []string{"real.txt", "sub/deep.txt"}; !slices.Equal(names, want) {
				t.Errorf("artifacts %q; want %q (no symlink shipped)", names, want)
			}

			dir := t.TempDir()
			l.mustRun(nil, "client", "tasks", "artifacts", "download", "-o", dir, id(tid))
			var got []string
			_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				rel, _ := filepath.Rel(dir, p)
				got = append(got, filepath.ToSlash(rel))
				if !d.Type().IsRegular() {
					t.Errorf("downloaded %s is not a regular file (%s)", rel, d.Type())
				}
				return nil
			})
			if want := []string{"real.txt", "sub/deep.txt"}; !slices.Equal(got, want) {
				t.Errorf("downloaded %q; want %q", got, want)
			}
			passwd, _ := os.ReadFile("/etc/passwd")
			for _, name := range got {
				if b, _ := os.ReadFile(filepath.Join(dir, name)); len(passwd) > 0 && strings.Contains(string(b), string(passwd)) {
					t.Errorf("downloaded %s holds /etc/passwd", name)
				}
			}
			// The shim says why each link was left behind.
			logs := l.logs.String()
			for _, name := range []string{"leak", "root", "sub/leak", "sub/up"} {
				if !strings.Contains(logs, "artifact="+name+" ") {
					t.Errorf("the log does not say %s was skipped", name)
				}
			}
		})
	}
}
