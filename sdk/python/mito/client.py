"""The client of mito's coordinator API (docs/api.md).

It speaks the same HTTP API as the Go SDK (package client) and the CLI, with
the standard library only, so that it installs anywhere a lab's Python does.
Tasks, artifacts and attachments come back as the API's JSON objects
(dicts); failures raise :class:`mito.errors.MitoError` subclasses.
"""

import datetime
import hashlib
import http.client
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from . import errors
from .errors import ChecksumMismatch, Invalid, MitoError, Unavailable

__all__ = [
    "Client",
    "DEFAULT_COORDINATOR",
    "FINAL_STATES",
    "clean_path",
    "parse_input",
    "config_dir",
    "load_token",
]

#: Where ``mito coordinator`` listens by default (cmd/mito/config.go).
DEFAULT_COORDINATOR = "http://127.0.0.1:7800"

#: The task states from which nothing moves (tasks/state.go).
FINAL_STATES = frozenset(["succeeded", "failed", "timed_out", "cancelled"])

# The most the coordinator holds a long poll (docs/api.md): asking for more
# only gets 25 s, and a wait well under proxies' idle timeouts is safe.
_MAX_WAIT = 25

# Each read of a log asks for at most this much, the coordinator's maximum.
_LOG_PAGE = 4 << 20

# Reads and writes of files go in chunks of this size, never whole.
_CHUNK = 1 << 20

# MaxPathLen of tasks/path.go.
_MAX_PATH_LEN = 1024


def config_dir():
    """Return the directory of the CLI's files, as cmd/mito/config.go finds
    it: $MITO_CONFIG_DIR, else $XDG_CONFIG_HOME/mito (if absolute), else
    ~/.config/mito."""
    d = os.environ.get("MITO_CONFIG_DIR")
    if d:
        return d
    d = os.environ.get("XDG_CONFIG_HOME")
    if d and os.path.isabs(d):
        return os.path.join(d, "mito")
    return os.path.join(os.path.expanduser("~"), ".config", "mito")


def _coordinator_key(url):
    # coordinatorKey of cmd/mito/config.go: "http://h:1/" and "http://h:1"
    # share one credential.
    return url.rstrip("/")


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _parse_time(s):
    """Parse an RFC 3339 time as Go writes it (up to nanoseconds, "Z"),
    which datetime.fromisoformat takes only from Python 3.11 on."""
    m = _RFC3339.match(s or "")
    if not m:
        return None
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.datetime.fromisoformat(m.group(1) + "." + frac + tz)
    except ValueError:
        return None


def load_token(url, directory=None):
    """Return the token the CLI stored for the coordinator at url with
    ``mito client login``, or None when there is none or it has expired.

    The CLI keeps credentials.json in :func:`config_dir`, an object keyed
    by coordinator URL (without a trailing slash) whose values hold
    ``token``, ``user`` and ``expires``.
    """
    path = os.path.join(directory or config_dir(), "credentials.json")
    try:
        with open(path, "rb") as f:
            creds = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        # The message names the file, never its content.
        raise MitoError("invalid", "read credentials %s: %s (delete it and log in again)" % (path, type(e).__name__)) from None
    cred = creds.get(_coordinator_key(url)) if isinstance(creds, dict) else None
    if not isinstance(cred, dict) or not cred.get("token"):
        return None
    expires = _parse_time(cred.get("expires", ""))
    if expires is not None and expires <= datetime.datetime.now(datetime.timezone.utc):
        return None
    return cred["token"]


