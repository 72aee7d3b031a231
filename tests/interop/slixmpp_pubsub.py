#!/usr/bin/python3
"""XEP-0060 against kith's service at pubsub.DOMAIN with slixmpp's own `xep_0060` plugin,
driven by tests/interop_slixmpp.rs.

Owns: the client side of one pubsub scenario in two phases around a server restart.
Phase `before`: alice creates a node, the service lists it in disco#items, bob subscribes,
alice publishes and bob is notified with the payload; bob (no affiliation) may neither
publish nor delete the node. Phase `after` (the server was restarted): the item is still
there (persistence), bob is still subscribed and hears the next publish; after bob
unsubscribes he hears nothing more, and `max_items=1` returns only the newest item.
Must not know kith's internals: XMPP to HOST only.

Usage: slixmpp_pubsub.py --phase before|after --port N [--host 127.0.0.1]
       [--domain localhost] [--alice alice:PASS] [--bob bob:PASS] [--verbose] [--timeout 30]
Prints one "[...] STEP/ok" line per step; exit 0 = pass, 1 = a step failed, 2 = timeout.
"""

import argparse
import asyncio
import ssl
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError

import steps
from steps import fail, ok, step

NODE = "family-news"
NS = "urn:example:news"



def entry(text):
    e = ET.Element(f"{{{NS}}}entry")
    e.text = text
    return e


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.events = asyncio.Queue()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("pubsub_publish", self._published)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0060")

    def _start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _published(self, msg):
        item = msg["pubsub_event"]["items"]["item"]
        payload = item["payload"]
        text = payload.text if payload is not None else None
        self.events.put_nowait((msg["from"].bare, msg["pubsub_event"]["items"]["node"],
                                item["id"], text))


async def login(args, creds):
    user, password = creds.split(":", 1)
    c = Client(f"{user}@{args.domain}", password)
    c.connect((args.host, args.port), force_starttls=True)
    await asyncio.wait_for(c.started, 15)
    return c


async def expect_event(client, item_id, text, service):
    try:
        got = await asyncio.wait_for(client.events.get(), 5)
    except asyncio.TimeoutError:
        fail(f"no notification for item {item_id}")
    if got != (service, NODE, item_id, text):
        fail(f"notification {got}, expected {(service, NODE, item_id, text)}")
    return got


async def expect_refused(coro, condition):
    try:
        await coro
    except IqError as e:
        if e.condition != condition:
            fail(f"refused with {e.condition}, expected {condition}")
        return
    fail("the request went through")


async def before(args, alice, bob, service):
    step("alice creates a node")
    await alice["xep_0060"].create_node(service, NODE)
    ok(NODE)

    step("disco#items of the service lists it")
    items = await bob["xep_0030"].get_items(jid=service)
    nodes = [i[1] for i in items["disco_items"]["items"]]
    if NODE not in nodes:
        fail(f"nodes listed: {nodes}")
    ok(str(nodes))

    step("bob subscribes")
    r = await bob["xep_0060"].subscribe(service, NODE)
    sub = r["pubsub"]["subscription"]["subscription"]
    if sub != "subscribed":
        fail(f"subscription {sub}")
    ok()

    step("alice publishes, bob is notified")
    await alice["xep_0060"].publish(service, NODE, id="1", payload=entry("hello family"))
    await expect_event(bob, "1", "hello family", service)
    ok()

    step("bob may not publish")
    await expect_refused(bob["xep_0060"].publish(service, NODE, id="x", payload=entry("no")),
                         "forbidden")
    ok()

    step("bob may not delete the node")
    await expect_refused(bob["xep_0060"].delete_node(service, NODE), "forbidden")
    ok()


async def after(args, alice, bob, service):
    step("the item survived the restart")
    r = await bob["xep_0060"].get_items(service, NODE)
    got = [(i["id"], i["payload"].text) for i in r["pubsub"]["items"]]
    if got != [("1", "hello family")]:
        fail(f"items {got}")
    ok()

    step("the subscription survived: bob hears the next publish")
    await alice["xep_0060"].publish(service, NODE, id="2", payload=entry("second"))
    await expect_event(bob, "2", "second", service)
    ok()

    step("after unsubscribing bob hears nothing")
    await bob["xep_0060"].unsubscribe(service, NODE)
    await alice["xep_0060"].publish(service, NODE, id="3", payload=entry("third"))
    try:
        got = await asyncio.wait_for(bob.events.get(), 2)
        fail(f"notified after unsubscribing: {got}")
    except asyncio.TimeoutError:
        pass
    ok()

    step("max_items=1 returns the newest item")
    r = await bob["xep_0060"].get_items(service, NODE, max_items=1)
    got = [i["id"] for i in r["pubsub"]["items"]]
    if got != ["3"]:
        fail(f"items {got}")
    ok()

    step("alice deletes the node")
    await alice["xep_0060"].delete_node(service, NODE)
    items = await bob["xep_0030"].get_items(jid=service)
    if items["disco_items"]["items"]:
        fail(f"still listed: {items['disco_items']['items']}")
    ok()


async def run(args):
    service = f"pubsub.{args.domain}"
    step("login")
    alice = await login(args, args.alice)
    bob = await login(args, args.bob)
    ok()
    if args.phase == "before":
        await before(args, alice, bob, service)
    else:
        await after(args, alice, bob, service)
    alice.disconnect()
    bob.disconnect()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--phase", choices=["before", "after"], required=True)
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
