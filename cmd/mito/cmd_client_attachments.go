package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
)

// attachmentsOptions are the flags all attachments commands share.
type attachmentsOptions struct {
	group string
}

func newClientAttachmentsCmd(gopts *clientOptions) *cobra.Command {
	var opts attachmentsOptions
	cmd := &cobra.Command{
		Use:     "attachments",
		Aliases: []string{"attachment"},
		Short:   "Keep files in a group for its tasks to take as inputs",
		Long: `Attachments are files a group keeps on the coordinator (data sets, prebuilt
binaries, configuration) for its tasks to take as inputs: a task submitted
with --input attachment:KEY finds the file in its work directory when its
command starts.

KEY is a relative path such as data/train.csv. Uploading to a KEY that
exists replaces the file, but only once the upload is complete: until then
tasks get the old file, and a failed upload leaves it as it was.

Attachments and the artifacts of the group's tasks count against the
group's storage quota, if it has one ('mito client groups get' shows it);
an upload that would go over it is refused.

-g names the group; by default it is your personal group. Reading needs the
read role in the group; uploading and deleting need write.`,
		Example: `  mito client attachments upload train.csv data/train.csv -g netlab
  mito client attachments list -g netlab --prefix data/
  mito client attachments download data/train.csv -g netlab -o /tmp/train.csv
  mito client attachments delete data/train.csv -g netlab`,
	}
	cmd.PersistentFlags().StringVarP(&opts.group, "group", "g", "", "the `group` that keeps the attachments (default: your personal group)")
	cmd.AddCommand(
		newClientAttachmentsUploadCmd(gopts, &opts),
		newClientAttachmentsListCmd(gopts, &opts),
		newClientAttachmentsDownloadCmd(gopts, &opts),
		newClientAttachmentsDeleteCmd(gopts, &opts),
	)
	return cmd
}

// groupOf returns the group the command is about: -g, else the user's
// personal group, as submit picks it.
// connect opens a session to the coordinator and resolves the group the
// command works on.
func (o *attachmentsOptions) connect(ctx context.Context, gopts *clientOptions) (*session, string, error) {
	s, err := gopts.connect(true)
	if err != nil {
		return nil, "", err
	}
	group, err := o.groupOf(ctx, s)
	if err != nil {
		return nil, "", err
	}
	return s, group, nil
}

func (o *attachmentsOptions) groupOf(ctx context.Context, s *session) (string, error) {
	if o.group == "" {
		return s.userName(ctx)
	}
	return o.group, nil
}

// checkGroup refuses a -g that is no group name before anything is sent.
func (o *attachmentsOptions) checkGroup() error {
	if o.group == "" {
		return nil
	}
	if err := tasks.ValidName("group", o.group); err != nil {
		return flagValueError("-g", err)
	}
	return nil
}

// progressTo returns where progress lines go: stderr when it is a
// terminal, and nowhere with -q.
func (o *clientOptions) progressTo() io.Writer {
	if o.quiet || !isTerminal(o.stderr) {
		return nil
	}
	return o.stderr
}

