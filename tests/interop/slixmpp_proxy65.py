#!/usr/bin/python3
"""XEP-0065 SOCKS5 Bytestreams through kith's proxy at proxy.DOMAIN with slixmpp's own
`xep_0065` plugin, driven by tests/interop_slixmpp.rs.

Owns: the client side of one transfer: alice (initiator) finds the proxy through the
server's disco#items and its streamhost address, offers it to bob (target, auto-accepting),
both connect to the proxy with SOCKS5, alice activates and sends a file that bob must receive
byte-identical; with `--min-seconds S` the transfer must take at least S seconds (the
proxy's max_rate). Then an activation for a sid nobody connected is refused with
item-not-found. Must not know kith's internals: XMPP and SOCKS5 to HOST only.

Usage: slixmpp_proxy65.py --port N [--host 127.0.0.1] [--domain localhost]
       [--alice alice:PASS] [--bob bob:PASS] [--bytes N] [--min-seconds S]
       [--verbose] [--timeout 30]
Prints one "[...] STEP/ok" line per step; exit 0 = pass, 1 = a step failed, 2 = timeout.
"""

import argparse
import asyncio
import ssl
import sys
import time

import slixmpp
from slixmpp.exceptions import IqError

import steps
from steps import fail, ok, step




class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.received = bytearray()
        self.got_all = asyncio.get_event_loop().create_future()
        self.expect = 0
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("socks5_data", self._data)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0065", {"auto_accept": True})

    def _start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _data(self, data):
        self.received.extend(data)
        if len(self.received) >= self.expect and not self.got_all.done():
            self.got_all.set_result(True)


async def login(args, creds):
    user, password = creds.split(":", 1)
    c = Client(f"{user}@{args.domain}", password)
    c.connect((args.host, args.port), force_starttls=True)
    await asyncio.wait_for(c.started, 15)
    return c


async def run(args):
    step("login")
    alice = await login(args, args.alice)
    bob = await login(args, args.bob)
    ok()

    proxy = f"proxy.{args.domain}"
    step("alice discovers the proxy and its streamhost")
    proxies = await alice["xep_0065"].discover_proxies()
    found = {str(j): hp for j, hp in proxies.items()}
    if proxy not in found:
        fail(f"proxies found: {found}")
    ok(f"{proxy} at {found[proxy]}")

    data = bytes((i * 31 + i // 97) % 256 for i in range(args.bytes))
    bob.expect = len(data)
    step("transfer through the proxy")
    started = time.monotonic()
    sock = await alice["xep_0065"].handshake(bob.boundjid)
    if sock is None:
        fail("no bytestream")
    chunk = 8192
    for i in range(0, len(data), chunk):
        await sock.write(data[i:i + chunk])
    await asyncio.wait_for(bob.got_all, args.timeout)
    took = time.monotonic() - started
    if bytes(bob.received) != data:
        fail(f"bob got {len(bob.received)} bytes, not the {len(data)} sent (or different)")
    if took < args.min_seconds:
        fail(f"took {took:.2f}s, faster than max_rate allows ({args.min_seconds}s)")
    ok(f"{len(data)} bytes in {took:.2f}s")
    # COMPAT: slixmpp 1.8.3's xep_0065.close() calls a close() its protocol lacks.
    sock.transport.close()

    step("activating a sid nobody connected is item-not-found")
    try:
        await alice["xep_0065"].activate(proxy, "no-such-sid", bob.boundjid)
        fail("the activation went through")
    except IqError as e:
        if e.condition != "item-not-found":
            fail(f"refused with {e.condition}")
    ok()

    alice.disconnect()
    bob.disconnect()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--alice", default="alice:alice-secret-1")
    p.add_argument("--bob", default="bob:bob-secret-2")
    p.add_argument("--bytes", type=int, default=200_000)
    p.add_argument("--min-seconds", type=float, default=0)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    steps.log_to_stderr(args.verbose)
    sys.exit(steps.run(run(args), args.timeout, "all steps passed"))


if __name__ == "__main__":
    main()
