package watchdog

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// BenchmarkStart measures what the watchdog adds to a task's start and
// end: a run of /bin/true under a watchdog (holding it as subreaper, and
// in a cgroup where this user may have one), against a plain fork and
// exec of it.
func BenchmarkStart(b *testing.B) {
	b.Run("watchdog-subreaper", func(b *testing.B) { benchWatchdog(b, "") })
	if cg, err := DetectCgroup(); err == nil {
		b.Run("watchdog-cgroup", func(b *testing.B) { benchWatchdog(b, cg) })
	}
	b.Run("exec", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchWatchdog(b *testing.B, cgroup string) {
	for b.Loop() {
		r, w, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		wd, err := Start(Spec{Path: "/bin/true", Args: []string{"true"}, Dir: "/", Stdout: w, Stderr: w,
			Grace: time.Second, LeaseGrace: time.Second, Name: "bench", Cgroup: cgroup, Program: os.Getenv("WATCHDOG_BENCH_PROGRAM")})
		w.Close()
		if err != nil {
			b.Fatal(err)
		}
		<-wd.Done()
		r.Close()
	}
}
