package watchdog

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// descendants returns the pids of every process below root, found by
// their parent links in /proc. As a subreaper, the watchdog is the parent
// of every orphan of the attempt, so a process that called setsid or
// double-forked is still below it.
func descendants(root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := make(map[int][]int)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// statFields returns the fields of /proc/PID/stat after the command name
// (state, ppid, pgrp, ...). The name may hold spaces and parentheses, so
// the fields start after the last ')'.
func statFields(pid int) ([][]byte, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	f := bytes.Fields(b[i+1:])
	return f, len(f) >= 2
}

// parentOf reads a process's parent pid.
func parentOf(pid int) (int, bool) {
	f, ok := statFields(pid)
	if !ok {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}

// cgroupProcs lists the processes in a cgroup.
func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cgroupPopulated reports whether a process is left in a cgroup (or its
// children). A cgroup that cannot be read counts as empty: it is gone.
func cgroupPopulated(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte("populated 1"))
}

// makeCgroup creates a cgroup for an attempt under parent and opens it for
// clone3's CLONE_INTO_CGROUP. The name has a random part: a new attempt
// must never land in an old one's cgroup that was not removed yet.
func makeCgroup(parent, name string) (dir string, fd int, err error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	dir = filepath.Join(parent, "mito-"+name+"-"+hex.EncodeToString(b[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", -1, fmt.Errorf("create %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		_ = os.Remove(dir)
		return "", -1, fmt.Errorf("%s has no cgroup.kill (it needs Linux 5.14 or later)", dir)
	}
	fd, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = os.Remove(dir)
		return "", -1, fmt.Errorf("open %s: %w", dir, err)
	}
	return dir, fd, nil
}

// DetectCgroup returns the cgroup v2 directory this process is in, if this
// user may create cgroups there (its own cgroup was delegated to it, as
// systemd does for `Delegate=yes` units, or it is root) and the kernel can
// kill a cgroup as a whole. Otherwise it returns an error that says why
// not, and watchdogs fall back to finding an attempt's processes as their
// subreaper.
func DetectCgroup() (string, error) {
	own, err := ownCgroup()
	if err != nil {
		return "", err
	}
	mnt, root, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	rel, ok := strings.CutPrefix(own, root)
	if !ok {
		return "", fmt.Errorf("cgroup %s is outside the cgroup2 mount's root %s", own, root)
	}
	dir := filepath.Join(mnt, rel)
	if err := unix.Access(filepath.Join(dir, "cgroup.procs"), unix.W_OK); err != nil {
		return "", fmt.Errorf("cgroup %s is not delegated to this user", dir)
	}
	probe, fd, err := makeCgroup(dir, "probe")
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	_ = os.Remove(probe)
	return dir, nil
}

// ownCgroup reads this process's cgroup v2 path from /proc/self/cgroup.
func ownCgroup() (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy (only cgroup v1)")
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted, and which
// of its cgroups is the mount's root.
func cgroup2Mount() (mountPoint, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if pf, qf := strings.Fields(pre), strings.Fields(post); len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" {
			return unescapeMount(pf[4]), unescapeMount(pf[3]), nil
		}
	}
	return "", "", errors.New("cgroup2 is not mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
