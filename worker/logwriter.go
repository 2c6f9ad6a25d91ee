package worker

import "io"

// LogWriter returns a writer for the worker's log that passes writes on to
// w and never fails. The shim logs to its stderr, which sshd closes when the
// SSH session ends: from then on every write fails with EPIPE, and the log
// lines are lost, but nothing may stop on that error: the shutdown that
// follows must still kill the tasks and remove their directories.
//
// The process must also handle SIGPIPE (signal.Notify, not signal.Ignore:
// an ignored signal is inherited across exec, by the tasks), or the Go
// runtime kills it on its first write to a closed stdout or stderr.
func LogWriter(w io.Writer) io.Writer { return logWriter{w} }

type logWriter struct{ w io.Writer }

func (l logWriter) Write(p []byte) (int, error) {
	_, _ = l.w.Write(p)
	return len(p), nil
}
