package tasks

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults and limits of a task spec. They are the API's contract: the
// coordinator applies them to every submission, whatever client sent it.
const (
	DefaultTimeout     = time.Hour
	MaxTimeout         = 30 * 24 * time.Hour
	DefaultMaxAttempts = 3
	MaxMaxAttempts     = 100
	// MaxSpecBytes bounds argv, shell script, env and labels together, so a
	// single task cannot fill the store.
	MaxSpecBytes = 4 << 20
	MaxTags      = 64
	MaxLabels    = 256
)

// nameRE is the shape of user, group, host and tag names: short, printable,
// safe in URLs, file names and shell words.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)

// envNameRE is the portable shape of an environment variable name, which
// every shell can set and read.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidEnvName reports whether s can name an environment variable.
func ValidEnvName(s string) bool { return envNameRE.MatchString(s) }

// FormatDuration writes d for people: whole days as "30d", the rest as
// Go does ("1h30m0s").
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// ValidName checks a user, group, host or tag name and returns an EInvalid
// error naming field when it is not one.
func ValidName(field, s string) error {
	if !nameRE.MatchString(s) {
		return Invalid(field, "%q is not a valid name (1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit)", s)
	}
	return nil
}

// Duration is a time.Duration that travels as a Go duration string ("90s",
// "10m", "1h30m") in JSON and YAML, so API payloads stay readable.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "10m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts a duration string, or a number of seconds.
// A bad value is reported as a *json.UnmarshalTypeError, which
// encoding/json fills with the name of the field, so that an API error can
// say which field holds it.
func (d *Duration) UnmarshalJSON(b []byte) error {
	bad := &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[Duration]()}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return bad
		}
		v, ok := floatDuration(secs, time.Second)
		if !ok {
			return bad
		}
		*d = Duration(v)
		return nil
	}
	v, err := ParseDuration(s)
	if err != nil {
		return bad
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses "10m", "1h30m", "2d" or a bare number of seconds.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	bad := fmt.Errorf("invalid duration %q (want e.g. 90s, 10m, 1h30m, 2d)", s)
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if v, ok := floatDuration(n, time.Second); ok {
			return v, nil
		}
		return 0, bad
	}
	if strings.HasSuffix(s, "d") {
		if n, err := strconv.ParseFloat(strings.TrimSuffix(s, "d"), 64); err == nil {
			if v, ok := floatDuration(n, 24*time.Hour); ok {
				return v, nil
			}
			return 0, bad
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, bad
	}
	return v, nil
}

// floatDuration returns n units as a Duration. It refuses NaN, infinities
// and values past the Duration range, which a plain conversion would turn
// into an arbitrary, platform-dependent value ("inf" became -292 years).
func floatDuration(n float64, unit time.Duration) (time.Duration, bool) {
	v := n * float64(unit)
	if math.IsNaN(v) || v >= math.MaxInt64 || v < math.MinInt64 {
		return 0, false
	}
	return time.Duration(v), true
}

// Spec is what a user asks to run: the command and the conditions under
// which it may run. It is immutable once submitted.
type Spec struct {
	// Group owns the task; its members' roles decide who may see and change it.
	Group string `json:"group"`
	// Command is the argv, run without a shell. Exactly one of Command and
	// Shell is set.
	Command []string `json:"command,omitempty"`
	// Shell is a script run by /bin/sh -c.
	Shell string `json:"shell,omitempty"`
	// Env is added to the task's environment, after the host's.
	Env map[string]string `json:"env,omitempty"`
	// Timeout bounds the run; past it the task's process group is killed and
	// the task ends timed_out. Zero means DefaultTimeout.
	Timeout Duration `json:"timeout,omitempty"`
	// Priority orders the queue: higher runs first, then older.
	Priority int32 `json:"priority,omitempty"`
	// Tags are requirements: a host may run the task when Tags ⊆ host tags.
	Tags []string `json:"tags,omitempty"`
	// Labels are free metadata for queries; they never affect scheduling.
	Labels []string `json:"labels,omitempty"`
	// MaxAttempts bounds how often the task is started when hosts are lost.
	// Zero means DefaultMaxAttempts.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Inputs are fetched into the work directory before the command
	// starts; a missing one fails the attempt with an error naming it.
	Inputs []Input `json:"inputs,omitempty"`
}

