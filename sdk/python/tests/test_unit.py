"""Unit tests of the mito SDK against a tiny fake coordinator (http.server).

Run from the repository root: python3 -m unittest discover -s sdk/python/tests -v
"""

import hashlib
import http.server
import json
import os
import socket
import sys
import tempfile
import threading
import unittest
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mito  # noqa: E402
from mito import errors  # noqa: E402

TOKEN = "tok-0123456789abcdef-secret"


class FakeCoordinator:
    """An HTTP server whose answers a test sets per (method, path), and
    which records every request it gets."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                fake.requests.append((self.command, self.path, dict(self.headers), body))
                path = self.path.split("?", 1)[0]
                route = fake.routes.get((self.command, path))
                if route is None:
                    status, headers, out = 404, {}, json.dumps({"error": {"code": "not_found", "message": "no route " + path}}).encode()
                else:
                    status, headers, out = route(self) if callable(route) else route
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def ok(obj, status=200):
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def api_error(status, code, message, field=""):
    e = {"code": code, "message": message}
    if field:
        e["field"] = field
    return status, {"Content-Type": "application/json"}, json.dumps({"error": e}).encode()


def blob(data, sha=None):
    return 200, {"X-Mito-SHA256": sha or hashlib.sha256(data).hexdigest()}, data


class FakeTestCase(unittest.TestCase):
    def setUp(self):
        self.fake = FakeCoordinator()
        self.addCleanup(self.fake.close)
        self.client = mito.Client(self.fake.url, TOKEN)
        self.tmp = tempfile.mkdtemp(prefix="mito-sdk-test-")
        self.addCleanup(lambda: __import__("shutil").rmtree(self.tmp, ignore_errors=True))


class TestParseInput(unittest.TestCase):
    def test_valid(self):
        cases = [
            ("attachment:data.csv", {"attachment": "data.csv", "path": "data.csv"}),
            ("attachment:./d/x.csv=in/x.csv", {"attachment": "d/x.csv", "path": "in/x.csv"}),
            ("task:42/out/model.bin", {"task": 42, "artifact": "out/model.bin", "path": "out/model.bin"}),
            ("task:7/m.bin=model.bin", {"task": 7, "artifact": "m.bin", "path": "model.bin"}),
            ({"attachment": "a.txt"}, {"attachment": "a.txt", "path": "a.txt"}),
            ({"task": 3, "artifact": "r.csv", "path": "x"}, {"task": 3, "artifact": "r.csv", "path": "x"}),
        ]
        for given, want in cases:
            with self.subTest(given=given):
                self.assertEqual(mito.parse_input(given), want)

    def test_invalid(self):
        cases = [
            ("attachment:data.csv=", "PATH after '=' is empty"),
            ("data.csv", "want attachment:KEY"),
            ("attachment:", "KEY after attachment: is empty"),
            ("task:x/out", "task number"),
            ("task:0/out", "task number"),
            ("task:5", "task number"),
            ("task:5/", "NAME after task:5/ is empty"),
            ("file:x", 'unknown source "file"'),
            ("attachment:../etc/passwd", '".." segment'),
            ("attachment:/etc/passwd", "must be a relative path"),
            ("attachment:x=../../y", '".." segment'),
            ({"attachment": "a", "task": 1, "artifact": "b"}, "not both"),
            ({"nothing": 1}, "unknown keys"),
            (42, "want a string or a dict"),
        ]
        for given, want in cases:
            with self.subTest(given=given):
                with self.assertRaises(mito.Invalid) as cm:
                    mito.parse_input(given)
                self.assertIn(want, str(cm.exception))
                self.assertTrue(cm.exception.field.startswith("inputs"), cm.exception.field)


class TestCleanPath(unittest.TestCase):
    def test_table(self):
        cases = [
            ("a/b.txt", "a/b.txt", ""),
            ("./a/./b", "a/b", ""),
            ("../x", None, '".." segment'),
            ("a/../../x", None, '".." segment'),
            ("/etc/passwd", None, "relative"),
            ("a//b", None, "empty segment"),
            ("a\\b", None, "backslash"),
            ("a\x01b", None, "control character"),
            ("a\x00b", None, "NUL"),
            ("", None, "is empty"),
            (".", None, "is empty"),
            ("x" * 1025, None, "1024 bytes"),
        ]
        for given, want, problem in cases:
            with self.subTest(given=given[:20]):
                if want is not None:
                    self.assertEqual(mito.clean_path("name", given), want)
                    continue
                with self.assertRaises(mito.Invalid) as cm:
                    mito.clean_path("name", given)
                self.assertIn(problem, str(cm.exception))
                self.assertEqual(cm.exception.field, "name")


class TestErrorMapping(unittest.TestCase):
    def test_api_bodies(self):
        cases = [
            (400, "invalid", mito.Invalid),
            (401, "unauthorized", mito.Unauthorized),
            (403, "forbidden", mito.Forbidden),
            (404, "not_found", mito.NotFound),
            (409, "conflict", mito.Conflict),
            (409, "stale_lease", mito.Conflict),
            (413, "quota_exceeded", mito.QuotaExceeded),
            (413, "too_large", mito.TooLarge),
            (503, "unavailable", mito.Unavailable),
            (500, "internal", mito.MitoError),
            (418, "teapot", mito.MitoError),
        ]
        for status, code, cls in cases:
            with self.subTest(code=code):
                body = json.dumps({"error": {"code": code, "field": "timeout", "message": "timeout: bad"}}).encode()
                e = errors.from_response(status, body)
                self.assertIs(type(e), cls)
                self.assertEqual((e.code, e.field, e.message, e.status), (code, "timeout", "timeout: bad", status))
                self.assertIsInstance(e, mito.MitoError)

    def test_other_bodies(self):
        cases = [
            (502, b"<html>Bad Gateway</html>", mito.Unavailable, "unavailable"),
            (404, b"404 page not found", mito.NotFound, "not_found"),
            (500, b"\xff\xfe", mito.MitoError, "internal"),
            (413, b'{"error": {}}', mito.TooLarge, "too_large"),
        ]
        for status, body, cls, code in cases:
            with self.subTest(status=status, body=body):
                e = errors.from_response(status, body, "Reason")
                self.assertIs(type(e), cls)
                self.assertEqual(e.code, code)
                self.assertIn("coordinator answered %d" % status, str(e))

    def test_quota_is_a_mito_error(self):
        self.assertTrue(issubclass(mito.QuotaExceeded, mito.MitoError))


class TestCalls(FakeTestCase):
    def test_not_found_from_the_coordinator(self):
        self.fake.routes[("GET", "/api/v1/tasks/5")] = api_error(404, "not_found", "task 5 not found")
        with self.assertRaises(mito.NotFound) as cm:
            self.client.get(5)
        self.assertEqual((cm.exception.status, cm.exception.message), (404, "task 5 not found"))
        _, _, headers, _ = self.fake.requests[-1]
        self.assertEqual(headers.get("Authorization"), "Bearer " + TOKEN)

    def test_submit_fills_group_and_parses_inputs(self):
        self.fake.routes[("GET", "/api/v1/auth/whoami")] = ok({"name": "ann"})
        self.fake.routes[("POST", "/api/v1/tasks")] = lambda h: ok({"id": 9, "state": "queued"}, 201)
        t = self.client.submit(shell="echo hi", tags="gpu", timeout=90, env={"A": "1"}, inputs=["attachment:d.csv=in.csv"])
        self.assertEqual(t["id"], 9)
        method, path, headers, body = self.fake.requests[-1]
        self.assertEqual(headers.get("Content-Type"), "application/json")
        self.assertEqual(json.loads(body), {
            "group": "ann",
            "shell": "echo hi",
            "tags": ["gpu"],
            "timeout": "90s",
            "env": {"A": "1"},
            "inputs": [{"attachment": "d.csv", "path": "in.csv"}],
        })

    def test_submit_refuses_a_bad_input_before_any_request(self):
        with self.assertRaises(mito.Invalid):
            self.client.submit(command=["true"], group="g", inputs=["attachment:../x"])
        self.assertEqual(self.fake.requests, [])

    def test_invalid_field_from_the_coordinator(self):
        self.fake.routes[("POST", "/api/v1/tasks/batch")] = api_error(400, "invalid", "tasks[1].timeout: bad", "tasks[1].timeout")
        with self.assertRaises(mito.Invalid) as cm:
            self.client.submit_batch([{"group": "g", "shell": "a"}, {"group": "g", "shell": "b", "timeout": "x"}])
        self.assertEqual(cm.exception.field, "tasks[1].timeout")

    def test_list_query(self):
        self.fake.routes[("GET", "/api/v1/tasks")] = ok({"tasks": [{"id": 3}], "next": 0})
        got = self.client.list(group="g", tag=["a", "b"], state=["failed", "timed_out"], limit=5)
        self.assertEqual(got, [{"id": 3}])
        _, path, _, _ = self.fake.requests[-1]
        self.assertEqual(path, "/api/v1/tasks?group=g&tag=a&tag=b&state=failed%2Ctimed_out&limit=5")

    def test_wait_long_polls_until_final(self):
        states = iter(["queued", "running", "succeeded"])
        self.fake.routes[("GET", "/api/v1/tasks/4")] = lambda h: ok({"id": 4, "state": next(states)})
        t = self.client.wait(4)
        self.assertEqual(t["state"], "succeeded")
        self.assertEqual(len(self.fake.requests), 3)
        for _, path, _, _ in self.fake.requests:
            self.assertIn("wait=25.000s", path)

    def test_wait_timeout(self):
        self.fake.routes[("GET", "/api/v1/tasks/4")] = ok({"id": 4, "state": "running"})
        with self.assertRaises(TimeoutError):
            self.client.wait(4, timeout=0.05)

    def test_logs_pages(self):
        data = b"x" * 10

        def page(h):
            off = int(h.path.split("offset=")[1].split("&")[0])
            chunk = data[off:off + 4]
            return 200, {"X-Mito-Next-Offset": str(off + len(chunk))}, chunk

        self.fake.routes[("GET", "/api/v1/tasks/2/logs")] = page
        self.assertEqual(self.client.logs(2), data)

    def test_upload_streams_with_content_length(self):
        src = os.path.join(self.tmp, "up.bin")
        with open(src, "wb") as f:
            f.write(b"0123456789" * 1000)
        self.fake.routes[("PUT", "/api/v1/groups/g/attachments/dir/a%20b.bin")] = ok({"key": "dir/a b.bin", "size": 10000}, 201)
        a = self.client.upload_attachment("g", "./dir/a b.bin", src)
        self.assertEqual(a["size"], 10000)
        _, _, headers, body = self.fake.requests[-1]
        self.assertEqual(headers.get("Content-Length"), "10000")
        self.assertEqual(headers.get("Authorization"), "Bearer " + TOKEN)
        self.assertEqual(body, b"0123456789" * 1000)

    def test_upload_over_quota(self):
        src = os.path.join(self.tmp, "up.bin")
        with open(src, "wb") as f:
            f.write(b"abc")
        self.fake.routes[("PUT", "/api/v1/groups/g/attachments/k")] = api_error(413, "quota_exceeded", "group g: quota of 1 B exceeded")
        with self.assertRaises(mito.QuotaExceeded) as cm:
            self.client.upload_attachment("g", "k", src)
        self.assertEqual((cm.exception.code, cm.exception.status), ("quota_exceeded", 413))

    def test_list_attachments_pages(self):
        def page(h):
            if "after=b" in h.path:
                return ok({"attachments": [{"key": "c"}]})
            return ok({"attachments": [{"key": "a"}, {"key": "b"}], "next_after": "b"})

        self.fake.routes[("GET", "/api/v1/groups/g/attachments")] = page
        self.assertEqual([a["key"] for a in self.client.list_attachments("g", prefix="")], ["a", "b", "c"])


class TestDownloads(FakeTestCase):
    def test_artifact_lands_under_the_directory(self):
        self.fake.routes[("GET", "/api/v1/tasks/1/artifacts/sub/y.txt")] = blob(b"nested\n")
        out = os.path.join(self.tmp, "dl")
        got = self.client.download_artifact(1, "sub/y.txt", out)
        self.assertEqual(got, os.path.join(out, "sub", "y.txt"))
        with open(got, "rb") as f:
            self.assertEqual(f.read(), b"nested\n")
        self.assertEqual(os.listdir(os.path.join(out, "sub")), ["y.txt"])

    def test_refuses_names_leading_out(self):
        out = os.path.join(self.tmp, "dl")
        for name in ["../escape", "a/../../escape", "/etc/passwd", "a\\..\\b", ""]:
            with self.subTest(name=name):
                with self.assertRaises(mito.Invalid):
                    self.client.download_artifact(1, name, out)
        self.assertEqual(self.fake.requests, [], "a refused name must not reach the coordinator")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "escape")))

    def test_does_not_follow_a_symlink_on_the_way(self):
        outside = os.path.join(self.tmp, "outside")
        out = os.path.join(self.tmp, "dl")
        os.makedirs(outside)
        os.makedirs(out)
        os.symlink(outside, os.path.join(out, "sub"))
        self.fake.routes[("GET", "/api/v1/tasks/1/artifacts/sub/x")] = blob(b"x")
        with self.assertRaises(mito.Invalid):
            self.client.download_artifact(1, "sub/x", out)
        self.assertEqual(os.listdir(outside), [])

    def test_checksum_mismatch_leaves_nothing(self):
        self.fake.routes[("GET", "/api/v1/tasks/1/artifacts/r.csv")] = blob(b"data", sha="00" * 32)
        out = os.path.join(self.tmp, "dl")
        with self.assertRaises(mito.ChecksumMismatch):
            self.client.download_artifact(1, "r.csv", out)
        self.assertEqual(os.listdir(out), [])

    def test_attachment_download(self):
        self.fake.routes[("GET", "/api/v1/groups/g/attachments/d/x.csv")] = blob(b"a,b\n")
        dst = os.path.join(self.tmp, "x.csv")
        self.assertEqual(self.client.download_attachment("g", "d/x.csv", dst), dst)
        with open(dst, "rb") as f:
            self.assertEqual(f.read(), b"a,b\n")
        self.fake.routes[("GET", "/api/v1/groups/g/attachments/d/x.csv")] = blob(b"changed", sha="11" * 32)
        with self.assertRaises(mito.ChecksumMismatch):
            self.client.download_attachment("g", "d/x.csv", dst)
        with open(dst, "rb") as f:
            self.assertEqual(f.read(), b"a,b\n", "a failed download replaced the file")
        self.assertEqual(sorted(os.listdir(self.tmp)), ["x.csv"])


class TestCredentials(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mito-sdk-cfg-")
        env = {"MITO_CONFIG_DIR": self.dir}
        patcher = mock.patch.dict(os.environ, env)
        patcher.start()
        self.addCleanup(patcher.stop)
        os.environ.pop("MITO_TOKEN", None)
        os.environ.pop("MITO_COORDINATOR", None)

    def write(self, creds):
        with open(os.path.join(self.dir, "credentials.json"), "w") as f:
            json.dump(creds, f)

    def test_token_from_the_cli_file(self):
        self.write({
            "http://lab1:7800": {"token": "t1", "user": "ann", "expires": "2999-01-01T00:00:00.123456789Z"},
            "http://lab2:7800": {"token": "t2", "user": "ann", "expires": "2001-01-01T00:00:00Z"},
            "http://127.0.0.1:7800": {"token": "t3", "user": "bob"},
        })
        cases = [
            ("http://lab1:7800/", "t1"),
            ("http://lab2:7800", None),  # expired
            (None, "t3"),  # the default coordinator
            ("http://lab3:7800", None),
        ]
        for url, want in cases:
            with self.subTest(url=url):
                self.assertEqual(mito.Client(url)._token, want)

    def test_env_comes_first(self):
        self.write({"http://lab1:7800": {"token": "t1"}})
        with mock.patch.dict(os.environ, {"MITO_TOKEN": "envtok", "MITO_COORDINATOR": "http://lab1:7800"}):
            c = mito.Client()
            self.assertEqual((c.url, c._token), ("http://lab1:7800", "envtok"))

    def test_bad_url(self):
        with self.assertRaises(mito.Invalid):
            mito.Client("lab1:7800", "x")


class TestTokenNeverShown(unittest.TestCase):
    def test_repr(self):
        c = mito.Client("http://127.0.0.1:1", TOKEN)
        self.assertNotIn(TOKEN, repr(c))
        self.assertNotIn(TOKEN, str(c))
        self.assertIn("<set>", repr(c))

    def test_connection_error_names_the_url_not_the_token(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = "http://127.0.0.1:%d" % port
        c = mito.Client(url, TOKEN)
        for call in (lambda: c.get(1), lambda: c.whoami(), lambda: c.logs(1)):
            with self.assertRaises(mito.Unavailable) as cm:
                call()
            e = cm.exception
            self.assertIn(url, str(e))
            for text in (str(e), repr(e), repr(e.args)):
                self.assertNotIn(TOKEN, text)

    def test_login_returns_a_client_with_the_token(self):
        fake = FakeCoordinator()
        self.addCleanup(fake.close)
        fake.routes[("POST", "/api/v1/auth/login")] = ok({"token": TOKEN, "user": {"name": "ann"}, "expires": "2999-01-01T00:00:00Z"})
        c = mito.Client(fake.url, token="").login("ann", "pw", expires="12h")
        self.assertEqual(json.loads(fake.requests[-1][3]), {"user": "ann", "password": "pw", "expires": "12h"})
        self.assertTrue(c.has_token)
        self.assertNotIn(TOKEN, repr(c))
        fake.routes[("GET", "/api/v1/auth/whoami")] = api_error(401, "unauthorized", "token expired")
        with self.assertRaises(mito.Unauthorized) as cm:
            c.whoami()
        self.assertNotIn(TOKEN, repr(cm.exception))


if __name__ == "__main__":
    unittest.main()
