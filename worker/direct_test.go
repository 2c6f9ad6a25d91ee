package worker

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// artifactScript writes three artifacts, one of 3 MiB.
const artifactScript = `
	cd "$MITO_OUTPUT_DIR"
	echo one > one.txt
	mkdir -p sub && echo two > "sub/two words.txt"
	head -c 3145728 /dev/zero | tr '\0' 'x' > big`

var wantArtifacts = map[string]string{"one.txt": "one\n", "sub/two words.txt": "two\n", "big": strings.Repeat("x", 3<<20)}

func checkArtifacts(t *testing.T, f *fakeCoord, id tasks.ID) {
	t.Helper()
	if res := f.waitResult(t, id, 20*time.Second); res.State != tasks.Succeeded {
		t.Fatalf("task %s: %s", res.State, res.Error)
	}
	_, arts, _ := f.snapshotTask(id)
	if len(arts) != len(wantArtifacts) {
		t.Errorf("artifacts: got %v; want %d", keys(arts), len(wantArtifacts))
	}
	for name, content := range wantArtifacts {
		if got, ok := arts[name]; !ok || got != content {
			t.Errorf("artifact %q: %d bytes (present %v); want %d", name, len(got), ok, len(content))
		}
	}
}

// logBuffer collects the worker's log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func regWith(mode string) tasks.RegisterResponse {
	r := testReg()
	r.Artifacts = mode
	return r
}

func TestDirectUpload(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{tasks.ArtifactsDirect, tasks.ArtifactsAuto} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, regWith(mode))
			startWorker(t, f, nil)
			checkArtifacts(t, f, f.submit(tasks.Spec{Shell: artifactScript}))
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.relayed != 0 || len(f.directNames) != 3 {
				t.Errorf("relayed %d, direct %v; want all 3 direct", f.relayed, f.directNames)
			}
			for k := range f.s3obj {
				if strings.Contains(k, "?") {
					t.Errorf("odd key %q", k)
				}
			}
		})
	}
}

func TestDirectUploadRelayForced(t *testing.T) {
	t.Parallel()
	f := newFake(t, regWith(tasks.ArtifactsRelay))
	startWorker(t, f, nil)
	checkArtifacts(t, f, f.submit(tasks.Spec{Shell: artifactScript}))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.presigns != 0 || f.relayed != 3 {
		t.Errorf("presigns %d, relayed %d; want 0 and 3", f.presigns, f.relayed)
	}
}

// TestDirectUploadAutoFallsBack: in auto mode, a store the host cannot
// reach, or one that refuses the upload, sends this artifact and all later
// ones through the coordinator, and says so once.
func TestDirectUploadAutoFallsBack(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	for _, tc := range []struct {
		name   string
		setup  func(f *fakeCoord)
		logged string
	}{
		{"unreachable", func(f *fakeCoord) { f.presignURL = refused }, "cannot be reached"},
		{"forbidden", func(f *fakeCoord) { f.s3Status = http.StatusForbidden }, "403 Forbidden (AccessDenied)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, regWith(tasks.ArtifactsAuto))
			tc.setup(f)
			logs := &logBuffer{}
			startWorker(t, f, func(c *Config) {
				c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			checkArtifacts(t, f, f.submit(tasks.Spec{Shell: artifactScript}))
			// A second task of the same session relays at once.
			checkArtifacts(t, f, f.submit(tasks.Spec{Shell: artifactScript}))
			f.mu.Lock()
			presigns, relayed, direct := f.presigns, f.relayed, len(f.directNames)
			f.mu.Unlock()
			if presigns != 1 || relayed != 6 || direct != 0 {
				t.Errorf("presigns %d, relayed %d, direct %d; want 1 try, then all 6 relayed", presigns, relayed, direct)
			}
			if n := logs.count("sending them through the coordinator for the rest of the session"); n != 1 {
				t.Errorf("fallback logged %d times; want once", n)
			}
			if logs.count(tc.logged) != 1 {
				t.Errorf("the log does not say %q", tc.logged)
			}
			if logs.count("X-Amz-Signature") != 0 {
				t.Errorf("the presigned URL's signature was logged")
			}
		})
	}
}

// TestDirectUploadPresignRefused: a coordinator that cannot presign (an
// older one, or its store changed) makes an auto session relay.
func TestDirectUploadPresignRefused(t *testing.T) {
	t.Parallel()
	f := newFake(t, regWith(tasks.ArtifactsAuto))
	f.refusePresign = true
	startWorker(t, f, nil)
	checkArtifacts(t, f, f.submit(tasks.Spec{Shell: artifactScript}))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.presigns != 1 || f.relayed != 3 {
		t.Errorf("presigns %d, relayed %d; want 1 and 3", f.presigns, f.relayed)
	}
}

// TestDirectUploadForcedDoesNotRelay: with `artifacts: direct` an
// unreachable store is retried, then the artifact is given up, never
// relayed.
func TestDirectUploadForcedDoesNotRelay(t *testing.T) {
	t.Parallel()
	f := newFake(t, regWith(tasks.ArtifactsDirect))
	f.s3Status = http.StatusInternalServerError
	startWorker(t, f, nil)
	id := f.submit(tasks.Spec{Shell: `echo x > "$MITO_OUTPUT_DIR/x"`})
	if res := f.waitResult(t, id, 60*time.Second); res.State != tasks.Succeeded {
		t.Fatalf("task %s", res.State)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.relayed != 0 || f.presigns != maxUploadTries {
		t.Errorf("relayed %d, presigns %d; want 0 and %d", f.relayed, f.presigns, maxUploadTries)
	}
	if !slices.Equal(f.directNames, nil) {
		t.Errorf("committed %v", f.directNames)
	}
}
