package main

import "testing"

func TestParseQuota(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "none", want: 0},
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "10GiB", want: 10 << 30},
		{in: "500MB", want: 500e6},
		{in: "1.5GiB", want: 3 << 29},
		{in: "1.5", bad: true}, // bytes are whole; not a 1-byte quota
		{in: "-1", bad: true},
		{in: "lots", bad: true},
		{in: "", bad: true},
	} {
		got, err := parseQuota(tt.in)
		switch {
		case tt.bad && err == nil:
			t.Errorf("parseQuota(%q) = %d; want an error", tt.in, got)
		case !tt.bad && (err != nil || got != tt.want):
			t.Errorf("parseQuota(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}
