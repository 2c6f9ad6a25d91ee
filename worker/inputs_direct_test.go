package worker

import (
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// directInputsReg is a registration in mode whose coordinator presigns
// input downloads, or not.
func directInputsReg(mode string, presigns bool) tasks.RegisterResponse {
	r := regWith(mode)
	r.DirectInputs = presigns
	return r
}

// inputCounts reads how in was fetched: presigns asked for, GETs served
// by the fake S3, fetches through the coordinator.
func inputCounts(f *fakeCoord, in *fakeInput) [3]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return [3]int{in.presigns, in.direct, in.fetches}
}

// TestInputsFetchedDirectly: a session that sends artifacts directly
// fetches its inputs straight from the store by presigned URL, checked
// as relayed ones are; a relay session, or a coordinator that does not
// presign downloads (an older one), has them through the coordinator.
func TestInputsFetchedDirectly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		reg    tasks.RegisterResponse
		direct bool
	}{
		{"direct", directInputsReg(tasks.ArtifactsDirect, true), true},
		{"auto", directInputsReg(tasks.ArtifactsAuto, true), true},
		{"relay", directInputsReg(tasks.ArtifactsRelay, true), false},
		{"older coordinator", directInputsReg(tasks.ArtifactsAuto, false), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, tc.reg)
			w := startWorker(t, f, nil)
			big := []byte(strings.Repeat("0123456789abcdef", 1<<16)) // 1 MiB, more than one read
			ins := []*fakeInput{{body: big}, {body: []byte{}}}
			id := f.submitInputs(tasks.Spec{
				Inputs: []tasks.Input{{Task: 9, Artifact: "model.bin", Path: "deep/model.bin"}, {Attachment: "empty", Path: "empty"}},
				Shell:  `sha256sum deep/model.bin | cut -c1-64; wc -c < empty`,
			}, ins...)
			res := f.waitResult(t, id, 20*time.Second)
			logs, _, _ := f.snapshotTask(id)
			if res.State != tasks.Succeeded {
				t.Fatalf("state: got %s (%s); want succeeded; stderr %q", res.State, res.Error, logs[tasks.Stderr])
			}
			if want := fmt.Sprintf("%x\n0\n", sha256.Sum256(big)); logs[tasks.Stdout] != want {
				t.Errorf("stdout: got %q; want %q", logs[tasks.Stdout], want)
			}
			for i, in := range ins {
				want := [3]int{0, 0, 1}
				if tc.direct {
					want = [3]int{1, 1, 0}
				}
				if got := inputCounts(f, in); got != want {
					t.Errorf("input %d: presigns, direct GETs, relayed fetches = %v; want %v", i, got, want)
				}
			}
			assertEmptyDir(t, w.workDir)
		})
	}
}

// TestInputDirectMissingFailsAttempt: the presign call's 404 fails the
// attempt with the coordinator's message, as the relayed fetch's does.
func TestInputDirectMissingFailsAttempt(t *testing.T) {
	t.Parallel()
	f := newFake(t, directInputsReg(tasks.ArtifactsDirect, true))
	startWorker(t, f, nil)
	const msg = "input attachment:gone.csv: no such attachment in group lab"
	missing := &fakeInput{missing: msg}
	id := f.submitInputs(tasks.Spec{Inputs: []tasks.Input{{Attachment: "gone.csv", Path: "gone.csv"}}, Shell: ranScript}, missing)
	res := f.waitResult(t, id, 20*time.Second)
	if res.State != tasks.Failed || res.Error != msg {
		t.Errorf("got %s (%q); want failed with %q", res.State, res.Error, msg)
	}
	assertNotRun(t, f, id, res)
	if got := inputCounts(f, missing); got != [3]int{1, 0, 0} {
		t.Errorf("presigns, direct, relayed = %v; want one refused presign", got)
	}
}

// unreachableURL returns a URL on which nothing listens.
func unreachableURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	return u
}

// TestInputDirectAutoFallsBack: in auto mode, a store the host cannot
// reach sends this input through the coordinator, and the rest of the
// session's inputs and artifacts too, and says so once, without the URL.
func TestInputDirectAutoFallsBack(t *testing.T) {
	t.Parallel()
	f := newFake(t, directInputsReg(tasks.ArtifactsAuto, true))
	f.presignURL = unreachableURL(t)
	logs := &logBuffer{}
	startWorker(t, f, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	first, second := &fakeInput{body: []byte("one\n")}, &fakeInput{body: []byte("two\n")}
	for _, in := range []*fakeInput{first, second} {
		id := f.submitInputs(tasks.Spec{Inputs: []tasks.Input{{Attachment: "in", Path: "in"}}, Shell: "cat in"}, in)
		res := f.waitResult(t, id, 20*time.Second)
		out, _, _ := f.snapshotTask(id)
		if res.State != tasks.Succeeded || out[tasks.Stdout] != string(in.body) {
			t.Errorf("task %d: %s (%s), stdout %q; want succeeded with %q", id, res.State, res.Error, out[tasks.Stdout], in.body)
		}
	}
	if got := inputCounts(f, first); got != [3]int{1, 0, 1} {
		t.Errorf("first input: presigns, direct, relayed = %v; want one presign, then relayed", got)
	}
	if got := inputCounts(f, second); got != [3]int{0, 0, 1} {
		t.Errorf("second input: presigns, direct, relayed = %v; want relayed at once", got)
	}
	if n := logs.count("through the coordinator for the rest of the session"); n != 1 {
		t.Errorf("fallback logged %d times; want once", n)
	}
	if logs.count("cannot be reached") != 1 || logs.count("X-Amz-Signature") != 0 {
		t.Errorf("the log does not say the store cannot be reached, or shows the URL")
	}
}

// TestInputDirectForcedRetries: in direct mode an unreachable store is
// retried as a failed relayed fetch is, never relayed, and the attempt
// fails naming the input.
func TestInputDirectForcedRetries(t *testing.T) {
	t.Parallel()
	f := newFake(t, directInputsReg(tasks.ArtifactsDirect, true))
	f.presignURL = unreachableURL(t)
	logs := &logBuffer{}
	startWorker(t, f, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	in := &fakeInput{body: []byte("x")}
	id := f.submitInputs(tasks.Spec{Inputs: []tasks.Input{{Attachment: "in", Path: "in"}}, Shell: ranScript}, in)
	res := f.waitResult(t, id, 30*time.Second)
	if res.State != tasks.Failed || !strings.HasPrefix(res.Error, "input attachment:in: ") || !strings.Contains(res.Error, "gave up") {
		t.Errorf("got %s (%q); want failed naming the input, after retries", res.State, res.Error)
	}
	assertNotRun(t, f, id, res)
	if got := inputCounts(f, in); got != [3]int{maxInputTries, 0, 0} {
		t.Errorf("presigns, direct, relayed = %v; want %d presigns and no relay", got, maxInputTries)
	}
	if logs.count("X-Amz-Signature") != 0 || strings.Contains(res.Error, "X-Amz-Signature") {
		t.Errorf("the log or the error shows the presigned URL")
	}
}
