package coordinator

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mitolab/mito/tasks"
)

// maxTokenTTL bounds what a login may ask for.
const maxTokenTTL = 365 * 24 * time.Hour

type loginRequest struct {
	User     string         `json:"user"`
	Password string         `json:"password"`
	Expires  tasks.Duration `json:"expires,omitempty"`
}

type loginResponse struct {
	Token   string     `json:"token"`
	User    tasks.User `json:"user"`
	Expires time.Time  `json:"expires"`
}

func (c *Coordinator) handleLogin(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.User == "" {
		return tasks.Invalid("user", "is required")
	}
	if len(req.Password) > maxPasswordLen {
		return tasks.Invalid("password", "must be at most %d bytes", maxPasswordLen)
	}
	ttl := time.Duration(req.Expires)
	switch {
	case ttl < 0:
		return tasks.Invalid("expires", "must be positive")
	case ttl == 0:
		ttl = c.cfg.TokenTTL
	case ttl > maxTokenTTL:
		return tasks.Invalid("expires", "%s is over the limit of %s", ttl, maxTokenTTL)
	}
	u, err := c.store.GetUser(r.Context(), req.User)
	if err != nil && !errors.Is(err, tasks.ErrNotFound) {
		return err
	}
	// Hash even for unknown users, so timing does not tell which exist.
	ok, cerr := c.checkPassword(r.Context(), u.PasswordHash, req.Password)
	if cerr != nil {
		return cerr
	}
	if err != nil || !ok || u.Disabled {
		c.log.Info("login refused", logUser, req.User)
		return tasks.Errorf(tasks.EUnauthorized, "wrong user name or password, or the user is disabled")
	}
	tok, hash, err := newToken()
	if err != nil {
		return err
	}
	now := c.cfg.Now().UTC()
	t := tasks.Token{Hash: hash, User: u.Name, CreatedAt: now, Expires: now.Add(ttl)}
	if err := c.store.CreateToken(r.Context(), t); err != nil {
		return err
	}
	c.log.Info("login", logUser, u.Name)
	writeJSON(w, http.StatusOK, loginResponse{Token: tok, User: u, Expires: t.Expires})
	return nil
}

func (c *Coordinator) handleLogout(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	hash, _ := r.Context().Value(tokenHashKey).(string)
	if err := c.store.DeleteToken(r.Context(), hash); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (c *Coordinator) handleWhoami(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	writeJSON(w, http.StatusOK, u)
	return nil
}

type changePasswordRequest struct {
	OldPassword string `json:"old_password"`
	NewPassword string `json:"new_password"`
}

func (c *Coordinator) handleChangePassword(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	var req changePasswordRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ok, err := c.checkPassword(r.Context(), u.PasswordHash, req.OldPassword)
	if err != nil {
		return err
	}
	if !ok {
		return &tasks.Error{Code: tasks.EForbidden, Field: "old_password", Message: "old_password: does not match"}
	}
	return c.setPassword(w, r, u, "new_password", req.NewPassword)
}

// setPassword stores a new password; the store revokes every token of the
// user with it, so that a leaked token dies with the old password.
func (c *Coordinator) setPassword(w http.ResponseWriter, r *http.Request, u tasks.User, field, pw string) error {
	if err := validPassword(field, pw); err != nil {
		return err
	}
	hash, err := c.hashPassword(r.Context(), pw)
	if err != nil {
		return err
	}
	if err := c.store.SetUserPassword(r.Context(), u.Name, hash); err != nil {
		return err
	}
	c.dropUserSessions(u.Name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (c *Coordinator) handleListUsers(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	if err := requireAdmin(u); err != nil {
		return err
	}
	users, err := c.store.ListUsers(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string][]tasks.User{"users": users})
	return nil
}

type createUserRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Admin    bool   `json:"admin,omitempty"`
}

func (c *Coordinator) handleCreateUser(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	if err := requireAdmin(u); err != nil {
		return err
	}
	var req createUserRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := tasks.ValidName("name", req.Name); err != nil {
		return err
	}
	if err := validPassword("password", req.Password); err != nil {
		return err
	}
	hash, err := c.hashPassword(r.Context(), req.Password)
	if err != nil {
		return err
	}
	nu := tasks.User{Name: req.Name, Admin: req.Admin, PasswordHash: hash, CreatedAt: c.cfg.Now().UTC()}
	if err := c.store.CreateUser(r.Context(), nu); err != nil {
		if errors.Is(err, tasks.ErrConflict) {
			return &tasks.Error{Code: tasks.EConflict, Field: "name", Message: fmt.Sprintf("name: a user or group named %q already exists", req.Name)}
		}
		return err
	}
	c.log.Info("user created", logUser, nu.Name, "by", u.Name)
	writeJSON(w, http.StatusCreated, nu)
	return nil
}

func (c *Coordinator) targetUser(r *http.Request, admin tasks.User) (tasks.User, error) {
	if err := requireAdmin(admin); err != nil {
		return tasks.User{}, err
	}
	name := r.PathValue("name")
	u, err := c.store.GetUser(r.Context(), name)
	if errors.Is(err, tasks.ErrNotFound) {
		return u, tasks.Errorf(tasks.ENotFound, "no user named %q", name)
	}
	return u, err
}

func (c *Coordinator) handleDisableUser(w http.ResponseWriter, r *http.Request, admin tasks.User) error {
	u, err := c.targetUser(r, admin)
	if err != nil {
		return err
	}
	if u.Name == admin.Name {
		return tasks.Errorf(tasks.EConflict, "you cannot disable yourself")
	}
	if err := c.store.SetUserDisabled(r.Context(), u.Name, true); err != nil {
		return err
	}
	u.Disabled = true
	c.dropUserSessions(u.Name)
	c.log.Info("user disabled", logUser, u.Name, "by", admin.Name)
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (c *Coordinator) handleEnableUser(w http.ResponseWriter, r *http.Request, admin tasks.User) error {
	u, err := c.targetUser(r, admin)
	if err != nil {
		return err
	}
	if err := c.store.SetUserDisabled(r.Context(), u.Name, false); err != nil {
		return err
	}
	u.Disabled = false
	writeJSON(w, http.StatusOK, u)
	return nil
}

type resetPasswordRequest struct {
	Password string `json:"password"`
}

func (c *Coordinator) handleResetPassword(w http.ResponseWriter, r *http.Request, admin tasks.User) error {
	u, err := c.targetUser(r, admin)
	if err != nil {
		return err
	}
	var req resetPasswordRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	return c.setPassword(w, r, u, "password", req.Password)
}
