package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mitolab/mito/tasks"
	"github.com/mitolab/mito/worker/watchdog"
)

// The run directory: for each attempt whose command runs, the worker keeps
// a record, RunDir/<scope>/<task>-<attempt>.run, for as long as the
// attempt lives: a line of JSON with the lease (task, attempt, token) and
// the work directory, then the watchdog's line with its pid and the
// attempt's cgroup (watchdog.ReadRecord). The file is also the attempt's
// lock: the worker creates it flock'd and hands it to the watchdog, which
// holds it alone until the attempt is over. One file, written and removed
// once, so that a record costs a task a few system calls.
//
// A worker that is killed leaves its records behind; its watchdogs kill
// their attempts and exit, but one may still be at it, or be frozen, or
// have been killed itself. So a worker starting on the host first
// reconciles: for each record of its scope it makes sure the attempt is
// dead (SIGTERM to a live watchdog, found by the lock being held; then the
// attempt's cgroup, or processes that carry its work directory in their
// environment), removes its work directory and record, and tells the
// coordinator, which queues the attempt again at once rather than when its
// lease runs out. Only then does it claim anything.
//
// The scope (RegisterResponse.RunScope) is the store's cluster id and the
// host's name, so that another mito installation, or another inventory
// host that logs in as the same user, is never touched.

// recordExt ends a run record's name.
const recordExt = ".run"

// runRecord is a run record's first line.
type runRecord struct {
	Lease   tasks.LeaseRef `json:"lease"`
	WorkDir string         `json:"work_dir"`
	Created time.Time      `json:"created"`
}

// scopeRE is what a run scope may look like: one path element.
var scopeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// defaultRunDir is ~/.cache/mito/run (honouring XDG_CACHE_HOME), or a
// directory beside the work root when there is no home.
func defaultRunDir(workRoot string) string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "mito", "run")
	}
	return filepath.Join(workRoot, ".run")
}

// scopeDir returns the run directory of the current session's scope, or ""
// when the coordinator gave none (an older one): no records are kept.
func (w *worker) scopeDir(s *session) string {
	if s.runScope == "" || w.runRoot == "" {
		return ""
	}
	return filepath.Join(w.runRoot, s.runScope)
}

// newRecord writes an attempt's record, locked, for the watchdog to
// inherit. It returns the record's path and file; the caller closes the
// file once the watchdog holds it.
func (w *worker) newRecord(a *attempt, workDir string) (string, *os.File, error) {
	scope := w.scopeDir(w.cur())
	if scope == "" {
		return "", nil, nil
	}
	if err := os.MkdirAll(scope, 0o700); err != nil {
		return "", nil, fmt.Errorf("create run record: %w", err)
	}
	path := filepath.Join(scope, fmt.Sprintf("%d-%d%s", a.ref.Task, a.ref.Attempt, recordExt))
	f, err := watchdog.TryLock(path)
	if err != nil {
		return "", nil, fmt.Errorf("create run record: %w", err)
	}
	b, _ := json.Marshal(runRecord{Lease: a.ref, WorkDir: workDir, Created: time.Now().UTC()})
	if err := f.Truncate(0); err == nil {
		_, err = f.Write(append(b, '\n'))
	}
	if err != nil {
		f.Close()
		_ = os.Remove(path)
		return "", nil, fmt.Errorf("create run record: %w", err)
	}
	return path, f, nil
}

// dropRecord removes an attempt's record once nothing of it is left,
// unless the attempt died unreported (see noteUnreported).
func (w *worker) dropRecord(a *attempt) {
	w.mu.Lock()
	keep := a.keepRecord
	w.mu.Unlock()
	if a.record == "" || keep {
		return
	}
	if err := os.Remove(a.record); err != nil {
		a.log.Warn("cannot remove the attempt's run record", "record", a.record, keyErr, err)
	}
}

// dropScope removes the session's run directory if it is empty, as a
// stopping worker leaves it: nothing accumulates on a host that many
// coordinators, or short-lived ones, drove. One that holds records stays
// for the next worker.
func (w *worker) dropScope() {
	if s := w.cur(); s != nil {
		if dir := w.scopeDir(s); dir != "" {
			_ = os.Remove(dir)
		}
	}
}

// reconcileLimit bounds how long reconcile waits for one old attempt to
// die after SIGTERM to its watchdog, beyond the lease grace, before it
// kills the watchdog itself; and, as long again after that, before it
// gives the record up for the next worker.
const reconcileLimit = 5 * time.Second

