package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/mitolab/mito/tasks"
)

// argon2id parameters: OWASP's recommended minimum (19 MiB, 2 passes).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// Passwords shorter than this are refused; length is what matters most.
const minPasswordLen = 8

// maxPasswordLen keeps argon2 from hashing megabytes sent by a caller.
const maxPasswordLen = 1024

// HashPassword returns the argon2id PHC string of password.
func HashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read random salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// CheckPassword reports whether password matches a PHC string made by
// HashPassword, in constant time. It reads the parameters from the string
// so that stronger ones can be adopted without invalidating old hashes.
func CheckPassword(phc, password string) bool {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// hashSlots bounds concurrent argon2 computations: each takes 19 MiB, so
// unbounded logins could exhaust memory.
var hashSlots = make(chan struct{}, 2*runtime.GOMAXPROCS(0))

// hashWait is how long a password check waits for a free slot before the
// coordinator answers "busy".
const hashWait = 5 * time.Second

// withHashSlot runs f while holding one of the hashSlots.
func withHashSlot(ctx context.Context, f func()) error {
	t := time.NewTimer(hashWait)
	defer t.Stop()
	select {
	case hashSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return tasks.Errorf(tasks.EUnavailable, "the coordinator is busy checking passwords; try again")
	}
	defer func() { <-hashSlots }()
	f()
	return nil
}

// checkPassword is CheckPassword under the hash limit. With an empty phc
// (no such user) it hashes anyway, so that timing does not tell which
// users exist.
func (c *Coordinator) checkPassword(ctx context.Context, phc, password string) (ok bool, err error) {
	if len(password) > maxPasswordLen {
		return false, nil
	}
	err = withHashSlot(ctx, func() {
		if phc == "" {
			_, _ = HashPassword(password)
			return
		}
		ok = CheckPassword(phc, password)
	})
	return ok, err
}

// hashPassword is HashPassword under the hash limit.
func (c *Coordinator) hashPassword(ctx context.Context, password string) (hash string, err error) {
	if werr := withHashSlot(ctx, func() { hash, err = HashPassword(password) }); werr != nil {
		return "", werr
	}
	return hash, err
}

func validPassword(field, pw string) error {
	switch {
	case len(pw) < minPasswordLen:
		return tasks.Invalid(field, "must be at least %d characters", minPasswordLen)
	case len(pw) > maxPasswordLen:
		return tasks.Invalid(field, "must be at most %d bytes", maxPasswordLen)
	}
	return nil
}

// tokenPrefix marks mito tokens so that secret scanners can find leaked ones.
const tokenPrefix = "mito_"

// newToken returns a random API token and the hash under which it is stored.
func newToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("read random token: %w", err)
	}
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

// hashToken is how a token is looked up: tokens are high-entropy, so a
// plain SHA-256 is enough and keeps lookups cheap.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// bearer extracts the token from an Authorization header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

type ctxKey int

const tokenHashKey ctxKey = iota

// authenticate resolves the request's token to a user.
func (c *Coordinator) authenticate(r *http.Request) (tasks.User, string, error) {
	tok := bearer(r)
	if tok == "" {
		return tasks.User{}, "", tasks.Errorf(tasks.EUnauthorized, "not logged in: send an API token (mito client login)")
	}
	h := hashToken(tok)
	t, u, err := c.store.LookupToken(r.Context(), h)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		return tasks.User{}, "", tasks.Errorf(tasks.EUnauthorized, "token is invalid or revoked: log in again")
	case err != nil:
		return tasks.User{}, "", err
	case !c.cfg.Now().Before(t.Expires):
		return tasks.User{}, "", tasks.Errorf(tasks.EUnauthorized, "token expired at %s: log in again", t.Expires.UTC().Format("2006-01-02 15:04:05Z"))
	case u.Disabled:
		return tasks.User{}, "", tasks.Errorf(tasks.EUnauthorized, "user %s is disabled", u.Name)
	}
	return u, h, nil
}

// authenticated wraps a handler that needs a signed-in user.
func (c *Coordinator) authenticated(h func(http.ResponseWriter, *http.Request, tasks.User) error) http.Handler {
	return c.errorHandler(func(w http.ResponseWriter, r *http.Request) error {
		u, hash, err := c.authenticate(r)
		if err != nil {
			return err
		}
		r = r.WithContext(context.WithValue(r.Context(), tokenHashKey, hash))
		return h(w, r, u)
	})
}

