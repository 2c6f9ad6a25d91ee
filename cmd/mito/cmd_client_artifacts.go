package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/tasks"
)

func newClientArtifactsCmd(gopts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifacts",
		Short: "List, download and delete the files tasks wrote",
		Long: `A task's artifacts are the files it wrote under $MITO_OUTPUT_DIR; they are
kept, per attempt, after the task ends, and count against the storage quota
of the task's group until they are deleted.`,
		Example: `  mito client tasks artifacts list 42
  mito client tasks artifacts download 42 -o results/42
  mito client tasks artifacts delete 42 --all`,
	}
	cmd.AddCommand(newClientArtifactsListCmd(gopts), newClientArtifactsDownloadCmd(gopts), newClientArtifactsDeleteCmd(gopts))
	return cmd
}

func newClientArtifactsListCmd(gopts *clientOptions) *cobra.Command {
	var attempt int
	cmd := &cobra.Command{
		Use:   "list ID",
		Short: "List a task's artifacts",
		Long:  `List a task's artifacts, of every attempt or of the one --attempt names.`,
		Example: `  mito client tasks artifacts list 42
  mito client tasks artifacts list 42 -o json`,
		Args: exactArgs(1, "one task id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientArtifactsList(cmd.Context(), gopts, attempt, args)
		},
	}
	cmd.Flags().IntVar(&attempt, "attempt", 0, "only this `attempt`")
	return cmd
}

func runClientArtifactsList(ctx context.Context, gopts *clientOptions, attempt int, args []string) error {
	ids, err := parseIDs(args)
	if err != nil {
		return err
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	arts, err := s.ListArtifacts(ctx, ids[0])
	if err != nil {
		return err
	}
	arts = slices.DeleteFunc(arts, func(a tasks.Artifact) bool { return attempt > 0 && a.Attempt != attempt })
	if arts == nil {
		arts = []tasks.Artifact{}
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, arts)
	case gopts.quiet:
		for _, a := range arts {
			fmt.Fprintln(gopts.stdout, a.Name)
		}
		return nil
	case len(arts) == 0:
		gopts.notef("task %d has no artifacts", ids[0])
		return nil
	}
	tw := newTable(gopts.stdout)
	fmt.Fprintln(tw, "ATTEMPT\tSIZE\tSHA256\tCREATED\tNAME")
	for _, a := range arts {
		fmt.Fprintf(tw, "%d\t%s\t%.12s\t%s\t%s\n", a.Attempt, fmtSize(a.Size), a.SHA256, fmtTime(a.CreatedAt), a.Name)
	}
	return tw.Flush()
}

type downloadOptions struct {
	dir     string
	attempt int
	force   bool
}

func newClientArtifactsDownloadCmd(gopts *clientOptions) *cobra.Command {
	var opts downloadOptions
	cmd := &cobra.Command{
		Use:   "download ID [NAME...]",
		Short: "Download a task's artifacts",
		Long: `Download a task's artifacts (all of them, or the NAMEs given) into a
directory, keeping their relative paths. Without --attempt each name comes
from the latest attempt that wrote it.

On this command -o names the directory (default "."), not the output format.

Names come from the task, so they are not trusted: a name that is absolute,
has a ".." part or would land outside the directory is refused, and so is
a path through a symbolic link that leads out of it. On a terminal, each
file of 1 MiB or more shows a progress line on stderr; -q hides it.

If any of the files exists in the directory, nothing is downloaded unless
--force is given; with it each is replaced (a symbolic link in a file's
place is replaced, never the file it points to). Each file is written under
a temporary name next to it, checked against the SHA-256 the coordinator
recorded, and only then renamed into place, so an interrupted or corrupted
download leaves nothing behind.`,
		Example: `  mito client tasks artifacts download 42
  mito client tasks artifacts download 42 -o results/42 metrics.json plots/loss.png
  mito client tasks artifacts download 42 --attempt 1 --force`,
		Args: minArgs(1, "a task id and optionally artifact names"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientArtifactsDownload(cmd.Context(), gopts, opts, args)
		},
	}
	// Named "output" on purpose: it shadows the global -o/--output, which
	// this command has no use for, and frees -o for the directory.
	cmd.Flags().StringVarP(&opts.dir, "output", "o", ".", "write into `DIR`")
	cmd.Flags().IntVar(&opts.attempt, "attempt", 0, "download from this `attempt` (default: the latest with each name)")
	cmd.Flags().BoolVarP(&opts.force, "force", "f", false, "replace files that exist in the directory")
	return cmd
}

// wanted is one artifact to download; Size -1 and SHA256 "" mean unknown
// until the coordinator answers.
type wanted struct {
	name    string
	attempt int
	size    int64
	sha256  string
}

