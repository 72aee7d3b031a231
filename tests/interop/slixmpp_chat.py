#!/usr/bin/python3
"""Interop check of an XMPP server against slixmpp (Debian's python3-slixmpp).

Owns: the client side of `tests/interop_slixmpp.rs`: it logs real slixmpp clients in over
loopback and asserts what a user would notice. It must not know anything about kith's
internals: it speaks XMPP to HOST:PORT and nothing else, so it also runs against Prosody
(which is how it was validated; see tests/interop/README.md).

Modes (one per run; exit code 0 only when every step passed, 1 on a failed step,
2 on the overall timeout):

  chat            alice and bob log in with SCRAM (PLAIN refused by the client), exchange
                  one message each way, alice adds bob to her roster and subscribes, bob
                  auto-accepts and subscribes back, each must see the other available and
                  both roster items must end at subscription='both'.
  wrong-password  alice logs in with a wrong password: the server must answer with a SASL
                  <failure/> carrying <not-authorized/> (RFC 6120 6.5.10), and no session
                  may start.

Transport: STARTTLS on a plain port (default, `force_starttls`), or `--direct-tls` for a
XEP-0368 direct-TLS port. The server certificate is not verified (test servers use
self-signed certificates); TLS itself is required and checked on every login.

Usage: slixmpp_chat.py MODE --port N [--host 127.0.0.1] [--domain localhost]
       [--direct-tls] [--alice alice:PASS] [--bob bob:PASS] [--mechs M1,M2] [--forbid-plain]
       [--no-cb] [--tls12] [--verbose] [--timeout 30]
"""

import argparse
import asyncio
import ssl
import sys
import time
import uuid

import slixmpp

import steps
from steps import StepFailed, fail, ok, say, step

# Every SCRAM variant slixmpp knows that a server may offer. PLAIN (and everything else)
# stays out so a login can only succeed through SCRAM.
SCRAM_MECHS = [
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-512-PLUS",
]




async def wait_for(fut, seconds, what):
    try:
        return await asyncio.wait_for(asyncio.shield(fut), seconds)
    except asyncio.TimeoutError:
        fail(f"timed out after {seconds}s waiting for {what}")


