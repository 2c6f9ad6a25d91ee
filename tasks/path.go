package tasks

import (
	"strings"
	"unicode/utf8"
)

// MaxPathLen bounds artifact names, attachment keys and input paths, well
// under the path limits of file systems and S3 (1024 bytes).
const MaxPathLen = 1024

// CleanPath checks a relative path sent by a shim or a user (an artifact
// name, an attachment key, where an input lands in the work directory) and
// returns it in canonical form: "." segments dropped, '/' separators. It
// refuses what could point anywhere else or be read two ways: absolute
// paths, "..", empty segments, NUL, backslashes, control characters,
// invalid UTF-8 and paths over MaxPathLen bytes. The error is EInvalid and
// names field.
func CleanPath(field, p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return "", Invalid(field, "%q: must be a relative path", p)
	}
	segs := strings.Split(p, "/")
	kept := segs[:0]
	for _, s := range segs {
		if s != "." {
			kept = append(kept, s)
		}
	}
	clean := strings.Join(kept, "/")
	if clean == "" {
		return "", Invalid(field, "%q: is empty", p)
	}
	if msg := PathProblem(p); msg != "" && msg != dotSegment {
		return "", Invalid(field, "%q: %s", p, msg)
	}
	if msg := PathProblem(clean); msg != "" {
		return "", Invalid(field, "%q: %s", p, msg)
	}
	return clean, nil
}

const dotSegment = `has a "." segment`

// PathProblem returns why p is not a safe, canonical relative slash path,
// or "" when it is one: such a path joined to a root never leaves it.
func PathProblem(p string) string {
	switch {
	case p == "":
		return "is empty"
	case len(p) > MaxPathLen:
		return "is over the limit of 1024 bytes"
	case !utf8.ValidString(p):
		return "is not valid UTF-8"
	case strings.HasPrefix(p, "/"):
		return "must be a relative path"
	}
	for _, r := range p {
		switch {
		case r == 0:
			return "contains a NUL byte"
		case r == '\\':
			return "contains a backslash"
		case r < 0x20 || r == 0x7f:
			return "contains a control character"
		}
	}
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "":
			return "has an empty segment"
		case ".":
			return dotSegment
		case "..":
			return `has a ".." segment`
		}
	}
	return ""
}
