package e2e_test

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

// bigArtifactSize is the artifact TestBigArtifact ships: large enough that
// any code path holding a whole artifact in memory shows at once.
const bigArtifactSize = 1 << 30

// maxRSS is the peak resident memory the coordinator and the shim may
// reach while a bigArtifactSize artifact goes through: the artifact paths
// stream, so their memory must not grow with the artifact's size.
const maxRSS = 100 << 20

// TestBigArtifact ships a 1 GiB artifact from a shim to S3, directly and
// relayed, downloads it, checks it bit for bit, and checks that neither
// the coordinator nor the shim held it in memory: the peak resident
// memory of each stays under 100 MiB.
func TestBigArtifact(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GiB three times; not with -short")
	}
	for _, mode := range []string{"direct", "relay"} {
		t.Run(mode, func(t *testing.T) { shipBigArtifact(t, mode) })
	}
}

func shipBigArtifact(t *testing.T, mode string) {
	l := s3Lab(t, mode)
	coord := l.cmd.Process.Pid
	// What the coordinator reached before any artifact: start-up and the
	// admin's login (argon2id takes 19 MiB a hash).
	base := peakOf(coord)
	mem := watchMemory(coord)
	defer mem.stop()

	start := time.Now()
	tid := l.submit("sh", "-c", fmt.Sprintf(`head -c %d /dev/urandom > "$MITO_OUTPUT_DIR/big"
sha256sum "$MITO_OUTPUT_DIR/big" | cut -d" " -f1
date +%%s%%N >&2`, bigArtifactSize))
	task := l.waitFor(tid, 5*time.Minute, tasks.Succeeded, tasks.Failed)
	if task.State != tasks.Succeeded {
		t.Fatalf("task %s: %s", task.State, task.Error)
	}
	ran := time.Since(start)
	// The shim uploads between the script's end (its last stderr line)
	// and the finish the coordinator stamps.
	var upload time.Duration
	if ns, err := strconv.ParseInt(strings.TrimSpace(l.mustRun(nil, "client", "tasks", "logs", "--stderr", id(tid))), 10, 64); err == nil && task.FinishedAt != nil {
		upload = task.FinishedAt.Sub(time.Unix(0, ns))
	}
	up := mem.snapshot()

	want := strings.TrimSpace(l.mustRun(nil, "client", "tasks", "logs", id(tid)))
	dir := t.TempDir()
	dlStart := time.Now()
	l.mustRun(nil, "client", "tasks", "artifacts", "download", "-q", "-o", dir, id(tid))
	download := time.Since(dlStart)
	mem.stop()
	all := mem.snapshot()

	path := filepath.Join(dir, "big")
	got, n := fileSHA256(t, path)
	_ = os.Remove(path) // a GiB less on the disk for the next mode
	if got != want || n != bigArtifactSize {
		t.Errorf("downloaded big: %d bytes, sha256 %s; the task wrote %d with %s", n, got, bigArtifactSize, want)
	}

	logs := l.logs.String()
	direct := strings.Contains(logs, "artifact uploaded directly")
	if direct != (mode == "direct") {
		t.Errorf("mode %s: the log says uploaded directly = %t", mode, direct)
	}
	t.Logf("mode %s: task (write, hash, upload) %s, of which upload and finish %s (%.0f MiB/s); download %s",
		mode, ran.Round(time.Millisecond), upload.Round(time.Millisecond), float64(bigArtifactSize>>20)/upload.Seconds(), download.Round(time.Millisecond))
	t.Logf("mode %s: peak RSS: coordinator %s before the task, %s until it ended, %s after the download; shim %s (%d seen)",
		mode, mib(base), mib(up.coord), mib(all.coord), mib(up.shim), up.shims)
	if up.shims == 0 {
		t.Errorf("found no shim process under coordinator pid %d to measure", coord)
	}
	if all.coord > maxRSS {
		t.Errorf("coordinator peak RSS %s; want at most %s", mib(all.coord), mib(maxRSS))
	}
	if up.shim > maxRSS {
		t.Errorf("shim peak RSS %s; want at most %s", mib(up.shim), mib(maxRSS))
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func fileSHA256(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n
}

// memWatch samples, every 200ms, the resident memory of a coordinator
// process and of the shims it started (its children named mito-shim). A
// process's peak is the larger of the largest VmRSS sampled and its last
// VmHWM read (the kernel's own high-water mark, which catches peaks
// between samples).
type memWatch struct {
	pid  int
	quit chan struct{}
	done chan struct{}
	once sync.Once

	// mu guards the peaks below.
	mu    sync.Mutex
	coord int64
	shim  map[int]int64 // pid → peak
}

// memPeaks is what a memWatch has seen so far.
type memPeaks struct {
	coord int64
	shim  int64 // the largest of any shim's
	shims int   // how many shims were seen
}

func watchMemory(pid int) *memWatch {
	w := &memWatch{pid: pid, quit: make(chan struct{}), done: make(chan struct{}), shim: map[int]int64{}}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			w.sample()
			select {
			case <-w.quit:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *memWatch) sample() {
	c := peakOf(w.pid)
	shims := map[int]int64{}
	for _, p := range childrenNamed(w.pid, "mito-shim") {
		shims[p] = peakOf(p)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.coord = max(w.coord, c)
	for p, v := range shims {
		w.shim[p] = max(w.shim[p], v)
	}
}

// stop takes a last sample and stops the sampling; it may be called twice.
func (w *memWatch) stop() {
	w.once.Do(func() {
		close(w.quit)
		<-w.done
		w.sample()
	})
}

func (w *memWatch) snapshot() memPeaks {
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	p := memPeaks{coord: w.coord, shims: len(w.shim)}
	for _, v := range w.shim {
		p.shim = max(p.shim, v)
	}
	return p
}

// peakOf returns the larger of a process's VmRSS and VmHWM, in bytes, or 0
// once it is gone.
func peakOf(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	var peak int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		// "  123456 kB"
		if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			peak = max(peak, kb<<10)
		}
	}
	return peak
}

// childrenNamed lists the live children of ppid whose argv[0] has base
// name name.
func childrenNamed(ppid int, name string) []int {
	var out []int
	liveProcs(func(pid int, stat []string) {
		if p, _ := strconv.Atoi(stat[1]); p != ppid {
			return
		}
		argv, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err != nil {
			return
		}
		arg0, _, _ := strings.Cut(string(argv), "\x00")
		if filepath.Base(arg0) == name {
			out = append(out, pid)
		}
	})
	return out
}
