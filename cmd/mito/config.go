package main

// The client's files: config.yaml, which says which coordinator to talk to,
// and credentials.json, which keeps a token per coordinator so that users
// log in once rather than on every command. Both live in one directory:
// $MITO_CONFIG_DIR, else $XDG_CONFIG_HOME/mito, else ~/.config/mito.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

const (
	configFile      = "config.yaml"
	credentialsFile = "credentials.json"
	// defaultCoordinator is where `mito coordinator` listens by default.
	defaultCoordinator = "http://127.0.0.1:7800"
)

// configDir returns the directory of the client's files. MITO_CONFIG_DIR
// comes first so that tests and scripts can keep their own.
func configDir() (string, error) {
	if d := os.Getenv("MITO_CONFIG_DIR"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "mito"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find config directory: %w (set MITO_CONFIG_DIR)", err)
	}
	return filepath.Join(home, ".config", "mito"), nil
}

// fileConfig is config.yaml. It holds no secret, so it may be shared or
// kept in a dotfiles repository.
type fileConfig struct {
	// Coordinator is the URL used when neither --coordinator nor
	// MITO_COORDINATOR is given.
	Coordinator string `yaml:"coordinator"`
}

// loadConfig reads config.yaml from dir. A missing file is an empty
// config; an unknown field is an error, so that a typo does not silently
// send a user to the default coordinator.
func loadConfig(dir string) (fileConfig, error) {
	var cfg fileConfig
	path := filepath.Join(dir, configFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, configError(path, err)
	}
	return cfg, nil
}

// yamlUnknownField matches yaml.v3's report of an unknown field, which
// names a Go type: "line 2: field coordinatr not found in type main.fileConfig".
var yamlUnknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type \S+$`)

// configError describes a problem in config.yaml for people, as
// PATH:LINE: MESSAGE, without yaml.v3's Go type names. It is a usage
// error: the input is wrong.
func configError(path string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if line, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(line, "line ") {
			return usagef("%s:%s: %s", path, strings.TrimPrefix(line, "line "), rest)
		}
		return usagef("%s: %s", path, msg)
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := yamlUnknownField.FindStringSubmatch(e); m != nil {
			msgs = append(msgs, fmt.Sprintf("%s:%s: unknown field %q (known fields: coordinator)", path, m[1], m[2]))
			continue
		}
		if line, rest, ok := strings.Cut(e, ": "); ok && strings.HasPrefix(line, "line ") {
			msgs = append(msgs, fmt.Sprintf("%s:%s: %s", path, strings.TrimPrefix(line, "line "), rest))
			continue
		}
		msgs = append(msgs, path+": "+e)
	}
	return usagef("%s", strings.Join(msgs, "\n"))
}

// storedCredential is one coordinator's entry in credentials.json.
type storedCredential struct {
	Token   string    `json:"token"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires,omitzero"`
}

// expired reports whether the token is known to have run out at now.
func (c storedCredential) expired(now time.Time) bool {
	return !c.Expires.IsZero() && !now.Before(c.Expires)
}

// credentials maps a coordinator URL (as normalized by coordinatorKey) to
// its token, so that one user may be logged in to several coordinators.
type credentials map[string]storedCredential

// coordinatorKey normalizes a coordinator URL so that "http://h:1/" and
// "http://h:1" share one credential.
func coordinatorKey(url string) string { return strings.TrimRight(url, "/") }

// loadCredentials reads credentials.json from dir; a missing file means no
// one is logged in anywhere.
func loadCredentials(dir string) (credentials, error) {
	path := filepath.Join(dir, credentialsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return credentials{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	creds := credentials{}
	if err := json.Unmarshal(b, &creds); err != nil {
		return nil, fmt.Errorf("read credentials %s: %w (delete it and log in again)", path, err)
	}
	return creds, nil
}

// saveCredentials writes credentials.json atomically: a temporary file in
// the same directory, created 0600, then renamed over the old one, so that
// a crash or a concurrent reader never sees half a file and the tokens are
// never readable by others, not even for a moment. The directory is
// created 0700.
func saveCredentials(dir string, creds credentials) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	b, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	f, err := os.CreateTemp(dir, ".credentials-*.tmp") // CreateTemp makes it 0600
	if err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("save credentials: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("save credentials: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save credentials: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, credentialsFile)); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	return nil
}

// updateCredentials applies change to the stored credentials and saves
// them, for login, logout and passwd.
func updateCredentials(dir string, change func(credentials)) error {
	creds, err := loadCredentials(dir)
	if err != nil {
		return err
	}
	change(creds)
	return saveCredentials(dir, creds)
}
