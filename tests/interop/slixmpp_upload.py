#!/usr/bin/python3
"""XEP-0363 HTTP File Upload with slixmpp's own `xep_0363` plugin, driven by
tests/interop_slixmpp.rs.

Owns: the client side of one upload: alice logs in (STARTTLS, certificate not verified),
the plugin discovers the upload service through the server's disco#items, reads its
max-file-size, requests a slot and PUTs the file with aiohttp (Debian's python3-aiohttp);
then the file is fetched from the returned GET URL and must be byte-identical. A second
file over the advertised limit must be refused by the plugin (FileTooBig) before any
request. Must not know kith's internals: XMPP and HTTPS to HOST only.

Test servers use self-signed certificates and names like upload.localhost that the system
resolver may not know, so aiohttp's sessions get a connector that skips verification and
resolves every name to HOST.

Usage: slixmpp_upload.py --port N [--host 127.0.0.1] [--domain localhost]
       [--alice alice:PASS] [--verbose] [--timeout 30]
Prints one "[...] STEP/ok" line per step; exit 0 = pass, 1 = a step failed, 2 = timeout.
"""

import argparse
import asyncio
import os
import socket
import ssl
import sys
import tempfile

import aiohttp
import slixmpp
from slixmpp.plugins.xep_0363 import http_upload

import steps
from steps import fail, ok, step




class ToHost(aiohttp.abc.AbstractResolver):
    """Resolves every name to the test server's address."""

    def __init__(self, host):
        self.host = host

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": self.host, "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self):
        pass


def session_factory(host):
    def make(*args, **kwargs):
        kwargs["connector"] = aiohttp.TCPConnector(ssl=False, resolver=ToHost(host))
        return aiohttp.ClientSession(*args, **kwargs)
    return make


# COMPAT: slixmpp 1.8.3 (Debian bookworm) passes coroutines to asyncio.wait in
# xep_0030's get_info_from_domain, which xep_0363 uses for discovery; Python >= 3.11 refuses
# that ("Passing coroutines is forbidden"). Wrap them in tasks so the plugin's own discovery
# path still runs.
_asyncio_wait = asyncio.wait


async def _wait_accepting_coroutines(fs, *args, **kwargs):
    return await _asyncio_wait([asyncio.ensure_future(f) for f in fs], *args, **kwargs)


asyncio.wait = _wait_accepting_coroutines


class Alice(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._start)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0363")

    def _start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)


async def run(args):
    user, password = args.alice.split(":", 1)
    alice = Alice(f"{user}@{args.domain}", password)
    step("login")
    alice.connect((args.host, args.port), force_starttls=True)
    await asyncio.wait_for(alice.started, 15)
    ok(str(alice.boundjid))

    data = bytes((i * 7 + i // 251) % 256 for i in range(50_000))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "holiday photo.jpg")
        with open(path, "wb") as f:
            f.write(data)

        step("upload with xep_0363")
        url = await alice["xep_0363"].upload_file(path, timeout=15)
        if alice["xep_0363"].upload_service != f"upload.{args.domain}":
            fail(f"service found: {alice['xep_0363'].upload_service}")
        ok(url)

        step("download is byte-identical")
        async with session_factory(args.host)() as s:
            async with s.get(url) as r:
                if r.status != 200:
                    fail(f"GET {url}: {r.status}")
                got = await r.read()
                ctype = r.headers.get("Content-Type")
        if got != data:
            fail(f"got {len(got)} bytes, not the {len(data)} uploaded")
        if ctype != "image/jpeg":
            fail(f"Content-Type {ctype}")
        ok(f"{len(got)} bytes, {ctype}")

        step("a file over max-file-size is refused")
        limit = alice["xep_0363"].max_file_size
        big = os.path.join(tmp, "big.bin")
        with open(big, "wb") as f:
            f.truncate(int(limit) + 1)
        try:
            await alice["xep_0363"].upload_file(big, timeout=15)
            fail("the upload went through")
        except http_upload.FileTooBig:
            ok(f"limit {limit}")

    alice.disconnect()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--alice", default="alice:alice-secret-1")
    p.add_argument("--bob", default=None)  # accepted for the runner's uniform command line
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    steps.log_to_stderr(args.verbose)
    # The plugin opens its own aiohttp session for the PUT.
    http_upload.ClientSession = session_factory(args.host)
    sys.exit(steps.run(run(args), args.timeout, "all steps passed"))


if __name__ == "__main__":
    main()
