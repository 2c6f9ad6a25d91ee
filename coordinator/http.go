package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/mitolab/mito/tasks"
)

// maxJSONBody bounds a JSON request body.
const maxJSONBody = 8 << 20

// routes builds the mux. Every pattern is also recorded in c.patterns, so
// that a test can hold docs/api.md to what is served.
func (c *Coordinator) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.Handler) {
		c.patterns = append(c.patterns, pattern)
		mux.Handle(pattern, h)
	}
	user := func(pattern string, h func(http.ResponseWriter, *http.Request, tasks.User) error) {
		handle(pattern, c.authenticated(h))
	}
	anon := func(pattern string, h func(http.ResponseWriter, *http.Request) error) {
		handle(pattern, c.errorHandler(h))
	}

	anon("POST /api/v1/auth/login", c.handleLogin)
	user("POST /api/v1/auth/logout", c.handleLogout)
	user("GET /api/v1/auth/whoami", c.handleWhoami)
	user("PUT /api/v1/auth/password", c.handleChangePassword)

	user("GET /api/v1/users", c.handleListUsers)
	user("POST /api/v1/users", c.handleCreateUser)
	user("POST /api/v1/users/{name}/disable", c.handleDisableUser)
	user("POST /api/v1/users/{name}/enable", c.handleEnableUser)
	user("POST /api/v1/users/{name}/password", c.handleResetPassword)

	user("GET /api/v1/groups", c.handleListGroups)
	user("POST /api/v1/groups", c.handleCreateGroup)
	user("GET /api/v1/groups/{name}", c.handleGetGroup)
	user("PUT /api/v1/groups/{name}/members/{user}", c.handleSetMember)
	user("DELETE /api/v1/groups/{name}/members/{user}", c.handleRemoveMember)
	user("PUT /api/v1/groups/{name}/quota", c.handleSetQuota)
	user("GET /api/v1/groups/{name}/attachments", c.handleListAttachments)
	user("PUT /api/v1/groups/{name}/attachments/{key...}", c.handlePutAttachment)
	user("GET /api/v1/groups/{name}/attachments/{key...}", c.handleGetAttachment)
	user("DELETE /api/v1/groups/{name}/attachments/{key...}", c.handleDeleteAttachment)

	user("POST /api/v1/tasks", c.handleSubmit)
	user("POST /api/v1/tasks/batch", c.handleSubmitBatch)
	user("GET /api/v1/tasks", c.handleListTasks)
	user("GET /api/v1/tasks/{id}", c.handleGetTask)
	user("POST /api/v1/tasks/{id}/cancel", c.handleCancel)
	user("POST /api/v1/tasks/{id}/retry", c.handleRetry)
	user("GET /api/v1/tasks/{id}/logs", c.handleLogs)
	user("GET /api/v1/tasks/{id}/artifacts", c.handleListArtifacts)
	user("GET /api/v1/tasks/{id}/artifacts/{name...}", c.handleDownloadArtifact)
	user("DELETE /api/v1/tasks/{id}/artifacts", c.handleDeleteArtifacts)
	user("GET /api/v1/events", c.handleEvents)

	user("GET /api/v1/hosts", c.handleListHosts)
	user("GET /api/v1/hosts/{name}", c.handleGetHost)
	user("GET /api/v1/hosts/{name}/facts", c.handleHostFacts)
	user("POST /api/v1/hosts/{name}/bootstrap", c.handleHostBootstrap)
	// Calls on several hosts live outside /hosts/, where a host could be
	// named "facts".
	user("GET /api/v1/facts", c.handleFacts)
	user("POST /api/v1/bootstrap", c.handleBootstrap)

	worker := func(pattern string, h func(http.ResponseWriter, *http.Request, *session) error) {
		handle(pattern, c.workerSession(h))
	}
	anon("POST /worker/v1/register", c.handleRegister)
	worker("POST /worker/v1/claim", c.handleClaim)
	worker("POST /worker/v1/heartbeat", c.handleHeartbeat)
	worker("POST /worker/v1/tasks/{id}/log", c.handleAppendLog)
	worker("PUT /worker/v1/tasks/{id}/artifacts/{name...}", c.handleUploadArtifact)
	worker("POST /worker/v1/tasks/{id}/artifacts-presign", c.handlePresignArtifact)
	worker("POST /worker/v1/tasks/{id}/artifacts-commit", c.handleCommitArtifact)
	worker("GET /worker/v1/tasks/{id}/inputs/{index}", c.handleFetchInput)
	worker("POST /worker/v1/tasks/{id}/inputs-presign", c.handlePresignInput)
	worker("POST /worker/v1/tasks/{id}/finish", c.handleFinish)
	worker("POST /worker/v1/release", c.handleRelease)
	worker("POST /worker/v1/deregister", c.handleDeregister)

	anon("GET /healthz", func(w http.ResponseWriter, r *http.Request) error {
		_, err := io.WriteString(w, "ok\n")
		return err
	})
	mux.Handle("/", c.errorHandler(func(w http.ResponseWriter, r *http.Request) error {
		return tasks.Errorf(tasks.ENotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	}))
	return c.canonicalPaths(mux)
}

