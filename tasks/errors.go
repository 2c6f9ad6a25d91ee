package tasks

import (
	"errors"
	"fmt"
)

// Code classifies an error so that each layer can react to it (the HTTP layer
// maps it to a status, the CLI to an exit code) without parsing messages.
type Code string

// Error codes. They appear on the wire in {"error":{"code":...}}, so they are
// part of the API and must not be renamed.
const (
	EInvalid      Code = "invalid"        // the request is malformed or a field is out of range
	ENotFound     Code = "not_found"      // the object does not exist or the caller may not know it does
	EConflict     Code = "conflict"       // the object exists, or is in a state that forbids the change
	EUnauthorized Code = "unauthorized"   // no credentials, or bad or expired ones
	EForbidden    Code = "forbidden"      // authenticated, but the role is too low
	EStaleLease   Code = "stale_lease"    // a write fenced by a lease that is no longer current
	ETooLarge     Code = "too_large"      // a body or field over its limit
	EQuota        Code = "quota_exceeded" // the upload would take the group over its storage quota
	EUnavailable  Code = "unavailable"    // a dependency is down; retrying later can help
	EInternal     Code = "internal"       // a bug or an unexpected failure
)

// Error is the one error type that crosses package and process boundaries.
// Field names the offending input field, when there is one, so that a user
// learns what to fix.
type Error struct {
	Code    Code   `json:"code"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// Error implements error. The message already names the field when there is one.
func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, tasks.ErrNotFound) match any *Error with the same
// code, whatever its message.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code
}

// Sentinels for errors.Is; they carry only a code.
var (
	ErrInvalid      = &Error{Code: EInvalid, Message: "invalid input"}
	ErrNotFound     = &Error{Code: ENotFound, Message: "not found"}
	ErrConflict     = &Error{Code: EConflict, Message: "conflict"}
	ErrUnauthorized = &Error{Code: EUnauthorized, Message: "unauthorized"}
	ErrForbidden    = &Error{Code: EForbidden, Message: "forbidden"}
	ErrStaleLease   = &Error{Code: EStaleLease, Message: "lease is no longer current"}
	ErrTooLarge     = &Error{Code: ETooLarge, Message: "too large"}
	ErrQuota        = &Error{Code: EQuota, Message: "storage quota exceeded"}
	ErrUnavailable  = &Error{Code: EUnavailable, Message: "unavailable"}
)

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EInvalid error for field; the message starts with the
// field name so it reads well on its own: "timeout: must be positive".
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: EInvalid, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or EInternal
// for any other non-nil error.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}
