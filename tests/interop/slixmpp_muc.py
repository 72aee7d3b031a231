#!/usr/bin/python3
"""Interop check of an XMPP server's XEP-0045 group chats with three slixmpp clients.

Owns: the client side of `slixmpp_muc_*` in `tests/interop_slixmpp.rs`. slixmpp's own
xep_0045 plugin drives the rooms; raw stanzas only where the plugin has no call. It speaks
XMPP to HOST:PORT only and knows nothing of kith's internals.

--phase live (alice, bob, carol):
  create      alice creates ROOM (status 201), configures it persistent with the form
  join        bob and carol join; everyone sees everyone
  message     alice's groupchat message reaches bob and carol with her id and a stanza-id
              by the room
  subject     alice sets the subject
  self-ping   XEP-0410: bob pings his own occupant JID: result; carol, not joined, is refused
  history     carol leaves and rejoins asking for 5 stanzas: alice's message, delayed
  kick        alice kicks carol: carol gets unavailable with 110 and 307
  members     alice makes PRIV members-only: bob is refused (registration-required); made a
              member, he joins
  password    alice makes SECRET password-protected: carol is refused (not-authorized) without
              the password and enters with it
  room mam    bob reads ROOM's archive: alice's message, with the id the stanza-id gave
--phase restarted (after the server restarted on the same data):
  persisted   alice finds ROOM persistent in disco#info, rejoins, gets the subject and
              history back; carol is still refused from PRIV (its affiliations survived)

Exit code 0 only when every step passed, 1 on a failed step, 2 on the overall timeout.
"""

import argparse
import asyncio
import ssl
import sys
import time

import slixmpp
from slixmpp.exceptions import IqError, PresenceError

import steps
from steps import fail, ok, step

MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"



