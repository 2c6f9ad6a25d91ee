package inventory

import (
	"strconv"
	"strings"

	"github.com/mitolab/mito/tasks"
)

// FieldError is one problem in an inventory file. It names the file, the
// line and the field so that whoever edits the file can go straight to it.
type FieldError struct {
	File string `json:"file"`
	Line int    `json:"line"`
	// Field is the path of the offending field, such as "hosts[2].slots";
	// it is empty for problems with the file as a whole.
	Field string `json:"field,omitempty"`
	Msg   string `json:"message"`
}

// Error formats the problem as "lab.yaml:12: hosts[2].slots: must be at
// least 1, got 0", the shape editors and CI logs turn into links.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap gives the problem an EInvalid code, so that errors.Is(err,
// tasks.ErrInvalid) holds and the CLI and API treat a bad inventory as bad
// input rather than as an internal failure.
func (e *FieldError) Unwrap() error {
	return &tasks.Error{Code: tasks.EInvalid, Field: e.Field, Message: e.Error()}
}

// Errors is every problem found in an inventory, in line order. Parse
// returns all of them at once so that a user fixes a file in one pass
// instead of one error per run.
type Errors struct {
	List []*FieldError
}

// Error prints one problem per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, fe := range e.List {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes the items to errors.As and errors.Is.
func (e *Errors) Unwrap() []error {
	out := make([]error, len(e.List))
	for i, fe := range e.List {
		out[i] = fe
	}
	return out
}
