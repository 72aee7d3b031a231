#!/usr/bin/python3
"""XEP-0050 / XEP-0133 admin commands with slixmpp's own xep_0050 plugin, driven by
tests/interop_slixmpp.rs.

Owns: the client side of an admin session: alice (an admin in the server's config) runs
add-user, get-registered-users-list, get-online-users-num, change-user-password, announce and
delete-user the way Gajim does (execute, then submit the returned form with the session id);
bob (not an admin) sees no admin commands and gets `forbidden`; a bogus session id gets
`bad-request`. bob must receive the announcement as a headline from the domain; the new
account must log in with its changed password. Must not know kith's internals.

Usage: slixmpp_admin.py --port N [--host 127.0.0.1] [--domain localhost]
       [--alice alice:PASS] [--bob bob:PASS] [--verbose] [--timeout 30]
Prints one "[...] STEP/ok" line per step; exit 0 = pass, 1 = a step failed, 2 = timeout.
"""

import argparse
import asyncio
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError

import steps
from steps import fail, ok, step

ADMIN = "http://jabber.org/protocol/admin"



class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.failed = asyncio.get_event_loop().create_future()
        self.headlines = asyncio.Queue()
        self.add_event_handler("session_start", self._start)
        # failed_auth fires per mechanism tried; no_auth when none is left.
        self.add_event_handler("no_auth", self._failed)
        self.add_event_handler("message", self._message)
        for p in ("xep_0030", "xep_0004", "xep_0050"):
            self.register_plugin(p)

    def _start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _failed(self, _):
        if not self.failed.done():
            self.failed.set_result(True)

    def _message(self, msg):
        if msg["type"] == "headline":
            self.headlines.put_nowait(msg)


async def login(args, user, password):
    c = Client(f"{user}@{args.domain}", password)
    c.connect((args.host, args.port), force_starttls=True)
    done, _ = await asyncio.wait([c.started, c.failed], timeout=15,
                                 return_when=asyncio.FIRST_COMPLETED)
    if c.started not in done:
        c.disconnect()
        return None
    return c


def submit(client, fields):
    form = client["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=ADMIN)
    for var, value in fields.items():
        form.add_field(var=var, value=value)
    return form


async def run_command(client, args, name, fields=None):
    """execute, then (when a form comes back) submit `fields` with the session id; returns
    the completed <command/>."""
    node = f"{ADMIN}#{name}"
    iq = await client["xep_0050"].send_command(args.domain, node, timeout=10)
    cmd = iq["command"]
    if cmd["status"] == "completed":
        return cmd
    if cmd["status"] != "executing" or not cmd["sessionid"]:
        fail(f"{name}: unexpected first answer {iq}")
    iq = await client["xep_0050"].send_command(
        args.domain, node, action="complete", sessionid=cmd["sessionid"],
        payload=submit(client, fields or {}), timeout=10)
    cmd = iq["command"]
    if cmd["status"] != "completed":
        fail(f"{name}: not completed: {iq}")
    return cmd


def note_of(cmd):
    notes = cmd["notes"]
    return notes[0] if notes else (None, None)


def values(cmd, var):
    form = cmd["form"]
    fields = form.get_fields()
    if var not in fields:
        fail(f"no field {var} in {form}")
    v = fields[var].get_value()
    return v if isinstance(v, list) else [v]


async def run(args):
    alice_user, alice_pw = args.alice.split(":", 1)
    bob_user, bob_pw = args.bob.split(":", 1)

    step("login alice (admin) and bob")
    alice = await login(args, alice_user, alice_pw)
    bob = await login(args, bob_user, bob_pw)
    if not alice or not bob:
        fail("login failed")
    ok()

    step("alice's command list has the admin commands")
    items = await alice["xep_0030"].get_items(jid=args.domain,
                                              node="http://jabber.org/protocol/commands")
    nodes = {i[1] for i in items["disco_items"]["items"]}
    for n in ("add-user", "delete-user", "change-user-password", "announce"):
        if f"{ADMIN}#{n}" not in nodes:
            fail(f"{n} missing from {sorted(nodes)}")
    ok(f"{len(nodes)} commands")

    step("bob's command list has no admin commands")
    items = await bob["xep_0030"].get_items(jid=args.domain,
                                            node="http://jabber.org/protocol/commands")
    nodes = {i[1] for i in items["disco_items"]["items"]}
    if any(n.startswith(ADMIN) for n in nodes):
        fail(f"bob sees {sorted(nodes)}")
    ok()

    step("bob running add-user gets forbidden")
    try:
        await bob["xep_0050"].send_command(args.domain, f"{ADMIN}#add-user", timeout=10)
        fail("bob was allowed")
    except IqError as e:
        if e.condition != "forbidden":
            fail(f"got {e.condition}")
    ok()

    step("a bogus session id gets bad-request")
    try:
        await alice["xep_0050"].send_command(args.domain, f"{ADMIN}#add-user",
                                             action="complete", sessionid="nope",
                                             timeout=10)
        fail("accepted")
    except IqError as e:
        if e.condition != "bad-request":
            fail(f"got {e.condition}")
    ok()

    step("add-user carol")
    carol = f"carol@{args.domain}"
    cmd = await run_command(alice, args, "add-user", {
        "accountjid": carol, "password": "carol-1", "password-verify": "carol-1"})
    kind, text = note_of(cmd)
    if kind == "error":
        fail(text)
    ok(text or "")

    step("get-registered-users-list has carol")
    cmd = await run_command(alice, args, "get-registered-users-list", {"max_items": "none"})
    users = set(values(cmd, "registereduserjids"))
    if carol not in users or f"{bob_user}@{args.domain}" not in users:
        fail(f"got {sorted(users)}")
    ok(", ".join(sorted(users)))

    step("get-online-users-num counts alice and bob")
    cmd = await run_command(alice, args, "get-online-users-num")
    n = int(values(cmd, "onlineusersnum")[0])
    if n != 2:
        fail(f"got {n}")
    ok(str(n))

    step("change-user-password for carol, who logs in with it")
    cmd = await run_command(alice, args, "change-user-password",
                            {"accountjid": carol, "password": "carol-2"})
    if note_of(cmd)[0] == "error":
        fail(note_of(cmd)[1])
    c = await login(args, "carol", "carol-2")
    if not c:
        fail("carol cannot log in with the new password")
    c.disconnect()
    ok()

    step("announce reaches bob as a headline from the server")
    cmd = await run_command(alice, args, "announce",
                            {"subject": "Maintenance", "announcement": "Back in 5 minutes"})
    if note_of(cmd)[0] == "error":
        fail(note_of(cmd)[1])
    msg = await asyncio.wait_for(bob.headlines.get(), 10)
    if str(msg["from"]) != args.domain or msg["body"] != "Back in 5 minutes":
        fail(f"got {msg}")
    ok(msg["subject"])

    step("delete-user carol")
    cmd = await run_command(alice, args, "delete-user", {"accountjids": [carol]})
    if note_of(cmd)[0] == "error":
        fail(note_of(cmd)[1])
    cmd = await run_command(alice, args, "get-registered-users-num")
    n = int(values(cmd, "registeredusersnum")[0])
    if n != 2:
        fail(f"{n} accounts left")
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
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    steps.log_to_stderr(args.verbose)
    sys.exit(steps.run(run(args), args.timeout, "all steps passed"))


if __name__ == "__main__":
    main()