// Normalize fills defaults, sorts and de-duplicates tags and labels, and
// validates the spec. It returns an EInvalid *Error naming the first bad
// field. Tags are sorted so that equal requirement sets compare equal.
func (s *Spec) Normalize() error {
	if s.Group == "" {
		return Invalid("group", "is required")
	}
	if err := ValidName("group", s.Group); err != nil {
		return err
	}
	switch {
	case len(s.Command) == 0 && s.Shell == "":
		return Invalid("command", "is empty: give a command or a shell script")
	case len(s.Command) > 0 && s.Shell != "":
		return Invalid("command", "give either a command or a shell script, not both")
	case len(s.Command) > 0 && s.Command[0] == "":
		return Invalid("command[0]", "program name is empty")
	}
	size := len(s.Shell)
	for i, a := range s.Command {
		if strings.IndexByte(a, 0) >= 0 {
			return Invalid(fmt.Sprintf("command[%d]", i), "contains a NUL byte")
		}
		size += len(a)
	}
	if strings.IndexByte(s.Shell, 0) >= 0 {
		return Invalid("shell", "contains a NUL byte")
	}
	for k, v := range s.Env {
		if !ValidEnvName(k) {
			return Invalid("env", "invalid variable name %q (want letters, digits and '_', not starting with a digit)", k)
		}
		if strings.HasPrefix(k, "MITO_") {
			return Invalid("env", "%s: names starting with MITO_ are reserved", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return Invalid("env", "%s: value contains a NUL byte", k)
		}
		size += len(k) + len(v)
	}
	switch t := time.Duration(s.Timeout); {
	case t < 0:
		return Invalid("timeout", "must be positive, got %s", t)
	case t == 0:
		s.Timeout = Duration(DefaultTimeout)
	case t > MaxTimeout:
		return Invalid("timeout", "%s is over the limit of %s", FormatDuration(t), FormatDuration(MaxTimeout))
	case t < time.Second:
		return Invalid("timeout", "%s is under the minimum of 1s", t)
	}
	switch {
	case s.MaxAttempts < 0:
		return Invalid("max_attempts", "must be positive, got %d", s.MaxAttempts)
	case s.MaxAttempts == 0:
		s.MaxAttempts = DefaultMaxAttempts
	case s.MaxAttempts > MaxMaxAttempts:
		return Invalid("max_attempts", "%d is over the limit of %d", s.MaxAttempts, MaxMaxAttempts)
	}
	var err error
	if s.Tags, err = normalizeSet("tags", s.Tags, MaxTags, true); err != nil {
		return err
	}
	if s.Labels, err = normalizeSet("labels", s.Labels, MaxLabels, false); err != nil {
		return err
	}
	for _, l := range s.Labels {
		size += len(l)
	}
	if err := normalizeInputs(s.Inputs); err != nil {
		return err
	}
	for _, in := range s.Inputs {
		size += len(in.Attachment) + len(in.Artifact) + len(in.Path)
	}
	if size > MaxSpecBytes {
		return &Error{Code: ETooLarge, Field: "command", Message: fmt.Sprintf("command: command, shell, env, labels and inputs together are %d bytes, over the limit of %d", size, MaxSpecBytes)}
	}
	return nil
}

// normalizeSet sorts and de-duplicates a tag or label list. Tags must be
// names; labels may hold any text but NUL.
func normalizeSet(field string, in []string, max int, names bool) ([]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > max {
		return nil, Invalid(field, "%d given, over the limit of %d", len(in), max)
	}
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, v := range in {
		switch {
		case names:
			if err := ValidName(field, v); err != nil {
				return nil, err
			}
		case v == "":
			return nil, Invalid(field, "empty label")
		case strings.IndexByte(v, 0) >= 0:
			return nil, Invalid(field, "label contains a NUL byte")
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Argv returns the argv to execute: Command, or /bin/sh -c Shell.
func (s *Spec) Argv() []string {
	if s.Shell != "" {
		return []string{"/bin/sh", "-c", s.Shell}
	}
	return s.Command
}

// TagsSatisfied reports whether a host with hostTags may run a task that
// requires want: every wanted tag must be among the host's.
func TagsSatisfied(want, hostTags []string) bool {
	have := make(map[string]bool, len(hostTags))
	for _, t := range hostTags {
		have[t] = true
	}
	for _, t := range want {
		if !have[t] {
			return false
		}
	}
	return true
}
