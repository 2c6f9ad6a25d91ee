package worker

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// ranScript leaves a trace of having run, in its output and artifacts.
const ranScript = `echo ran; echo ran > "$MITO_OUTPUT_DIR/ran"`

func TestInputsFetched(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	big := []byte(strings.Repeat("0123456789abcdef", 1<<16)) // 1 MiB, more than one read
	id := f.submitInputs(tasks.Spec{
		Inputs: []tasks.Input{
			{Attachment: "data.csv", Path: "data.csv"},
			{Task: 9, Artifact: "model.bin", Path: "deep/er/model.bin"},
			{Attachment: "empty", Path: "in/empty"},
		},
		Shell: `cat data.csv; sha256sum deep/er/model.bin | cut -c1-64; wc -c < in/empty; ls -ld deep/er | cut -c1; test -x data.csv && echo x`,
	}, &fakeInput{body: []byte("a,b\n1,2\n")}, &fakeInput{body: big}, &fakeInput{body: []byte{}})
	res := f.waitResult(t, id, 20*time.Second)
	logs, _, _ := f.snapshotTask(id)
	if res.State != tasks.Succeeded {
		t.Fatalf("state: got %s (%s); want succeeded; stderr %q", res.State, res.Error, logs[tasks.Stderr])
	}
	want := fmt.Sprintf("a,b\n1,2\n%x\n0\nd\nx\n", sha256.Sum256(big))
	if got := logs[tasks.Stdout]; got != want {
		t.Errorf("stdout: got %q; want %q", got, want)
	}
	assertEmptyDir(t, w.workDir)
}

func TestInputChecksumMismatchRetried(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	startWorker(t, f, nil)
	in := &fakeInput{body: []byte("payload\n"), corrupt: 2}
	id := f.submitInputs(tasks.Spec{Inputs: []tasks.Input{{Attachment: "p", Path: "p"}}, Shell: "cat p"}, in)
	res := f.waitResult(t, id, 20*time.Second)
	logs, _, _ := f.snapshotTask(id)
	if res.State != tasks.Succeeded || logs[tasks.Stdout] != "payload\n" {
		t.Errorf("got %s (%s), stdout %q; want succeeded with the payload", res.State, res.Error, logs[tasks.Stdout])
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.fetches != 3 {
		t.Errorf("fetches: got %d; want 3 (two corrupt, then a good one)", in.fetches)
	}
}

func TestInputChecksumMismatchGivesUp(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	startWorker(t, f, nil)
	in := &fakeInput{body: []byte("payload\n"), corrupt: 1000}
	id := f.submitInputs(tasks.Spec{Inputs: []tasks.Input{{Attachment: "p", Path: "p"}}, Shell: ranScript}, in)
	res := f.waitResult(t, id, 30*time.Second)
	if res.State != tasks.Failed || !strings.Contains(res.Error, "input attachment:p:") || !strings.Contains(res.Error, "sha256") {
		t.Errorf("got %s (%q); want failed naming the input and the sha256", res.State, res.Error)
	}
	assertNotRun(t, f, id, res)
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.fetches != maxInputTries {
		t.Errorf("fetches: got %d; want %d", in.fetches, maxInputTries)
	}
}

// TestInputMissingFailsAttempt: a 404 fails the attempt at once with the
// coordinator's message, without running the command, even when other
// inputs came.
func TestInputMissingFailsAttempt(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	const msg = "input task:42/out.csv: task 42 has no artifact out.csv (it is running)"
	missing := &fakeInput{missing: msg}
	id := f.submitInputs(tasks.Spec{
		Inputs: []tasks.Input{{Attachment: "ok", Path: "ok"}, {Task: 42, Artifact: "out.csv", Path: "out.csv"}},
		Shell:  ranScript,
	}, &fakeInput{body: []byte("x")}, missing)
	res := f.waitResult(t, id, 20*time.Second)
	if res.State != tasks.Failed || res.Error != msg {
		t.Errorf("got %s (%q); want failed with %q", res.State, res.Error, msg)
	}
	assertNotRun(t, f, id, res)
	f.mu.Lock()
	fetches := missing.fetches
	f.mu.Unlock()
	if fetches != 1 {
		t.Errorf("fetches of the missing input: got %d; want 1 (a 404 is not retried)", fetches)
	}
	assertEmptyDir(t, w.workDir)
}

// TestInputRefusedPath: a file where an input's directory must go is a
// local failure, reported with the input's name.
func TestInputRefusedPath(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	startWorker(t, f, nil)
	// "out" is the output directory, already there.
	id := f.submitInputs(tasks.Spec{Inputs: []tasks.Input{{Attachment: "o", Path: "out"}}, Shell: ranScript}, &fakeInput{body: []byte("x")})
	res := f.waitResult(t, id, 20*time.Second)
	if res.State != tasks.Failed || !strings.HasPrefix(res.Error, "input attachment:o=out: ") {
		t.Errorf("got %s (%q); want failed naming the input", res.State, res.Error)
	}
	assertNotRun(t, f, id, res)
}

// assertNotRun fails unless the attempt ended without running its command.
func assertNotRun(t *testing.T, f *fakeCoord, id tasks.ID, res tasks.Result) {
	t.Helper()
	logs, arts, _ := f.snapshotTask(id)
	if logs[tasks.Stdout] != "" || len(arts) != 0 || res.ExitCode != nil {
		t.Errorf("the command ran: stdout %q, artifacts %v, exit code %v", logs[tasks.Stdout], keys(arts), fmtInt(res.ExitCode))
	}
}

// TestArtifactOverQuotaFailsAttempt: an artifact refused because the
// group is over its quota fails a task that exited 0, with an error that
// names it and quotes the coordinator; the other artifacts are kept.
func TestArtifactOverQuotaFailsAttempt(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{tasks.ArtifactsRelay, tasks.ArtifactsDirect} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, regWith(mode))
			f.overQuota = map[string]bool{"big.bin": true}
			startWorker(t, f, nil)
			id := f.submit(tasks.Spec{Shell: `cd "$MITO_OUTPUT_DIR"; echo a > a.txt; echo big > big.bin; echo z > z.txt`})
			res := f.waitResult(t, id, 20*time.Second)
			const want = "artifact big.bin refused: group lab is over its storage quota of 10 bytes"
			if res.State != tasks.Failed || res.Error != want {
				t.Errorf("got %s (%q); want failed with %q", res.State, res.Error, want)
			}
			if res.ExitCode == nil || *res.ExitCode != 0 {
				t.Errorf("exit code: got %s; want 0, as the process exited", fmtInt(res.ExitCode))
			}
			_, arts, _ := f.snapshotTask(id)
			if len(arts) != 2 || arts["a.txt"] != "a\n" || arts["z.txt"] != "z\n" {
				t.Errorf("artifacts: got %v; want a.txt and z.txt", keys(arts))
			}
		})
	}
}