def _path_problem(p):
    # PathProblem of tasks/path.go, kept in step with it.
    if p == "":
        return "is empty"
    try:
        n = len(p.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if n > _MAX_PATH_LEN:
        return "is over the limit of 1024 bytes"
    if p.startswith("/"):
        return "must be a relative path"
    for ch in p:
        if ch == "\x00":
            return "contains a NUL byte"
        if ch == "\\":
            return "contains a backslash"
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return "contains a control character"
    for s in p.split("/"):
        if s == "":
            return "has an empty segment"
        if s == ".":
            return 'has a "." segment'
        if s == "..":
            return 'has a ".." segment'
    return ""


def clean_path(field, p):
    """Check a relative slash path (an artifact name, an attachment key, an
    input's path) and return it in the canonical form the coordinator keeps,
    "." segments dropped, as tasks.CleanPath does. Absolute paths, "..",
    empty segments, NUL, backslashes, control characters and paths over
    1024 bytes raise :class:`Invalid` naming field: such a path could point
    outside the directory it is joined to."""
    if not isinstance(p, str):
        raise Invalid("invalid", "%s: must be a string, got %s" % (field, type(p).__name__), field)
    if p.startswith("/"):
        raise Invalid("invalid", "%s: %s: must be a relative path" % (field, json.dumps(p)), field)
    clean = "/".join(s for s in p.split("/") if s != ".")
    if clean == "":
        raise Invalid("invalid", "%s: %s: is empty" % (field, json.dumps(p)), field)
    msg = _path_problem(p)
    if msg and msg != 'has a "." segment':
        raise Invalid("invalid", "%s: %s: %s" % (field, json.dumps(p), msg), field)
    msg = _path_problem(clean)
    if msg:
        raise Invalid("invalid", "%s: %s: %s" % (field, json.dumps(p), msg), field)
    return clean


def _invalid(field, msg):
    return Invalid("invalid", "%s: %s" % (field, msg), field)


def parse_input(s):
    """Parse an input as ``mito client submit --input`` takes it,
    ``"attachment:KEY[=PATH]"`` or ``"task:ID/NAME[=PATH]"``, into the
    API's input object, normalized as tasks.ParseInput does (the path
    defaults to the key or the artifact name). A dict is taken as the API's
    object and checked the same way."""
    if isinstance(s, dict):
        return _normalize_input(dict(s), "inputs")
    if not isinstance(s, str):
        raise _invalid("inputs", "%r: want a string or a dict" % (s,))
    q = json.dumps(s)
    src, has_path, path = s.partition("=")
    if has_path and path == "":
        raise _invalid("inputs", "%s: PATH after '=' is empty (drop the '=' for the default path)" % q)
    kind, ok, ref = src.partition(":")
    if not ok:
        raise _invalid("inputs", "%s: want attachment:KEY[=PATH] or task:ID/NAME[=PATH]" % q)
    inp = {}
    if kind == "attachment":
        if ref == "":
            raise _invalid("inputs", "%s: KEY after attachment: is empty" % q)
        inp["attachment"] = ref
    elif kind == "task":
        id_str, ok, name = ref.partition("/")
        if not ok or not re.fullmatch(r"[+-]?[0-9]+", id_str) or int(id_str) <= 0 or int(id_str) >= 1 << 63:
            raise _invalid("inputs", "%s: want task:ID/NAME with a task number and an artifact name" % q)
        if name == "":
            raise _invalid("inputs", "%s: the artifact NAME after task:%d/ is empty" % (q, int(id_str)))
        inp["task"], inp["artifact"] = int(id_str), name
    else:
        raise _invalid("inputs", "%s: unknown source %s (want attachment or task)" % (q, json.dumps(kind)))
    if path:
        inp["path"] = path
    return _normalize_input(inp, "inputs")


def _normalize_input(inp, field):
    # normalize of tasks/attachment.go.
    unknown = set(inp) - {"attachment", "task", "artifact", "path"}
    if unknown:
        raise _invalid(field, "unknown keys %s (want attachment, task, artifact, path)" % ", ".join(sorted(unknown)))
    att, task, art = inp.get("attachment") or "", inp.get("task") or 0, inp.get("artifact") or ""
    if att and (task or art):
        raise _invalid(field, "give either an attachment or a task's artifact, not both")
    if att:
        inp["attachment"] = clean_path(field + ".attachment", att)
        default = inp["attachment"]
    elif isinstance(task, int) and not isinstance(task, bool) and task > 0:
        inp["artifact"] = clean_path(field + ".artifact", art)
        default = inp["artifact"]
    elif task:
        raise _invalid(field + ".task", "must be a positive task ID, got %r" % (task,))
    else:
        raise _invalid(field, "names no attachment and no task")
    inp["path"] = clean_path(field + ".path", inp.get("path") or default)
    return inp


def _duration(field, d):
    """Write a duration as the API takes it: a Go duration string ("90s",
    "1h30m", "2d"), a number of seconds, or a datetime.timedelta."""
    if d is None:
        return None
    if isinstance(d, datetime.timedelta):
        d = d.total_seconds()
    if isinstance(d, bool):
        raise _invalid(field, "want a duration such as 90s, 10m or 2d, got %r" % (d,))
    if isinstance(d, (int, float)):
        if d != d or d in (float("inf"), float("-inf")):
            raise _invalid(field, "want a finite duration, got %r" % (d,))
        return "%gs" % d if isinstance(d, float) else "%ds" % d
    if isinstance(d, str):
        return d
    raise _invalid(field, "want a duration such as 90s, 10m or 2d, got %r" % (d,))


def _rfc3339(field, t):
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            raise _invalid(field, "give a time with a time zone (naive datetimes are ambiguous)")
        return t.isoformat()
    if isinstance(t, str):
        return t
    raise _invalid(field, "want a datetime or an RFC 3339 string, got %r" % (t,))


def _strings(v):
    # A lone string is one value, not its characters.
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return list(v)


class _LimitedReader:
    """Reads at most n bytes of f, so that a file growing while it is sent
    does not send more than the Content-Length said."""

    def __init__(self, f, n):
        self._f, self._left = f, n

    def read(self, size=-1):
        if self._left <= 0:
            return b""
        if size < 0 or size > self._left:
            size = self._left
        b = self._f.read(size)
        self._left -= len(b)
        return b


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The API never redirects; a redirect would turn a PUT or POST into a
    # GET elsewhere, so it surfaces as an error instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Client:
    """A client of one mito coordinator.

    ``url`` defaults to $MITO_COORDINATOR, else http://127.0.0.1:7800.
    ``token`` defaults to $MITO_TOKEN, else the token ``mito client login``
    stored for that coordinator (see :func:`load_token`). ``timeout`` bounds
    each call's connection and reads, in seconds; it must stay over the
    coordinator's 25 s long polls.

    The token is never shown: not in repr, not in error messages.
    """

    def __init__(self, url=None, token=None, timeout=60):
        url = url or os.environ.get("MITO_COORDINATOR") or DEFAULT_COORDINATOR
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise Invalid("invalid", "invalid coordinator URL %r: want http://host:port or https://host:port" % url, "url")
        self._url = url.rstrip("/")
        if token is None:
            token = os.environ.get("MITO_TOKEN") or load_token(self._url)
        self._token = token or None
        self._timeout = timeout
        self._user = None
        self._opener = urllib.request.build_opener(_NoRedirect)

    @property
    def url(self):
        """The coordinator's URL, without a trailing slash."""
        return self._url

    @property
    def has_token(self):
        """Whether the client sends a token."""
        return self._token is not None

    def __repr__(self):
        return "Client(url=%r, token=%s)" % (self._url, "<set>" if self._token else "None")

    # --- transport -------------------------------------------------------

    def _request(self, method, path, query=None, data=None, headers=None, timeout=None):
        """Send one call and return the open response; an error answer or a
        failed connection raises MitoError. The caller closes the response."""
        url = self._url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if self._token:
            # Unredirected: never sent on to another address.
            req.add_unredirected_header("Authorization", "Bearer " + self._token)
        try:
            return self._opener.open(req, timeout=timeout or self._timeout)
        except urllib.error.HTTPError as e:
            try:
                body = e.read(64 << 10)
            except OSError:
                body = b""
            finally:
                e.close()
            raise errors.from_response(e.code, body, e.reason) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None

    def _unreachable(self, e):
        reason = getattr(e, "reason", None) or e
        return Unavailable("unavailable", "cannot reach coordinator at %s: %s" % (self._url, reason))

    def _call(self, method, path, body=None, query=None, timeout=None):
        """Send body as JSON (if not None) and return the decoded answer, or
        None for an empty one (204)."""
        data, headers = None, {}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT"):
            data = b""
        resp = self._request(method, path, query, data, headers, timeout)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None
        finally:
            resp.close()
        if not raw.strip():
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise MitoError("internal", "decode %s %s response: %s" % (method, path, e)) from None

    # --- accounts --------------------------------------------------------

    def login(self, user, password, expires=None):
        """Exchange a user's password for a token and return a new Client
        of the same coordinator that sends it. ``expires`` asks for a
        lifetime ("12h", "30d", seconds or a timedelta); None lets the
        coordinator choose (30 days). The token is not stored on disk."""
        body = {"user": user, "password": password}
        if expires is not None:
            body["expires"] = _duration("expires", expires)
        out = self._call("POST", "/api/v1/auth/login", body)
        c = Client(self._url, out["token"], self._timeout)
        c._user = (out.get("user") or {}).get("name")
        return c

    def whoami(self):
        """Return the user the token authenticates: the cheapest check that
        a token works, and how a client learns its personal group."""
        u = self._call("GET", "/api/v1/auth/whoami")
        self._user = u.get("name")
        return u

    def _personal_group(self):
        if not self._user:
            self.whoami()
        return self._user

    # --- tasks -----------------------------------------------------------

    def _spec(self, spec):
        """Check and complete one spec dict: group defaults to the caller's
        personal group, inputs may be given as --input strings."""
        spec = dict(spec)
        if not spec.get("group"):
            spec["group"] = self._personal_group()
        if spec.get("inputs"):
            spec["inputs"] = [parse_input(i) for i in spec["inputs"]]
        if "timeout" in spec and spec["timeout"] is not None:
            spec["timeout"] = _duration("timeout", spec["timeout"])
        return {k: v for k, v in spec.items() if v not in (None, [], {}, "")}

    def submit(self, command=None, shell=None, group=None, tags=(), labels=(), env=None,
               timeout=None, priority=0, max_attempts=None, inputs=()):
        """Queue one task and return it.

        Give either ``command``, an argv list run without a shell, or
        ``shell``, a script for /bin/sh -c. ``group`` defaults to the
        caller's personal group. ``tags`` are what a host must have,
        ``labels`` free metadata for :meth:`list`. ``timeout`` is a duration
        ("10m", seconds, a timedelta; default the coordinator's). ``inputs``
        are files fetched into the work directory first, as strings like
        ``"attachment:data/train.csv"`` or ``"task:42/model.bin=model.bin"``
        or as the API's dicts. An invalid spec raises :class:`Invalid`
        whose ``field`` names what to fix.
        """
        if isinstance(command, str):
            raise TypeError("command must be a list of arguments; give a script as shell=")
        spec = {
            "group": group,
            "command": list(command) if command else None,
            "shell": shell,
            "env": dict(env) if env else None,
            "timeout": timeout,
            "priority": priority or None,
            "tags": _strings(tags),
            "labels": _strings(labels),
            "max_attempts": max_attempts,
            "inputs": list(inputs or ()),
        }
        return self._call("POST", "/api/v1/tasks", self._spec(spec))

    def submit_batch(self, specs):
        """Queue many tasks at once, all or none, and return them in the
        order of specs. Each spec is a dict of the API's Spec fields
        (``group``, ``command`` or ``shell``, ``env``, ``timeout``, ...);
        a missing group is the caller's personal group. An error names the
        spec, e.g. field ``tasks[3].timeout``."""
        out = self._call("POST", "/api/v1/tasks/batch", {"tasks": [self._spec(s) for s in specs]})
        return out["tasks"]

    def get(self, task_id):
        """Return a task as it is now."""
        return self._call("GET", _task_path(task_id))

    def list(self, group=None, tag=None, label=None, state=None, creator=None, host=None,
             since=None, until=None, before=None, limit=None):
        """Return one page of tasks, newest first, that match every filter:
        ``group``, ``tag`` and ``label`` take a string or a list (all tags
        and labels must be present), ``state`` a state or a list of them,
        ``since`` and ``until`` datetimes with a time zone or RFC 3339
        strings, ``before`` a task id (the next page starts below it) and
        ``limit`` 1 to 1000 (default 100). See :meth:`iter_tasks` for
        every page."""
        return self._list_page(group, tag, label, state, creator, host, since, until, before, limit)[0]

    def iter_tasks(self, group=None, tag=None, label=None, state=None, creator=None, host=None,
                   since=None, until=None, limit=None):
        """Yield every task that matches the filters of :meth:`list`, newest
        first, fetching page after page."""
        before = None
        while True:
            page, nxt = self._list_page(group, tag, label, state, creator, host, since, until, before, limit)
            for t in page:
                yield t
            if not nxt:
                return
            before = nxt

    def _list_page(self, group, tag, label, state, creator, host, since, until, before, limit):
        q = [("group", g) for g in _strings(group)]
        q += [("tag", t) for t in _strings(tag)]
        q += [("label", lb) for lb in _strings(label)]
        if state:
            q.append(("state", ",".join(_strings(state))))
        if creator:
            q.append(("creator", creator))
        if host:
            q.append(("host", host))
        if since is not None:
            q.append(("since", _rfc3339("since", since)))
        if until is not None:
            q.append(("until", _rfc3339("until", until)))
        if before:
            q.append(("before", str(int(before))))
        if limit:
            q.append(("limit", str(int(limit))))
        out = self._call("GET", "/api/v1/tasks", query=q)
        return out.get("tasks") or [], out.get("next") or 0

    def cancel(self, task_id):
        """Stop a task: a queued one never starts, a running one is killed.
        The task returned may still be running until its host confirms;
        :meth:`wait` tells when it is final. A final task raises Conflict."""
        return self._call("POST", _task_path(task_id) + "/cancel")

    def retry(self, task_id):
        """Queue a copy of a final task's spec as a new task (with
        ``retry_of`` set) and return it; a task not final raises Conflict."""
        return self._call("POST", _task_path(task_id) + "/retry")

    def wait(self, task_id, timeout=None):
        """Return the task once it is final (succeeded, failed, timed_out or
        cancelled). The coordinator holds each request until the task ends
        or up to 25 s, so this needs no sleep loop. With ``timeout``
        (seconds), raise TimeoutError if the task is still not final then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _MAX_WAIT
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    t = self.get(task_id)
                    if t["state"] in FINAL_STATES:
                        return t
                    raise TimeoutError("task %s is still %s after %gs" % (task_id, t["state"], timeout))
                wait = min(wait, left)
            t = self._call("GET", _task_path(task_id), query={"wait": "%.3fs" % wait}, timeout=max(self._timeout, wait + 30))
            if t["state"] in FINAL_STATES:
                return t

    def logs(self, task_id, stream="stdout", attempt=None):
        """Return what a task wrote so far to ``stream`` ("stdout" or
        "stderr") in ``attempt`` (default the latest), as bytes."""
        if stream not in ("stdout", "stderr"):
            raise _invalid("stream", "want stdout or stderr, got %r" % (stream,))
        out, offset = [], 0
        while True:
            q = {"stream": stream, "offset": str(offset), "limit": str(_LOG_PAGE)}
            if attempt:
                q["attempt"] = str(int(attempt))
            resp = self._request("GET", _task_path(task_id) + "/logs", q, headers={"Accept": "application/octet-stream"})
            try:
                b = resp.read()
                nxt = resp.headers.get("X-Mito-Next-Offset")
            except (OSError, http.client.HTTPException) as e:
                raise self._unreachable(e) from None
            finally:
                resp.close()
            nxt = int(nxt) if nxt and nxt.isdigit() else offset + len(b)
            out.append(b)
            if not b or nxt <= offset:
                return b"".join(out)
            offset = nxt

    def artifacts(self, task_id):
        """List the files a task's attempts left in their output
        directories, each with ``name``, ``attempt``, ``size`` and
        ``sha256``."""
        return self._call("GET", _task_path(task_id) + "/artifacts").get("artifacts") or []

    def download_artifact(self, task_id, name, path, attempt=None):
        """Download artifact ``name`` of a task into the directory ``path``
        (created if missing) and return the file's local path: a name
        ``sub/y.txt`` lands in ``path/sub/y.txt``. ``attempt`` defaults to
        the latest that wrote the name.

        The name comes from a task, so it is untrusted: one with "..", an
        absolute one or any other that could lead outside ``path`` raises
        :class:`Invalid` before any request, and no symbolic link on the
        way is followed. The bytes go to a temporary file, are checked
        against the SHA-256 the coordinator recorded, and only then are
        renamed into place, replacing a file of that name: a failed
        download leaves nothing behind."""
        name = clean_path("name", name)
        q = {"attempt": str(int(attempt))} if attempt else None
        segs = "/".join(urllib.parse.quote(s, safe="") for s in name.split("/"))
        resp = self._request("GET", _task_path(task_id) + "/artifacts/" + segs, q, headers=_raw_headers())
        with resp:
            return _save_under(path, name, resp, "artifact %s of task %s" % (name, task_id), self._unreachable)

    # --- attachments -----------------------------------------------------

    def upload_attachment(self, group, key, path):
        """Store the local file ``path`` as attachment ``key`` (a relative
        slash path such as ``data/train.csv``) of ``group`` (None: the
        personal group), replacing one of that key once the upload is
        complete, and return the Attachment. The file is streamed with its
        Content-Length, never read whole. An upload the group's quota
        cannot take raises :class:`QuotaExceeded` and stores nothing."""
        key = clean_path("key", key)
        group = group or self._personal_group()
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return self._upload(_attachment_path(group, key), _LimitedReader(f, size), size)

    def _upload(self, path, body, size):
        # http.client rather than urllib: when the coordinator refuses an
        # upload before reading it (a quota), it answers and closes while
        # the body is still going out; the answer is then read after the
        # failed send, so the caller learns why rather than "broken pipe".
        u = urllib.parse.urlsplit(self._url)
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = cls(u.netloc, timeout=self._timeout)
        try:
            try:
                conn.putrequest("PUT", (u.path or "") + path, skip_accept_encoding=True)
                conn.putheader("Content-Type", "application/octet-stream")
                conn.putheader("Content-Length", str(size))
                conn.putheader("Accept", "application/json")
                if self._token:
                    conn.putheader("Authorization", "Bearer " + self._token)
                conn.endheaders()
                send_err = None
                try:
                    while True:
                        chunk = body.read(_CHUNK)
                        if not chunk:
                            break
                        conn.send(chunk)
                except OSError as e:
                    send_err = e
                try:
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException) as e:
                    raise self._unreachable(send_err or e) from None
                raw = resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise self._unreachable(e) from None
            if resp.status >= 300:
                raise errors.from_response(resp.status, raw[: 64 << 10], resp.reason)
            try:
                return json.loads(raw.decode("utf-8"))
            except ValueError as e:
                raise MitoError("internal", "decode PUT attachment response: %s" % e) from None
        finally:
            conn.close()

    def list_attachments(self, group=None, prefix=""):
        """Return every attachment of ``group`` (None: the personal group)
        whose key starts with ``prefix``, ordered by key, each with
        ``key``, ``size``, ``sha256``, ``creator`` and ``created_at``;
        pages are fetched as needed."""
        group = group or self._personal_group()
        out, after = [], ""
        while True:
            q = {}
            if prefix:
                q["prefix"] = prefix
            if after:
                q["after"] = after
            page = self._call("GET", _attachments_path(group), query=q)
            out.extend(page.get("attachments") or [])
            after = page.get("next_after") or ""
            if not after:
                return out

    def download_attachment(self, group, key, path):
        """Download attachment ``key`` of ``group`` (None: the personal
        group) to the file ``path`` and return ``path``. The bytes go to a
        temporary file next to it, are checked against the recorded
        SHA-256, and only then replace ``path``: a failed download leaves
        nothing behind."""
        key = clean_path("key", key)
        group = group or self._personal_group()
        resp = self._request("GET", _attachment_path(group, key), headers=_raw_headers())
        with resp:
            directory = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=".mito-", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    _copy_checked(resp, f, "attachment %s" % key, self._unreachable)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, path)
            except BaseException:
                _remove(tmp)
                raise
        return path

    def set_group_quota(self, group, quota_bytes):
        """Bound the bytes ``group``'s attachments and artifacts may take
        together in the artifact store (0: no limit) and return the group
        with ``quota_bytes`` and ``used_bytes``. Only a global admin may,
        so that a group cannot lift its own limit."""
        return self._call("PUT", "/api/v1/groups/%s/quota" % urllib.parse.quote(group, safe=""), {"bytes": int(quota_bytes)})

    def delete_attachment(self, group, key):
        """Delete attachment ``key`` of ``group`` (None: the personal
        group), giving its size back to the group's quota. Tasks already
        queued that take it as an input fail when they start."""
        key = clean_path("key", key)
        group = group or self._personal_group()
        self._call("DELETE", _attachment_path(group, key))


def _task_path(task_id):
    if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id <= 0:
        raise _invalid("id", "want a positive task ID, got %r" % (task_id,))
    return "/api/v1/tasks/%d" % task_id


def _attachments_path(group):
    return "/api/v1/groups/%s/attachments" % urllib.parse.quote(group, safe="")


def _attachment_path(group, key):
    # Each segment escaped, the '/' separators kept: the route takes them
    # as part of the key.
    return _attachments_path(group) + "/" + "/".join(urllib.parse.quote(s, safe="") for s in key.split("/"))


def _raw_headers():
    # The bytes as stored: a transparently compressed body would not match
    # the recorded size and SHA-256.
    return {"Accept": "application/octet-stream", "Accept-Encoding": "identity"}


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def _remove(p, dir_fd=None):
    try:
        os.unlink(p, dir_fd=dir_fd) if dir_fd is not None else os.unlink(p)
    except OSError:
        pass


def _copy_checked(resp, f, what, unreachable):
    """Copy resp's body to f in chunks, then check its size against
    Content-Length and its SHA-256 against X-Mito-SHA256."""
    want_sum = (resp.headers.get("X-Mito-SHA256") or "").lower()
    length = resp.headers.get("Content-Length")
    h, n = hashlib.sha256(), 0
    while True:
        try:
            chunk = resp.read(_CHUNK)
        except (OSError, http.client.HTTPException) as e:
            # A failure of the transfer; one of f (a full disk) is the
            # caller's to see as it is.
            raise unreachable(e) from None
        if not chunk:
            break
        h.update(chunk)
        f.write(chunk)
        n += len(chunk)
    if length is not None and length.isdigit() and int(length) != n:
        raise ChecksumMismatch("internal", "download %s: got %d bytes; the coordinator announced %s" % (what, n, length))
    if not want_sum:
        raise ChecksumMismatch("internal", "download %s: the coordinator sent no X-Mito-SHA256 to check it against" % what)
    if h.hexdigest() != want_sum:
        raise ChecksumMismatch("internal", "download %s: sha256 %s; the coordinator recorded %s" % (what, h.hexdigest(), want_sum))
    return n


def _save_under(root, name, resp, what, unreachable):
    """Write resp's body to root/name, name a clean relative slash path,
    through a temporary file renamed into place. Each directory on the way
    is opened relative to the one before it without following symbolic
    links (O_NOFOLLOW), so that a link planted in root cannot lead the
    write elsewhere; the rename replaces a link in the target's place,
    never what it points to."""
    segs = name.split("/")
    os.makedirs(root, exist_ok=True)
    if not (os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")):
        return _save_under_portable(root, segs, resp, what, unreachable)
    dflags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for s in segs[:-1]:
            try:
                os.mkdir(s, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nfd = os.open(s, dflags, dir_fd=fd)
            except OSError as e:
                raise Invalid("invalid", "download %s: %s is not a directory under %s (%s)" % (what, s, root, e.strerror), "name") from None
            os.close(fd)
            fd = nfd
        last = segs[-1]
        tmp = ".%s.%s.tmp" % (last[:64], os.urandom(6).hex())
        ffd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=fd)
        try:
            with os.fdopen(ffd, "wb") as f:
                _copy_checked(resp, f, what, unreachable)
                f.flush()
                os.fsync(f.fileno())
            try:
                st = os.stat(last, dir_fd=fd, follow_symlinks=False)
                if (st.st_mode & 0o170000) == 0o040000:
                    raise Invalid("invalid", "download %s: %s is a directory" % (what, os.path.join(root, *segs)), "name")
            except FileNotFoundError:
                pass
            os.rename(tmp, last, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            _remove(tmp, fd)
            raise
    finally:
        os.close(fd)
    return os.path.join(root, *segs)


def _save_under_portable(root, segs, resp, what, unreachable):
    # Without dir_fd (Windows): check that the resolved parent is still
    # under the resolved root.
    real_root = os.path.realpath(root)
    parent = os.path.join(root, *segs[:-1])
    os.makedirs(parent, exist_ok=True)
    real_parent = os.path.realpath(parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise Invalid("invalid", "download %s: %s leads outside %s" % (what, parent, root), "name")
    target = os.path.join(parent, segs[-1])
    fd, tmp = tempfile.mkstemp(prefix=".mito-", suffix=".tmp", dir=real_parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _copy_checked(resp, f, what, unreachable)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    return target