func runClientArtifactsDownload(ctx context.Context, gopts *clientOptions, opts downloadOptions, args []string) error {
	ids, err := parseIDs(args[:1])
	if err != nil {
		return err
	}
	id := ids[0]
	if opts.attempt < 0 {
		return usagef("--attempt %d: want 1 or more", opts.attempt)
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	var want []wanted
	if names := args[1:]; len(names) > 0 {
		seen := map[string]bool{}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				want = append(want, wanted{name: n, attempt: opts.attempt, size: -1})
			}
		}
	} else {
		arts, err := s.ListArtifacts(ctx, id)
		if err != nil {
			return err
		}
		want = pickArtifacts(arts, opts.attempt)
		if len(want) == 0 {
			gopts.notef("task %d has no artifacts", id)
			return nil
		}
	}
	if st, err := os.Stat(opts.dir); err == nil && !st.IsDir() {
		return usagef("-o %s: is a file; artifacts go into a directory", opts.dir)
	}
	if err := os.MkdirAll(opts.dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	root, err := os.OpenRoot(opts.dir)
	if err != nil {
		return fmt.Errorf("open output directory: %w", err)
	}
	defer root.Close()
	if err := checkTargets(root, opts.dir, want, opts.force); err != nil {
		return err
	}

	var errs []error
	for _, w := range want {
		n, err := downloadArtifact(ctx, s, root, opts.dir, id, w, opts.force, gopts.progressTo())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("artifact %q: %w", w.name, err))
			continue
		}
		if gopts.quiet {
			continue
		}
		fmt.Fprintf(gopts.stdout, "downloaded %s (%s)\n", filepath.Join(opts.dir, filepath.FromSlash(w.name)), fmtSize(n))
	}
	return errors.Join(errs...)
}

// pickArtifacts chooses what to download from a listing: the given attempt's
// files, or for each name the latest attempt's copy.
func pickArtifacts(arts []tasks.Artifact, attempt int) []wanted {
	latest := map[string]int{} // name → index in out
	var out []wanted
	for _, a := range arts {
		if attempt > 0 && a.Attempt != attempt {
			continue
		}
		w := wanted{name: a.Name, attempt: a.Attempt, size: a.Size, sha256: strings.ToLower(a.SHA256)}
		if i, ok := latest[a.Name]; ok {
			if a.Attempt > out[i].attempt {
				out[i] = w
			}
			continue
		}
		latest[a.Name] = len(out)
		out = append(out, w)
	}
	return out
}

// checkTargets refuses, before anything is fetched, a download that
// would replace files in dir without force, or that cannot write where a
// directory, a file on the way or an escaping symbolic link stands: one
// that stopped at such a file halfway through would leave old and new
// files mixed. A name that is not a safe local path is left for the
// download loop to refuse, with the others still downloaded.
func checkTargets(root *os.Root, dir string, want []wanted, force bool) error {
	var exist []string
	var errs []error
	for _, w := range want {
		rel, err := localArtifactPath(w.name)
		if err != nil {
			continue
		}
		target := filepath.Join(dir, rel)
		st, err := root.Lstat(rel)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			errs = append(errs, fmt.Errorf("artifact %q: %w", w.name, err))
		case st.IsDir():
			errs = append(errs, tasks.Errorf(tasks.EConflict, "artifact %q: %s is a directory", w.name, target))
		case !force:
			exist = append(exist, target)
		}
	}
	switch {
	case len(exist) == 1:
		errs = append([]error{tasks.Errorf(tasks.EConflict, "%s exists; nothing was downloaded; use --force to replace it", exist[0])}, errs...)
	case len(exist) > 1:
		const shown = 3
		list := strings.Join(exist[:min(len(exist), shown)], ", ")
		if len(exist) > shown {
			list += fmt.Sprintf(" and %d more", len(exist)-shown)
		}
		errs = append([]error{tasks.Errorf(tasks.EConflict, "%d files exist (%s); nothing was downloaded; use --force to replace them", len(exist), list)}, errs...)
	}
	return errors.Join(errs...)
}

// localArtifactPath turns an artifact name, which a task chose, into a
// relative local path that stays inside the download directory. It refuses
// rather than repairs: a name that needs repair is not one a well-behaved
// task produces.
func localArtifactPath(name string) (string, error) {
	switch {
	case name == "":
		return "", tasks.Invalid("name", "is empty")
	case strings.IndexByte(name, 0) >= 0:
		return "", tasks.Invalid("name", "contains a NUL byte")
	case strings.HasPrefix(name, "/") || filepath.IsAbs(name) || filepath.VolumeName(name) != "":
		return "", tasks.Invalid("name", "%q is absolute", name)
	}
	// Split on the local separator too: on Windows `..\x` climbs as well.
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == filepath.Separator }) {
		if part == ".." {
			return "", tasks.Invalid("name", "%q has a \"..\" part", name)
		}
	}
	rel := filepath.FromSlash(name)
	if !filepath.IsLocal(rel) {
		return "", tasks.Invalid("name", "%q is not a path inside the directory", name)
	}
	clean := filepath.Clean(rel)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) || filepath.IsAbs(clean) {
		return "", tasks.Invalid("name", "%q is not a path inside the directory", name)
	}
	return clean, nil
}

