"""Errors of the mito SDK.

The coordinator answers every failed call with
``{"error": {"code", "field", "message"}}``; :func:`from_response` turns that
body into a :class:`MitoError` whose subclass follows the code, so that
callers can ``except NotFound`` rather than compare strings. The codes are
those of docs/api.md and must stay in step with tasks/errors.go.
"""

import json

__all__ = [
    "MitoError",
    "Invalid",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooLarge",
    "QuotaExceeded",
    "Unavailable",
    "ChecksumMismatch",
    "from_response",
]

# The status the coordinator sends with each code (coordinator/http.go
# statusOf); used to name a code when a body is not the API's, e.g. a
# proxy's error page.
_STATUS_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


class MitoError(Exception):
    """An error the coordinator answered, or one met while talking to it.

    ``code`` is the API's error code (``"not_found"``, ``"invalid"``, ...),
    ``field`` names the request field to fix when there is one, ``message``
    is meant for people and already names the field, and ``status`` is the
    HTTP status (0 when no answer came, as for a refused connection or an
    argument the SDK checked itself). The message never holds the token.
    """

    def __init__(self, code, message, field="", status=0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field or ""
        self.status = status

    def __str__(self):
        return self.message

    def __repr__(self):
        return "%s(code=%r, message=%r, field=%r, status=%r)" % (
            type(self).__name__,
            self.code,
            self.message,
            self.field,
            self.status,
        )


class Invalid(MitoError):
    """The request is malformed or a field is out of range (400 invalid)."""


class Unauthorized(MitoError):
    """No token, or a bad, expired or revoked one (401): log in again."""


class Forbidden(MitoError):
    """The caller's role in the group is too low for the call (403)."""


class NotFound(MitoError):
    """The object does not exist, or the caller may not know it does (404).

    A caller with no role in an object's group gets this rather than
    Forbidden, so that ids do not leak.
    """


class Conflict(MitoError):
    """The object is in a state that forbids the change (409), e.g. retrying
    a task that is not final or cancelling one that is."""


class TooLarge(MitoError):
    """A body or a field is over its limit (413 too_large)."""


class QuotaExceeded(TooLarge):
    """An upload would take the group over its storage quota (413
    quota_exceeded); nothing was stored. Delete attachments or artifacts,
    or ask a global admin for a larger quota."""


class Unavailable(MitoError):
    """The coordinator cannot be reached, or a service behind it is down
    (503): retrying later can help."""


class ChecksumMismatch(MitoError):
    """A download's bytes do not match the size or SHA-256 the coordinator
    recorded: the transfer was truncated or corrupted, and nothing was
    written."""


_CLASSES = {
    "invalid": Invalid,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "stale_lease": Conflict,
    "too_large": TooLarge,
    "quota_exceeded": QuotaExceeded,
    "unavailable": Unavailable,
}


def error_for(code, message, field="", status=0):
    """Return the MitoError subclass instance that fits code."""
    cls = _CLASSES.get(code, MitoError)
    return cls(code, message, field, status)


def from_response(status, body, reason=""):
    """Build the error for an answer with HTTP status and raw body (bytes).

    The API's ``{"error": {...}}`` body gives code, field and message; any
    other body (a proxy's page) gets a code from the status and a message
    quoting the start of the body, as the Go client does.
    """
    try:
        env = json.loads(body.decode("utf-8"))
        err = env.get("error") if isinstance(env, dict) else None
        if isinstance(err, dict) and err.get("code"):
            return error_for(
                str(err["code"]),
                str(err.get("message") or err["code"]),
                str(err.get("field") or ""),
                status,
            )
    except (ValueError, UnicodeDecodeError, AttributeError):
        pass
    code = _STATUS_CODES.get(status, "internal")
    text = body.decode("utf-8", "replace").strip()
    if len(text) > 200:
        text = text[:200] + "…"
    head = "%d %s" % (status, reason) if reason else str(status)
    return error_for(code, "coordinator answered %s: %s" % (head.strip(), text), "", status)
