package client

// The user calls of docs/api.md that are about accounts: authentication,
// users, groups and hosts. Task calls are in tasks.go.

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/mitolab/mito/tasks"
)

// Credential is what a login yields: the token to send as WithToken, whose
// user it authenticates, and when it stops working. The CLI stores it per
// coordinator so that later commands need no password.
type Credential struct {
	Token   string     `json:"token"`
	User    tasks.User `json:"user"`
	Expires time.Time  `json:"expires"`
}

// Login exchanges a user's password for an API token. expires asks for a
// lifetime; zero lets the coordinator choose its default, and it may
// shorten what was asked. Login needs no token, so it may be called on a
// client made without WithToken; the client itself is not changed: make a
// new one with WithToken(cred.Token) to act as the user.
func (c *Client) Login(ctx context.Context, user, password string, expires time.Duration) (*Credential, error) {
	in := struct {
		User     string         `json:"user"`
		Password string         `json:"password"`
		Expires  tasks.Duration `json:"expires,omitempty"`
	}{user, password, tasks.Duration(expires)}
	var out Credential
	if err := c.do(ctx, http.MethodPost, "/api/v1/auth/login", in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Logout revokes the client's token on the coordinator, so that a token
// left behind in a file or a shell history is worthless.
func (c *Client) Logout(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/api/v1/auth/logout", nil, nil)
}

// Whoami returns the user the client's token authenticates. It is the
// cheapest way to check that a stored token still works, and tells a client
// that holds only a token (MITO_TOKEN) which personal group is its own.
func (c *Client) Whoami(ctx context.Context) (*tasks.User, error) {
	var u tasks.User
	if err := c.do(ctx, http.MethodGet, "/api/v1/auth/whoami", nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// ChangePassword changes the caller's own password. The coordinator
// revokes every token of the user, the client's included, so that a
// leaked token dies with the old password: log in again afterwards.
func (c *Client) ChangePassword(ctx context.Context, oldPassword, newPassword string) error {
	in := struct {
		Old string `json:"old_password"`
		New string `json:"new_password"`
	}{oldPassword, newPassword}
	return c.do(ctx, http.MethodPut, "/api/v1/auth/password", in, nil)
}

// ListUsers lists every account. Only a global admin may.
func (c *Client) ListUsers(ctx context.Context) ([]tasks.User, error) {
	var out struct {
		Users []tasks.User `json:"users"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/users", nil, &out); err != nil {
		return nil, err
	}
	return out.Users, nil
}

// CreateUser creates an account and its personal group of the same name,
// in which the new user is admin. admin makes a global administrator, who
// manages users but gains no role in groups. Only a global admin may.
func (c *Client) CreateUser(ctx context.Context, name, password string, admin bool) (*tasks.User, error) {
	in := struct {
		Name     string `json:"name"`
		Password string `json:"password"`
		Admin    bool   `json:"admin,omitempty"`
	}{name, password, admin}
	var u tasks.User
	if err := c.do(ctx, http.MethodPost, "/api/v1/users", in, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// DisableUser locks an account out and revokes its tokens at once, for
// someone who left or a leaked password. The user's tasks and groups stay.
func (c *Client) DisableUser(ctx context.Context, name string) (*tasks.User, error) {
	var u tasks.User
	if err := c.do(ctx, http.MethodPost, "/api/v1/users/"+url.PathEscape(name)+"/disable", nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// EnableUser lets a disabled account log in again. Its old tokens stay
// revoked.
func (c *Client) EnableUser(ctx context.Context, name string) (*tasks.User, error) {
	var u tasks.User
	if err := c.do(ctx, http.MethodPost, "/api/v1/users/"+url.PathEscape(name)+"/enable", nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// ResetPassword sets another user's password, for one who forgot theirs,
// and revokes their tokens. Only a global admin may; users change their own
// with ChangePassword, which asks for the old one.
func (c *Client) ResetPassword(ctx context.Context, name, password string) error {
	in := struct {
		Password string `json:"password"`
	}{password}
	return c.do(ctx, http.MethodPost, "/api/v1/users/"+url.PathEscape(name)+"/password", in, nil)
}

// ListGroups lists the groups the caller belongs to, each with the caller's
// Role in it, which is what a user needs to know where they may submit.
func (c *Client) ListGroups(ctx context.Context) ([]tasks.Group, error) {
	var out struct {
		Groups []tasks.Group `json:"groups"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/groups", nil, &out); err != nil {
		return nil, err
	}
	return out.Groups, nil
}

// CreateGroup creates a shared group, for a team or a project, with the
// caller as its admin. Add the others with SetMember.
func (c *Client) CreateGroup(ctx context.Context, name string) (*tasks.Group, error) {
	in := struct {
		Name string `json:"name"`
	}{name}
	var g tasks.Group
	if err := c.do(ctx, http.MethodPost, "/api/v1/groups", in, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// GetGroup returns a group with its members. A caller who is not a member
// gets a not-found error, as if the group did not exist.
func (c *Client) GetGroup(ctx context.Context, name string) (*tasks.Group, error) {
	var g tasks.Group
	if err := c.do(ctx, http.MethodGet, "/api/v1/groups/"+url.PathEscape(name), nil, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// SetMember adds user to a group with role, or changes the role of a
// member; it is idempotent, so scripts may re-run it. Only a group admin
// may. It returns the group with its members.
func (c *Client) SetMember(ctx context.Context, group, user string, role tasks.Role) (*tasks.Group, error) {
	in := struct {
		Role tasks.Role `json:"role"`
	}{role}
	var g tasks.Group
	if err := c.do(ctx, http.MethodPut, memberPath(group, user), in, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// RemoveMember takes user out of a group. Only a group admin may. The
// user's tasks in the group stay, owned by the group.
func (c *Client) RemoveMember(ctx context.Context, group, user string) error {
	return c.do(ctx, http.MethodDelete, memberPath(group, user), nil, nil)
}

func memberPath(group, user string) string {
	return "/api/v1/groups/" + url.PathEscape(group) + "/members/" + url.PathEscape(user)
}

// ListHosts lists the hosts that serve a group the caller can read (all of
// them, for a global admin) with their link state, so that a user can tell
// why a task stays queued.
func (c *Client) ListHosts(ctx context.Context) ([]tasks.Host, error) {
	var out struct {
		Hosts []tasks.Host `json:"hosts"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/hosts", nil, &out); err != nil {
		return nil, err
	}
	return out.Hosts, nil
}

// GetHost returns one host, under the same visibility as ListHosts.
func (c *Client) GetHost(ctx context.Context, name string) (*tasks.Host, error) {
	var h tasks.Host
	if err := c.do(ctx, http.MethodGet, "/api/v1/hosts/"+url.PathEscape(name), nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}
