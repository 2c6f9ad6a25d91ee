package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// validSpec returns a spec that normalizes without error.
func validSpec() Spec {
	return Spec{Group: "ops", Command: []string{"echo", "hi"}}
}

func TestNormalizeDefaults(t *testing.T) {
	t.Parallel()
	s := validSpec()
	if err := s.Normalize(); err != nil {
		t.Fatalf("Normalize() = %v; want nil", err)
	}
	if got, want := time.Duration(s.Timeout), time.Hour; got != want {
		t.Errorf("Timeout = %s; want %s", got, want)
	}
	if got, want := s.MaxAttempts, 3; got != want {
		t.Errorf("MaxAttempts = %d; want %d", got, want)
	}

	// Set values are kept, not replaced by defaults.
	s = validSpec()
	s.Timeout = Duration(90 * time.Second)
	s.MaxAttempts = 1
	if err := s.Normalize(); err != nil {
		t.Fatalf("Normalize() = %v; want nil", err)
	}
	if got, want := time.Duration(s.Timeout), 90*time.Second; got != want {
		t.Errorf("Timeout = %s; want %s", got, want)
	}
	if got, want := s.MaxAttempts, 1; got != want {
		t.Errorf("MaxAttempts = %d; want %d", got, want)
	}
}

// names returns n distinct valid names with the given prefix.
func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

func TestNormalizeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Spec)
		field  string
		code   Code
	}{
		{"group missing", func(s *Spec) { s.Group = "" }, "group", EInvalid},
		{"group with space", func(s *Spec) { s.Group = "my group" }, "group", EInvalid},
		{"group with slash", func(s *Spec) { s.Group = "a/b" }, "group", EInvalid},
		{"group starting with dash", func(s *Spec) { s.Group = "-ops" }, "group", EInvalid},
		{"group too long", func(s *Spec) { s.Group = strings.Repeat("a", 65) }, "group", EInvalid},
		{"group trailing newline", func(s *Spec) { s.Group = "ops\n" }, "group", EInvalid},
		{"command empty", func(s *Spec) { s.Command = nil }, "command", EInvalid},
		{"command empty slice", func(s *Spec) { s.Command = []string{} }, "command", EInvalid},
		{"command and shell", func(s *Spec) { s.Shell = "echo hi" }, "command", EInvalid},
		{"one-word command and shell", func(s *Spec) { s.Command = []string{"true"}; s.Shell = "true" }, "command", EInvalid},
		{"empty program", func(s *Spec) { s.Command = []string{"", "x"} }, "command[0]", EInvalid},
		{"NUL in program", func(s *Spec) { s.Command = []string{"ec\x00ho"} }, "command[0]", EInvalid},
		{"NUL in argv", func(s *Spec) { s.Command = []string{"echo", "a\x00b"} }, "command[1]", EInvalid},
		{"NUL in shell", func(s *Spec) { s.Command = nil; s.Shell = "echo a\x00b" }, "shell", EInvalid},
		{"env key empty", func(s *Spec) { s.Env = map[string]string{"": "v"} }, "env", EInvalid},
		{"env key with =", func(s *Spec) { s.Env = map[string]string{"A=B": "v"} }, "env", EInvalid},
		{"env key with NUL", func(s *Spec) { s.Env = map[string]string{"A\x00": "v"} }, "env", EInvalid},
		{"env key MITO_ prefix", func(s *Spec) { s.Env = map[string]string{"MITO_TOKEN": "v"} }, "env", EInvalid},
		{"env NUL in value", func(s *Spec) { s.Env = map[string]string{"A": "x\x00y"} }, "env", EInvalid},
		{"timeout negative", func(s *Spec) { s.Timeout = Duration(-time.Second) }, "timeout", EInvalid},
		{"timeout under 1s", func(s *Spec) { s.Timeout = Duration(999 * time.Millisecond) }, "timeout", EInvalid},
		{"timeout 1ns", func(s *Spec) { s.Timeout = 1 }, "timeout", EInvalid},
		{"timeout over 30 days", func(s *Spec) { s.Timeout = Duration(30*24*time.Hour + time.Second) }, "timeout", EInvalid},
		{"max_attempts negative", func(s *Spec) { s.MaxAttempts = -1 }, "max_attempts", EInvalid},
		{"max_attempts over 100", func(s *Spec) { s.MaxAttempts = 101 }, "max_attempts", EInvalid},
		{"tag invalid name", func(s *Spec) { s.Tags = []string{"gpu", "has space"} }, "tags", EInvalid},
		{"tag empty", func(s *Spec) { s.Tags = []string{""} }, "tags", EInvalid},
		{"too many tags", func(s *Spec) { s.Tags = names("t", 65) }, "tags", EInvalid},
		{"label empty", func(s *Spec) { s.Labels = []string{"a", ""} }, "labels", EInvalid},
		{"label NUL", func(s *Spec) { s.Labels = []string{"a\x00b"} }, "labels", EInvalid},
		{"too many labels", func(s *Spec) { s.Labels = names("l", 257) }, "labels", EInvalid},
		{"shell over MaxSpecBytes", func(s *Spec) {
			s.Command = nil
			s.Shell = strings.Repeat("x", MaxSpecBytes+1)
		}, "command", ETooLarge},
		{"argv over MaxSpecBytes", func(s *Spec) {
			s.Command = []string{"echo", strings.Repeat("x", MaxSpecBytes/2), strings.Repeat("y", MaxSpecBytes/2)}
		}, "command", ETooLarge},
		{"env pushes over MaxSpecBytes", func(s *Spec) {
			s.Command = nil
			s.Shell = strings.Repeat("x", MaxSpecBytes-2)
			s.Env = map[string]string{"AB": "c"}
		}, "command", ETooLarge},
		{"labels push over MaxSpecBytes", func(s *Spec) {
			s.Command = nil
			s.Shell = strings.Repeat("x", MaxSpecBytes-2)
			s.Labels = []string{"abc"}
		}, "command", ETooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			tt.modify(&s)
			err := s.Normalize()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Normalize() = %v; want *Error naming %q", err, tt.field)
			}
			if e.Field != tt.field {
				t.Errorf("Field = %q; want %q (error %q)", e.Field, tt.field, e.Error())
			}
			if e.Code != tt.code {
				t.Errorf("Code = %q; want %q", e.Code, tt.code)
			}
			if !strings.HasPrefix(e.Error(), tt.field+": ") {
				t.Errorf("Error() = %.80q; want prefix %q", e.Error(), tt.field+": ")
			}
		})
	}
}

