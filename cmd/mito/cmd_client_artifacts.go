package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/tasks"
)

func newClientArtifactsCmd(gopts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifacts",
		Short: "List and download the files tasks wrote",
		Long: `A task's artifacts are the files it wrote under $MITO_OUTPUT_DIR; they are
kept, per attempt, after the task ends.`,
		Example: `  mito client tasks artifacts list 42
  mito client tasks artifacts download 42 -o results/42`,
	}
	cmd.AddCommand(newClientArtifactsListCmd(gopts), newClientArtifactsDownloadCmd(gopts))
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
a path through a symbolic link that leads out of it. On a terminal, each file of 1 MiB or more shows a progress line on
stderr; -q hides it. Each file is written
under a temporary name, checked against the SHA-256 the coordinator
recorded, and only then renamed into place; an existing file of the same
name is replaced.`,
		Example: `  mito client tasks artifacts download 42
  mito client tasks artifacts download 42 -o results/42 metrics.json plots/loss.png
  mito client tasks artifacts download 42 --attempt 1`,
		Args: minArgs(1, "a task id and optionally artifact names"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientArtifactsDownload(cmd.Context(), gopts, opts, args)
		},
	}
	// Named "output" on purpose: it shadows the global -o/--output, which
	// this command has no use for, and frees -o for the directory.
	cmd.Flags().StringVarP(&opts.dir, "output", "o", ".", "write into `DIR`")
	cmd.Flags().IntVar(&opts.attempt, "attempt", 0, "download from this `attempt` (default: the latest with each name)")
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
		for _, n := range names {
			want = append(want, wanted{name: n, attempt: opts.attempt, size: -1})
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
	if err := os.MkdirAll(opts.dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	root, err := os.OpenRoot(opts.dir)
	if err != nil {
		return fmt.Errorf("open output directory: %w", err)
	}
	defer root.Close()

	// A progress line per large file, on a terminal only.
	var progressTo io.Writer
	if !gopts.quiet && isTerminal(gopts.stderr) {
		progressTo = gopts.stderr
	}
	var errs []error
	for _, w := range want {
		n, err := downloadArtifact(ctx, s, root, id, w, progressTo)
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

// downloadArtifact streams one artifact to a temporary file in root,
// checks its size and SHA-256, and renames it into place. root confines
// every file operation, symbolic links included, to the download directory.
// With progressTo set, a file of 1 MiB or more shows a progress line there.
func downloadArtifact(ctx context.Context, s *session, root *os.Root, id tasks.ID, w wanted, progressTo io.Writer) (int64, error) {
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
	if sum == "" {
		return 0, fmt.Errorf("the coordinator sent no SHA-256 to check the download against")
	}
	if size < 0 {
		size = w.size
	}

	dir := filepath.Dir(rel)
	if dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("create directory: %w", err)
		}
	}
	tmp := filepath.Join(dir, "."+filepath.Base(rel)+".mito-"+rand.Text()[:12]+".tmp")
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, fmt.Errorf("create file: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = root.Remove(tmp)
		}
	}()
	h := sha256.New()
	dst := io.MultiWriter(f, h)
	prog := startTransferProgress(progressTo, w.name, size)
	if prog != nil {
		dst = io.MultiWriter(f, h, prog)
	}
	n, err := io.Copy(dst, body)
	if prog != nil {
		prog.Finish(err == nil)
	}
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("download: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("write file: %w", err)
	}
	if size >= 0 && n != size {
		return 0, fmt.Errorf("got %d bytes; the coordinator announced %d", n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return 0, fmt.Errorf("SHA-256 mismatch: got %s; the coordinator recorded %s", got, sum)
	}
	if err := root.Rename(tmp, rel); err != nil {
		return 0, fmt.Errorf("move into place: %w", err)
	}
	renamed = true
	return n, nil
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
