package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// clearCoordinatorEnv empties every variable the coordinator's flags read,
// so that the tests see only what they set.
func clearCoordinatorEnv(t *testing.T) {
	t.Helper()
	for _, k := range coordinatorConfigKeys {
		if k.env != "" {
			t.Setenv(k.env, "")
		}
	}
	t.Setenv("MITO_CONFIG", "")
}

func writeCoordinatorConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "coordinator.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// coordinatorCmdWithConfig builds the command, parses args and applies the
// config file, as RunE does.
func coordinatorCmdWithConfig(t *testing.T, path string, args ...string) (*cobra.Command, error) {
	t.Helper()
	cmd := newCoordinatorCmd()
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return cmd, applyCoordinatorConfig(cmd, path)
}

func flagValue(cmd *cobra.Command, name string) string {
	return cmd.Flags().Lookup(name).Value.String()
}

func TestCoordinatorConfigPrecedence(t *testing.T) {
	clearCoordinatorEnv(t)
	path := writeCoordinatorConfig(t, `
listen: 10.0.0.1:1
inventory: file-inventory.yaml
db: postgres://mito:hunter2@db.lab/mito
lease_ttl: 45s
kill_grace: 2s
log_level: debug
s3:
  endpoint: file-s3:9000
  bucket: file-bucket
  tls: true
`)
	t.Setenv("MITO_INVENTORY", "env-inventory.yaml")
	t.Setenv("MITO_S3_BUCKET", "env-bucket")
	t.Setenv("MITO_LISTEN", "10.0.0.2:2")
	cmd, err := coordinatorCmdWithConfig(t, path, "--listen", "10.0.0.3:3", "--kill-grace", "3s")
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"listen":      "10.0.0.3:3",                          // flag beats env and file
		"kill-grace":  "3s",                                  // flag beats file
		"inventory":   "env-inventory.yaml",                  // env beats file
		"s3-bucket":   "env-bucket",                          // env beats file
		"db":          "postgres://mito:hunter2@db.lab/mito", // file beats default
		"lease-ttl":   "45s",
		"log-level":   "debug",
		"s3-endpoint": "file-s3:9000",
		"s3-tls":      "true",
		"s3-region":   "us-east-1", // default, the file says nothing
		"redis":       "",
	} {
		if got := flagValue(cmd, flag); got != want {
			t.Errorf("--%s = %q; want %q", flag, got, want)
		}
	}
}

func TestCoordinatorConfigDurations(t *testing.T) {
	clearCoordinatorEnv(t)
	cmd, err := coordinatorCmdWithConfig(t, writeCoordinatorConfig(t, "lease_ttl: 30s\nreload_every: 1m30s\nkill_grace: 500ms\nsweep_every: 2h\n"))
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"lease-ttl": "30s", "reload-every": "1m30s", "kill-grace": "500ms", "sweep-every": "2h0m0s"} {
		if got := flagValue(cmd, flag); got != want {
			t.Errorf("--%s = %q; want %q", flag, got, want)
		}
	}
	_, err = coordinatorCmdWithConfig(t, writeCoordinatorConfig(t, "listen: :1\nlease_ttl: thirty\n"))
	if err == nil || !strings.Contains(err.Error(), ":2: lease_ttl") {
		t.Errorf("got %v; want an error naming line 2 and lease_ttl", err)
	}
}

func TestCoordinatorConfigUnknownKeyNamesFileAndLine(t *testing.T) {
	clearCoordinatorEnv(t)
	for text, want := range map[string]string{
		"listen: :1\nlistn: :2\n":           `:2: unknown key "listn"`,
		"s3:\n  endpoint: x\n  bukket: y\n": `:3: unknown key "s3.bukket"`,
		"listen: :1\nlisten: :2\n":          `:2: listen is set twice`,
		"listen: [a, b]\n":                  `:1: listen must be a single value`,
		"- listen\n":                        `:1: the file must be a mapping`,
	} {
		path := writeCoordinatorConfig(t, text)
		_, err := coordinatorCmdWithConfig(t, path)
		if err == nil || !strings.Contains(err.Error(), path+want) {
			t.Errorf("%q: got %v; want %q", text, err, path+want)
		}
	}
}

func TestCoordinatorConfigRefusesS3SecretKey(t *testing.T) {
	clearCoordinatorEnv(t)
	path := writeCoordinatorConfig(t, "s3:\n  access_key: AK\n  secret_key: sekrit\n")
	_, err := coordinatorCmdWithConfig(t, path)
	if err == nil || !strings.Contains(err.Error(), path+":3:") || !strings.Contains(err.Error(), "MITO_S3_SECRET_KEY") {
		t.Fatalf("got %v; want an error at line 3 pointing to MITO_S3_SECRET_KEY", err)
	}
	if strings.Contains(err.Error(), "sekrit") {
		t.Errorf("the error shows the secret: %v", err)
	}
}

func TestCoordinatorConfigFromEnvironment(t *testing.T) {
	clearCoordinatorEnv(t)
	path := writeCoordinatorConfig(t, "log_format: json\n")
	t.Setenv("MITO_CONFIG", path)
	cmd := newCoordinatorCmd()
	if got := flagValue(cmd, "config"); got != path {
		t.Errorf("--config = %q; want %q from MITO_CONFIG", got, path)
	}
}