// TestNormalizeLimits checks that each limit itself is allowed, so that the
// error cases above fail for the right reason.
func TestNormalizeLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Spec)
	}{
		{"timeout 1s", func(s *Spec) { s.Timeout = Duration(time.Second) }},
		{"timeout 30 days", func(s *Spec) { s.Timeout = Duration(30 * 24 * time.Hour) }},
		{"max_attempts 1", func(s *Spec) { s.MaxAttempts = 1 }},
		{"max_attempts 100", func(s *Spec) { s.MaxAttempts = 100 }},
		{"64 tags", func(s *Spec) { s.Tags = names("t", 64) }},
		{"256 labels", func(s *Spec) { s.Labels = names("l", 256) }},
		{"group of 64", func(s *Spec) { s.Group = strings.Repeat("a", 64) }},
		{"group with . _ : -", func(s *Spec) { s.Group = "a.b_c:d-e" }},
		{"shell of MaxSpecBytes", func(s *Spec) { s.Command = nil; s.Shell = strings.Repeat("x", MaxSpecBytes) }},
		{"shell and env of MaxSpecBytes", func(s *Spec) {
			s.Command = nil
			s.Shell = strings.Repeat("x", MaxSpecBytes-3)
			s.Env = map[string]string{"AB": "c"}
		}},
		{"env with MITO in the middle", func(s *Spec) { s.Env = map[string]string{"MY_MITO_X": "1", "mito_y": "2"} }},
		{"env empty value", func(s *Spec) { s.Env = map[string]string{"EMPTY": ""} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			tt.modify(&s)
			if err := s.Normalize(); err != nil {
				t.Errorf("Normalize() = %.120v; want nil", err)
			}
		})
	}
}

