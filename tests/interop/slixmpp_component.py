#!/usr/bin/env python3
"""slixmpp's ComponentXMPP (XEP-0114) against kith, driven by tests/interop_slixmpp.rs.

Modes:
  echo          the component connects with the right secret; alice (slixmpp ClientXMPP,
                STARTTLS, SCRAM) sends a message to echo@COMPONENT; the component answers
                "echo: <body>"; alice must receive the answer from echo@COMPONENT.
  wrong-secret  the component connects with a wrong secret and must get a not-authorized
                stream error, never a session.

Prints one "[step] ..." line per step; exit 0 = pass, 1 = a step failed, 2 = overall timeout.
"""

import argparse
import asyncio
import logging
import ssl
import sys

import slixmpp
from slixmpp.componentxmpp import ComponentXMPP


def step(text):
    print(f"[step] {text}", flush=True)


def fail(text):
    print(f"[FAIL] {text}", flush=True)
    sys.exit(1)


class Bot(ComponentXMPP):
    def __init__(self, jid, secret):
        super().__init__(jid, secret)
        loop = asyncio.get_event_loop()
        self.started = loop.create_future()
        self.ended = loop.create_future()
        self.stream_errors = []
        self.add_event_handler("session_start", lambda _: self._set(self.started, True))
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("disconnected", lambda _: self._set(self.ended, True))
        self.add_event_handler("message", self._on_message)

    @staticmethod
    def _set(fut, value):
        if not fut.done():
            fut.set_result(value)

    def _on_stream_error(self, err):
        self.stream_errors.append(err["condition"])
        self._set(self.ended, True)

    def _on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply(f"echo: {msg['body']}").send()


class Alice(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        loop = asyncio.get_event_loop()
        self.started = loop.create_future()
        self.replies = asyncio.Queue()
        # Test servers use self-signed certificates: keep TLS, skip verification.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        mechs = self["feature_mechanisms"]
        # Not what this test is about: SCRAM without channel binding (gs2 flag 'n'), as
        # slixmpp_chat.py --no-cb does.
        mechs.use_mechs = {"SCRAM-SHA-256", "SCRAM-SHA-1"}
        mechs.config["encrypted_plain"] = False
        default_creds = mechs.sasl_callback

        def creds_without_cb(required, optional):
            got = default_creds(required, optional)
            got.pop("channel_binding", None)
            return got

        mechs.sasl_callback = creds_without_cb
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda _: fail("alice could not log in"))
        self.add_event_handler("message", lambda m: self.replies.put_nowait(m))

    async def _on_start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)


async def echo(args):
    bot = Bot(args.component, args.secret)
    step(f"component {args.component} connects with its secret")
    bot.connect(args.host, args.component_port)
    done, _ = await asyncio.wait([bot.started, bot.ended], timeout=args.step_timeout)
    if bot.started not in done:
        fail(f"component handshake failed (stream errors: {bot.stream_errors})")

    local, password = args.alice
    alice = Alice(f"{local}@{args.domain}/slixmpp", password)
    step("alice logs in (STARTTLS, SCRAM)")
    alice.connect(address=(args.host, args.port), force_starttls=True)
    try:
        await asyncio.wait_for(alice.started, args.step_timeout)
    except asyncio.TimeoutError:
        fail("alice did not log in")

    step(f"alice messages echo@{args.component}; the component answers")
    alice.send_message(mto=f"echo@{args.component}", mbody="hello component", mtype="chat")
    try:
        reply = await asyncio.wait_for(alice.replies.get(), args.step_timeout)
    except asyncio.TimeoutError:
        fail("alice got no answer from the component")
    if reply["from"].bare != f"echo@{args.component}" or reply["body"] != "echo: hello component":
        fail(f"unexpected answer: {reply}")
    step("alice got the echo")
    alice.disconnect()
    bot.disconnect()
    await asyncio.sleep(0.3)


async def wrong_secret(args):
    bot = Bot(args.component, "not-" + args.secret)
    step(f"component {args.component} connects with a wrong secret")
    bot.connect(args.host, args.component_port)
    done, _ = await asyncio.wait([bot.started, bot.ended], timeout=args.step_timeout)
    if bot.started in done:
        fail("the server accepted a wrong component secret")
    if bot.ended not in done:
        fail("no answer to a wrong handshake")
    if "not-authorized" not in bot.stream_errors:
        fail(f"expected a not-authorized stream error, got {bot.stream_errors}")
    step("refused with not-authorized")
    bot.disconnect()


def creds(s):
    local, _, password = s.partition(":")
    if not password:
        raise argparse.ArgumentTypeError("expected LOCAL:PASSWORD")
    return local, password


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["echo", "wrong-secret"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="c2s STARTTLS port")
    p.add_argument("--component-port", type=int, required=True)
    p.add_argument("--component", required=True, help="the component's domain")
    p.add_argument("--secret", required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--alice", type=creds, default=("alice", "alice-secret"))
    p.add_argument("--bob", type=creds, default=None, help="ignored (harness passes it)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--step-timeout", type=float, default=10.0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)-7s %(name)s %(message)s")
    run = echo if args.mode == "echo" else wrong_secret
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        print("[FAIL] overall timeout", flush=True)
        sys.exit(2)
    step("done")


if __name__ == "__main__":
    main()
