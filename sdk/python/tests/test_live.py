"""Tests of the mito SDK against a real coordinator.

Skipped unless MITO_SDK_LIVE=1; e2e/python_sdk_test.go runs them against a
lab it starts, with MITO_COORDINATOR set and the admin logged in through
the CLI (MITO_CONFIG_DIR), so that the token comes from the CLI's
credentials file. MITO_SDK_USER and MITO_SDK_PASSWORD, when set, test
Client.login too.
"""

import hashlib
import os
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mito  # noqa: E402

LIVE = os.environ.get("MITO_SDK_LIVE") == "1"


@unittest.skipUnless(LIVE, "set MITO_SDK_LIVE=1 and MITO_COORDINATOR to run against a coordinator (e2e/python_sdk_test.go does)")
class TestLive(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = mito.Client()
        cls.user = cls.client.whoami()["name"]
        cls.group = cls.user
        cls.tmp = tempfile.mkdtemp(prefix="mito-sdk-live-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_login(self):
        user, password = os.environ.get("MITO_SDK_USER"), os.environ.get("MITO_SDK_PASSWORD")
        if not (user and password):
            self.skipTest("MITO_SDK_USER and MITO_SDK_PASSWORD not set")
        c = mito.Client(token="").login(user, password, expires="1h")
        self.assertEqual(c.whoami()["name"], user)
        with self.assertRaises(mito.Unauthorized):
            mito.Client(token="").login(user, "wrong " + password)

    def test_task_with_artifact(self):
        c = self.client
        t = c.submit(shell='echo "hello $MITO_TASK_ID"; echo warn >&2; mkdir -p "$MITO_OUTPUT_DIR/sub"; '
                           'printf "a,b\\n1,2\\n" > "$MITO_OUTPUT_DIR/sub/r.csv"',
                     labels=["sdk-live"], timeout="1m")
        self.assertEqual((t["group"], t["state"]), (self.group, "queued"))
        done = c.wait(t["id"], timeout=60)
        self.assertEqual(done["state"], "succeeded", done)
        self.assertEqual(c.logs(t["id"]), b"hello %d\n" % t["id"])
        self.assertEqual(c.logs(t["id"], stream="stderr"), b"warn\n")
        self.assertIn(t["id"], [x["id"] for x in c.list(label="sdk-live", state="succeeded")])

        arts = c.artifacts(t["id"])
        self.assertEqual([a["name"] for a in arts], ["sub/r.csv"])
        want = b"a,b\n1,2\n"
        self.assertEqual((arts[0]["size"], arts[0]["sha256"]), (len(want), hashlib.sha256(want).hexdigest()))
        out = os.path.join(self.tmp, "artifacts")
        got = c.download_artifact(t["id"], "sub/r.csv", out)
        with open(got, "rb") as f:
            self.assertEqual(f.read(), want)
        with self.assertRaises(mito.Invalid):
            c.download_artifact(t["id"], "../r.csv", out)

        # A retry of a final task is a new task; cancelling a final one is a conflict.
        r = c.retry(t["id"])
        self.assertEqual(r["retry_of"], t["id"])
        c.wait(r["id"], timeout=60)
        with self.assertRaises(mito.Conflict):
            c.cancel(r["id"])

    def test_cancel(self):
        c = self.client
        t = c.submit(command=["sleep", "300"])
        c.cancel(t["id"])
        self.assertEqual(c.wait(t["id"], timeout=30)["state"], "cancelled")

    def test_attachment_as_input(self):
        c = self.client
        src = os.path.join(self.tmp, "data.csv")
        data = b"x,y\n" + b"1,2\n" * 50000
        with open(src, "wb") as f:
            f.write(data)
        key = "sdk/data-%d.csv" % time.time_ns()
        a = c.upload_attachment(self.group, key, src)
        self.assertEqual((a["key"], a["size"], a["sha256"]), (key, len(data), hashlib.sha256(data).hexdigest()))
        self.assertEqual([x["key"] for x in c.list_attachments(self.group, prefix=key)], [key])

        t = c.submit(shell="wc -l < in/data.csv", inputs=["attachment:%s=in/data.csv" % key])
        self.assertEqual(c.wait(t["id"], timeout=60)["state"], "succeeded")
        self.assertEqual(c.logs(t["id"]).strip(), b"50001")

        dst = os.path.join(self.tmp, "copy.csv")
        c.download_attachment(self.group, key, dst)
        with open(dst, "rb") as f:
            self.assertEqual(f.read(), data)

        c.delete_attachment(self.group, key)
        self.assertEqual(c.list_attachments(self.group, prefix=key), [])
        with self.assertRaises(mito.NotFound):
            c.download_attachment(self.group, key, dst)
        with self.assertRaises(mito.Invalid) as cm:
            c.submit(shell="true", inputs=["attachment:" + key])
        self.assertTrue(cm.exception.field.startswith("inputs"), cm.exception.field)

    def test_quota(self):
        c = self.client
        src = os.path.join(self.tmp, "big.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(8 << 20))
        g = c.set_group_quota(self.group, 1 << 20)
        self.addCleanup(c.set_group_quota, self.group, 0)
        self.assertEqual(g["quota_bytes"], 1 << 20)
        with self.assertRaises(mito.QuotaExceeded) as cm:
            c.upload_attachment(self.group, "sdk/big.bin", src)
        self.assertEqual((cm.exception.code, cm.exception.status), ("quota_exceeded", 413))
        self.assertEqual(c.list_attachments(self.group, prefix="sdk/big.bin"), [])

    def test_not_found(self):
        with self.assertRaises(mito.NotFound) as cm:
            self.client.get(10 ** 12)
        self.assertEqual((cm.exception.code, cm.exception.status), ("not_found", 404))
        self.assertNotIn(self.client._token or "-", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
