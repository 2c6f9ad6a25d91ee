package watchdog

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// BenchmarkStart measures what the watchdog adds to a task's start and
// end: a run of /bin/true under a watchdog that runs attempt after
// attempt, as a worker keeps one per slot (holding it as subreaper, and
// in a cgroup where this user may have one), under a new watchdog for
// each, and a plain fork and exec of it.
func BenchmarkStart(b *testing.B) {
	b.Run("watchdog-reused-subreaper", func(b *testing.B) { benchWatchdog(b, "", true) })
	if cg, err := DetectCgroup(); err == nil {
		b.Run("watchdog-reused-cgroup", func(b *testing.B) { benchWatchdog(b, cg, true) })
	}
	b.Run("watchdog-new-each", func(b *testing.B) { benchWatchdog(b, "", false) })
	b.Run("exec", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchWatchdog(b *testing.B, cgroup string, reuse bool) {
	prog := os.Getenv("WATCHDOG_BENCH_PROGRAM")
	var dog *Watchdog
	if reuse {
		var err error
		if dog, err = New(prog); err != nil {
			b.Fatal(err)
		}
		defer dog.Close()
	}
	for b.Loop() {
		r, w, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		s := Spec{Path: "/bin/true", Args: []string{"true"}, Dir: "/", Stdout: w, Stderr: w,
			Grace: time.Second, LeaseGrace: time.Second, Name: "bench", Cgroup: cgroup}
		var a *Attempt
		if reuse {
			a, err = dog.Run(s)
		} else {
			a, err = Start(s, prog)
		}
		w.Close()
		if err != nil {
			b.Fatal(err)
		}
		<-a.Done()
		r.Close()
	}
}