// downloadArtifact fetches one artifact and writes it into root with
// download.save: checked against its size and SHA-256, renamed into place,
// every file operation confined to the download directory dir. force
// replaces an existing file.
func downloadArtifact(ctx context.Context, s *session, root *os.Root, dir string, id tasks.ID, w wanted, force bool, progressTo io.Writer) (int64, error) {
	rel, err := localArtifactPath(w.name)
	if err != nil {
		return 0, err
	}
	body, size, sum, err := s.DownloadArtifact(ctx, id, w.attempt, w.name)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if sum == "" {
		sum = w.sha256
	}
	if size < 0 {
		size = w.size
	}
	d := download{root: root, rel: rel, target: filepath.Join(dir, rel), force: force, label: w.name}
	return d.save(ctx, body, size, sum, progressTo)
}

type artifactsDeleteOptions struct {
	attempt int
	all     bool
}

func newClientArtifactsDeleteCmd(gopts *clientOptions) *cobra.Command {
	var opts artifactsDeleteOptions
	cmd := &cobra.Command{
		Use:   "delete ID [NAME...]",
		Short: "Delete a task's artifacts to free its group's quota",
		Long: `Delete artifacts of a task that has ended: the NAMEs given, or with --all
every one; of every attempt, or of the one --attempt names. The group's
storage usage drops by their sizes. A task still running is refused, as it
may still be uploading; tasks that take a deleted artifact as an input
cannot have it any more.

It prints what was deleted and the space freed (-o json: the deleted
records). A NAME that the task has no artifact of is reported as not found
once the others are deleted.`,
		Example: `  mito client tasks artifacts delete 42 big.bin plots/raw.csv
  mito client tasks artifacts delete 42 --attempt 1 --all
  mito client tasks artifacts delete 42 --all -o json`,
		Args: minArgs(1, "a task id and artifact names, or --all"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientArtifactsDelete(cmd.Context(), gopts, opts, args)
		},
	}
	cmd.Flags().IntVar(&opts.attempt, "attempt", 0, "only this `attempt` (default: every attempt)")
	cmd.Flags().BoolVar(&opts.all, "all", false, "delete every artifact (of --attempt, if given)")
	return cmd
}

func runClientArtifactsDelete(ctx context.Context, gopts *clientOptions, opts artifactsDeleteOptions, args []string) error {
	ids, err := parseIDs(args[:1])
	if err != nil {
		return err
	}
	id, names := ids[0], args[1:]
	switch {
	case opts.attempt < 0:
		return usagef("--attempt %d: want 1 or more", opts.attempt)
	case len(names) == 0 && !opts.all:
		return usagef("give the names of the artifacts to delete, or --all to delete every artifact of task %d", id)
	case len(names) > 0 && opts.all:
		return usagef("give artifact names or --all, not both")
	}
	// Names in the form the coordinator keeps, so that what it returns
	// can be matched against them.
	var clean []string
	seen := map[string]bool{}
	for _, n := range names {
		c, err := tasks.CleanPath("name", n)
		if err != nil {
			return flagValueError("NAME", err)
		}
		if !seen[c] {
			seen[c] = true
			clean = append(clean, c)
		}
	}
	s, err := gopts.connect(true)
	if err != nil {
		return err
	}
	deleted, err := s.DeleteArtifacts(ctx, id, opts.attempt, clean)
	if err != nil {
		return err
	}
	if deleted == nil {
		deleted = []tasks.Artifact{}
	}
	var freed int64
	for _, a := range deleted {
		freed += a.Size
		delete(seen, a.Name)
	}
	switch {
	case gopts.json():
		if err := writeJSON(gopts.stdout, deleted); err != nil {
			return err
		}
	case gopts.quiet:
	case len(deleted) == 0 && len(clean) == 0:
		gopts.notef("task %d has no artifacts%s to delete", id, ofAttempt(opts.attempt))
	case len(deleted) > 0:
		for _, a := range deleted {
			fmt.Fprintf(gopts.stdout, "deleted %s (attempt %d, %s)\n", a.Name, a.Attempt, fmtSize(a.Size))
		}
		fmt.Fprintf(gopts.stdout, "deleted %s of task %d, freeing %s\n", plural(len(deleted), "artifact"), id, fmtSize(freed))
	}
	var missing []string
	for _, n := range clean {
		if seen[n] {
			missing = append(missing, strconv.Quote(n))
		}
	}
	switch {
	case len(missing) == 1:
		return tasks.Errorf(tasks.ENotFound, "task %d has no artifact %s%s", id, missing[0], ofAttempt(opts.attempt))
	case len(missing) > 1:
		return tasks.Errorf(tasks.ENotFound, "task %d has no artifacts %s%s", id, strings.Join(missing, ", "), ofAttempt(opts.attempt))
	}
	return nil
}

// ofAttempt says which attempt a message is about: none for 0, every
// attempt.
func ofAttempt(attempt int) string {
	if attempt == 0 {
		return ""
	}
	return fmt.Sprintf(" of attempt %d", attempt)
}

// fmtSize prints a byte count for people.
func fmtSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
