#!/usr/bin/python3
"""Federation check from the users' side: alice on one server, bob on another.

Owns: the slixmpp clients of `tests/federation/run.sh`. Each logs in to its own server by
address (STARTTLS, SCRAM-SHA-1 without channel binding, which every server under test
offers) and asserts what a user would notice of the s2s link between the two servers. It
knows nothing of any server's internals: it only speaks XMPP as a client.

Modes (exit 0 only when every step passed, 1 on a failed step, 2 on the overall timeout):

  federate  every step in both directions: subscription request and approval (roster
            pushes end at 'both'), presence (available after approval, then a show/status
            change), a chat message, and iq round trips: ping of the other server and of
            the other user's client, disco#info of the other server, the other user's
            vcard-temp (set by its owner first).
  muc       group chat over s2s: --owner (the user on kith) creates --room on kith's
            conference domain, the other user joins it through their own server, both
            exchange groupchat messages, the guest pings its own occupant JID (XEP-0410)
            and leaves, and the owner sees it go.
  bounce    the other user's server is down: --sender logs in alone, sends a chat message
            to the other user and must get it back as an error stanza with
            remote-server-not-found or remote-server-timeout (RFC 6120 8.3.3.15/16)
            within --bounce-within seconds.

Usage: fed_client.py federate --alice JID:PASS@ADDR --bob JID:PASS@ADDR [--timeout 60]
       fed_client.py bounce --alice ... --bob ... --sender alice|bob [--bounce-within 45]
"""

import argparse
import asyncio
import logging
import os
import ssl
import sys
import time
import uuid
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

# The step lines and the timed run, shared with the slixmpp scripts of tests/interop.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import steps  # noqa: E402
from steps import fail, ok, step  # noqa: E402

BOUNCE_CONDITIONS = ("remote-server-not-found", "remote-server-timeout")