// reconcile kills what earlier workers of this scope left on the host and
// releases it with the coordinator. It returns once every such attempt is
// dead, or could not be killed in time (it logs which), whatever the
// coordinator answers: a lease that is not released runs out by itself.
// The records are handled at once, so that many of them take no longer
// than one.
func (w *worker) reconcile(ctx context.Context, s *session) {
	scope := w.scopeDir(s)
	if scope == "" {
		return
	}
	entries, err := os.ReadDir(scope)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			w.log.Warn("cannot read the run directory", "dir", scope, keyErr, err)
		}
		return
	}
	limit := s.leaseGrace + min(reconcileLimit, max(time.Second, s.leaseTTL/4))
	var (
		mu   sync.Mutex
		dead []tasks.LeaseRef
		g    errgroup.Group
	)
	g.SetLimit(16)
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), recordExt) {
			continue
		}
		g.Go(func() error {
			if ref, ok := w.reapRecord(ctx, filepath.Join(scope, e.Name()), limit); ok {
				mu.Lock()
				dead = append(dead, ref)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	if len(dead) == 0 || ctx.Err() != nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, requestSlack)
	defer cancel()
	resp, err := s.c.Release(rctx, tasks.ReleaseRequest{Attempts: dead, Reason: "its worker was gone; the next one on the host killed what was left"})
	if err != nil {
		w.log.Warn("cannot release the attempts a previous worker left; their leases will run out", "count", len(dead), keyErr, err)
		return
	}
	w.log.Info("released the attempts a previous worker left", "found", len(dead), "released", len(resp.Released))
}

// reapRecord makes sure the attempt of one record is dead, removes its
// work directory and the record, and returns its lease. ok is false when
// the record names no lease (it was half written) or the attempt could not
// be killed; such a record is left for the next worker to try again.
func (w *worker) reapRecord(ctx context.Context, path string, limit time.Duration) (ref tasks.LeaseRef, ok bool) {
	log := w.log.With("record", path)
	var rec runRecord
	b, recErr := os.ReadFile(path)
	if recErr == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		recErr = json.Unmarshal([]byte(line), &rec)
	}
	lock, lerr := watchdog.TryLock(path)
	if errors.Is(lerr, watchdog.ErrLocked) {
		// A watchdog still runs the attempt: of a killed worker, still
		// killing it, or of a frozen one, whose attempt still runs.
		wr, rerr := watchdog.ReadRecord(path)
		if rerr != nil {
			log.Warn("the run record is locked but names no watchdog; leaving it", keyErr, rerr)
			return ref, false
		}
		log.Info("stopping the watchdog a previous worker left", "pid", wr.Pid)
		wr.Terminate()
		deadline, killed := time.Now().Add(limit), false
		for {
			lock, lerr = watchdog.TryLock(path)
			if !errors.Is(lerr, watchdog.ErrLocked) {
				break
			}
			switch {
			case ctx.Err() != nil:
				return ref, false
			case time.Now().Before(deadline):
			case !killed:
				log.Warn("the watchdog did not end its attempt; killing it", "pid", wr.Pid)
				wr.Kill()
				deadline, killed = time.Now().Add(limit), true
			default:
				// Not the watchdog's lock any more (a frozen worker that
				// had not handed it over yet), or a watchdog that does
				// not die: the next worker tries again.
				log.Error("the run record stays locked; leaving it", "pid", wr.Pid)
				return ref, false
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if lerr != nil {
		log.Warn("cannot lock the run record", keyErr, lerr)
		return ref, false
	}
	defer lock.Close()
	// The attempt is over. Its watchdog killed it, unless it was killed
	// itself: what is left is in its cgroup, or carries the attempt's
	// work directory in its environment.
	wr, _ := watchdog.ReadRecord(path)
	if rec.WorkDir != "" || wr.Cgroup != "" {
		marker := ""
		if rec.WorkDir != "" {
			marker = "MITO_WORK_DIR=" + rec.WorkDir
		}
		n, kerr := watchdog.KillLeftovers(wr.Cgroup, marker, limit)
		if kerr != nil {
			log.Error("cannot kill what is left of an attempt", keyErr, kerr)
			return ref, false
		}
		if n > 0 {
			log.Warn("killed processes of an attempt whose watchdog was gone", "count", n)
		}
	}
	if rec.WorkDir != "" && w.ownsWorkDir(rec.WorkDir) {
		if err := removeAll(rec.WorkDir); err != nil {
			log.Warn("cannot remove an old attempt's work directory", "dir", rec.WorkDir, keyErr, err)
		}
	}
	if err := os.Remove(path); err != nil {
		log.Warn("cannot remove the run record", keyErr, err)
	}
	if recErr != nil || rec.Lease.Task == 0 {
		return ref, false
	}
	return rec.Lease, true
}

// ownsWorkDir reports whether dir is an attempt's directory in this
// worker's work root, the only kind a record may make it remove.
func (w *worker) ownsWorkDir(dir string) bool {
	rel, err := filepath.Rel(w.workRoot, dir)
	return err == nil && rel != "." && !strings.Contains(rel, string(filepath.Separator)) && !strings.HasPrefix(rel, "..")
}