// canonicalPaths refuses a request whose path has "." or ".." segments or
// empty ones ("//"). ServeMux would answer it with a redirect to the
// cleaned path, and a client that follows it would act on another object
// than it named: an artifact "a/../../b" would be stored as "b". A name
// that really holds such segments can only be refused; CleanName and
// CleanPath say why when the segments come escaped (%2F).
func (c *Coordinator) canonicalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath() // as the router sees it: an escaped "%2F" is no separator
		if p != "/" && (strings.Contains(p, "//") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") ||
			strings.Contains(p, "/./") || strings.Contains(p, "/../")) {
			c.writeError(w, r, tasks.Invalid("path", "%q has empty, \".\" or \"..\" segments; names in paths must be canonical", p))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// statusOf is the one place that maps domain error codes to HTTP statuses.
func statusOf(code tasks.Code) int {
	switch code {
	case tasks.EInvalid:
		return http.StatusBadRequest
	case tasks.EUnauthorized:
		return http.StatusUnauthorized
	case tasks.EForbidden:
		return http.StatusForbidden
	case tasks.ENotFound:
		return http.StatusNotFound
	case tasks.EConflict, tasks.EStaleLease:
		return http.StatusConflict
	case tasks.ETooLarge, tasks.EQuota:
		return http.StatusRequestEntityTooLarge
	case tasks.EUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// errorHandler adapts a handler that returns an error, writing the error
// as {"error":{...}} with its status. Internal errors are logged and their
// details kept from the caller.
func (c *Coordinator) errorHandler(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			c.writeError(w, r, err)
		}
	})
}

func (c *Coordinator) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *tasks.Error
	if !errors.As(err, &e) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			e = &tasks.Error{Code: tasks.ETooLarge, Message: fmt.Sprintf("request body is over the limit of %d bytes", mbe.Limit)}
		} else if r.Context().Err() != nil {
			return // the caller left; nobody reads an answer
		} else {
			c.log.Error("request failed", "method", r.Method, "path", r.URL.Path, logErr, err)
			e = &tasks.Error{Code: tasks.EInternal, Message: "internal error; see the coordinator log"}
		}
	}
	writeJSON(w, statusOf(e.Code), map[string]*tasks.Error{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// decodeJSON reads a bounded JSON body with no unknown fields and nothing
// after the value, and turns every failure into an EInvalid that says
// where the problem is.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxJSONBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return tasks.Errorf(tasks.EInvalid, "request body: unexpected data after the JSON value")
	}
	return nil
}

// jsonKind names a Go type the way a JSON user thinks of it.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

func jsonError(err error) error {
	var (
		syn  *json.SyntaxError
		typ  *json.UnmarshalTypeError
		mbe  *http.MaxBytesError
		terr *tasks.Error
	)
	switch {
	case errors.As(err, &mbe):
		return &tasks.Error{Code: tasks.ETooLarge, Message: fmt.Sprintf("request body is over the limit of %d bytes", mbe.Limit)}
	case errors.As(err, &terr):
		return terr
	case errors.As(err, &syn):
		return tasks.Errorf(tasks.EInvalid, "request body: malformed JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "request body"
		}
		if typ.Type == reflect.TypeFor[tasks.Duration]() {
			return tasks.Invalid(field, "%s is not a duration (want e.g. \"90s\", \"10m\", \"1h30m\", \"2d\" or a number of seconds)", typ.Value)
		}
		return tasks.Invalid(field, "must be %s, got JSON %s", jsonKind(typ.Type), typ.Value)
	case errors.Is(err, io.EOF):
		return tasks.Errorf(tasks.EInvalid, "request body: empty, want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return tasks.Errorf(tasks.EInvalid, "request body: malformed JSON: unexpected end")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return tasks.Invalid(f, "unknown field")
	}
	return tasks.Errorf(tasks.EInvalid, "request body: %v", err)
}

// pathID parses the {id} path value.
func pathID(r *http.Request) (tasks.ID, error) {
	s := r.PathValue("id")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, tasks.Invalid("id", "%q is not a task id", s)
	}
	return tasks.ID(n), nil
}

// queryInt parses an optional integer query parameter.
func queryInt(r *http.Request, name string, def int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, tasks.Invalid(name, "%q is not an integer", s)
	}
	return n, nil
}