func newClientAttachmentsUploadCmd(gopts *clientOptions, opts *attachmentsOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "upload FILE [KEY]",
		Short: "Upload a file as an attachment of a group",
		Long: `Upload FILE as the attachment KEY of the group; KEY defaults to the file's
base name. An attachment of that KEY is replaced once the upload is
complete.

On a terminal, a file of 1 MiB or more shows a progress line on stderr; -q
hides it and prints only the key.`,
		Example: `  mito client attachments upload train.csv
  mito client attachments upload ./build/sim data/bin/sim -g netlab
  mito client attachments upload big.tar -g netlab -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("want a file and optionally a key, got %d argument(s)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientAttachmentsUpload(cmd.Context(), gopts, opts, args)
		},
	}
}

func runClientAttachmentsUpload(ctx context.Context, gopts *clientOptions, opts *attachmentsOptions, args []string) error {
	if err := opts.checkGroup(); err != nil {
		return err
	}
	file, key := args[0], filepath.Base(args[0])
	if len(args) == 2 {
		key = args[1]
	}
	key, err := tasks.CleanPath("key", key)
	if err != nil {
		return flagValueError("KEY", err)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return usagef("%s is not a regular file", file)
	}
	s, group, err := opts.connect(ctx, gopts)
	if err != nil {
		return err
	}
	var body io.Reader = f
	prog := startTransferProgress(gopts.progressTo(), key, st.Size())
	if prog != nil {
		body = io.TeeReader(f, prog)
	}
	a, err := s.UploadAttachment(ctx, group, key, body, st.Size())
	if prog != nil {
		prog.Finish(err == nil)
	}
	if err != nil {
		return err
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, a)
	case gopts.quiet:
		fmt.Fprintln(gopts.stdout, a.Key)
	default:
		fmt.Fprintf(gopts.stdout, "uploaded %s to group %s as %s (%s, sha256 %.12s)\n", file, a.Group, a.Key, fmtSize(a.Size), a.SHA256)
	}
	return nil
}

func newClientAttachmentsListCmd(gopts *clientOptions, opts *attachmentsOptions) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List a group's attachments",
		Long:  `List a group's attachments, ordered by key, with their sizes and SHA-256.`,
		Example: `  mito client attachments list
  mito client attachments list -g netlab --prefix data/ -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientAttachmentsList(cmd.Context(), gopts, opts, prefix)
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys that start with `P`")
	return cmd
}

func runClientAttachmentsList(ctx context.Context, gopts *clientOptions, opts *attachmentsOptions, prefix string) error {
	if err := opts.checkGroup(); err != nil {
		return err
	}
	s, group, err := opts.connect(ctx, gopts)
	if err != nil {
		return err
	}
	// The coordinator sends a page at a time; the command lists them all.
	as := []tasks.Attachment{}
	for after := ""; ; {
		page, next, err := s.ListAttachments(ctx, group, client.ListAttachmentsOptions{Prefix: prefix, After: after})
		if err != nil {
			return err
		}
		as = append(as, page...)
		if next == "" || next <= after { // a cursor that does not advance would loop
			break
		}
		after = next
	}
	switch {
	case gopts.json():
		return writeJSON(gopts.stdout, as)
	case gopts.quiet:
		for _, a := range as {
			fmt.Fprintln(gopts.stdout, a.Key)
		}
		return nil
	case len(as) == 0 && prefix != "":
		gopts.notef("group %s has no attachments under %q", group, prefix)
		return nil
	case len(as) == 0:
		gopts.notef("group %s has no attachments", group)
		return nil
	}
	tw := newTable(gopts.stdout)
	fmt.Fprintln(tw, "KEY\tSIZE\tSHA256\tCREATED\tCREATOR")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%.12s\t%s\t%s\n", a.Key, fmtSize(a.Size), a.SHA256, fmtTime(a.CreatedAt), orDash(a.Creator))
	}
	return tw.Flush()
}

type attachmentDownloadOptions struct {
	output string
	force  bool
}

func newClientAttachmentsDownloadCmd(gopts *clientOptions, opts *attachmentsOptions) *cobra.Command {
	var dopts attachmentDownloadOptions
	cmd := &cobra.Command{
		Use:   "download KEY",
		Short: "Download an attachment to a file",
		Long: `Download the attachment KEY to PATH (-o), or to the key's base name in the
current directory; a PATH that is a directory gets the key's base name in
it. On this command -o names the file, not the output format.

The file is written under a temporary name next to it, checked against the
SHA-256 the coordinator recorded, and only then renamed into place, so an
interrupted or corrupted download leaves nothing behind. An existing file
is not replaced unless --force is given. On a terminal, a file of 1 MiB or
more shows a progress line on stderr; -q hides it.`,
		Example: `  mito client attachments download data/train.csv
  mito client attachments download data/train.csv -g netlab -o /tmp/train.csv
  mito client attachments download data/train.csv -o data/ --force`,
		Args: exactArgs(1, "an attachment key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientAttachmentsDownload(cmd.Context(), gopts, opts, dopts, args[0])
		},
	}
	// Named "output" on purpose, as for artifacts download: it shadows
	// the global -o/--output, which this command has no use for.
	cmd.Flags().StringVarP(&dopts.output, "output", "o", "", "write to `PATH` (default: the key's base name in the current directory)")
	cmd.Flags().BoolVarP(&dopts.force, "force", "f", false, "replace an existing file")
	return cmd
}

// downloadTarget returns the directory and the file name a download of
// key goes to, given -o.
func downloadTarget(output, key string) (dir, name string, err error) {
	base := path.Base(key)
	switch {
	case output == "":
		return ".", base, nil
	case strings.HasSuffix(output, string(filepath.Separator)) || strings.HasSuffix(output, "/"):
		return filepath.Clean(output), base, nil
	}
	if st, err := os.Stat(output); err == nil && st.IsDir() {
		return output, base, nil
	}
	name = filepath.Base(output)
	if name == "." || name == ".." || name == string(filepath.Separator) {
		return "", "", usagef("-o %q: want a file or directory path", output)
	}
	return filepath.Dir(output), name, nil
}

func runClientAttachmentsDownload(ctx context.Context, gopts *clientOptions, opts *attachmentsOptions, dopts attachmentDownloadOptions, key string) error {
	if err := opts.checkGroup(); err != nil {
		return err
	}
	key, err := tasks.CleanPath("key", key)
	if err != nil {
		return flagValueError("KEY", err)
	}
	dir, name, err := downloadTarget(dopts.output, key)
	if err != nil {
		return err
	}
	if strings.HasSuffix(dopts.output, "/") || strings.HasSuffix(dopts.output, string(filepath.Separator)) {
		// "-o new/" names a directory, made if missing, as the artifact
		// download's -o is.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create output directory: %w", err)
		}
	}
	target := filepath.Join(dir, name)
	// Every file operation goes through root, so that a symbolic link
	// cannot lead a write out of the directory.
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open output directory: %w", err)
	}
	defer root.Close()
	if err := checkReplace(root, name, target, dopts.force); err != nil {
		return err
	}
	s, group, err := opts.connect(ctx, gopts)
	if err != nil {
		return err
	}
	body, size, sum, err := s.DownloadAttachment(ctx, group, key)
	if err != nil {
		return err
	}
	defer body.Close()
	d := download{root: root, rel: name, target: target, force: dopts.force, label: key}
	n, err := d.save(ctx, body, size, sum, gopts.progressTo())
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("attachment %s: %w", key, err)
	}
	if !gopts.quiet {
		fmt.Fprintf(gopts.stdout, "downloaded %s to %s (%s)\n", key, target, fmtSize(n))
	}
	return nil
}

func newClientAttachmentsDeleteCmd(gopts *clientOptions, opts *attachmentsOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "delete KEY...",
		Short: "Delete attachments of a group",
		Long: `Delete attachments; the group's storage usage drops by their sizes. Tasks
already submitted that take one as an input fail when they start.`,
		Example: `  mito client attachments delete data/train.csv -g netlab
  mito client attachments list -q --prefix old/ | xargs -d '\n' mito client attachments delete`,
		Args: minArgs(1, "one or more attachment keys"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClientAttachmentsDelete(cmd.Context(), gopts, opts, args)
		},
	}
}

func runClientAttachmentsDelete(ctx context.Context, gopts *clientOptions, opts *attachmentsOptions, keys []string) error {
	if err := opts.checkGroup(); err != nil {
		return err
	}
	for i, k := range keys {
		clean, err := tasks.CleanPath("key", k)
		if err != nil {
			return flagValueError("KEY", err)
		}
		keys[i] = clean
	}
	s, group, err := opts.connect(ctx, gopts)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range keys {
		if err := s.DeleteAttachment(ctx, group, k); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, namedError("attachment", k, err))
			continue
		}
		if !gopts.quiet && !gopts.json() {
			fmt.Fprintf(gopts.stdout, "deleted %s from group %s\n", k, group)
		}
	}
	return errors.Join(errs...)
}
