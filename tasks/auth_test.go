package tasks

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestRoleString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		r    Role
		want string
	}{
		{RoleNone, "none"},
		{RoleRead, "read"},
		{RoleWrite, "write"},
		{RoleAdmin, "admin"},
		{Role(99), "none"},
		{Role(-1), "none"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Errorf("Role(%d).String() = %q; want %q", int(tt.r), got, tt.want)
			}
		})
	}
	// Roles are ordered: each includes the ones below it.
	if !(RoleNone < RoleRead && RoleRead < RoleWrite && RoleWrite < RoleAdmin) {
		t.Errorf("roles out of order: none=%d read=%d write=%d admin=%d", RoleNone, RoleRead, RoleWrite, RoleAdmin)
	}
}

func TestParseRole(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Role
		wantErr bool
	}{
		{"read", RoleRead, false},
		{"READ", RoleRead, false},
		{"Write", RoleWrite, false},
		{"admin", RoleAdmin, false},
		{"AdMiN", RoleAdmin, false},
		{"none", RoleNone, true},
		{"", RoleNone, true},
		{"owner", RoleNone, true},
		{" read", RoleNone, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRole(tt.in)
			if got != tt.want {
				t.Errorf("ParseRole(%q) = %v; want %v", tt.in, got, tt.want)
			}
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("ParseRole(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			}
			var e *Error
			if err != nil && (!errors.As(err, &e) || e.Field != "role" || e.Code != EInvalid) {
				t.Errorf("ParseRole(%q) error = %v; want EInvalid naming %q", tt.in, err, "role")
			}
		})
	}
}

func TestRoleJSON(t *testing.T) {
	t.Parallel()
	for _, r := range []Role{RoleNone, RoleRead, RoleWrite, RoleAdmin} {
		t.Run(r.String(), func(t *testing.T) {
			in := Member{User: "alice", Role: r}
			b, err := json.Marshal(in)
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			if got, want := string(b), `{"user":"alice","role":"`+r.String()+`"}`; got != want {
				t.Errorf("json.Marshal = %s; want %s", got, want)
			}
			back := Member{Role: RoleAdmin + 1}
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("json.Unmarshal(%s): %v", b, err)
			}
			if back != in {
				t.Errorf("round trip = %+v; want %+v", back, in)
			}
		})
	}

	tests := []struct {
		in      string
		want    Role
		wantErr bool
	}{
		{`"none"`, RoleNone, false},
		{`"Write"`, RoleWrite, false},
		{`"owner"`, RoleNone, true},
		{`2`, 0, true},
	}
	for _, tt := range tests {
		t.Run("unmarshal "+tt.in, func(t *testing.T) {
			r := RoleAdmin
			err := json.Unmarshal([]byte(tt.in), &r)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("json.Unmarshal(%s) error = %v; want error %v", tt.in, err, tt.wantErr)
			}
			if err != nil {
				if ErrorCode(err) != EInvalid {
					t.Errorf("json.Unmarshal(%s) error code = %q; want %q", tt.in, ErrorCode(err), EInvalid)
				}
				return
			}
			if r != tt.want {
				t.Errorf("json.Unmarshal(%s) = %v; want %v", tt.in, r, tt.want)
			}
		})
	}
}

func TestSecretsStayOffTheWire(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(struct {
		U User
		T Token
	}{User{Name: "alice", PasswordHash: "$argon2id$secret"}, Token{Hash: "tokhash", User: "alice"}})
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	for _, secret := range []string{"argon2id", "secret", "tokhash"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("JSON %s contains %q", b, secret)
		}
	}
}
