// Strophe.js, the XMPP library under Converse.js, against kith over BOSH (XEP-0206) or
// WebSocket (RFC 7395), run by tests/e2e_web.rs under node.
//
// Usage: node strophe_chat.mjs SERVICE DOMAIN ALICE_PASS BOB_PASS
//   SERVICE is https://…/http-bind (BOSH) or wss://…/xmpp-websocket; the accounts are
//   alice@DOMAIN and bob@DOMAIN.
// Logs in alice and bob (SASL, restart, bind), alice sends bob a chat message, bob answers,
// then both disconnect (BOSH: type='terminate'; WebSocket: <close/>). Prints one line per
// step; exits 0 only when every step passed. Gives up by itself after 30 s.

import XHR2 from "xhr2";

const { Strophe, $msg, $pres } = await import("strophe.js");
Strophe.setLogLevel(process.env.KITH_STROPHE_DEBUG ? Strophe.LogLevel.DEBUG : Strophe.LogLevel.WARN);

// Node has no XMLHttpRequest; xhr2 provides one without `responseXML`, which Strophe's
// BOSH transport reads, so parse the text the way a browser would.
class XMLHttpRequest extends XHR2 {
  constructor() {
    super();
    Object.defineProperty(this, "responseXML", {
      get: () => (this.responseText ? new DOMParser().parseFromString(this.responseText, "text/xml") : null),
    });
  }
}
globalThis.XMLHttpRequest = XMLHttpRequest;

const [service, domain, alicePass, bobPass] = process.argv.slice(2);
if (!bobPass) {
  console.error("usage: strophe_chat.mjs SERVICE DOMAIN ALICE_PASS BOB_PASS");
  process.exit(2);
}

const timer = setTimeout(() => {
  console.log("FAIL: timed out after 30 s");
  process.exit(1);
}, 30_000);

const statusName = Object.fromEntries(Object.entries(Strophe.Status).map(([k, v]) => [v, k]));

function login(user, password) {
  const c = new Strophe.Connection(service);
  if (process.env.KITH_STROPHE_DEBUG) {
    c.rawInput = (d) => console.log(`${user} <- ${d}`);
    c.rawOutput = (d) => console.log(`${user} -> ${d}`);
  }
  return new Promise((resolve, reject) => {
    c.connect(`${user}@${domain}`, password, (status, condition) => {
      if (status === Strophe.Status.CONNECTED) resolve(c);
      else if ([Strophe.Status.AUTHFAIL, Strophe.Status.CONNFAIL, Strophe.Status.ERROR].includes(status))
        reject(new Error(`${user}: ${statusName[status]} ${condition ?? ""}`));
    });
  });
}

function nextChat(c) {
  return new Promise((resolve) => {
    c.addHandler(
      (stanza) => {
        resolve(stanza);
        return false;
      },
      null,
      "message",
      "chat",
    );
  });
}

function disconnect(c) {
  return new Promise((resolve) => {
    c.connect_callback = (status) => {
      if (status === Strophe.Status.DISCONNECTED) resolve();
    };
    c.disconnect("done");
  });
}

const body = (stanza) => stanza.getElementsByTagName("body")[0]?.textContent;

try {
  const alice = await login("alice", alicePass);
  console.log(`ok: alice online as ${alice.jid}`);
  const bob = await login("bob", bobPass);
  console.log(`ok: bob online as ${bob.jid}`);
  alice.send($pres());
  bob.send($pres());

  const toBob = nextChat(bob);
  alice.send($msg({ to: bob.jid, type: "chat", id: "s1" }).c("body").t("hello from strophe"));
  const got = await toBob;
  if (body(got) !== "hello from strophe") throw new Error(`bob got ${Strophe.serialize(got)}`);
  if (got.getAttribute("from") !== alice.jid) throw new Error(`from is ${got.getAttribute("from")}`);
  console.log("ok: bob received alice's message");

  const toAlice = nextChat(alice);
  bob.send($msg({ to: alice.jid, type: "chat", id: "s2" }).c("body").t("hi alice"));
  const reply = await toAlice;
  if (body(reply) !== "hi alice") throw new Error(`alice got ${Strophe.serialize(reply)}`);
  console.log("ok: alice received bob's reply");

  await disconnect(alice);
  await disconnect(bob);
  console.log("ok: both disconnected");
  clearTimeout(timer);
  console.log("PASS");
  process.exit(0);
} catch (err) {
  console.log(`FAIL: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
}
