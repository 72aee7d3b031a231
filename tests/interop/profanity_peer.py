#!/usr/bin/python3
"""The other side of a Profanity conversation: one slixmpp client driven line by line.

Owns: the bob side of `tests/interop_profanity.rs`. It logs one account in (SCRAM over
STARTTLS, certificate not verified), fetches the roster, sends initial presence, then obeys
commands read from stdin, one per line, and answers each with exactly one line starting with
`ok` or `fail`. Everything it notices on the way is printed as an `event ...` line, so the
test's failure message tells the story. It must not know anything about kith: it speaks XMPP
to HOST:PORT only, so it runs against any server.

Startup prints `ready FULLJID` once the session is up and the server has reflected the initial
presence, or `fail ...` and exits 1.

Commands (SECONDS is how long to wait before answering `fail`):

  send JID BODY...               send a chat message (BODY may contain spaces)
  wait-message JID BODY SECONDS  a chat message from bare JID with exactly this body arrived
  wait-both JID SECONDS          the server's roster for us has JID with subscription='both'
                                 (subscription requests are accepted and returned automatically)
  wait-available JID SECONDS     available presence from JID was received
  wait-unavailable JID SECONDS   no resource of JID is available (any more)
  quit                           disconnect cleanly and exit 0

Exit codes: 0 after `quit`, 1 on a failed login, 3 when stdin closes without `quit`.

Usage: profanity_peer.py --port N --jid bob@localhost --password PW [--host 127.0.0.1]
       [--verbose]
"""

import argparse
import asyncio
import logging
import ssl
import sys
import time
import uuid

import slixmpp

T0 = time.monotonic()


def out(line):
    print(line, flush=True)


def event(msg):
    out(f"event [{time.monotonic() - T0:6.2f}s] {msg}")


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        loop = asyncio.get_event_loop()
        self.started = loop.create_future()
        self.ended = loop.create_future()
        self.messages = []  # (bare from, body)
        self.available = set()
        self.server_roster = {}  # bare JID -> subscription, from results and pushes only

        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self["feature_mechanisms"].config["encrypted_plain"] = False
        self.auto_authorize = True
        self.auto_subscribe = True

        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_all_auth", lambda _e: self._end("failed_all_auth"))
        self.add_event_handler("connection_failed", lambda e: self._end(f"connection_failed {e}"))
        self.add_event_handler("disconnected", lambda r: self._end(f"disconnected {r}"))
        self.add_event_handler("stream_error", lambda e: event(f"stream error {e['condition']}"))
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("presence_available", self._on_available)
        self.add_event_handler("presence_unavailable", self._on_unavailable)
        self.add_event_handler("presence_subscribe",
                               lambda p: event(f"subscribe request from {p['from']}"))
        self.add_event_handler("presence_subscribed",
                               lambda p: event(f"subscribed from {p['from']}"))
        self.add_event_handler("roster_update", self._on_roster)

    def _end(self, why):
        event(f"ended: {why}")
        if not self.ended.done():
            self.ended.set_result(why)

    async def _on_start(self, _event):
        if not self.started.done():
            self.started.set_result(True)

    def _on_message(self, msg):
        if msg["type"] == "error":
            event(f"message error from {msg['from']}: {msg['error']['condition']}")
        elif msg["body"]:
            event(f"message type={msg['type']} from {msg['from']}: {msg['body']!r}")
            self.messages.append((msg["from"].bare, msg["body"]))

    def _on_available(self, pres):
        event(f"available: {pres['from']} show={pres['show']!r}")
        self.available.add(pres["from"].bare)

    def _on_unavailable(self, pres):
        event(f"unavailable: {pres['from']}")
        self.available.discard(pres["from"].bare)

    def _on_roster(self, iq):
        if iq["type"] == "result":
            self.server_roster.clear()
        for jid, item in iq["roster"]["items"].items():
            if item["subscription"] == "remove":
                self.server_roster.pop(str(jid), None)
            else:
                self.server_roster[str(jid)] = item["subscription"]
        event(f"roster {iq['type']}: {self.server_roster}")


async def wait_until(pred, seconds):
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def login(peer, args):
    peer.connect(address=(args.host, args.port), force_starttls=True)
    done, _ = await asyncio.wait([peer.started, peer.ended], timeout=args.login_timeout,
                                 return_when=asyncio.FIRST_COMPLETED)
    if peer.started not in done:
        why = peer.ended.result() if peer.ended.done() else "timeout"
        out(f"fail login: {why}")
        return False
    await asyncio.wait_for(peer.get_roster(), args.login_timeout)
    peer.send_presence()
    me = peer.boundjid.bare
    if not await wait_until(lambda: me in peer.available, args.login_timeout):
        out("fail login: own initial presence was not reflected")
        return False
    out(f"ready {peer.boundjid.full}")
    return True


async def serve(peer, args):
    if not await login(peer, args):
        return 1
    loop = asyncio.get_event_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            event("stdin closed without quit")
            peer.disconnect()
            return 3
        words = line.strip().split(" ")
        cmd, rest = words[0], words[1:]
        try:
            if cmd == "send" and len(rest) >= 2:
                peer.send_message(mto=rest[0], mbody=" ".join(rest[1:]), mtype="chat")
                out(f"ok sent to {rest[0]}")
            elif cmd == "wait-message" and len(rest) == 3:
                want = (rest[0], rest[1])
                if await wait_until(lambda: want in peer.messages, float(rest[2])):
                    out(f"ok got {rest[1]!r} from {rest[0]}")
                else:
                    out(f"fail no message {rest[1]!r} from {rest[0]}; got {peer.messages}")
            elif cmd == "wait-both" and len(rest) == 2:
                if await wait_until(lambda: peer.server_roster.get(rest[0]) == "both",
                                    float(rest[1])):
                    out(f"ok {rest[0]} subscription=both")
                else:
                    out(f"fail roster is {peer.server_roster}")
            elif cmd == "wait-available" and len(rest) == 2:
                if await wait_until(lambda: rest[0] in peer.available, float(rest[1])):
                    out(f"ok {rest[0]} available")
                else:
                    out(f"fail {rest[0]} not available; available: {sorted(peer.available)}")
            elif cmd == "wait-unavailable" and len(rest) == 2:
                if await wait_until(lambda: rest[0] not in peer.available, float(rest[1])):
                    out(f"ok {rest[0]} unavailable")
                else:
                    out(f"fail {rest[0]} still available")
            elif cmd == "quit":
                peer.disconnect()
                await asyncio.wait([peer.ended], timeout=5)
                out("ok bye")
                return 0
            else:
                out(f"fail unknown command {line.strip()!r}")
        except Exception as e:  # report, keep serving: the test decides what a failure means
            out(f"fail {cmd}: {type(e).__name__}: {e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True, help="bare JID; a random resource is added")
    p.add_argument("--password", required=True)
    p.add_argument("--login-timeout", type=float, default=10.0)
    p.add_argument("--verbose", action="store_true", help="slixmpp debug log on stderr")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    peer = Peer(f"{args.jid}/peer-{uuid.uuid4().hex[:6]}", args.password)
    loop = asyncio.get_event_loop()
    try:
        code = loop.run_until_complete(serve(peer, args))
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    return code


if __name__ == "__main__":
    sys.exit(main())
