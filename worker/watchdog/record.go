package watchdog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// recordPrefix starts the line a watchdog appends to an attempt's run
// record (Spec.Record).
const recordPrefix = childName + " "

// Record is what a watchdog wrote in an attempt's run record.
type Record struct {
	Pid    int    // the watchdog's
	Cgroup string // the attempt's cgroup, or ""
}

// writeRecord appends the watchdog's line to the record f; a failure
// leaves a later worker to find the attempt's processes by their
// environment.
func writeRecord(f *os.File, pid int, cgroup string) {
	if _, err := f.Seek(0, io.SeekEnd); err == nil {
		_, _ = fmt.Fprintf(f, "%s%d %s\n", recordPrefix, pid, cgroup)
	}
}

// ReadRecord reads the line a watchdog appended to the run record at
// path. It fails with an error wrapping os.ErrNotExist when there is none
// (the watchdog did not get that far).
func ReadRecord(path string) (Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Record{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, recordPrefix)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 1 {
			break
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid <= 1 {
			return Record{}, fmt.Errorf("run record %s: bad watchdog pid %q", path, f[0])
		}
		r := Record{Pid: pid}
		if len(f) > 1 {
			r.Cgroup = f[1]
		}
		return r, nil
	}
	return Record{}, fmt.Errorf("run record %s names no watchdog: %w", path, os.ErrNotExist)
}

// Terminate asks the watchdog of r to kill its attempt and exit, with
// SIGTERM, if r.Pid is still a watchdog of this user (a pid may have been
// reused since). It reports whether it sent the signal.
func (r Record) Terminate() bool {
	return r.signal(unix.SIGTERM)
}

// Kill kills the watchdog of r itself, if r.Pid is still one of this
// user's: for one that did not exit after Terminate.
func (r Record) Kill() bool {
	return r.signal(unix.SIGKILL)
}

func (r Record) signal(sig unix.Signal) bool {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(r.Pid) + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != childName || !ownProcess(r.Pid) {
		return false
	}
	return unix.Kill(r.Pid, sig) == nil
}

// ownProcess reports whether pid runs as this process's real user.
func ownProcess(pid int) bool {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid), &st); err != nil {
		return false
	}
	return int(st.Uid) == os.Getuid()
}

// KillLeftovers kills what is left of an attempt whose watchdog is gone
// (it was killed itself, so nobody killed the attempt): every process of
// cgroup, if it is not "", and every process of this user whose
// environment holds the entry marker ("MITO_WORK_DIR=/tmp/…", unique to
// the attempt), which the attempt's processes inherit. It waits until
// they are gone, or until limit passes, and returns how many it found
// and an error naming those still alive.
func KillLeftovers(cgroup, marker string, limit time.Duration) (int, error) {
	seen := map[int]bool{}
	deadline := time.Now().Add(limit)
	for {
		var live []int
		if cgroup != "" {
			_ = os.WriteFile(filepath.Join(cgroup, "cgroup.kill"), []byte("1"), 0)
			live = append(live, cgroupProcs(cgroup)...)
		}
		live = append(live, withEnv(marker)...)
		for _, pid := range live {
			seen[pid] = true
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if len(live) == 0 {
			if cgroup != "" {
				_ = os.Remove(cgroup)
			}
			return len(seen), nil
		}
		if time.Now().After(deadline) {
			return len(seen), fmt.Errorf("processes %v of the attempt do not die", live)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// withEnv lists the live processes of this user whose environment holds
// the entry kv.
func withEnv(kv string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte(kv)
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !ownProcess(pid) {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, entry := range bytes.Split(b, []byte{0}) {
			if bytes.Equal(entry, want) {
				if st, ok := procState(pid); ok && st != 'Z' {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out
}

// procState returns a process's state letter ('R', 'S', 'Z', ...).
func procState(pid int) (byte, bool) {
	f, ok := statFields(pid)
	if !ok || len(f[0]) == 0 {
		return 0, false
	}
	return f[0][0], true
}

// ErrLocked is returned by TryLock when another process holds the lock.
var ErrLocked = errors.New("locked")

// TryLock takes an exclusive flock on path, creating the file, without
// waiting. It fails with ErrLocked when a live process (a watchdog that
// inherited the lock) holds it.
func TryLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
