package worker

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// TestRegisterSendsFeatures checks that every registration announces
// tasks.FeatureInputs, over TCP and over a shim's link, the first one and
// one after the coordinator forgot the session: a coordinator gives a
// worker that does not announce it no task with inputs.
func TestRegisterSendsFeatures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		start func(t *testing.T, f *fakeCoord)
	}{
		{"tcp", func(t *testing.T, f *fakeCoord) { startWorker(t, f, nil) }},
		{"link", startLinkWorker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, testReg())
			tt.start(t, f)
			waitRegistrations(t, f, 1)
			f.restart("session-2", nil)
			regs := waitRegistrations(t, f, 2)
			for i, reg := range regs {
				if !slices.Contains(reg.Features, tasks.FeatureInputs) {
					t.Errorf("registration %d: features %q; want them to include %q", i+1, reg.Features, tasks.FeatureInputs)
				}
			}
		})
	}
}

// waitRegistrations waits for f to have seen n registrations and returns
// them.
func waitRegistrations(t *testing.T, f *fakeCoord, n int) []tasks.RegisterRequest {
	t.Helper()
	var regs []tasks.RegisterRequest
	waitFor(t, 10*time.Second, "worker registers", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		regs = slices.Clone(f.registrations)
		return len(regs) >= n
	})
	return regs
}

// startLinkWorker runs RunLink against f over pipes, as a shim runs, until
// the test ends.
func startLinkWorker(t *testing.T, f *fakeCoord) {
	t.Helper()
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	serverConn, served := serveLink(t, f, stdoutR, stdinW)
	cfg := Config{WorkDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	done := make(chan error, 1)
	go func() { done <- RunLink(context.Background(), stdinR, stdoutW, cfg) }()
	t.Cleanup(func() {
		serverConn.Close()
		<-served
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("RunLink did not return within 10s of the link closing")
		}
	})
}