func TestNormalizeSortsAndDedupes(t *testing.T) {
	t.Parallel()
	s := validSpec()
	s.Tags = []string{"linux", "gpu", "linux", "amd64", "gpu"}
	s.Labels = []string{"team=b", "nightly", "team=b", "Zeta"}
	if err := s.Normalize(); err != nil {
		t.Fatalf("Normalize() = %v; want nil", err)
	}
	if want := []string{"amd64", "gpu", "linux"}; !slices.Equal(s.Tags, want) {
		t.Errorf("Tags = %q; want %q", s.Tags, want)
	}
	if want := []string{"Zeta", "nightly", "team=b"}; !slices.Equal(s.Labels, want) {
		t.Errorf("Labels = %q; want %q", s.Labels, want)
	}
}

func TestNormalizeLabelsArbitraryText(t *testing.T) {
	t.Parallel()
	var big strings.Builder
	for big.Len() < 64<<10 {
		big.WriteString("line with 'quotes', \"dq\", $VAR, `bt`, \\ and tabs\t€\n")
	}
	labels := []string{
		`'; touch /tmp/pwned #`,
		`$(id)`,
		"`id`",
		"multi\nline\r\nlabel",
		" leading and trailing space ",
		`{"json":true}`,
		"<script>&amp;</script>",
		big.String()[:64<<10],
	}
	s := validSpec()
	s.Labels = slices.Clone(labels)
	if err := s.Normalize(); err != nil {
		t.Fatalf("Normalize() = %.120v; want nil", err)
	}
	want := slices.Clone(labels)
	slices.Sort(want)
	if !slices.Equal(s.Labels, want) {
		t.Fatalf("Labels changed by Normalize:\ngot  %.200q\nwant %.200q", s.Labels, want)
	}

	// They also survive the wire.
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	if !slices.Equal(back.Labels, want) {
		t.Errorf("Labels after JSON round trip:\ngot  %.200q\nwant %.200q", back.Labels, want)
	}
}