async def wait_until(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            fail(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what happened instead of acting on it."""

    def __init__(self, args, jid, password):
        super().__init__(jid, password)
        self.args = args
        self.name = jid.split("@", 1)[0]
        loop = asyncio.get_event_loop()
        self.started = loop.create_future()
        self.ended = loop.create_future()  # set on failed_auth / disconnect / conn failure
        self.auth_failures = []  # SASL <failure/> conditions, in order
        self.failed_mechs = []  # the mechanism each of those answered
        self.offered_mechs = []
        self.used_mech = None
        self.gs2_header = None
        self.messages = []  # (from bare, body)
        self.available = set()  # bare JIDs seen available
        self.stream_errors = []
        self.errors = []  # error stanzas received, as text
        # The roster as the server reported it (result + pushes). slixmpp's client_roster is
        # no witness: indexing it creates items locally.
        self.server_roster = {}  # bare JID -> subscription

        # Test servers use self-signed certificates: keep TLS, skip verification.
        # check_hostname must go off before verify_mode may be CERT_NONE.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        if args.tls12:
            self.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2

        mechs = self["feature_mechanisms"]
        mechs.use_mechs = set(args.mechs)
        # slixmpp would otherwise allow PLAIN over TLS; it is not in use_mechs anyway, this
        # makes the intent explicit.
        mechs.config["encrypted_plain"] = False

        if args.no_cb:
            # Behave like a client without channel binding: gs2 flag 'n' (RFC 5802 6).
            default_creds = mechs.sasl_callback

            def creds_without_cb(required, optional):
                got = default_creds(required, optional)
                got.pop("channel_binding", None)
                return got

            mechs.sasl_callback = creds_without_cb

        # Presence subscription: accept and subscribe back automatically (RFC 6121 3.1).
        self.auto_authorize = True
        self.auto_subscribe = True

        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("auth_success", self._on_auth_success)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        self.add_event_handler("no_auth", self._on_no_auth)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("presence_available", self._on_available)
        self.add_event_handler("presence_unavailable", self._on_unavailable)
        self.add_event_handler("roster_update", self._on_roster)
        self.register_handler(
            slixmpp.xmlstream.handler.Callback(
                "kith-test record mechanisms",
                slixmpp.xmlstream.matcher.MatchXPath(
                    "{http://etherx.jabber.org/streams}features"
                ),
                self._on_features,
            )
        )

    # --- event handlers: record, never decide -------------------------------------------

    def _on_features(self, features):
        mechs = features.xml.find(
            "{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms"
        )
        if mechs is not None:
            self.offered_mechs = [m.text for m in mechs]

    def _on_auth_success(self, _stanza):
        mech = self["feature_mechanisms"].mech
        self.used_mech = mech.name
        self.gs2_header = getattr(mech, "gs2_header", None)

    def _on_failed_auth(self, stanza):
        # Fired before slixmpp picks the next mechanism, so .mech is the one that failed.
        mech = self["feature_mechanisms"].mech
        self.auth_failures.append(stanza["condition"])
        self.failed_mechs.append(mech.name if mech else "?")
        if self.args.mode == "wrong-password":
            # Stop at the first failure: slixmpp would otherwise retry with the next
            # mechanism, and the test is about what the server said to this one.
            self._end(f"failed_auth {stanza['condition']!r}")
            self.disconnect()

    def _on_failed_all_auth(self, _event):
        self._end("failed_all_auth")

    def _on_no_auth(self, _event):
        self._end(f"no acceptable SASL mechanism (server offered {self.offered_mechs})")

    def _on_connection_failed(self, err):
        self._end(f"connection_failed: {err}")

    def _on_disconnected(self, reason):
        self._end(f"disconnected: {reason}")

    def _on_stream_error(self, err):
        self.stream_errors.append(err["condition"])

    def _end(self, why):
        if not self.ended.done():
            self.ended.set_result(why)

    async def _on_session_start(self, _event):
        if not self.started.done():
            self.started.set_result(True)

    def _on_message(self, msg):
        if msg["type"] == "error":
            self.errors.append(f"message error from {msg['from']}: {msg['error']['condition']}")
        elif msg["type"] in ("chat", "normal"):
            self.messages.append((msg["from"].bare, msg["body"]))

    def _on_roster(self, iq):
        if iq["type"] == "result":
            self.server_roster.clear()
        for jid, item in iq["roster"]["items"].items():
            if item["subscription"] == "remove":
                self.server_roster.pop(str(jid), None)
            else:
                self.server_roster[str(jid)] = item["subscription"]

    def _on_available(self, pres):
        self.available.add(pres["from"].bare)

    def _on_unavailable(self, pres):
        self.available.discard(pres["from"].bare)

    # --- checks ---------------------------------------------------------------------------

    def tls_info(self):
        sslobj = self.transport.get_extra_info("ssl_object") if self.transport else None
        if sslobj is None:
            return None
        return f"{sslobj.version()} {sslobj.cipher()[0]}"


def make_client(args, who):
    local, password = who
    return Client(args, f"{local}@{args.domain}/slixmpp-{uuid.uuid4().hex[:6]}", password)


def connect(client, args):
    client.connect(
        address=(args.host, args.port),
        use_ssl=args.direct_tls,
        force_starttls=not args.direct_tls,
        disable_starttls=args.direct_tls,
    )


async def login(client, args):
    step(f"{client.name} logs in ({'direct TLS' if args.direct_tls else 'STARTTLS'}, SCRAM)")
    connect(client, args)
    done, _ = await asyncio.wait(
        [client.started, client.ended],
        timeout=args.step_timeout,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if client.started not in done and client.ended in done:
        fail(
            f"login ended before session start: {client.ended.result()}; "
            f"SASL failures {list(zip(client.failed_mechs, client.auth_failures))}, "
            f"stream errors {client.stream_errors}, "
            f"offered mechanisms {client.offered_mechs}"
        )
    if not done:
        fail(f"no session start within {args.step_timeout}s")
    tls = client.tls_info()
    if tls is None:
        fail("session started without TLS")
    if not client.used_mech or not client.used_mech.startswith("SCRAM-"):
        fail(f"logged in with {client.used_mech!r}, expected a SCRAM mechanism")
    if args.forbid_plain and "PLAIN" in client.offered_mechs:
        fail(f"server offered PLAIN: {client.offered_mechs}")
    ok(
        f"{client.boundjid.full} via {client.used_mech} "
        f"(gs2 header {client.gs2_header!r}) over {tls}; offered {client.offered_mechs}"
    )


async def initial_presence(client, args):
    step(f"{client.name} fetches roster and sends initial presence")
    await wait_for(client.get_roster(), args.step_timeout, "roster result")
    client.send_presence()
    # The server reflects initial presence to the sending resource too (RFC 6121 4.2.2);
    # seeing it means the server has this resource as available, so a message to the bare
    # JID cannot race the presence (8.5.2.1.1).
    me = client.boundjid.bare
    await wait_until(lambda: me in client.available, args.step_timeout,
                     f"{client.name}'s own initial presence reflected by the server")
    ok(f"roster {client.server_roster}, own presence reflected")


async def send_and_expect(sender, receiver, args):
    body = f"hello {receiver.name} from {sender.name} {uuid.uuid4().hex[:8]}"
    step(f"{sender.name} -> {receiver.name} message")
    sender.send_message(mto=receiver.boundjid.bare, mbody=body, mtype="chat")
    want = (sender.boundjid.bare, body)
    await wait_until(lambda: want in receiver.messages, args.step_timeout,
                     f"{receiver.name} to receive {body!r} (got {receiver.messages}; "
                     f"errors to sender {sender.errors})")
    ok(repr(body))


async def reset_rosters(alice, bob, args):
    """Make the subscription check mean something against a server that was used before."""
    a, b = alice.boundjid.bare, bob.boundjid.bare
    step("rosters start without each other")
    stale = [(c, j) for c, j in ((alice, b), (bob, a)) if j in c.server_roster]
    if not stale:
        ok("fresh accounts")
        return
    for client, jid in stale:
        await wait_for(client.del_roster_item(jid), args.step_timeout, "roster remove result")
    await wait_until(lambda: b not in alice.server_roster and a not in bob.server_roster,
                     args.step_timeout, "roster pushes removing the stale items")
    ok(f"removed stale items: {[f'{c.name}->{j}' for c, j in stale]}")


async def subscribe(alice, bob, args):
    a, b = alice.boundjid.bare, bob.boundjid.bare
    step("alice adds bob to her roster")
    await wait_for(alice.update_roster(b, name="Bob"), args.step_timeout, "roster set result")
    await wait_until(lambda: b in alice.server_roster, args.step_timeout,
                     "the roster push adding bob")
    ok(f"roster push: bob subscription={alice.server_roster[b]!r}")

    step("alice subscribes to bob; bob auto-accepts and subscribes back")
    # Only presence that arrives because of this subscription counts below.
    alice.available.discard(b)
    bob.available.discard(a)
    alice.send_presence_subscription(pto=b)

    def both():
        return alice.server_roster.get(b) == "both" and bob.server_roster.get(a) == "both"

    try:
        await wait_until(both, args.step_timeout, "roster pushes with subscription='both'")
    except StepFailed as e:
        fail(f"{e} (alice's roster {alice.server_roster}, bob's {bob.server_roster})")
    ok("roster pushes: alice<->bob subscription='both'")

    step("each sees the other available")
    await wait_until(lambda: b in alice.available and a in bob.available, args.step_timeout,
                     f"presence (alice saw {sorted(alice.available)}, "
                     f"bob saw {sorted(bob.available)})")
    ok()


async def disconnect(*clients):
    step("disconnect")
    for c in clients:
        c.disconnect()
    for c in clients:
        await wait_for(c.ended, 10, f"{c.name} to disconnect")
    ok()


async def run_chat(args):
    alice = make_client(args, args.alice)
    bob = make_client(args, args.bob)
    await login(alice, args)
    await login(bob, args)
    await initial_presence(alice, args)
    await initial_presence(bob, args)
    await send_and_expect(alice, bob, args)
    await send_and_expect(bob, alice, args)
    await reset_rosters(alice, bob, args)
    await subscribe(alice, bob, args)
    await disconnect(alice, bob)


async def run_wrong_password(args):
    local, password = args.alice
    client = make_client(args, (local, password + "-wrong"))
    step(f"{local} logs in with a wrong password "
         f"({'direct TLS' if args.direct_tls else 'STARTTLS'})")
    connect(client, args)
    done, _ = await asyncio.wait(
        [client.started, client.ended],
        timeout=args.step_timeout,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if client.started in done:
        fail("a session started with a wrong password")
    if not done:
        fail(f"neither success nor failure within {args.step_timeout}s")
    if client.tls_info() is None and not client.auth_failures:
        fail(f"ended before TLS: {client.ended.result()}")
    if not client.auth_failures:
        fail(f"no SASL <failure/> received; ended with {client.ended.result()}, "
             f"stream errors {client.stream_errors}")
    if args.forbid_plain and "PLAIN" in client.offered_mechs:
        fail(f"server offered PLAIN: {client.offered_mechs}")
    if client.auth_failures[0] != "not-authorized":
        fail(f"SASL failure condition {client.auth_failures[0]!r}, expected 'not-authorized'")
    ok(f"<failure><not-authorized/></failure> to {client.failed_mechs[0]}; "
       f"offered {client.offered_mechs}")
    if not client.ended.done() or "disconnected" not in str(client.ended.result()):
        client.disconnect()
        await asyncio.sleep(0.2)


def creds(s):
    local, sep, password = s.partition(":")
    if not sep or not local or not password:
        raise argparse.ArgumentTypeError("expected LOCAL:PASSWORD")
    return (local, password)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["chat", "wrong-password"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--direct-tls", action="store_true",
                   help="TLS from the first byte (XEP-0368) instead of STARTTLS")
    p.add_argument("--alice", type=creds, default=("alice", "alice-secret"))
    p.add_argument("--bob", type=creds, default=("bob", "bob-secret"))
    p.add_argument("--mechs", default=",".join(SCRAM_MECHS),
                   help="comma-separated SASL mechanisms the client may use")
    p.add_argument("--forbid-plain", action="store_true",
                   help="fail if the server offers SASL PLAIN")
    p.add_argument("--no-cb", action="store_true",
                   help="hide TLS channel-binding data from SASL (gs2 flag 'n'); combine "
                        "with --mechs without -PLUS")
    p.add_argument("--tls12", action="store_true", help="cap the client at TLS 1.2")
    p.add_argument("--timeout", type=float, default=30.0, help="overall timeout, seconds")
    p.add_argument("--step-timeout", type=float, default=10.0)
    p.add_argument("--verbose", action="store_true", help="slixmpp debug log (raw XML)")
    args = p.parse_args()
    args.mechs = [m.strip() for m in args.mechs.split(",") if m.strip()]
    if any(not m.startswith("SCRAM-") for m in args.mechs):
        p.error("--mechs: only SCRAM mechanisms are allowed")

    steps.log_to_stderr(args.verbose)
    say(f"slixmpp {slixmpp.__version__}, python {sys.version.split()[0]}, mode {args.mode}, "
        f"{args.host}:{args.port} domain {args.domain}, "
        f"{'direct TLS' if args.direct_tls else 'STARTTLS'}")

    body = run_chat(args) if args.mode == "chat" else run_wrong_password(args)
    return steps.run(body, args.timeout, f"PASS {args.mode}")


if __name__ == "__main__":
    sys.exit(main())