async def wait_until(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            fail(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


class Client(slixmpp.ClientXMPP):
    """Records what arrives; the steps decide."""

    def __init__(self, name, jid, password, addr):
        super().__init__(f"{jid}/fed-{uuid.uuid4().hex[:6]}", password)
        self.name = name
        self.addr = addr
        loop = asyncio.get_event_loop()
        self.started = loop.create_future()
        self.ended = loop.create_future()
        self.messages = []  # (from full JID, body)
        self.errors = []  # (kind, from, condition, text, id)
        self.presence = {}  # bare JID -> (type, show, status) of the last presence seen
        self.presence_log = []  # every presence, in order, for failure messages
        self.sub_requests = []  # bare JIDs that asked to subscribe
        self.roster_items = {}  # bare JID -> subscription, from the server's pushes
        self.muc = []  # (occupant JID, type, status codes) of presence from rooms

        # The test CA is not in the system store; the s2s links are what is under test.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        mechs = self["feature_mechanisms"]
        mechs.use_mechs = {"SCRAM-SHA-1"}
        default_creds = mechs.sasl_callback

        def creds_without_cb(required, optional):
            got = default_creds(required, optional)
            got.pop("channel_binding", None)
            return got

        mechs.sasl_callback = creds_without_cb
        self.auto_authorize = None  # subscription requests are answered by the steps
        self.auto_subscribe = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")  # answers the other user's ping

        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_all_auth", lambda _: self._end("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._end(f"connection failed: {e}"))
        self.add_event_handler("disconnected", lambda r: self._end(f"disconnected: {r}"))
        self.add_event_handler("message", self._message)
        # slixmpp reports type='error' messages as 'message_error', not 'message'.
        self.add_event_handler("message_error", self._message)
        self.add_event_handler("presence", self._presence)
        self.add_event_handler("presence_subscribe", self._subscribe)
        self.add_event_handler("roster_update", self._roster)

    def _started(self, _):
        if not self.started.done():
            self.started.set_result(True)

    def _end(self, why):
        if not self.ended.done():
            self.ended.set_result(why)

    def _message(self, msg):
        if msg["type"] == "error":
            if any(e[4] == msg["id"] for e in self.errors):
                return  # the same stanza through both events
            self.errors.append(("message", str(msg["from"]), msg["error"]["condition"],
                                msg["error"]["text"], msg["id"]))
        elif msg["body"]:
            self.messages.append((str(msg["from"]), msg["body"]))

    def _presence(self, pres):
        if pres["from"].domain.startswith("conference."):
            codes = {s.get("code") for s in
                     pres.xml.iter("{http://jabber.org/protocol/muc#user}status")}
            self.muc.append((str(pres["from"]), pres["type"], codes))
            return
        self.presence_log.append(f"{pres['type']} from {pres['from']}"
                                 + (f" ({pres['status']})" if pres["status"] else ""))
        if pres["type"] == "error":
            self.errors.append(("presence", str(pres["from"]), pres["error"]["condition"],
                                pres["error"]["text"], pres["id"]))
        elif pres["type"] in ("available", "away", "chat", "dnd", "xa", "unavailable"):
            self.presence[pres["from"].bare] = (
                "unavailable" if pres["type"] == "unavailable" else "available",
                pres["show"], pres["status"])

    def _subscribe(self, pres):
        self.sub_requests.append(pres["from"].bare)

    def _roster(self, iq):
        for jid, item in iq["roster"]["items"].items():
            self.roster_items[str(jid)] = item["subscription"]


async def login(c, timeout):
    step(f"{c.name} logs in to {c.boundjid.domain} at {c.addr}")
    c.connect(address=(c.addr, 5222), force_starttls=True)
    done, _ = await asyncio.wait([c.started, c.ended], timeout=timeout,
                                 return_when=asyncio.FIRST_COMPLETED)
    if c.started not in done:
        fail(c.ended.result() if c.ended.done() else f"no session within {timeout}s")
    await asyncio.wait_for(c.get_roster(), timeout)
    c.send_presence()
    me = c.boundjid.bare
    await wait_until(lambda: c.presence.get(me, ("",))[0] == "available", timeout,
                     "own initial presence reflected")
    ok(c.boundjid.full)


async def subscription(a, b, timeout):
    """a asks b for a subscription; b approves."""
    aj, bj = a.boundjid.bare, b.boundjid.bare
    step(f"{a.name} asks {b.name} for a presence subscription")
    a.send_presence_subscription(pto=bj)
    await wait_until(lambda: aj in b.sub_requests, timeout,
                     f"the subscribe request at {b.name} (errors at {a.name}: {a.errors})")
    ok(f"{b.name} got <presence type='subscribe' from='{aj}'/>")

    step(f"{b.name} approves; {a.name} sees {b.name} available")
    b.send_presence(pto=aj, ptype="subscribed")
    want = ("to", "both")
    await wait_until(lambda: a.roster_items.get(bj) in want, timeout,
                     f"{a.name}'s roster push for {bj} with subscription to/both "
                     f"(now {a.roster_items.get(bj)!r})")
    await wait_until(lambda: a.presence.get(bj, ("",))[0] == "available", timeout,
                     f"{b.name}'s presence at {a.name} (presence seen in order: "
                     f"{a.presence_log})")
    ok(f"{a.name}'s roster: {bj} subscription={a.roster_items[bj]!r}, presence available")


async def presence_change(a, b, timeout):
    aj = a.boundjid.bare
    status = f"federation test {uuid.uuid4().hex[:6]}"
    step(f"{a.name} changes presence; {b.name} sees it")
    a.send_presence(pshow="away", pstatus=status)
    await wait_until(lambda: b.presence.get(aj) == ("available", "away", status), timeout,
                     f"show=away status={status!r} at {b.name} (presence seen in order: "
                     f"{b.presence_log})")
    ok(f"show=away status={status!r}")


async def chat(a, b, timeout):
    body = f"hello {b.name}, this is {a.name} {uuid.uuid4().hex[:8]}"
    step(f"{a.name} -> {b.name} chat message")
    a.send_message(mto=b.boundjid.bare, mbody=body, mtype="chat")
    await wait_until(lambda: any(m[1] == body for m in b.messages), timeout,
                     f"the message at {b.name} (errors at {a.name}: {a.errors})")
    sender = next(m[0] for m in b.messages if m[1] == body)
    if sender != a.boundjid.full:
        fail(f"from={sender!r}, expected {a.boundjid.full!r}")
    ok(f"from {sender}")


async def iq(c, to, payload, timeout, itype="get"):
    q = c.Iq()
    q["type"] = itype
    if to:
        q["to"] = to
    q.append(ET.fromstring(payload))
    try:
        return await q.send(timeout=timeout)
    except IqError as e:
        fail(f"iq {itype} to {to} answered with error {e.iq['error']['condition']!r} "
             f"({e.iq['error']['text']!r})")
    except IqTimeout:
        fail(f"no answer to the iq {itype} to {to} within {timeout}s")


async def iq_round_trips(a, b, timeout):
    domain, full = b.boundjid.domain, b.boundjid.full
    step(f"{a.name} pings {domain}")
    await iq(a, domain, "<ping xmlns='urn:xmpp:ping'/>", timeout)
    ok()

    step(f"{a.name} pings {b.name}'s client {full}")
    await iq(a, full, "<ping xmlns='urn:xmpp:ping'/>", timeout)
    ok()

    step(f"{a.name} asks {domain} for disco#info")
    res = await iq(a, domain, "<query xmlns='http://jabber.org/protocol/disco#info'/>", timeout)
    ns = "{http://jabber.org/protocol/disco#info}"
    ids = [(i.get("category"), i.get("type")) for i in res.xml.iter(f"{ns}identity")]
    if ("server", "im") not in ids:
        fail(f"identities {ids}, expected server/im")
    feats = [f.get("var") for f in res.xml.iter(f"{ns}feature")]
    ok(f"identities {ids}, {len(feats)} features")

    step(f"{a.name} fetches {b.name}'s vCard")
    name = f"{b.name.title()} {uuid.uuid4().hex[:6]}"
    await iq(b, None, f"<vCard xmlns='vcard-temp'><FN>{name}</FN></vCard>", timeout, "set")
    res = await iq(a, b.boundjid.bare, "<vCard xmlns='vcard-temp'/>", timeout)
    fn = res.xml.find("{vcard-temp}vCard/{vcard-temp}FN")
    if fn is None or fn.text != name:
        fail(f"FN {None if fn is None else fn.text!r}, expected {name!r}")
    ok(f"FN {name!r}")


async def federate(alice, bob, args):
    t = args.step_timeout
    await login(alice, t)
    await login(bob, t)
    await subscription(alice, bob, t)
    await subscription(bob, alice, t)
    step("both roster items end at subscription='both'")
    aj, bj = alice.boundjid.bare, bob.boundjid.bare
    await wait_until(lambda: alice.roster_items.get(bj) == "both"
                     and bob.roster_items.get(aj) == "both", t,
                     f"both (alice has {alice.roster_items}, bob has {bob.roster_items})")
    ok()
    for a, b in ((alice, bob), (bob, alice)):
        await presence_change(a, b, t)
    for a, b in ((alice, bob), (bob, alice)):
        await chat(a, b, t)
    for a, b in ((alice, bob), (bob, alice)):
        await iq_round_trips(a, b, t)
    if alice.errors or bob.errors:
        step("no unexpected error stanzas")
        fail(f"alice got {alice.errors}, bob got {bob.errors}")
    await disconnect(alice, bob)


async def muc(owner, guest, room, args):
    t = args.step_timeout
    await login(owner, t)
    await login(guest, t)
    muc_ns = "http://jabber.org/protocol/muc"

    def joined(c, nick):
        return lambda: any(j == f"{room}/{nick}" and ty != "error" and "110" in codes
                           for j, ty, codes in c.muc)

    step(f"{owner.name} creates {room}")
    p = owner.make_presence(pto=f"{room}/Owner")
    p.append(ET.fromstring(f"<x xmlns='{muc_ns}'/>"))
    p.send()
    await wait_until(joined(owner, "Owner"), t, f"self-presence (seen {owner.muc})")
    await iq(owner, room, f"<query xmlns='{muc_ns}#owner'><x xmlns='jabber:x:data' "
             "type='submit'/></query>", t, "set")
    ok()

    step(f"{guest.name} joins {room} from {guest.boundjid.domain} over s2s")
    p = guest.make_presence(pto=f"{room}/Guest")
    p.append(ET.fromstring(f"<x xmlns='{muc_ns}'/>"))
    p.send()
    await wait_until(joined(guest, "Guest"), t, f"self-presence (seen {guest.muc}, "
                     f"errors {guest.errors})")
    await wait_until(lambda: any(j == f"{room}/Guest" for j, _, _ in owner.muc), t,
                     f"the owner seeing the guest (seen {owner.muc})")
    ok()

    for a, b in ((owner, guest), (guest, owner)):
        step(f"{a.name} -> room -> {b.name} groupchat message")
        body = f"to the room from {a.name} {uuid.uuid4().hex[:8]}"
        a.send_message(mto=room, mbody=body, mtype="groupchat")
        nick = "Owner" if a is owner else "Guest"
        await wait_until(lambda: (f"{room}/{nick}", body) in b.messages, t,
                         f"the message at {b.name} (errors at {a.name}: {a.errors})")
        ok()

    step(f"{guest.name} pings its own occupant JID (XEP-0410)")
    await iq(guest, f"{room}/Guest", "<ping xmlns='urn:xmpp:ping'/>", t)
    ok()

    step(f"{guest.name} leaves; {owner.name} sees it")
    guest.send_presence(pto=f"{room}/Guest", ptype="unavailable")
    await wait_until(lambda: any(j == f"{room}/Guest" and ty == "unavailable"
                                 for j, ty, _ in owner.muc), t, f"unavailable (seen {owner.muc})")
    ok()
    await disconnect(owner, guest)


async def bounce(sender, other_jid, args):
    await login(sender, args.step_timeout)
    step(f"{sender.name} -> {other_jid} while its server is down: bounced")
    body = f"are you there? {uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    sender.send_message(mto=other_jid, mbody=body, mtype="chat")
    # The initial presence to the subscribed contact may bounce too; only the message counts.
    bounced = lambda: [e for e in sender.errors if e[0] == "message"]
    await wait_until(bounced, args.bounce_within,
                     f"an error message from {other_jid} (other errors: {sender.errors})")
    kind, frm, cond, text, _ = bounced()[0]
    if not frm.startswith(other_jid) or cond not in BOUNCE_CONDITIONS:
        fail(f"got {bounced()[0]}, expected a message error from {other_jid} "
             f"with one of {BOUNCE_CONDITIONS}")
    ok(f"<{cond}/> from {frm} after {time.monotonic() - started:.1f}s (text {text!r})")
    await disconnect(sender)


async def disconnect(*clients):
    step("disconnect")
    for c in clients:
        c.disconnect()
    for c in clients:
        await asyncio.wait_for(asyncio.shield(c.ended), 10)
    ok()


def account(s):
    creds, sep, addr = s.rpartition("@")
    jid, sep2, password = creds.partition(":")
    if not sep or not sep2 or "@" not in jid:
        raise argparse.ArgumentTypeError("expected LOCAL@DOMAIN:PASSWORD@ADDRESS")
    return jid, password, addr


async def run(args):
    alice = Client("alice", *args.alice)
    bob = Client("bob", *args.bob)
    if args.mode == "federate":
        await federate(alice, bob, args)
    elif args.mode == "muc":
        owner, guest = (alice, bob) if args.owner == "alice" else (bob, alice)
        await muc(owner, guest, args.room, args)
    else:
        sender, other = (alice, bob) if args.sender == "alice" else (bob, alice)
        await bounce(sender, other.boundjid.bare, args)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["federate", "bounce", "muc"])
    p.add_argument("--owner", choices=["alice", "bob"], default="alice")
    p.add_argument("--room", help="the room's bare JID (muc)")
    p.add_argument("--alice", type=account, required=True)
    p.add_argument("--bob", type=account, required=True)
    p.add_argument("--sender", choices=["alice", "bob"], default="alice")
    p.add_argument("--timeout", type=float, default=90, help="overall, seconds")
    p.add_argument("--step-timeout", type=float, default=20)
    p.add_argument("--bounce-within", type=float, default=45)
    p.add_argument("--verbose", action="store_true", help="slixmpp's XML log on stderr")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return steps.run(run(args), args.timeout, "PASS")


if __name__ == "__main__":
    sys.exit(main())
