package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/tasks"
)

func TestCredentialsRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "mito") // does not exist yet
	got, err := loadCredentials(dir)
	if err != nil || len(got) != 0 {
		t.Fatalf("load from a missing dir: got %v, %v; want empty, nil", got, err)
	}
	exp := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	want := credentials{
		"http://a:7800":   {Token: "t1", User: "ann", Expires: exp},
		"https://b.lab:1": {Token: "t2", User: "bob"},
	}
	if err := saveCredentials(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, err = loadCredentials(dir); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}

	fi, err := os.Stat(filepath.Join(dir, credentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("credentials file mode %o; want 600", m)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := di.Mode().Perm(); m != 0o700 {
		t.Errorf("config dir mode %o; want 700", m)
	}

	// An update keeps the other coordinators and leaves no temporary file.
	if err := updateCredentials(dir, func(c credentials) { delete(c, "http://a:7800") }); err != nil {
		t.Fatal(err)
	}
	got, _ = loadCredentials(dir)
	if _, ok := got["https://b.lab:1"]; !ok || len(got) != 1 {
		t.Errorf("after delete got %+v; want only b", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("dir holds %v; want only %s", names, credentialsFile)
	}
}

func TestCredentialsRewriteTightensMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, credentialsFile)
	if err := os.WriteFile(path, []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := saveCredentials(dir, credentials{"http://a:1": {Token: "t"}}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("mode %o after rewrite; want 600", m)
	}
}

func TestCorruptCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, credentialsFile), []byte(`{"x":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCredentials(dir); err == nil || !strings.Contains(err.Error(), "log in again") {
		t.Errorf("got %v; want an error that says what to do", err)
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if cfg, err := loadConfig(dir); err != nil || cfg.Coordinator != "" {
		t.Fatalf("missing file: got %+v, %v; want empty, nil", cfg, err)
	}
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, configFile), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("coordinator: http://lab1:7800\n")
	if cfg, err := loadConfig(dir); err != nil || cfg.Coordinator != "http://lab1:7800" {
		t.Errorf("got %+v, %v; want http://lab1:7800", cfg, err)
	}
	write("")
	if cfg, err := loadConfig(dir); err != nil || cfg.Coordinator != "" {
		t.Errorf("empty file: got %+v, %v; want empty, nil", cfg, err)
	}
	write("# mito\ncoordinatr: http://lab1:7800\n")
	path := filepath.Join(dir, configFile)
	want := path + `:2: unknown field "coordinatr"`
	if _, err := loadConfig(dir); err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "fileConfig") {
		t.Errorf("misspelt field: got %v; want %s, without Go type names", err, want)
	}
	write("coordinator: [1\n")
	if _, err := loadConfig(dir); err == nil || !strings.HasPrefix(err.Error(), path+":1: ") {
		t.Errorf("bad YAML: got %v; want it located as %s:1", err, path)
	}
}

// The tests below set environment variables, so they do not run in parallel.

func TestConfigDir(t *testing.T) {
	t.Setenv("MITO_CONFIG_DIR", "")
	t.Setenv("XDG_CONFIG_HOME", "/xdg")
	if d, _ := configDir(); d != "/xdg/mito" {
		t.Errorf("got %s; want /xdg/mito", d)
	}
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", "/home/ann")
	if d, _ := configDir(); d != "/home/ann/.config/mito" {
		t.Errorf("got %s; want /home/ann/.config/mito", d)
	}
	t.Setenv("MITO_CONFIG_DIR", "/tmp/m")
	if d, _ := configDir(); d != "/tmp/m" {
		t.Errorf("got %s; want /tmp/m", d)
	}
}

func TestResolveCoordinator(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MITO_CONFIG_DIR", dir)
	t.Setenv("MITO_COORDINATOR", "")
	var o clientOptions
	check := func(want string) {
		t.Helper()
		got, _, err := o.resolveCoordinator()
		if err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	}
	check(defaultCoordinator)
	if err := os.WriteFile(filepath.Join(dir, configFile), []byte("coordinator: http://file:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("http://file:1")
	t.Setenv("MITO_COORDINATOR", "http://env:2")
	check("http://env:2")
	o.coordinator = "http://flag:3"
	check("http://flag:3")
}

func TestConnectToken(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MITO_CONFIG_DIR", dir)
	t.Setenv("MITO_COORDINATOR", "http://c:1/")
	t.Setenv("MITO_TOKEN", "")
	o := clientOptions{}

	if _, err := o.connect(true); tasks.ErrorCode(err) != tasks.EUnauthorized || !strings.Contains(err.Error(), "mito client login") {
		t.Errorf("no credentials: got %v; want unauthorized with a hint", err)
	}
	if _, err := o.connect(false); err != nil {
		t.Errorf("no credentials, no auth needed: got %v", err)
	}

	past := time.Now().Add(-time.Hour)
	if err := saveCredentials(dir, credentials{"http://c:1": {Token: "old", User: "ann", Expires: past}}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.connect(true); tasks.ErrorCode(err) != tasks.EUnauthorized || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: got %v; want unauthorized saying expired", err)
	}

	if err := saveCredentials(dir, credentials{"http://c:1": {Token: "good", User: "ann"}}); err != nil {
		t.Fatal(err)
	}
	s, err := o.connect(true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Token() != "good" || s.user != "ann" || s.key != "http://c:1" {
		t.Errorf("got token %q user %q key %q; want good, ann, http://c:1", s.Token(), s.user, s.key)
	}

	t.Setenv("MITO_TOKEN", "env")
	if s, err = o.connect(true); err != nil || s.Token() != "env" || s.user != "" {
		t.Errorf("MITO_TOKEN: got %v, %v; want the env token and no stored user", s, err)
	}
}
