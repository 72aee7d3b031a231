//! Namespace URIs kith speaks, in one place so a typo is a compile error, not an interop bug.

pub const CLIENT: &str = "jabber:client";
pub const STREAM: &str = "http://etherx.jabber.org/streams";
pub const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZAS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 session establishment; kept as an optional no-op for old clients (RFC 6121 Appendix E).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const ROSTER: &str = "jabber:iq:roster";
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// XEP-0440: which channel-binding types the server supports.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const PING: &str = "urn:xmpp:ping";
pub const VERSION: &str = "jabber:iq:version";
pub const TIME: &str = "urn:xmpp:time";
pub const LAST: &str = "jabber:iq:last";
pub const DELAY: &str = "urn:xmpp:delay";
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0160 advertises offline storage under this legacy feature name.
pub const MSGOFFLINE: &str = "msgoffline";
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
pub const CARBONS: &str = "urn:xmpp:carbons:2";
pub const FORWARD: &str = "urn:xmpp:forward:0";
pub const RECEIPTS: &str = "urn:xmpp:receipts";
pub const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const CONFERENCE: &str = "jabber:x:conference";
pub const SM: &str = "urn:xmpp:sm:3";
pub const CSI: &str = "urn:xmpp:csi:0";
/// XEP-0191 Blocking Command and its error payload.
pub const BLOCKING: &str = "urn:xmpp:blocking";
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0049 Private XML Storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0077 In-Band Registration.
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077 §8: the stream feature saying registration is possible before authentication.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0401 §6 / XEP-0379: the pre-authentication token iq (`<preauth token='…'/>`).
pub const PARS: &str = "urn:xmpp:pars:0";
/// XEP-0215 External Service Discovery.
pub const EXTDISCO: &str = "urn:xmpp:extdisco:2";
/// XEP-0357 Push Notifications.
pub const PUSH: &str = "urn:xmpp:push:0";
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0004 data forms.
pub const DATA_FORM: &str = "jabber:x:data";
/// XEP-0128 / XEP-0157 server information form.
pub const SERVERINFO: &str = "http://jabber.org/network/serverinfo";
/// XEP-0388 Extensible SASL Profile.
pub const SASL2: &str = "urn:xmpp:sasl:2";
/// XEP-0386 Bind 2.
pub const BIND2: &str = "urn:xmpp:bind:0";
/// XEP-0484 Fast Authentication Streamlining Tokens.
pub const FAST: &str = "urn:xmpp:fast:0";
/// RFC 7395 §3.3: `<open/>` and `<close/>` framing of XMPP over WebSocket.
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// XEP-0124: the BOSH `<body/>` wrapper.
pub const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// XEP-0206: the `xmpp:` attributes of XMPP over BOSH.
pub const XBOSH: &str = "urn:xmpp:xbosh";