async def wait_until(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            fail(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


def codes(stanza):
    return {int(s.get("code")) for s in stanza.xml.iter(f"{{{MUC_USER}}}status")}


class Client(slixmpp.ClientXMPP):
    def __init__(self, args, who, name):
        local, password = who
        super().__init__(f"{local}@{args.domain}/muc", password)
        self.name = name
        self.started = asyncio.get_event_loop().create_future()
        self.messages = []  # groupchat messages received
        self.subjects = []  # subject texts received
        self.presences = []  # presences from rooms
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for p in ["xep_0030", "xep_0004", "xep_0045", "xep_0199", "xep_0313", "xep_0059",
                  "xep_0297", "xep_0203", "xep_0359"]:
            self.register_plugin(p)
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("groupchat_message", lambda m: self.messages.append(m))
        self.add_event_handler("groupchat_presence", self._presence)
        self.add_event_handler("groupchat_subject", lambda m: self.subjects.append(m["subject"]))

    def _presence(self, p):
        if p["from"].domain.startswith("conference."):
            self.presences.append(p)

    async def _start(self, _):
        self.send_presence()
        await self.get_roster()
        if not self.started.done():
            self.started.set_result(True)


async def connect(args, who, name):
    c = Client(args, who, name)
    c.connect((args.host, args.port), use_ssl=False, force_starttls=True)
    try:
        await asyncio.wait_for(c.started, args.step_timeout)
    except asyncio.TimeoutError:
        fail(f"{name} did not log in")
    return c


async def join(c, room, nick, args, **kw):
    try:
        pres, subject, occupants, history = await c["xep_0045"].join_muc_wait(
            room, nick, timeout=args.step_timeout, **kw)
    except asyncio.TimeoutError:
        fail(f"{c.name} joining {room}: timeout")
    return pres, subject, occupants, history


async def join_refused(c, room, nick, args, **kw):
    try:
        await c["xep_0045"].join_muc_wait(room, nick, timeout=args.step_timeout, **kw)
    except PresenceError as e:
        return e.presence["error"]["condition"]
    except asyncio.TimeoutError:
        fail(f"{c.name} joining {room}: timeout")
    fail(f"{c.name} entered {room}, expected a refusal")


async def configure(c, room, fields):
    form = c["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/muc#roomconfig")
    for k, v in fields.items():
        form.add_field(var=f"muc#roomconfig_{k}", value=v)
    await c["xep_0045"].set_room_config(room, form)


async def live(args, room, priv, secret):
    alice = await connect(args, args.alice, "alice")
    bob = await connect(args, args.bob, "bob")
    carol = await connect(args, args.carol, "carol")
    st = args.step_timeout

    step("create: alice creates the room (201) and configures it persistent")
    pres, _, _, _ = await join(alice, room, "Alice", args)
    if not {110, 201} <= codes(pres):
        fail(f"self-presence codes {codes(pres)}, want 110 and 201")
    await configure(alice, room, {"persistentroom": True, "roomname": "Family"})
    ok()

    step("join: bob and carol join")
    await join(bob, room, "Bob", args)
    _, _, occupants, _ = await join(carol, room, "Carol", args)
    nicks = sorted({p["from"].resource for p in occupants} - {"Carol"})
    if nicks != ["Alice", "Bob"]:
        fail(f"carol saw occupants {nicks}")
    await wait_until(lambda: any(p["from"].resource == "Carol" for p in alice.presences), st,
                     "alice seeing carol")
    ok()

    step("message: alice's groupchat message reaches bob and carol")
    body = f"hello {args.run}"
    m = alice.make_message(mto=room, mbody=body, mtype="groupchat")
    m["id"] = f"id-{args.run}"
    m.send()
    for c in (bob, carol, alice):
        await wait_until(lambda: any(x["body"] == body for x in c.messages), st,
                         f"{c.name} getting the message")
    got = next(x for x in bob.messages if x["body"] == body)
    if got["id"] != f"id-{args.run}" or got["from"].resource != "Alice":
        fail(f"bob got id {got['id']} from {got['from']}")
    sid = got.xml.find("{urn:xmpp:sid:0}stanza-id")
    if sid is None or sid.get("by") != room:
        fail("no stanza-id by the room")
    stanza_id = sid.get("id")
    ok(f"stanza-id {stanza_id}")

    step("subject: alice sets it")
    alice["xep_0045"].set_subject(room, f"plans {args.run}")
    await wait_until(lambda: f"plans {args.run}" in bob.subjects, st, "bob seeing the subject")
    ok()

    step("self-ping: bob's own occupant JID answers; carol's ping as a stranger is refused")
    await bob["xep_0199"].send_ping(f"{room}/Bob", timeout=st)
    try:
        await carol["xep_0199"].send_ping(f"{priv}/Carol", timeout=st)
        fail("a ping to a room one is not in was answered")
    except IqError as e:
        if e.iq["error"]["condition"] not in ("not-acceptable", "item-not-found"):
            fail(f"condition {e.iq['error']['condition']}")
    ok()

    step("history: carol rejoins asking for 5 stanzas")
    carol["xep_0045"].leave_muc(room, "Carol")
    await wait_until(lambda: any(p["from"].resource == "Carol" and p["type"] == "unavailable"
                                 for p in alice.presences), st, "carol leaving")
    _, subject, _, history = await join(carol, room, "Carol", args, maxstanzas=5)
    bodies = [h["body"] for h in history]
    if body not in bodies:
        fail(f"history {bodies}")
    if subject["subject"] != f"plans {args.run}":
        fail(f"subject {subject['subject']!r}")
    ok(f"{len(bodies)} in history")

    step("kick: alice kicks carol (307)")
    carol.presences.clear()
    await alice["xep_0045"].set_role(room, "Carol", "none", reason="test")
    await wait_until(lambda: any(p["type"] == "unavailable" and {110, 307} <= codes(p)
                                 for p in carol.presences), st, "carol's 307")
    ok()

    step("members: PRIV is members-only; bob is refused, then admitted as a member")
    await join(alice, priv, "Alice", args)
    await configure(alice, priv, {"membersonly": True, "persistentroom": True})
    cond = await join_refused(bob, priv, "Bob", args)
    if cond != "registration-required":
        fail(f"condition {cond}")
    await alice["xep_0045"].set_affiliation(priv, "member", jid=bob.boundjid.bare)
    await join(bob, priv, "Bob", args)
    ok()

    step("password: SECRET refuses carol without the password")
    await join(alice, secret, "Alice", args)
    await configure(alice, secret, {"passwordprotectedroom": True, "roomsecret": "pw"})
    cond = await join_refused(carol, secret, "Carol", args)
    if cond != "not-authorized":
        fail(f"condition {cond}")
    await join(carol, secret, "Carol", args, password="pw")
    ok()

    step("room mam: bob reads the room's archive")
    found = []
    async for r in bob["xep_0313"].iterate(jid=room, rsm={"max": 10}):
        fwd = r["mam_result"]["forwarded"]["stanza"]
        found.append((fwd["body"], r["mam_result"]["id"]))
    if (body, stanza_id) not in found:
        fail(f"archive {found}")
    ok(f"{len(found)} archived")

    for c in (alice, bob, carol):
        c.disconnect()


async def restarted(args, room, priv):
    alice = await connect(args, args.alice, "alice")
    carol = await connect(args, args.carol, "carol")
    step("persisted: room config, subject, history and affiliations survived")
    info = await alice["xep_0030"].get_info(jid=room, timeout=args.step_timeout)
    if "muc_persistent" not in info["disco_info"]["features"]:
        fail(f"features {info['disco_info']['features']}")
    _, subject, _, history = await join(alice, room, "Alice", args, maxstanzas=10)
    if subject["subject"] != f"plans {args.run}":
        fail(f"subject {subject['subject']!r}")
    if f"hello {args.run}" not in [h["body"] for h in history]:
        fail(f"history {[h['body'] for h in history]}")
    cond = await join_refused(carol, priv, "Carol", args)
    if cond != "registration-required":
        fail(f"condition {cond}")
    ok()
    for c in (alice, carol):
        c.disconnect()


def creds(s):
    local, _, password = s.partition(":")
    return (local, password)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--phase", choices=["live", "restarted"], required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--alice", type=creds, required=True)
    p.add_argument("--bob", type=creds, required=True)
    p.add_argument("--carol", type=creds, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--step-timeout", type=float, default=10.0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    steps.log_to_stderr(args.verbose)
    room = f"family-{args.run}@conference.{args.domain}"
    priv = f"private-{args.run}@conference.{args.domain}"
    secret = f"secret-{args.run}@conference.{args.domain}"
    work = live(args, room, priv, secret) if args.phase == "live" else restarted(args, room, priv)
    return steps.run(work, args.timeout, f"PASS muc {args.phase}")


if __name__ == "__main__":
    sys.exit(main())
