package coordinator_test

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator"
	"github.com/mitolab/mito/tasks"
)

// logBuffer collects a coordinator's log for a test to read.
type logBuffer struct {
	// mu guards buf: the coordinator logs from its handlers' goroutines.
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines that contain msg.
func (b *logBuffer) lines(msg string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, msg) {
			out = append(out, l)
		}
	}
	return out
}

// oldWorkerMsg is the start of the log line about a worker too old for
// inputs.
const oldWorkerMsg = "worker is too old to fetch task inputs"

// TestFeatureInputsGatesClaims checks that a worker gets a task with
// inputs only when it announced tasks.FeatureInputs at registration: a
// `mito worker` of an older build sends no features, drops the inputs it
// does not know and would run the command without its files. Such a
// worker still gets the tasks queued behind, and its registration is
// logged once, with its host and version.
func TestFeatureInputsGatesClaims(t *testing.T) {
	tests := []struct {
		name     string
		features []string
		version  string
		inputs   bool   // whether the worker gets the task with inputs
		logged   string // the version the log names; "" for no log line
	}{
		{"older build sends no features", nil, "0.9.0", false, "0.9.0"},
		{"no version either", nil, "", false, "unknown"},
		{"only features it does not know", []string{"later-feature"}, "1.0.0", false, "1.0.0"},
		{"inputs", []string{tasks.FeatureInputs}, "1.1.0", true, ""},
		{"inputs among others", []string{"later-feature", tasks.FeatureInputs}, "1.2.0", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log := &logBuffer{}
			e := newEnv(t, coordinator.Config{Logger: slog.New(slog.NewTextHandler(log, nil))})
			alice := e.user("alice")
			attach(e, alice, "alice", "data.csv", "a,b\n")
			withInputs := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Priority: 10,
				Inputs: []tasks.Input{{Attachment: "data.csv"}}})
			plain := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}})

			w := e.registerWorker(alice, tasks.RegisterRequest{Name: "host-a", Groups: []string{"alice"}, Slots: 4,
				Version: tt.version, Features: tt.features})
			want := []tasks.ID{plain.ID}
			if tt.inputs {
				want = []tasks.ID{withInputs.ID, plain.ID}
			}
			if got := claimedIDs(w.claim(4, 0)); !slices.Equal(got, want) {
				t.Errorf("claimed tasks %v; want %v", got, want)
			}
			if !tt.inputs {
				if got := claimedIDs(w.claim(4, 100*time.Millisecond)); len(got) != 0 {
					t.Errorf("second claim: got tasks %v; want none", got)
				}
				if st := e.task(alice, withInputs.ID).State; st != tasks.Queued {
					t.Errorf("task with inputs: %s; want still queued for a newer worker", st)
				}
			}

			lines := log.lines(oldWorkerMsg)
			switch {
			case tt.logged == "" && len(lines) != 0:
				t.Errorf("log: got %q; want no line saying %q", lines, oldWorkerMsg)
			case tt.logged != "" && (len(lines) != 1 || !strings.Contains(lines[0], "host=host-a") || !strings.Contains(lines[0], "version="+tt.logged)):
				t.Errorf("log: got %q; want one line saying %q with host=host-a version=%s", lines, oldWorkerMsg, tt.logged)
			}
		})
	}
}

// TestFeatureInputsNewWorkerAfterOld checks that the tasks an old worker
// passes over wait for a new one, which takes them, and that a worker
// that registers again with the feature (upgraded under the same name)
// gets them at once.
func TestFeatureInputsNewWorkerAfterOld(t *testing.T) {
	t.Parallel()
	e := newEnv(t, coordinator.Config{})
	alice := e.user("alice")
	attach(e, alice, "alice", "data.csv", "a,b\n")
	old := e.registerWorker(alice, tasks.RegisterRequest{Name: "old", Groups: []string{"alice"}, Version: "0.9.0"})
	first := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Inputs: []tasks.Input{{Attachment: "data.csv"}}})
	second := e.submit(alice, tasks.Spec{Group: "alice", Command: []string{"true"}, Inputs: []tasks.Input{{Attachment: "data.csv", Path: "in/d.csv"}}})
	if got := claimedIDs(old.claim(1, 100*time.Millisecond)); len(got) != 0 {
		t.Fatalf("old worker claimed %v; want nothing", got)
	}

	fresh := e.worker(alice, "new", []string{"alice"}, 1)
	if got := claimedIDs(fresh.claim(1, 0)); !slices.Equal(got, []tasks.ID{first.ID}) {
		t.Errorf("new worker claimed %v; want [%d]", got, first.ID)
	}
	upgraded := e.worker(alice, "old", []string{"alice"}, 1)
	if got := claimedIDs(upgraded.claim(1, 0)); !slices.Equal(got, []tasks.ID{second.ID}) {
		t.Errorf("upgraded worker claimed %v; want [%d]", got, second.ID)
	}
}

// claimedIDs lists the tasks of as, in order.
func claimedIDs(as []tasks.Assignment) []tasks.ID {
	out := make([]tasks.ID, len(as))
	for i, a := range as {
		out[i] = a.Task.ID
	}
	return out
}
