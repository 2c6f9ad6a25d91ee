package main

// The coordinator's config file (--config FILE or MITO_CONFIG): YAML whose
// keys mirror the flags. A value from the file applies only to a flag that
// was neither given on the command line nor set by its environment
// variable, so the order is flag > environment > file > default.

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// coordinatorConfigKey ties a key of the config file to its flag and to
// the environment variable that overrides it ("" when there is none).
type coordinatorConfigKey struct {
	flag, env string
}

// coordinatorConfigKeys are the keys of the config file, by their dotted
// path ("s3.endpoint" is endpoint under s3).
var coordinatorConfigKeys = map[string]coordinatorConfigKey{
	"listen":        {"listen", "MITO_LISTEN"},
	"data_dir":      {"data-dir", "MITO_DATA_DIR"},
	"inventory":     {"inventory", "MITO_INVENTORY"},
	"db":            {"db", "MITO_DB"},
	"shim":          {"shim", "MITO_SHIM"},
	"lease_ttl":     {"lease-ttl", ""},
	"kill_grace":    {"kill-grace", ""},
	"log_level":     {"log-level", ""},
	"log_format":    {"log-format", ""},
	"tls_cert":      {"tls-cert", "MITO_TLS_CERT"},
	"tls_key":       {"tls-key", "MITO_TLS_KEY"},
	"ssh_config":    {"ssh-config", "MITO_SSH_CONFIG"},
	"reload_every":  {"reload-every", ""},
	"sweep_every":   {"sweep-every", ""},
	"redis":         {"redis", "MITO_REDIS"},
	"id":            {"id", "MITO_COORDINATOR_ID"},
	"s3.endpoint":   {"s3-endpoint", "MITO_S3_ENDPOINT"},
	"s3.bucket":     {"s3-bucket", "MITO_S3_BUCKET"},
	"s3.region":     {"s3-region", "MITO_S3_REGION"},
	"s3.prefix":     {"s3-prefix", "MITO_S3_PREFIX"},
	"s3.tls":        {"s3-tls", "MITO_S3_TLS"},
	"s3.part_size":  {"s3-part-size", "MITO_S3_PART_SIZE"},
	"s3.access_key": {"s3-access-key", "MITO_S3_ACCESS_KEY"},
}

// knownConfigKeys lists the keys under prefix ("" or "s3.") for messages.
func knownConfigKeys(prefix string) string {
	var keys []string
	for k := range coordinatorConfigKeys {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			if top, _, nested := strings.Cut(rest, "."); nested {
				rest = top
			}
			if !slices.Contains(keys, rest) {
				keys = append(keys, rest)
			}
		}
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

// applyCoordinatorConfig reads the config file at path and sets, from it,
// the flags of cmd that neither the command line nor the environment set.
// Problems are usage errors of the form FILE:LINE: MESSAGE. Values are
// never echoed in errors for keys that may hold secrets.
func applyCoordinatorConfig(cmd *cobra.Command, path string) error {
	fs := cmd.Flags()
	b, err := os.ReadFile(path)
	if err != nil {
		return usagef("--config: %v", err)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file sets nothing
		}
		return configError(path, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return nil
	}
	values := map[string]*yaml.Node{}
	if err := collectConfigKeys(path, top, "", values); err != nil {
		return err
	}
	for _, key := range slices.Sorted(maps.Keys(values)) {
		n, k := values[key], coordinatorConfigKeys[key]
		if fs.Changed(k.flag) || (k.env != "" && os.Getenv(k.env) != "") {
			continue
		}
		if err := fs.Set(k.flag, n.Value); err != nil {
			return usagef("%s:%d: %s: %q is not a valid value for --%s", path, n.Line, key, n.Value, k.flag)
		}
	}
	return nil
}

// collectConfigKeys walks a mapping of the config file, checking every key
// and putting the scalar values into out by dotted path.
func collectConfigKeys(path string, m *yaml.Node, prefix string, out map[string]*yaml.Node) error {
	if m.Kind != yaml.MappingNode {
		where := "the file"
		if prefix != "" {
			where = strings.TrimSuffix(prefix, ".")
		}
		return usagef("%s:%d: %s must be a mapping of keys to values", path, m.Line, where)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		kn, vn := m.Content[i], m.Content[i+1]
		key := prefix + kn.Value
		if _, dup := out[key]; dup {
			return usagef("%s:%d: %s is set twice", path, kn.Line, key)
		}
		switch {
		case key == "s3.secret_key":
			return usagef("%s:%d: s3.secret_key is not read from a config file: set MITO_S3_SECRET_KEY in the environment instead", path, kn.Line)
		case prefix == "" && key == "s3":
			if vn.Kind == yaml.ScalarNode && vn.Tag == "!!null" {
				continue
			}
			if err := collectConfigKeys(path, vn, "s3.", out); err != nil {
				return err
			}
			continue
		}
		if _, ok := coordinatorConfigKeys[key]; !ok {
			return usagef("%s:%d: unknown key %q (known keys: %s)", path, kn.Line, key, knownConfigKeys(prefix))
		}
		if vn.Kind != yaml.ScalarNode {
			return usagef("%s:%d: %s must be a single value", path, vn.Line, key)
		}
		if vn.Tag == "!!null" {
			continue // "key:" with nothing after it sets nothing
		}
		out[key] = vn
	}
	return nil
}
