package main

import (
	"strings"
	"testing"
)

func TestRedactURLHidesPasswords(t *testing.T) {
	for _, in := range []string{
		"postgres://mito:hunter2@db.lab:5432/mito",
		"postgres://mito@db.lab/mito?password=hunter2&sslmode=disable",
		"postgres://mito:hunter2@db.lab/mito?PASSWORD=hunter2",
	} {
		got := redactURL(in)
		if strings.Contains(got, "hunter2") {
			t.Errorf("redactURL(%q) = %q; the password shows", in, got)
		}
		if !strings.Contains(got, "db.lab") {
			t.Errorf("redactURL(%q) = %q; want the host kept", in, got)
		}
	}
}

func TestCoordinatorRefusesLeaseShorterThanKillGrace(t *testing.T) {
	err := runCoordinator(t.Context(), coordinatorOptions{leaseTTL: 5e9, killGrace: 5e9, logLevel: "info", logFormat: "text"})
	if err == nil || !strings.Contains(err.Error(), "--lease-ttl") {
		t.Errorf("got %v; want an error about --lease-ttl", err)
	}
}
