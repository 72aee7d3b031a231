#!/usr/bin/python3
"""Registration and roster checks with slixmpp (Debian's python3-slixmpp), for
`tests/e2e_invites.rs`. Speaks XMPP to HOST:PORT only; knows nothing of kith's internals.

Modes:

  register  A fresh, unauthenticated connection: the server must offer the XEP-0077 stream
            feature; slixmpp's xep_0077 plugin fetches the form; with --token the client first
            sends the XEP-0401 <preauth xmlns='urn:xmpp:pars:0' token=.../> iq (as
            Conversations does), then the register set. --expect ok, or the error condition
            the server must answer (not-allowed, conflict, policy-violation, ...).
  login     Logs in every --account USER:PASS (SCRAM), each fetches its roster and sends
            presence. --roster OWNER:CONTACT:SUB[:GROUP] asserts an item of OWNER's roster;
            --available OWNER:CONTACT asserts OWNER sees CONTACT available; --message
            OWNER:TEXT asserts OWNER gets a chat message containing TEXT; --adhoc OWNER:NODE
            runs an XEP-0050 command that completes at once and prints its result fields as
            `ADHOC NODE VAR=VALUE`.

Prints one line per step; exit code 0 when everything held, 1 otherwise, 2 on timeout.

Usage: slixmpp_register.py MODE --port N [--host 127.0.0.1] [--domain localhost] ...
"""

import argparse
import asyncio
import ssl
import sys
import time
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

T0 = time.monotonic()


def say(msg):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def insecure(client):
    # Test servers use self-signed certificates: keep TLS, skip verification.
    client.ssl_context.check_hostname = False
    client.ssl_context.verify_mode = ssl.CERT_NONE


