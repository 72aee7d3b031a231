// A real web XMPP client library (xmpp.js, @xmpp/client) against kith over WebSocket
// (RFC 7395), run by tests/e2e_web.rs under node.
//
// Usage: node --experimental-websocket xmppjs_chat.mjs SERVICE DOMAIN ALICE_PASS BOB_PASS
//   SERVICE is the wss:// URL; the accounts are alice@DOMAIN and bob@DOMAIN.
// Logs in as alice and bob (xmpp.js picks SASL2 or SASL, Bind 2 or RFC 6120 bind), alice
// sends bob a chat message, bob answers, each checks what arrived; then both close their
// streams. Prints one line per step; exits 0 only when every step passed. Gives up by
// itself after 30 s.

import { client, xml } from "@xmpp/client";

const [service, domain, alicePass, bobPass] = process.argv.slice(2);
if (!bobPass) {
  console.error("usage: xmppjs_chat.mjs SERVICE DOMAIN ALICE_PASS BOB_PASS");
  process.exit(2);
}

const timer = setTimeout(() => {
  console.log("FAIL: timed out after 30 s");
  process.exit(1);
}, 30_000);

function step(what) {
  console.log(`ok: ${what}`);
}

function connect(username, password) {
  const c = client({ service, domain, username, password, resource: "web" });
  c.on("error", (err) => console.log(`${username}: error: ${err.message}`));
  if (process.env.KITH_XMPPJS_DEBUG) {
    c.on("input", (s) => console.log(`${username} <- ${s}`));
    c.on("output", (s) => console.log(`${username} -> ${s}`));
  }
  return c;
}

function nextChat(c) {
  return new Promise((resolve) => {
    const onStanza = (stanza) => {
      if (stanza.is("message") && stanza.getChildText("body")) {
        c.removeListener("stanza", onStanza);
        resolve(stanza);
      }
    };
    c.on("stanza", onStanza);
  });
}

try {
  const alice = connect("alice", alicePass);
  const bob = connect("bob", bobPass);
  const aliceJid = await alice.start();
  step(`alice online as ${aliceJid}`);
  const bobJid = await bob.start();
  step(`bob online as ${bobJid}`);
  if (bobJid.bare().toString() !== `bob@${domain}`) throw new Error(`bob bound ${bobJid}`);

  await bob.send(xml("presence"));
  await alice.send(xml("presence"));

  const toBob = nextChat(bob);
  await alice.send(
    xml("message", { to: bobJid.toString(), type: "chat", id: "m1" }, xml("body", {}, "hello over websocket")),
  );
  const got = await toBob;
  if (got.getChildText("body") !== "hello over websocket") throw new Error(`bob got ${got}`);
  if (!got.attrs.from.startsWith(`alice@${domain}/`)) throw new Error(`from is ${got.attrs.from}`);
  step(`bob received alice's message from ${got.attrs.from}`);

  const toAlice = nextChat(alice);
  await bob.send(xml("message", { to: got.attrs.from, type: "chat", id: "m2" }, xml("body", {}, "hi alice")));
  const reply = await toAlice;
  if (reply.getChildText("body") !== "hi alice") throw new Error(`alice got ${reply}`);
  step("alice received bob's reply");

  // An iq round trip through the server (ping), checked by xmpp.js's iq caller.
  await alice.iqCaller.request(xml("iq", { type: "get", to: domain }, xml("ping", "urn:xmpp:ping")));
  step("ping answered");

  await alice.stop();
  await bob.stop();
  step("both closed their streams");
  clearTimeout(timer);
  console.log("PASS");
  process.exit(0);
} catch (err) {
  console.log(`FAIL: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
}
