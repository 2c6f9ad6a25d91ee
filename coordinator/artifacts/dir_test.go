package artifacts_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/coordinator/artifacts/artifactstest"
)

func newDir(t testing.TB) *artifacts.Dir {
	t.Helper()
	d, err := artifacts.NewDir(filepath.Join(t.TempDir(), "artifacts"))
	if err != nil {
		t.Fatalf("NewDir: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDir(t *testing.T) {
	artifactstest.Run(t, func(t *testing.T) artifacts.Store { return newDir(t) })
}

// TestDirNoTempLeft checks that failed and cancelled Puts remove their
// temporary files.
func TestDirNoTempLeft(t *testing.T) {
	root := filepath.Join(t.TempDir(), "artifacts")
	d, err := artifacts.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.Put(ctx, "a", bytes.NewReader([]byte("x")))
	d.Put(context.Background(), "b", iotestErrReader{})
	d.Put(context.Background(), "c", bytes.NewReader([]byte("ok")))
	entries, err := os.ReadDir(filepath.Join(root, ".tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf(".tmp holds %d files after Puts; want 0", len(entries))
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, os.ErrClosed }

// TestDirSymlinkEscape checks that a symbolic link inside the root cannot
// make a Put write, or an Open read, outside it.
func TestDirSymlinkEscape(t *testing.T) {
	base := t.TempDir()
	root, outside := filepath.Join(base, "artifacts"), filepath.Join(base, "outside")
	if err := os.MkdirAll(outside, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := artifacts.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, target := range []string{outside, "../outside"} {
		link := filepath.Join(root, "tasks")
		os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.Put(context.Background(), "tasks/x", bytes.NewReader([]byte("escape"))); err == nil {
			t.Errorf("Put through a symlink to %s succeeded; want an error", target)
		}
		if rc, _, err := d.Open(context.Background(), "tasks/secret"); err == nil {
			rc.Close()
			t.Errorf("Open through a symlink to %s succeeded; want an error", target)
		}
		if keys, err := d.List(context.Background(), ""); err != nil || len(keys) != 0 {
			t.Errorf("List = %q, %v; want nothing (symlinks are not objects)", keys, err)
		}
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 1 {
		t.Errorf("outside directory holds %d files; want only the original 1", len(entries))
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"result.csv", "result.csv"},
		{"out/a/b.txt", "out/a/b.txt"},
		{"./a/./b", "a/b"},
		{".hidden", ".hidden"},
		{"..", ""}, {"../x", ""}, {"a/../b", ""}, {"/etc/passwd", ""}, {"a//b", ""}, {"a/", ""},
		{"", ""}, {".", ""}, {"a\\b", ""}, {"a\x00b", ""}, {"a\nb", ""}, {"\xff", ""},
		{string(bytes.Repeat([]byte("a"), 1025)), ""},
	} {
		got, err := artifacts.CleanName(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("CleanName(%q) = %q; want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func BenchmarkPut(b *testing.B) {
	artifactstest.BenchPut(b, newDir(b))
}
