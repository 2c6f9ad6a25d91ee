package tasks

import (
	"encoding/json"
	"strings"
	"time"
)

// Role is what a user may do in a group. Roles are ordered: each includes
// the ones below it.
type Role int

// The roles. RoleNone means "not a member".
const (
	RoleNone  Role = iota
	RoleRead       // see the group's tasks, logs, artifacts and hosts
	RoleWrite      // and submit, cancel and retry tasks
	RoleAdmin      // and manage the group's members
)

// String returns the role's wire name.
func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole parses "read", "write" or "admin", in any case.
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(s) {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, Invalid("role", "%q is not read, write or admin", s)
}

// MarshalJSON writes the role's name.
func (r Role) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }

// UnmarshalJSON reads a role name.
func (r *Role) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return Invalid("role", "must be a string")
	}
	if s == "none" {
		*r = RoleNone
		return nil
	}
	v, err := ParseRole(s)
	*r = v
	return err
}

// User is an account. Every user has a personal group of the same name in
// which they are admin.
type User struct {
	Name string `json:"name"`
	// Admin marks a global administrator, who manages users. It grants no
	// role in groups.
	Admin     bool      `json:"admin,omitempty"`
	Disabled  bool      `json:"disabled,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// PasswordHash is the argon2id PHC string; it never leaves the coordinator.
	PasswordHash string `json:"-"`
}

// Group owns tasks and hosts' work; members hold roles in it.
type Group struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// Members is filled by calls that list them.
	Members []Member `json:"members,omitempty"`
	// Role is the caller's role, filled by calls that list the caller's groups.
	Role Role `json:"role,omitzero"`
	// QuotaBytes bounds the bytes the group's attachments and artifacts
	// may take in the artifact store together; 0 means no limit.
	QuotaBytes int64 `json:"quota_bytes"`
	// UsedBytes is what they take now, charged when an upload completes.
	UsedBytes int64 `json:"used_bytes"`
}

// Member is one user's role in a group.
type Member struct {
	User string `json:"user"`
	Role Role   `json:"role"`
}

// Token is an API token's stored form: only its hash is kept.
type Token struct {
	Hash      string    `json:"-"`
	User      string    `json:"user"`
	CreatedAt time.Time `json:"created_at"`
	Expires   time.Time `json:"expires"`
}