func TestArgv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec Spec
		want []string
	}{
		{"command", Spec{Command: []string{"ls", "-l", "$HOME"}}, []string{"ls", "-l", "$HOME"}},
		{"shell", Spec{Shell: "echo $HOME | wc -c"}, []string{"/bin/sh", "-c", "echo $HOME | wc -c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.spec.Argv(); !slices.Equal(got, tt.want) {
				t.Errorf("Argv() = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestTagsSatisfied(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		want, host []string
		ok         bool
	}{
		{"empty want, empty host", nil, nil, true},
		{"empty want", nil, []string{"gpu"}, true},
		{"equal", []string{"gpu", "linux"}, []string{"gpu", "linux"}, true},
		{"subset", []string{"gpu"}, []string{"amd64", "gpu", "linux"}, true},
		{"subset unsorted", []string{"linux", "amd64"}, []string{"gpu", "amd64", "linux"}, true},
		{"missing one", []string{"gpu", "arm64"}, []string{"gpu", "linux"}, false},
		{"empty host tags", []string{"gpu"}, nil, false},
		{"case matters", []string{"GPU"}, []string{"gpu"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TagsSatisfied(tt.want, tt.host); got != tt.ok {
				t.Errorf("TagsSatisfied(%q, %q) = %v; want %v", tt.want, tt.host, got, tt.ok)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in string
		ok bool
	}{
		{"a", true},
		{"A9", true},
		{"web-01.example:2", true},
		{"_x", false},
		{"", false},
		{"a b", false},
		{"a\n", false},
		{"é", false},
		{strings.Repeat("x", 64), true},
		{strings.Repeat("x", 65), false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := ValidName("host", tt.in)
			if got := err == nil; got != tt.ok {
				t.Fatalf("ValidName(%q) = %v; want ok %v", tt.in, err, tt.ok)
			}
			if err != nil && ErrorCode(err) != EInvalid {
				t.Errorf("ErrorCode = %q; want %q", ErrorCode(err), EInvalid)
			}
		})
	}
}

func TestDurationMarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{10 * time.Minute, `"10m0s"`},
		{90 * time.Second, `"1m30s"`},
		{0, `"0s"`},
		{1500 * time.Millisecond, `"1.5s"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			b, err := json.Marshal(Duration(tt.d))
			if err != nil {
				t.Fatalf("json.Marshal(%s) error = %v", tt.d, err)
			}
			if string(b) != tt.want {
				t.Errorf("json.Marshal(%s) = %s; want %s", tt.d, b, tt.want)
			}
		})
	}
}

func TestDurationUnmarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{`"90s"`, 90 * time.Second, false},
		{`"10m0s"`, 10 * time.Minute, false},
		{`"2d"`, 48 * time.Hour, false},
		{`"1h30m"`, 90 * time.Minute, false},
		{`30`, 30 * time.Second, false},
		{`1.5`, 1500 * time.Millisecond, false},
		{`"45"`, 45 * time.Second, false},
		{`"ten minutes"`, 0, true},
		{`"10x"`, 0, true},
		{`true`, 0, true},
		{`[1]`, 0, true},
		{`1e300`, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("json.Unmarshal(%s) error = %v; want error %v", tt.in, err, tt.wantErr)
			}
			if time.Duration(d) != tt.want {
				t.Errorf("json.Unmarshal(%s) = %s; want %s", tt.in, time.Duration(d), tt.want)
			}
		})
	}

	// A field inside a struct, as the API receives it.
	var s Spec
	if err := json.Unmarshal([]byte(`{"group":"g","timeout":"2d"}`), &s); err != nil {
		t.Fatalf("json.Unmarshal spec: %v", err)
	}
	if got, want := time.Duration(s.Timeout), 48*time.Hour; got != want {
		t.Errorf("Spec.Timeout = %s; want %s", got, want)
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", 0, false},
		{"   ", 0, false},
		{"90s", 90 * time.Second, false},
		{" 10m ", 10 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false},
		{"250ms", 250 * time.Millisecond, false},
		{"30", 30 * time.Second, false},
		{"1.5", 1500 * time.Millisecond, false},
		{"0", 0, false},
		{"2d", 48 * time.Hour, false},
		{"0.5d", 12 * time.Hour, false},
		{"-5s", -5 * time.Second, false},
		{"d", 0, true},
		{"2days", 0, true},
		{"1d2h", 0, true},
		{"abc", 0, true},
		{"10x", 0, true},
		// Floats that do not fit a Duration must not wrap around.
		{"NaN", 0, true},
		{"inf", 0, true},
		{"-Inf", 0, true},
		{"1e12", 0, true},
		{"1e300d", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("ParseDuration(%q) = %s, %v; want error %v", tt.in, got, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseDuration(%q) = %s; want %s", tt.in, got, tt.want)
			}
		})
	}
}

// cloneSpec deep-copies the parts of a Spec that Normalize may touch.
func cloneSpec(s Spec) Spec {
	c := s
	c.Command = slices.Clone(s.Command)
	c.Env = maps.Clone(s.Env)
	c.Tags = slices.Clone(s.Tags)
	c.Labels = slices.Clone(s.Labels)
	return c
}

// strictlySorted reports whether ss is sorted with no duplicates.
func strictlySorted(ss []string) bool {
	for i := 1; i < len(ss); i++ {
		if ss[i-1] >= ss[i] {
			return false
		}
	}
	return true
}

func FuzzSpecNormalize(f *testing.F) {
	f.Add("ops", "echo", "hi", "", "HOME", "/root", "gpu,linux,gpu", "b|a|b", int64(0), 0)
	f.Add("ops", "", "", "echo $HOME", "", "", "", "", int64(time.Minute), 5)
	f.Add("", "x", "", "y", "MITO_X", "v", "bad tag", "", int64(-1), -1)
	f.Add("g", "a\x00", "", "", "A=B", "", "z,y,x", "'; touch /tmp/pwned #|$(id)", int64(time.Millisecond), 101)
	f.Fuzz(func(t *testing.T, group, prog, arg, shell, envK, envV, tags, labels string, timeout int64, maxAttempts int) {
		s := Spec{Group: group, Shell: shell, Timeout: Duration(timeout), MaxAttempts: maxAttempts}
		if prog != "" || arg != "" {
			s.Command = []string{prog, arg}
		}
		if envK != "" || envV != "" {
			s.Env = map[string]string{envK: envV}
		}
		if tags != "" {
			s.Tags = strings.Split(tags, ",")
		}
		if labels != "" {
			s.Labels = strings.Split(labels, "|")
		}

		if err := s.Normalize(); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Normalize() error %v is %T; want *Error", err, err)
			}
			if e.Field == "" || (e.Code != EInvalid && e.Code != ETooLarge) {
				t.Fatalf("Normalize() error = %+v; want an EInvalid or ETooLarge error naming a field", e)
			}
			return
		}
		if !strictlySorted(s.Tags) {
			t.Errorf("Tags = %q; want sorted and unique", s.Tags)
		}
		if !strictlySorted(s.Labels) {
			t.Errorf("Labels = %q; want sorted and unique", s.Labels)
		}
		if d := time.Duration(s.Timeout); d < time.Second || d > MaxTimeout {
			t.Errorf("Timeout = %s; want within [1s, %s]", d, MaxTimeout)
		}
		if s.MaxAttempts < 1 || s.MaxAttempts > MaxMaxAttempts {
			t.Errorf("MaxAttempts = %d; want within [1, %d]", s.MaxAttempts, MaxMaxAttempts)
		}
		first := cloneSpec(s)
		if err := s.Normalize(); err != nil {
			t.Fatalf("second Normalize() = %v; want nil", err)
		}
		if !reflect.DeepEqual(s, first) {
			t.Errorf("second Normalize() changed the spec:\ngot  %+v\nwant %+v", s, first)
		}
	})
}

func TestInputsMayNotLandInTheOutputDirectory(t *testing.T) {
	for _, in := range []string{"attachment:out", "attachment:data.csv=out", "attachment:data.csv=out/x", "task:4/out/y", "attachment:out/z"} {
		i, err := ParseInput(in)
		if err != nil {
			t.Fatalf("ParseInput(%q): %v", in, err)
		}
		s := Spec{Group: "lab", Command: []string{"true"}, Inputs: []Input{i}}
		if err := s.Normalize(); ErrorCode(err) != EInvalid || !strings.Contains(err.Error(), "output directory") {
			t.Errorf("input %s: %v; want invalid, naming the output directory", in, err)
		}
	}
	s := Spec{Group: "lab", Command: []string{"true"}, Inputs: []Input{{Attachment: "output/x"}, {Attachment: "outx"}}}
	if err := s.Normalize(); err != nil {
		t.Errorf("inputs output/x and outx: %v; want them allowed", err)
	}
}

func TestParseInputNamesTheEmptyPart(t *testing.T) {
	for in, want := range map[string]string{
		"task:6/":           "NAME after task:6/ is empty",
		"attachment:":       "KEY after attachment: is empty",
		"attachment:data=":  "PATH after '=' is empty",
		"task:6/out.csv=":   "PATH after '=' is empty",
		"task:x/out.csv":    "want task:ID/NAME",
		"file:data.csv":     `unknown source "file"`,
		"attachment:../x":   `".." segment`,
		"attachment:a=../b": `".." segment`,
	} {
		_, err := ParseInput(in)
		if ErrorCode(err) != EInvalid || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseInput(%q): %v; want invalid, saying %q", in, err, want)
		}
	}
}