// requireRole checks that u holds at least min in group. A caller with no
// role at all learns nothing about the group: it is "not found" to them.
func (c *Coordinator) requireRole(ctx context.Context, u tasks.User, group string, min tasks.Role) (tasks.Role, error) {
	role, err := c.store.Role(ctx, u.Name, group)
	if errors.Is(err, tasks.ErrNotFound) || (err == nil && role == tasks.RoleNone) {
		return tasks.RoleNone, &tasks.Error{Code: tasks.ENotFound, Field: "group", Message: fmt.Sprintf("group: no group named %q that you are a member of", group)}
	}
	if err != nil {
		return tasks.RoleNone, err
	}
	if role < min {
		return role, tasks.Errorf(tasks.EForbidden, "you have the %s role in group %s; this needs %s", role, group, min)
	}
	return role, nil
}

// requireAdmin checks the global admin flag.
func requireAdmin(u tasks.User) error {
	if !u.Admin {
		return tasks.Errorf(tasks.EForbidden, "only global administrators may manage users")
	}
	return nil
}

// EnsureAdmin creates the user "admin" when the store has no users yet, so
// that a fresh coordinator can be used at once. Its password is password if
// not empty; otherwise a random one is generated and written to
// passwordFile (mode 0600), and the caller says where in its log. It
// returns whether it created the user.
func (c *Coordinator) EnsureAdmin(ctx context.Context, password, passwordFile string) (created bool, err error) {
	n, err := c.store.CountUsers(ctx)
	if err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	generated := password == ""
	if generated {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return false, fmt.Errorf("read random password: %w", err)
		}
		password = base64.RawURLEncoding.EncodeToString(b)
	} else if err := validPassword("MITO_ADMIN_PASSWORD", password); err != nil {
		return false, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return false, err
	}
	// Write the password before the user exists, under a temporary name:
	// a crash between the two must not leave an admin nobody can log in
	// as, and a lost race must not leave a file with a wrong password.
	var tmp string
	if generated {
		if tmp, err = writeSecretTemp(passwordFile, password+"\n"); err != nil {
			return false, err
		}
		defer os.Remove(tmp) // a no-op once renamed
	}
	err = c.store.CreateUser(ctx, tasks.User{Name: "admin", Admin: true, PasswordHash: hash, CreatedAt: c.cfg.Now().UTC()})
	if errors.Is(err, tasks.ErrConflict) {
		return false, nil // another coordinator won the race
	}
	if err != nil {
		return false, fmt.Errorf("create admin user: %w", err)
	}
	if generated {
		if err := os.Rename(tmp, passwordFile); err != nil {
			return false, fmt.Errorf("write %s: %w", passwordFile, err)
		}
	}
	return true, nil
}

// EnsureGroups creates the task groups the inventory's hosts serve that do
// not exist yet, with the admin user as their admin, so that a lab's
// inventory works on a fresh coordinator. It returns the groups it made.
func (c *Coordinator) EnsureGroups(ctx context.Context) ([]string, error) {
	var made []string
	seen := make(map[string]bool)
	for _, h := range c.cfg.Hosts {
		for _, g := range h.Groups {
			if seen[g] {
				continue
			}
			seen[g] = true
			_, err := c.store.GetGroup(ctx, g)
			if !errors.Is(err, tasks.ErrNotFound) {
				if err != nil {
					return made, err
				}
				continue
			}
			_, err = c.store.CreateGroup(ctx, g, "admin")
			switch {
			case errors.Is(err, tasks.ErrConflict): // another coordinator made it
			case err != nil:
				return made, fmt.Errorf("create group %s for the inventory: %w", g, err)
			default:
				made = append(made, g)
			}
		}
	}
	return made, nil
}

// writeSecretTemp writes a secret readable by its owner only to a new
// temporary file beside path, for the caller to rename into place.
func writeSecretTemp(path, content string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create directory for %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-secret-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	_, err = tmp.WriteString(content) // CreateTemp makes the file 0600
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp.Name(), nil
}
