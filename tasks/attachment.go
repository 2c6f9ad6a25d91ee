package tasks

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Attachment is a file kept for a group, which its tasks take as input:
// a data set, a prebuilt binary, a configuration. Key is a relative slash
// path, unique in the group; uploading to a key that exists replaces the
// file.
type Attachment struct {
	Group string `json:"group"`
	Key   string `json:"key"`
	// Object is the artifact store key holding the bytes. Each upload
	// writes a new object, so that a refused or failed replacement leaves
	// the old file whole; it is never shown to users.
	Object    string    `json:"-"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	Creator   string    `json:"creator"`
	CreatedAt time.Time `json:"created_at"`
}

// OutputDirName is the task's output directory ($MITO_OUTPUT_DIR) in its
// work directory: inputs may not land there, or they would come back as
// artifacts.
const OutputDirName = "out"

// MaxInputs bounds how many inputs a task may take.
const MaxInputs = 64

// Input is a file a task needs in its work directory before its command
// starts: a group attachment, or an artifact of another task. Exactly one
// of Attachment and Task is set. A task that takes another's artifact is
// not claimed while that source is queued or running, so that a pipeline
// can be submitted at once and run in order; once the source has ended,
// the task runs, and its fetch fails naming the input unless the source
// succeeded with that artifact.
type Input struct {
	// Attachment is the key of an attachment of the task's own group.
	Attachment string `json:"attachment,omitempty"`
	// Task and Artifact name another task's artifact, of the attempt that
	// succeeded: a task that did not succeed gives no inputs.
	Task     ID     `json:"task,omitempty"`
	Artifact string `json:"artifact,omitempty"`
	// Path is where the file lands, relative to the work directory. Empty
	// means the attachment's key or the artifact's name.
	Path string `json:"path,omitempty"`
}

// String writes the input as the client's --input flag takes it, so that
// errors name an input the way the user gave it.
func (in Input) String() string {
	var s string
	if in.Attachment != "" {
		s = "attachment:" + in.Attachment
	} else {
		s = fmt.Sprintf("task:%d/%s", in.Task, in.Artifact)
	}
	if in.Path != "" && in.Path != in.Attachment && in.Path != in.Artifact {
		s += "=" + in.Path
	}
	return s
}

// ParseInput parses "attachment:KEY[=PATH]" or "task:ID/NAME[=PATH]", the
// client's --input flag, and returns the input normalized.
func ParseInput(s string) (Input, error) {
	src, path, hasPath := strings.Cut(s, "=")
	if hasPath && path == "" {
		return Input{}, Invalid("inputs", "%q: PATH after '=' is empty (drop the '=' for the default path)", s)
	}
	var in Input
	switch kind, ref, ok := strings.Cut(src, ":"); {
	case !ok:
		return Input{}, Invalid("inputs", "%q: want attachment:KEY[=PATH] or task:ID/NAME[=PATH]", s)
	case kind == "attachment":
		if ref == "" {
			return Input{}, Invalid("inputs", "%q: KEY after attachment: is empty", s)
		}
		in.Attachment = ref
	case kind == "task":
		idStr, name, ok := strings.Cut(ref, "/")
		id, err := strconv.ParseInt(idStr, 10, 64)
		if !ok || err != nil || id <= 0 {
			return Input{}, Invalid("inputs", "%q: want task:ID/NAME with a task number and an artifact name", s)
		}
		if name == "" {
			return Input{}, Invalid("inputs", "%q: the artifact NAME after task:%d/ is empty", s, id)
		}
		in.Task, in.Artifact = ID(id), name
	default:
		return Input{}, Invalid("inputs", "%q: unknown source %q (want attachment or task)", s, kind)
	}
	in.Path = path
	if err := in.normalize("inputs"); err != nil {
		return Input{}, err
	}
	return in, nil
}

// normalize checks one input and sets its default Path.
func (in *Input) normalize(field string) error {
	var err error
	switch {
	case in.Attachment != "" && (in.Task != 0 || in.Artifact != ""):
		return Invalid(field, "give either an attachment or a task's artifact, not both")
	case in.Attachment != "":
		if in.Attachment, err = CleanPath(field+".attachment", in.Attachment); err != nil {
			return err
		}
		if in.Path == "" {
			in.Path = in.Attachment
		}
	case in.Task > 0:
		if in.Artifact, err = CleanPath(field+".artifact", in.Artifact); err != nil {
			return err
		}
		if in.Path == "" {
			in.Path = in.Artifact
		}
	case in.Task < 0:
		return Invalid(field+".task", "must be a positive task ID, got %d", in.Task)
	default:
		return Invalid(field, "names no attachment and no task")
	}
	in.Path, err = CleanPath(field+".path", in.Path)
	return err
}

// normalizeInputs checks a spec's inputs: each valid, at most MaxInputs,
// and no two landing on the same path or one inside another.
func normalizeInputs(ins []Input) error {
	if len(ins) > MaxInputs {
		return Invalid("inputs", "%d given, over the limit of %d", len(ins), MaxInputs)
	}
	seen := make(map[string]string, len(ins))
	for i := range ins {
		if err := ins[i].normalize(fmt.Sprintf("inputs[%d]", i)); err != nil {
			return err
		}
		p := ins[i].Path
		if p == OutputDirName || strings.HasPrefix(p, OutputDirName+"/") {
			return Invalid(fmt.Sprintf("inputs[%d].path", i), "%s: %s is the task's output directory ($MITO_OUTPUT_DIR); give the input another path with =PATH", ins[i], OutputDirName)
		}
		if other, ok := seen[p]; ok {
			return Invalid(fmt.Sprintf("inputs[%d].path", i), "%s lands on %s, as %s does", ins[i], p, other)
		}
		seen[p] = ins[i].String()
	}
	for i := range ins {
		p := ins[i].Path
		for dir := parentDir(p); dir != ""; dir = parentDir(dir) {
			if other, ok := seen[dir]; ok {
				return Invalid(fmt.Sprintf("inputs[%d].path", i), "%s lands inside %s, which %s writes as a file", ins[i], dir, other)
			}
		}
	}
	return nil
}

// parentDir returns the slash path's directory, or "" at the top.
func parentDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ""
	}
	return p[:i]
}
