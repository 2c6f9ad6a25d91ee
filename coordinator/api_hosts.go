package coordinator

import (
	"net/http"

	"github.com/mitolab/mito/tasks"
)

// visibleHosts returns the hosts u may see: those serving a group u reads,
// or all of them for a global admin.
func (c *Coordinator) visibleHosts(r *http.Request, u tasks.User) ([]tasks.Host, error) {
	hs, err := c.store.ListHosts(r.Context())
	if err != nil {
		return nil, err
	}
	if u.Admin {
		return hs, nil
	}
	gs, err := c.store.ListUserGroups(r.Context(), u.Name)
	if err != nil {
		return nil, err
	}
	mine := make(map[string]bool, len(gs))
	for _, g := range gs {
		mine[g.Name] = true
	}
	out := []tasks.Host{}
	for _, h := range hs {
		for _, g := range h.Groups {
			if mine[g] {
				out = append(out, h)
				break
			}
		}
	}
	return out, nil
}

func (c *Coordinator) handleListHosts(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	hs, err := c.visibleHosts(r, u)
	if err != nil {
		return err
	}
	if hs == nil {
		hs = []tasks.Host{}
	}
	writeJSON(w, http.StatusOK, map[string][]tasks.Host{"hosts": hs})
	return nil
}

func (c *Coordinator) handleGetHost(w http.ResponseWriter, r *http.Request, u tasks.User) error {
	hs, err := c.visibleHosts(r, u)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	for _, h := range hs {
		if h.Name == name {
			writeJSON(w, http.StatusOK, h)
			return nil
		}
	}
	return tasks.Errorf(tasks.ENotFound, "no host named %q", name)
}
