package main

import (
	"strings"
	"testing"
	"time"
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

func TestCoordinatorRefusesShortLease(t *testing.T) {
	err := runCoordinator(t.Context(), coordinatorOptions{leaseTTL: 1500 * time.Millisecond, killGrace: 5e9, logLevel: "info", logFormat: "text"})
	if err == nil || !strings.Contains(err.Error(), "--lease-ttl 1.5s is too short: at least 2s") {
		t.Errorf("got %v; want an error about --lease-ttl", err)
	}
}

func TestCoordinatorRefusesShortSweep(t *testing.T) {
	for _, d := range []time.Duration{-time.Hour, time.Second, 59 * time.Second} {
		opts := coordinatorOptions{leaseTTL: 30 * time.Second, killGrace: 5 * time.Second, sweep: d, logLevel: "info", logFormat: "text"}
		err := runCoordinator(t.Context(), opts)
		if err == nil || !strings.Contains(err.Error(), "--sweep-every") {
			t.Errorf("--sweep-every %s: got %v; want an error about --sweep-every", d, err)
		}
	}
}

func TestSweepEvery(t *testing.T) {
	for _, tc := range []struct{ flag, want time.Duration }{
		{0, -1}, // the flag's 0 disables; the Config's 0 is the default
		{time.Minute, time.Minute},
		{time.Hour, time.Hour},
	} {
		if got := sweepEvery(tc.flag); got != tc.want {
			t.Errorf("sweepEvery(%s) = %s; want %s", tc.flag, got, tc.want)
		}
	}
}
