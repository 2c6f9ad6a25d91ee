package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mitolab/mito/tasks"
)

// fakeAttachments answers the attachment and group calls for command
// tests: attachments kept in memory per group, quotas enforced.
type fakeAttachments struct {
	mu     sync.Mutex
	files  map[string]map[string][]byte // group → key → content
	quota  map[string]int64
	badSum map[string]bool // keys served with a wrong SHA-256
	calls  int             // requests past authentication
}

func newFakeAttachments() *fakeAttachments {
	return &fakeAttachments{files: map[string]map[string][]byte{"ann": {}, "lab": {}}, quota: map[string]int64{}, badSum: map[string]bool{}}
}

func (f *fakeAttachments) used(group string) int64 {
	var n int64
	for _, b := range f.files[group] {
		n += int64(len(b))
	}
	return n
}

func (f *fakeAttachments) group(name string) tasks.Group {
	return tasks.Group{Name: name, Role: tasks.RoleAdmin, QuotaBytes: f.quota[name], UsedBytes: f.used(name)}
}

func (f *fakeAttachments) attachment(group, key string) tasks.Attachment {
	b := f.files[group][key]
	sum := sha256.Sum256(b)
	return tasks.Attachment{Group: group, Key: key, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:]), Creator: "ann"}
}

func apiError(w http.ResponseWriter, status int, code tasks.Code, format string, args ...any) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": tasks.Errorf(code, format, args...)})
}

