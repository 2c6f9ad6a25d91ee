package tasks

import "time"

// HostState is what the coordinator knows of a host's link.
type HostState string

// The host states.
const (
	HostConnecting  HostState = "connecting"  // the link is being set up
	HostReady       HostState = "ready"       // the shim runs and may claim tasks
	HostDegraded    HostState = "degraded"    // connected, but recent errors
	HostUnreachable HostState = "unreachable" // the link failed; retrying with backoff
	HostDraining    HostState = "draining"    // removed from the inventory: running tasks finish, nothing new is claimed
	HostOffline     HostState = "offline"     // not connected and not expected to be
)

// Host is a machine that runs tasks: from the inventory, or a standalone
// `mito worker` that registered itself.
type Host struct {
	Name      string    `json:"name"`
	Transport string    `json:"transport"` // "local", "ssh" or "worker"
	Tags      []string  `json:"tags,omitempty"`
	Groups    []string  `json:"groups"`
	Slots     int       `json:"slots"`
	State     HostState `json:"state"`
	LastError string    `json:"last_error,omitempty"`
	// Running counts the attempts the host holds leases for.
	Running   int       `json:"running"`
	OS        string    `json:"os,omitempty"`
	Arch      string    `json:"arch,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	// Coordinator is the id of the coordinator that holds (or last held,
	// if its lease ran out and nobody took the host over yet) the host's
	// ownership lease; empty when none does, as for standalone workers.
	Coordinator string `json:"coordinator,omitempty"`
}
