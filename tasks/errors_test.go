package tasks

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestErrorIs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"invalid matches ErrInvalid", Invalid("x", "y"), ErrInvalid, true},
		{"invalid vs ErrNotFound", Invalid("x", "y"), ErrNotFound, false},
		{"wrapped invalid", fmt.Errorf("submit task: %w", Invalid("x", "y")), ErrInvalid, true},
		{"wrapped twice", fmt.Errorf("a: %w", fmt.Errorf("b: %w", Errorf(EConflict, "busy"))), ErrConflict, true},
		{"wrapped vs other code", fmt.Errorf("a: %w", Errorf(EConflict, "busy")), ErrInvalid, false},
		{"different message same code", Errorf(ENotFound, "task 7 not found"), ErrNotFound, true},
		{"stale lease", Errorf(EStaleLease, "old token"), ErrStaleLease, true},
		{"plain error", errors.New("invalid"), ErrInvalid, false},
		{"non-Error target", Invalid("x", "y"), io.EOF, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.target); got != tt.want {
				t.Errorf("errors.Is(%v, %v) = %v; want %v", tt.err, tt.target, got, tt.want)
			}
		})
	}
}

func TestErrorCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"nil", nil, ""},
		{"plain", errors.New("boom"), EInternal},
		{"wrapped plain", fmt.Errorf("a: %w", io.EOF), EInternal},
		{"direct", Errorf(EForbidden, "no"), EForbidden},
		{"wrapped", fmt.Errorf("load: %w", Errorf(EUnavailable, "db down")), EUnavailable},
		{"invalid", Invalid("group", "is required"), EInvalid},
		{"sentinel", ErrTooLarge, ETooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorCode(tt.err); got != tt.want {
				t.Errorf("ErrorCode(%v) = %q; want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestInvalid(t *testing.T) {
	t.Parallel()
	e := Invalid("timeout", "must be positive, got %d", -3)
	if e.Code != EInvalid {
		t.Errorf("Code = %q; want %q", e.Code, EInvalid)
	}
	if e.Field != "timeout" {
		t.Errorf("Field = %q; want %q", e.Field, "timeout")
	}
	if got, want := e.Error(), "timeout: must be positive, got -3"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
}

func TestErrorf(t *testing.T) {
	t.Parallel()
	e := Errorf(ENotFound, "task %d not found", 7)
	if e.Code != ENotFound || e.Field != "" {
		t.Errorf("Code, Field = %q, %q; want %q, %q", e.Code, e.Field, ENotFound, "")
	}
	if got, want := e.Error(), "task 7 not found"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
}

func TestSentinelCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *Error
		want Code
	}{
		{ErrInvalid, EInvalid},
		{ErrNotFound, ENotFound},
		{ErrConflict, EConflict},
		{ErrUnauthorized, EUnauthorized},
		{ErrForbidden, EForbidden},
		{ErrStaleLease, EStaleLease},
		{ErrTooLarge, ETooLarge},
		{ErrUnavailable, EUnavailable},
	}
	for _, tt := range tests {
		t.Run(string(tt.want), func(t *testing.T) {
			if tt.err.Code != tt.want {
				t.Errorf("sentinel code = %q; want %q", tt.err.Code, tt.want)
			}
			if strings.TrimSpace(tt.err.Message) == "" {
				t.Errorf("sentinel %q has an empty message", tt.want)
			}
		})
	}
}