func TestFailRefused(t *testing.T) {
	t.Parallel()
	zero := 0
	cases := []struct {
		name    string
		res     tasks.Result
		refused []string
		state   tasks.State
		err     string
	}{
		{"none", tasks.Result{State: tasks.Succeeded, ExitCode: &zero}, nil, tasks.Succeeded, ""},
		{"succeeded", tasks.Result{State: tasks.Succeeded, ExitCode: &zero}, []string{"artifact a refused: q"}, tasks.Failed, "artifact a refused: q"},
		{"timed out", tasks.Result{State: tasks.TimedOut, Error: "timed out after 1s"}, []string{"artifact a refused: q"}, tasks.TimedOut, "timed out after 1s; artifact a refused: q"},
		{"many", tasks.Result{State: tasks.Failed}, []string{"1", "2", "3", "4", "5"}, tasks.Failed, "1; 2; 3; and 2 more artifacts refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := failRefused(tc.res, tc.refused)
			if got.State != tc.state || got.Error != tc.err {
				t.Errorf("got %s %q; want %s %q", got.State, got.Error, tc.state, tc.err)
			}
		})
	}
}

// TestCancelStopsInputFetch: a cancel from the coordinator ends a fetch
// that makes no progress, and the attempt reports itself cancelled
// without running the command.
func TestCancelStopsInputFetch(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	in := &fakeInput{body: []byte("0123456789"), stall: true}
	id := f.submitInputs(tasks.Spec{Inputs: []tasks.Input{{Attachment: "slow", Path: "slow"}}, Shell: ranScript}, in)
	waitFor(t, 10*time.Second, "the fetch starts", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return in.fetches > 0
	})
	f.with(id, func(ft *fakeTask) { ft.stop = "cancelled by alice" })
	res := f.waitResult(t, id, 10*time.Second)
	if res.State != tasks.Cancelled || !strings.Contains(res.Error, "cancelled by alice") {
		t.Errorf("got %s (%q); want cancelled with the reason", res.State, res.Error)
	}
	assertNotRun(t, f, id, res)
	assertEmptyDir(t, w.workDir)
}

// TestInputFetchTimesOut: a fetch that stalls is ended by the task's
// timeout, which the heartbeat would otherwise keep from ever coming; the
// attempt ends timed out without running the command.
func TestInputFetchTimesOut(t *testing.T) {
	t.Parallel()
	f := newFake(t, testReg())
	w := startWorker(t, f, nil)
	in := &fakeInput{body: []byte("0123456789"), stall: true}
	id := f.submitInputs(tasks.Spec{Inputs: []tasks.Input{{Attachment: "slow", Path: "slow"}}, Shell: ranScript,
		Timeout: tasks.Duration(time.Second)}, in)
	res := f.waitResult(t, id, 20*time.Second)
	if res.State != tasks.TimedOut || !strings.Contains(res.Error, "inputs") || !strings.Contains(res.Error, "timeout of 1s") {
		t.Errorf("got %s (%q); want timed_out, saying the inputs took longer than the timeout of 1s", res.State, res.Error)
	}
	assertNotRun(t, f, id, res)
	assertEmptyDir(t, w.workDir)
}