class Registrar(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(f"{args.user}@{args.domain}", args.password)
        insecure(self)
        self.args = args
        self.result = asyncio.get_event_loop().create_future()
        # COMPAT: slixmpp 1.8 holds back every iq until a session has started, including
        # the registration iqs its own xep_0077 plugin sends before authentication; without
        # this they would wait forever.
        self._always_send_everything = True
        self.register_plugin("xep_0077")
        self["xep_0077"].create_account = True
        self.add_event_handler("register", self.on_register)
        self.add_event_handler("session_start", self.on_session)
        self.add_event_handler("disconnected", self.on_end)
        self.add_event_handler(
            "failed_all_auth",
            lambda _: self.finish("authentication failed; register feature missing?"),
        )
        self.add_event_handler("connection_failed", self.on_end)

    def finish(self, what):
        if not self.result.done():
            self.result.set_result(what)

    async def on_register(self, form):
        say(f"server offered in-band registration; form: {form['register'].xml.tag}")
        if self.args.token:
            iq = self.Iq()
            iq["type"] = "set"
            iq.append(ET.fromstring(f"<preauth xmlns='urn:xmpp:pars:0' token='{self.args.token}'/>"))
            try:
                await iq.send(timeout=10)
                say("preauth token accepted")
            except IqError as e:
                self.finish(f"preauth:{e.iq['error']['condition']}")
                self.disconnect()
                return
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.args.user
        iq["register"]["password"] = self.args.password
        try:
            await iq.send(timeout=10)
            self.finish("ok")
        except IqError as e:
            err = e.iq["error"]
            self.finish(f"{err['condition']} | {err['type']} | {err['text']}")
        except IqTimeout:
            self.finish("timeout")
        self.disconnect()

    def on_session(self, _):
        self.finish("logged in without registering (no register feature?)")
        self.disconnect()

    def on_end(self, reason):
        self.finish(f"disconnected before registering ({reason}); register feature missing?")


class User(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        insecure(self)
        loop = asyncio.get_event_loop()
        self.started = loop.create_future()
        self.roster_items = {}  # contact -> (subscription, groups)
        self.available = set()
        self.messages = []
        self.add_event_handler("session_start", self.on_session)
        self.add_event_handler("failed_all_auth", lambda _: self.fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self.fail(f"connection failed: {e}"))
        self.add_event_handler("presence_available", self.on_available)
        self.add_event_handler("message", self.on_message)

    def fail(self, why):
        if not self.started.done():
            self.started.set_exception(RuntimeError(why))

    async def on_session(self, _):
        iq = self.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        result = await iq.send(timeout=10)
        for item in result.xml.iter("{jabber:iq:roster}item"):
            groups = [g.text for g in item.iter("{jabber:iq:roster}group")]
            self.roster_items[item.get("jid")] = (item.get("subscription"), groups)
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def on_available(self, p):
        self.available.add(p["from"].bare)

    def on_message(self, m):
        if m["type"] in ("chat", "normal") and m["body"]:
            self.messages.append(m["body"])


async def wait_until(pred, seconds):
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def register(args):
    r = Registrar(args)
    r.connect((args.host, args.port))
    got = await asyncio.wait_for(r.result, args.timeout)
    say(f"registration result: {got}")
    if got != args.expect:
        say(f"FAIL: expected {args.expect}")
        return 1
    return 0


async def login(args):
    users = {}
    for spec in args.account:
        name, password = spec.split(":", 1)
        u = User(f"{name}@{args.domain}", password)
        u.connect((args.host, args.port))
        users[name] = u
    for name, u in users.items():
        await asyncio.wait_for(u.started, args.timeout)
        say(f"{name} logged in; roster {u.roster_items}")
    failed = 0
    for spec in args.roster:
        owner, contact, sub, *group = spec.split(":")
        item = users[owner].roster_items.get(contact)
        good = item is not None and item[0] == sub and all(g in item[1] for g in group)
        say(f"{'ok  ' if good else 'FAIL'} {owner} has {contact} sub={sub} groups={group}: {item}")
        failed += not good
    for spec in args.available:
        owner, contact = spec.split(":", 1)
        good = await wait_until(lambda: contact in users[owner].available, 10)
        say(f"{'ok  ' if good else 'FAIL'} {owner} sees {contact} available")
        failed += not good
    for spec in args.message:
        owner, text = spec.split(":", 1)
        good = await wait_until(lambda: any(text in m for m in users[owner].messages), 10)
        say(f"{'ok  ' if good else 'FAIL'} {owner} got a message with {text!r}: {users[owner].messages}")
        failed += not good
    for spec in args.adhoc:
        owner, node = spec.split(":", 1)
        u = users[owner]
        iq = u.Iq()
        iq["type"] = "set"
        iq["to"] = args.domain
        iq.append(ET.fromstring(
            f"<command xmlns='http://jabber.org/protocol/commands' node='{node}' action='execute'/>"))
        try:
            result = await iq.send(timeout=10)
        except IqError as e:
            say(f"FAIL adhoc {node}: {e.iq['error']['condition']}")
            failed += 1
            continue
        fields = result.xml.iter("{jabber:x:data}field")
        for f in fields:
            value = f.find("{jabber:x:data}value")
            say(f"ADHOC {node} {f.get('var')}={value.text if value is not None else ''}")
    for u in users.values():
        u.disconnect()
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["register", "login"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--token")
    p.add_argument("--expect", default="ok")
    p.add_argument("--account", action="append", default=[])
    p.add_argument("--roster", action="append", default=[])
    p.add_argument("--available", action="append", default=[])
    p.add_argument("--message", action="append", default=[])
    p.add_argument("--adhoc", action="append", default=[])
    p.add_argument("--timeout", type=float, default=20)
    args = p.parse_args()
    run = register if args.mode == "register" else login
    try:
        code = asyncio.get_event_loop().run_until_complete(run(args))
    except asyncio.TimeoutError:
        say("FAIL: timed out")
        code = 2
    except RuntimeError as e:
        say(f"FAIL: {e}")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
