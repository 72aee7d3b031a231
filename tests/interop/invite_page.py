#!/usr/bin/python3
"""Opens an invite page in headless Chromium through chromedriver (plain W3C WebDriver over
HTTP, no selenium needed), saves screenshots, fills in the registration form and submits it.
For `tests/e2e_invites.rs`; knows the page only as a user sees it (form fields by name).

Usage: invite_page.py --url URL --shots DIR (--user U --password P | --expect-gone)
Exit code 0 when the page behaved, 1 otherwise.
"""

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

T0 = time.monotonic()


def say(msg):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:500]!r}")

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def start(self, profile):
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "acceptInsecureCerts": True,
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync",
                            "--ignore-certificate-errors", f"--user-data-dir={profile}",
                            "--window-size=420,1200",
                        ],
                    },
                }
            }
        }
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def find(self, css):
        el = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(el.values()))

    def screenshot(self, path):
        png = base64.b64decode(self.s("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)
        say(f"screenshot {path} ({len(png)} bytes)")

    def text(self):
        return self.s("POST", "/execute/sync", {
            "script": "return document.body.innerText", "args": []})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--shots", required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--expect-gone", action="store_true")
    args = p.parse_args()

    port = free_port()
    profile = tempfile.mkdtemp(prefix="kith-chromium-")
    drv = subprocess.Popen(
        ["/usr/bin/chromedriver", f"--port={port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    d = Driver(port)
    failed = False
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                d.call("GET", "/status")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        d.start(profile)
        d.s("POST", "/url", {"url": args.url})
        body = d.text()
        say(f"page title: {d.s('GET', '/title')!r}")
        if args.expect_gone:
            d.screenshot(os.path.join(args.shots, "invite-gone.png"))
            if "no longer valid" not in body and "already been used" not in body:
                say(f"FAIL: expected the used-invite page, got:\n{body}")
                failed = True
            return
        d.screenshot(os.path.join(args.shots, "invite-page.png"))
        for needed in ["invited you", "Conversations", "Create your account", "xmpp:"]:
            if needed not in body:
                say(f"FAIL: page lacks {needed!r}:\n{body}")
                failed = True
        if "<svg" not in d.s("GET", "/source"):
            say("FAIL: no QR code on the page")
            failed = True
        user = d.find("input[name=username]")
        d.s("POST", f"/element/{user}/value", {"text": args.user})
        pw = d.find("input[name=password]")
        d.s("POST", f"/element/{pw}/value", {"text": args.password})
        d.s("POST", f"/element/{d.find('button[type=submit]')}/click", {})
        deadline = time.monotonic() + 15
        while "Welcome" not in (body := d.text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        d.screenshot(os.path.join(args.shots, "invite-registered.png"))
        if "Welcome" not in body or args.user not in body:
            say(f"FAIL: no welcome page after submitting:\n{body}")
            failed = True
        else:
            say("registered through the web form")
    except Exception as e:
        say(f"FAIL: {e}")
        failed = True
    finally:
        try:
            if d.session:
                d.s("DELETE", "")
        except Exception:
            pass
        drv.terminate()
        try:
            drv.wait(10)
        except subprocess.TimeoutExpired:
            drv.kill()
        shutil.rmtree(profile, ignore_errors=True)
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
