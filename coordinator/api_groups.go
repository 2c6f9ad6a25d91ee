package coordinator

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/mitolab/mito/tasks"
)

func (c *Coordinator) handleListGroups(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	gs, err := c.store.ListUserGroups(r.Context(), u.Name)
	if err != nil {
		return err
	}
	if gs == nil {
		gs = []tasks.Group{}
	}
	writeJSON(w, http.StatusOK, map[string][]tasks.Group{"groups": gs})
	return nil
}

type createGroupRequest struct {
	Name string `json:"name"`
}

func (c *Coordinator) handleCreateGroup(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	var req createGroupRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := tasks.ValidName("name", req.Name); err != nil {
		return err
	}
	g, err := c.store.CreateGroup(r.Context(), req.Name, u.Name)
	if errors.Is(err, tasks.ErrConflict) {
		return &tasks.Error{Code: tasks.EConflict, Field: "name", Message: fmt.Sprintf("name: a group or user named %q already exists", req.Name)}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, g)
	return nil
}

func (c *Coordinator) handleGetGroup(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	name := r.PathValue("name")
	var role tasks.Role
	var err error
	if u.Admin {
		// Global admins set quotas on any group, so they see any group's
		// members and usage; Role stays their own (none if not a member).
		role, err = c.store.Role(r.Context(), u.Name, name)
	} else {
		role, err = c.requireRole(r.Context(), u, name, tasks.RoleRead)
	}
	if err != nil {
		return err
	}
	g, err := c.store.GetGroup(r.Context(), name)
	if err != nil {
		return err
	}
	g.Role = role
	writeJSON(w, http.StatusOK, g)
	return nil
}

type setMemberRequest struct {
	Role tasks.Role `json:"role"`
}

func (c *Coordinator) handleSetMember(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group, member := r.PathValue("name"), r.PathValue("user")
	if _, err := c.requireRole(r.Context(), u, group, tasks.RoleAdmin); err != nil {
		return err
	}
	var req setMemberRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Role == tasks.RoleNone {
		return tasks.Invalid("role", "is required: read, write or admin")
	}
	if member == u.Name && req.Role < tasks.RoleAdmin {
		if err := c.keepAnAdmin(r, group, member); err != nil {
			return err
		}
	}
	err := c.store.SetMember(r.Context(), group, member, req.Role)
	if errors.Is(err, tasks.ErrNotFound) {
		return &tasks.Error{Code: tasks.ENotFound, Field: "user", Message: fmt.Sprintf("user: no user named %q", member)}
	}
	if err != nil {
		return err
	}
	g, err := c.store.GetGroup(r.Context(), group)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

// keepAnAdmin refuses a change that would leave a group without an admin,
// which nobody could then manage.
func (c *Coordinator) keepAnAdmin(r *http.Request, group, leaving string) error {
	g, err := c.store.GetGroup(r.Context(), group)
	if err != nil {
		return err
	}
	for _, m := range g.Members {
		if m.User != leaving && m.Role == tasks.RoleAdmin {
			return nil
		}
	}
	return tasks.Errorf(tasks.EConflict, "group %s would be left without an admin", group)
}

func (c *Coordinator) handleRemoveMember(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	group, member := r.PathValue("name"), r.PathValue("user")
	if _, err := c.requireRole(r.Context(), u, group, tasks.RoleAdmin); err != nil {
		return err
	}
	if err := c.keepAnAdmin(r, group, member); err != nil {
		return err
	}
	err := c.store.RemoveMember(r.Context(), group, member)
	if errors.Is(err, tasks.ErrNotFound) {
		return &tasks.Error{Code: tasks.ENotFound, Field: "user", Message: fmt.Sprintf("user: %q is not a member of %s", member, group)}
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
