package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mitolab/mito/tasks"
)

// Exit codes. Scripts rely on them, so they only ever grow.
const (
	exitOK          = 0
	exitFailure     = 1 // an error, or (tasks wait) a task that did not succeed
	exitUsage       = 2 // bad flags or arguments
	exitNotFound    = 3
	exitAuth        = 4 // not logged in, bad credentials, or not allowed
	exitConflict    = 5
	exitUnavailable = 6 // the coordinator or a service cannot be reached
	exitTimeout     = 7 // (tasks wait) --timeout ran out before every task ended
	exitInterrupted = 130
)

// errTasksFailed is returned by commands that succeeded in talking to the
// coordinator but report a task that did not succeed; it prints nothing more.
var errTasksFailed = errors.New("one or more tasks did not succeed")

// usageError marks an error in how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// timeoutError is a command giving up after the --timeout it was given.
type timeoutError struct{ msg string }

func (e timeoutError) Error() string { return e.msg }

// exitCode prints err for people and maps it to the process exit code. It
// is the one place that knows both.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errTasksFailed) {
		return exitFailure
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "mito: interrupted")
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "mito: %v\n", err)
	var (
		ue usageError
		te timeoutError
	)
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &te):
		return exitTimeout
	case strings.HasPrefix(err.Error(), "unknown command "):
		// cobra's own, from cobra.NoArgs and the like.
		return exitUsage
	}
	switch tasks.ErrorCode(err) {
	case tasks.EInvalid, tasks.ETooLarge:
		return exitUsage
	case tasks.ENotFound:
		return exitNotFound
	case tasks.EUnauthorized, tasks.EForbidden:
		return exitAuth
	case tasks.EConflict, tasks.EStaleLease:
		return exitConflict
	case tasks.EUnavailable:
		return exitUnavailable
	}
	return exitFailure
}