func (f *fakeAttachments) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer tok" {
		apiError(w, http.StatusUnauthorized, tasks.EUnauthorized, "token expired")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/auth/whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"name":"ann"}`)
	})
	mux.HandleFunc("GET /api/v1/groups", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"groups": []tasks.Group{f.group("ann"), f.group("lab")}})
	})
	mux.HandleFunc("GET /api/v1/groups/{g}", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(f.group(r.PathValue("g")))
	})
	mux.HandleFunc("PUT /api/v1/groups/{g}/quota", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Bytes int64 }
		_ = json.NewDecoder(r.Body).Decode(&in)
		f.quota[r.PathValue("g")] = in.Bytes
		_ = json.NewEncoder(w).Encode(f.group(r.PathValue("g")))
	})
	mux.HandleFunc("GET /api/v1/groups/{g}/attachments", func(w http.ResponseWriter, r *http.Request) {
		g := r.PathValue("g")
		out := []tasks.Attachment{}
		for k := range f.files[g] {
			if strings.HasPrefix(k, r.URL.Query().Get("prefix")) {
				out = append(out, f.attachment(g, k))
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"attachments": out})
	})
	mux.HandleFunc("PUT /api/v1/groups/{g}/attachments/{key...}", func(w http.ResponseWriter, r *http.Request) {
		g, key := r.PathValue("g"), r.PathValue("key")
		if q := f.quota[g]; q > 0 && f.used(g)-int64(len(f.files[g][key]))+r.ContentLength > q {
			apiError(w, http.StatusRequestEntityTooLarge, tasks.EQuota, "group %s: %d B would take it over its storage quota of %d B", g, r.ContentLength, q)
			return
		}
		b, _ := io.ReadAll(r.Body)
		f.files[g][key] = b
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(f.attachment(g, key))
	})
	mux.HandleFunc("GET /api/v1/groups/{g}/attachments/{key...}", func(w http.ResponseWriter, r *http.Request) {
		g, key := r.PathValue("g"), r.PathValue("key")
		b, ok := f.files[g][key]
		if !ok {
			apiError(w, http.StatusNotFound, tasks.ENotFound, "group %s has no attachment %q", g, key)
			return
		}
		sum := sha256.Sum256(b)
		if f.badSum[key] {
			sum = sha256.Sum256([]byte("something else"))
		}
		w.Header().Set("X-Mito-SHA256", hex.EncodeToString(sum[:]))
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
	mux.HandleFunc("DELETE /api/v1/groups/{g}/attachments/{key...}", func(w http.ResponseWriter, r *http.Request) {
		g, key := r.PathValue("g"), r.PathValue("key")
		if _, ok := f.files[g][key]; !ok {
			apiError(w, http.StatusNotFound, tasks.ENotFound, "group %s has no attachment %q", g, key)
			return
		}
		delete(f.files[g], key)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.ServeHTTP(w, r)
}

func (f *fakeAttachments) content(group, key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[group][key]
	return string(b), ok
}

func (f *fakeAttachments) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// runClientOn runs `mito client args...` against h, in dir, and returns
// stdout, stderr and the exit code.
func runClientOn(t *testing.T, h http.Handler, dir string, args ...string) (string, string, int) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Setenv("MITO_CONFIG_DIR", t.TempDir())
	t.Setenv("MITO_COORDINATOR", srv.URL)
	t.Setenv("MITO_TOKEN", "tok")
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	cmd := newClientCmd()
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(""))
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	code := exitCode(cmd.ExecuteContext(t.Context()), &stderr)
	return stdout.String(), stderr.String(), code
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestAttachmentsCommands(t *testing.T) {
	f := newFakeAttachments()
	dir := t.TempDir()
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return runClientOn(t, f, dir, append([]string{"attachments"}, args...)...)
	}
	writeFile(t, filepath.Join(dir, "train.csv"), "a,b\n1,2\n")
	big := strings.Repeat("x", 2<<20)
	writeFile(t, filepath.Join(dir, "big-src.bin"), big)

	// KEY defaults to the base name, the group to the personal one.
	out, errOut, code := run("upload", filepath.Join(dir, "train.csv"))
	if code != 0 || !strings.Contains(out, "uploaded") || !strings.Contains(out, "as train.csv") {
		t.Fatalf("upload: exit %d, %q %q", code, out, errOut)
	}
	if got, ok := f.content("ann", "train.csv"); !ok || got != "a,b\n1,2\n" {
		t.Errorf("ann/train.csv holds %q, %v", got, ok)
	}
	// A large upload draws no progress line where stderr is no terminal.
	out, errOut, code = run("upload", "big-src.bin", "data/./big.bin", "-g", "lab", "-q")
	if code != 0 || out != "data/big.bin\n" || errOut != "" {
		t.Errorf("upload -q: exit %d, %q %q; want only the clean key", code, out, errOut)
	}
	if got, _ := f.content("lab", "data/big.bin"); got != big {
		t.Errorf("lab/data/big.bin holds %d bytes; want %d", len(got), len(big))
	}

	out, _, code = run("list", "-g", "lab", "--prefix", "data/", "-o", "json")
	var as []tasks.Attachment
	if err := json.Unmarshal([]byte(out), &as); err != nil || code != 0 || len(as) != 1 || as[0].Key != "data/big.bin" || as[0].Size != 2<<20 {
		t.Errorf("list -o json: exit %d, %q (%v)", code, out, err)
	}
	if out, _, _ = run("list"); !strings.Contains(out, "KEY") || !strings.Contains(out, "train.csv") {
		t.Errorf("list: got %q; want a table with train.csv", out)
	}
	if _, errOut, _ = run("list", "-g", "lab", "--prefix", "nothing/"); !strings.Contains(errOut, "no attachments") {
		t.Errorf("empty list: stderr %q; want a note", errOut)
	}

	// Download: to the base name of the key, in the current directory.
	out, errOut, code = run("download", "data/big.bin", "-g", "lab")
	if b, err := os.ReadFile(filepath.Join(dir, "big.bin")); code != 0 || err != nil || string(b) != big {
		t.Errorf("download: exit %d, %q %q, %v", code, out, errOut, err)
	}
	// It refuses to replace a file, here the one just uploaded, without --force.
	writeFile(t, filepath.Join(dir, "train.csv"), "local edits")
	_, errOut, code = run("download", "train.csv")
	if code != exitConflict || !strings.Contains(errOut, "--force") {
		t.Errorf("download over a file: exit %d, %q; want %d naming --force", code, errOut, exitConflict)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "train.csv")); string(b) != "local edits" {
		t.Errorf("the file was replaced without --force: %q", b)
	}
	if _, errOut, code = run("download", "train.csv", "--force"); code != 0 {
		t.Errorf("download --force: exit %d, %q", code, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "train.csv")); string(b) != "a,b\n1,2\n" {
		t.Errorf("after --force the file holds %q", b)
	}
	// -o a file path, and -o a directory.
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code = run("download", "train.csv", "-o", filepath.Join(sub, "copy.csv")); code != 0 {
		t.Errorf("download -o FILE: exit %d, %q", code, errOut)
	}
	if _, errOut, code = run("download", "data/big.bin", "-g", "lab", "-o", sub); code != 0 {
		t.Errorf("download -o DIR: exit %d, %q", code, errOut)
	}
	for _, name := range []string{"copy.csv", "big.bin"} {
		if _, err := os.Stat(filepath.Join(sub, name)); err != nil {
			t.Errorf("sub/%s: %v", name, err)
		}
	}

	// A corrupted transfer leaves nothing behind, not even a temporary file.
	f.badSum["train.csv"] = true
	_, errOut, code = run("download", "train.csv", "-o", filepath.Join(sub, "bad.csv"))
	if code != exitFailure || !strings.Contains(errOut, "SHA-256 mismatch") {
		t.Errorf("bad checksum: exit %d, %q; want %d and a mismatch", code, errOut, exitFailure)
	}
	if entries, _ := os.ReadDir(sub); len(entries) != 2 {
		t.Errorf("sub holds %d entries after a failed download; want the 2 from before", len(entries))
	}
	delete(f.badSum, "train.csv")

	// --force replaces a symbolic link, never the file it points to.
	outside := filepath.Join(t.TempDir(), "precious")
	writeFile(t, outside, "keep me")
	if err := os.Symlink(outside, filepath.Join(sub, "link")); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code = run("download", "train.csv", "-o", filepath.Join(sub, "link")); code != exitConflict {
		t.Errorf("download onto a symlink: exit %d, %q; want %d", code, errOut, exitConflict)
	}
	if _, errOut, code = run("download", "train.csv", "-o", filepath.Join(sub, "link"), "--force"); code != 0 {
		t.Errorf("download --force onto a symlink: exit %d, %q", code, errOut)
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep me" {
		t.Errorf("a download wrote through a symlink: the file outside holds %q", b)
	}
	if st, err := os.Lstat(filepath.Join(sub, "link")); err != nil || !st.Mode().IsRegular() {
		t.Errorf("sub/link is not a regular file after the download: %v", err)
	}

	if _, errOut, code = run("download", "nothing.csv"); code != exitNotFound {
		t.Errorf("download of a missing key: exit %d, %q; want %d", code, errOut, exitNotFound)
	}

	// Delete several; one is missing, the others still go.
	out, errOut, code = run("delete", "-g", "lab", "data/big.bin", "nope")
	if code != exitNotFound || !strings.Contains(out, "deleted data/big.bin") || !strings.Contains(errOut, `"nope"`) {
		t.Errorf("delete: exit %d, %q %q; want data/big.bin deleted and nope not found", code, out, errOut)
	}
	if _, ok := f.content("lab", "data/big.bin"); ok {
		t.Error("data/big.bin still there after delete")
	}
}

func TestAttachmentsRefuseBadInput(t *testing.T) {
	f := newFakeAttachments()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.txt"), "a")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"upload", "a.txt", "../x"}, `".."`},
		{[]string{"upload", "a.txt", "/etc/passwd"}, "relative"},
		{[]string{"upload", "missing.txt"}, "missing.txt"},
		{[]string{"upload", dir}, "not a regular file"},
		{[]string{"upload", "a.txt", "-g", "no such/group"}, "-g"},
		{[]string{"download", "a/../../b"}, `".."`},
		{[]string{"delete", "ok", "a\\b"}, "backslash"},
		{[]string{"upload"}, "want a file"},
	}
	for _, tt := range tests {
		_, errOut, code := runClientOn(t, f, dir, append([]string{"attachments"}, tt.args...)...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, %q; want a failure naming %s", tt.args, code, errOut, tt.want)
		}
	}
	if n := f.requests(); n != 0 {
		t.Errorf("bad input sent %d requests; want none", n)
	}
}

func TestGroupsQuota(t *testing.T) {
	f := newFakeAttachments()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.bin"), strings.Repeat("a", 3000))

	tests := []struct {
		size string
		want int64
	}{
		{"10KiB", 10 << 10},
		{"2kB", 2000},
		{"1.5 GiB", 3 << 29},
		{"none", 0},
		{"0", 0},
	}
	for _, tt := range tests {
		out, errOut, code := runClientOn(t, f, dir, "groups", "quota", "lab", tt.size, "-o", "json")
		var g tasks.Group
		if err := json.Unmarshal([]byte(out), &g); err != nil || code != 0 || g.QuotaBytes != tt.want {
			t.Errorf("quota %s: exit %d, %q %q; want quota_bytes %d", tt.size, code, out, errOut, tt.want)
		}
	}
	n := f.requests()
	for _, bad := range []string{"ten", "1.5.5", "5 parsecs", "99999999999 EiB"} {
		if _, errOut, code := runClientOn(t, f, dir, "groups", "quota", "lab", bad); code != exitUsage || !strings.Contains(errOut, "SIZE") {
			t.Errorf("quota %q: exit %d, %q; want %d naming SIZE", bad, code, errOut, exitUsage)
		}
	}
	if f.requests() != n {
		t.Error("a bad size reached the coordinator")
	}

	// Usage shows against the quota; an upload over it is refused.
	if out, _, code := runClientOn(t, f, dir, "groups", "quota", "lab", "2kB"); code != 0 || out != "group lab: 0 B of 2.0 KiB\n" {
		t.Errorf("quota: exit %d, %q", code, out)
	}
	_, errOut, code := runClientOn(t, f, dir, "attachments", "upload", "a.bin", "-g", "lab")
	if code != exitFailure || !strings.Contains(errOut, "quota") {
		t.Errorf("upload over quota: exit %d, %q; want %d naming the quota", code, errOut, exitFailure)
	}
	runClientOn(t, f, dir, "groups", "quota", "lab", "10KiB")
	if _, errOut, code = runClientOn(t, f, dir, "attachments", "upload", "a.bin", "-g", "lab"); code != 0 {
		t.Fatalf("upload under quota: exit %d, %q", code, errOut)
	}
	if out, _, _ := runClientOn(t, f, dir, "groups", "show", "lab"); !strings.Contains(out, "2.9 KiB of 10 KiB") {
		t.Errorf("groups show: got %q; want storage 2.9 KiB of 10 KiB", out)
	}
	out, _, _ := runClientOn(t, f, dir, "groups", "list")
	if !strings.Contains(out, "STORAGE") || !strings.Contains(out, "2.9 KiB of 10 KiB") || !strings.Contains(out, "0 B (no quota)") {
		t.Errorf("groups list: got %q; want a storage column", out)
	}
}
