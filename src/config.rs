//! The validated configuration: `kith.toml` in, a plain [`Config`] out.
//!
//! This module owns the configuration format (a user-facing contract: keys are not renamed
//! silently), its defaults, and every check on it. It knows nothing about sockets, TLS or the
//! store: it only reads the file, and [`parse`] is pure, so `kith check`, `kith setup` and
//! start-up all share the same checks.
//!
//! # Errors
//!
//! The whole file is checked and **every** problem is reported, each as
//! `path:line:col: message (fix)`, e.g. `kith.toml:3:1: unknown key 'domian' (did you mean
//! 'domain'?)`. A TOML syntax error stops the check after the syntax errors: the best-effort
//! tree the parser recovers would only produce misleading follow-up errors.
//!
//! # Design: a table-driven schema
//!
//! The accepted keys are data, not code paths: `ROOT` lists the top-level keys and
//! `SECTIONS` the `[section]`s, each a list of `Key` rows giving the key's name, its
//! documentation, how to read it into [`Config`] and how to show it back as TOML. Unknown-key
//! suggestions, the "this key belongs in `[listen]`" hints and [`Config::to_toml_example`] are all
//! derived from those rows, so they cannot drift apart. To add a key: add a field to the
//! config struct and its default to [`Config::defaults`], then one `Key` row. To add a section:
//! add its struct and a `Section` entry, and remove its name from [`RESERVED_SECTIONS`] (a test
//! checks the two lists are disjoint). Checks between keys of one section (a certificate needs
//! its key) live in the section's `check` function.
//!
//! Sections that later work will add (`s2s`, `upload`, `muc`, ...) are listed in
//! [`RESERVED_SECTIONS`] and rejected with "not supported by this version of kith" rather than a
//! spelling suggestion.
//!
//! # Decisions
//!
//! - Strict types: a single address where a list is expected is an error, but the message
//!   shows the corrected line. The same for quoted numbers and booleans.
//! - Relative paths (`data_dir`, `tls.cert`, `tls.key`) are resolved against the directory of
//!   the config file, so the server can be started from anywhere. The built-in default
//!   `./kith-data` (no config file) is relative to the current directory.
//! - `domain` is lowercased (DNS is case-insensitive); it must be `localhost` or a dotted DNS
//!   name in ASCII (punycode for internationalized names), not an IP address.
//! - Listen addresses are IP socket addresses; `"*:5222"` is accepted as shorthand for
//!   `"[::]:5222"` (all interfaces; dual-stack where the OS allows it). Host names are rejected:
//!   which address a name resolves to is not something a listener should guess. The same
//!   address in two listeners is an error; port 0 (any free port, used by tests) is allowed.
//! - `admins` entries must look like bare JIDs `local@domain` (no spaces, no `/`); full JID
//!   normalization belongs to the JID types.
//! - Durations are whole seconds: an integer, or a string of number+unit pairs (`"30s"`,
//!   `"5m"`, `"2h"`, `"7d"`, `"1h30m"`). Sizes are bytes: an integer, or a string with a binary
//!   unit (`"256KiB"`, `"1MiB"`; `B`, `KiB`, `MiB`, `GiB`); decimal units (`KB`, `MB`) are
//!   rejected because they are ambiguous.
//! - Ranges: `max_stanza_size` 10 000 bytes ..= 16 MiB, `auth_timeout` 1 s ..= 1 h,
//!   `max_offline_messages` 0 ..= 1 000 000 (0 keeps none); `connections_per_ip` and
//!   `stanzas_per_second` 0 ..= 1 000 000 (0 is no limit), `stanza_burst` 1 ..= 1 000 000.
//! - `[contact]` values are URIs (`scheme:rest`); `admin` defaults to the `admins` as `xmpp:`
//!   URIs. `[turn]` runs the built-in STUN/TURN server unless `enabled = false` or `host` names
//!   an external server (which then needs `secret`); `port`/`tls_port` belong to an external
//!   server. The TURN secret never appears in `Debug` output.
//! - `[components]` lines map a quoted component domain (checked like `domain`, not
//!   `domain` itself) to its non-empty XEP-0114 secret; the `[listen] components` listener is
//!   opened only when at least one is configured, and by default only on 127.0.0.1.
//! - `[acme]` is on when `email` is set; any other `[acme]` key without it is an error (so
//!   a half-written section does not silently leave ACME off), and so is `[acme] email`
//!   together with `[tls] cert`. `directory` takes the words `production` (the default) and
//!   `staging` for Let's Encrypt, or any `https://` URL.
//! - `[upload]` sizes are 1 KiB ..= 2 GiB - 1 (so they fit a `usize` on 32-bit boards);
//!   `expire_after` is at least 1 h or `"never"`.
//! - Whether certificate files exist is not checked here (that is I/O and belongs to start-up
//!   and `kith check`).

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Where [`load`] looks for a config file when none is given, in order.
pub const SEARCH_PATHS: [&str; 2] = ["./kith.toml", "/etc/kith/kith.toml"];

/// The whole validated configuration. Plain data: every value has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The XMPP domain served, lowercase: `localhost` or a dotted DNS name.
    pub domain: String,
    /// Where the store and certificates live; already resolved against the config file's
    /// directory.
    pub data_dir: PathBuf,
    pub log_level: LogLevel,
    /// Bare JIDs of the server's administrators.
    pub admins: Vec<String>,
    pub listen: Listen,
    pub tls: Tls,
    /// Certificates from an ACME CA (Let's Encrypt by default); on when `email` is set.
    pub acme: Acme,
    pub limits: Limits,
    pub auth: Auth,
    pub mam: Mam,
    /// Federation with other servers.
    pub s2s: S2s,
    /// XEP-0363 HTTP File Upload at `upload.DOMAIN`.
    pub upload: Upload,
    /// XEP-0045 group chats at `conference.DOMAIN`.
    pub muc: Muc,
    /// The web side on `[listen] https`: WebSocket, BOSH, host-meta.
    pub http: Http,
    /// XEP-0157 contact addresses published in the server's disco#info.
    pub contact: Contact,
    /// XEP-0215 STUN/TURN: the built-in server, or an external one, with coturn-style
    /// shared-secret credentials.
    pub turn: Turn,
    /// XEP-0114 external components: subdomains served by a gateway or bot that connects to
    /// `[listen] components` with a shared secret.
    pub components: Vec<Component>,
    /// Who may create an account (XEP-0077 in-band registration, invitations).
    pub registration: Registration,
    /// Defaults of `kith invite`.
    pub invites: Invites,
    /// `[circles]`: shared roster groups from the config file (more come from `kith circle`).
    pub circles: Vec<Circle>,
    /// Where rosters come from: kith's store, or an external HTTP service.
    pub roster: Roster,
    /// `kith check`: which DNS server to ask and what this host's public addresses are.
    pub check: Check,
    /// Built-in features that can be switched off (`kith module`).
    pub modules: Modules,
    /// XEP-0060 publish-subscribe service at `pubsub.DOMAIN`.
    pub pubsub: Pubsub,
    /// XEP-0065 SOCKS5 bytestreams proxy at `proxy.DOMAIN`.
    pub proxy65: Proxy65,
    /// Where this configuration came from, for the start-up log line.
    pub source: ConfigSource,
}

/// How much to log. Mirrors `log::LevelFilter` without depending on `log` here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Listening sockets. An empty list turns that listener off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Clients, STARTTLS (RFC 6120 §5).
    pub c2s: Vec<SocketAddr>,
    /// Clients, TLS from the first byte (XEP-0368).
    pub c2s_direct_tls: Vec<SocketAddr>,
    /// Other servers, STARTTLS.
    pub s2s: Vec<SocketAddr>,
    /// Other servers, TLS from the first byte (XEP-0368).
    pub s2s_direct_tls: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
    /// External components (XEP-0114).
    pub components: Vec<SocketAddr>,
}

/// Certificate files; both or neither (checked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Let's Encrypt's production directory, the default ACME server.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// ACME (RFC 8555) certificates for the domain and its `upload.` and `conference.` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acme {
    /// The account's contact address (without `mailto:`); ACME is on when it is set.
    pub email: Option<String>,
    /// The ACME directory URL (https).
    pub directory: String,
    /// A PEM file of CA certificates to trust for the ACME server's own HTTPS instead of the
    /// built-in web roots (a private or test CA such as pebble).
    pub directory_ca: Option<PathBuf>,
    pub challenge: AcmeChallenge,
}

/// How the CA checks that we control the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// RFC 8737 TLS-ALPN-01, answered on the TLS listeners (port 443).
    TlsAlpn01,
    /// RFC 8555 §8.3 HTTP-01, answered by the plain HTTP listener (port 80).
    Http01,
}

impl Default for Acme {
    fn default() -> Acme {
        Acme {
            email: None,
            directory: LETS_ENCRYPT_PRODUCTION.into(),
            directory_ca: None,
            challenge: AcmeChallenge::TlsAlpn01,
        }
    }
}

impl Acme {
    pub fn enabled(&self) -> bool {
        self.email.is_some()
    }
}

impl AcmeChallenge {
    pub const ALL: [AcmeChallenge; 2] = [AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01];

    /// The name used in the config file and by RFC 8555's challenge types.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest stanza accepted, in bytes (10 000 ..= 16 MiB).
    pub max_stanza_size: usize,
    /// Time a new connection has to authenticate.
    pub auth_timeout: Duration,
    /// Messages stored per offline account; 0 stores none.
    pub max_offline_messages: usize,
    /// How long a stream-management session waits for its client to resume (XEP-0198).
    pub resume_timeout: Duration,
    /// Client connections one IP address may hold open at once; 0 is no limit.
    pub connections_per_ip: usize,
    /// Stanzas per second a client session may send on average; 0 is no limit.
    pub stanzas_per_second: usize,
    /// Stanzas a client session may send at once above that rate.
    pub stanza_burst: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// Offer SASL PLAIN (only ever inside TLS).
    pub allow_plain: bool,
    /// Offer SCRAM-SHA-1 only (as Prosody does), for accounts imported with SHA-1 keys.
    pub scram_sha1_only: bool,
}

/// Message archive (XEP-0313).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mam {
    /// Archived messages older than this are deleted; `None` keeps them forever.
    pub archive_expires_after: Option<Duration>,
}

/// Federation (RFC 6120 server-to-server streams).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S2s {
    /// Refuse peers whose certificate does not verify for their domain, instead of falling
    /// back to dialback (XEP-0220).
    pub require_valid_certs: bool,
    /// Extra trust roots (PEM) beside the compiled-in public ones, for private federations.
    pub extra_ca: Option<PathBuf>,
    /// How long an attempt to reach another server may take before what waits for it
    /// bounces with `remote-server-timeout`.
    pub connect_timeout: Duration,
    /// An outgoing connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Ask this DNS server instead of the ones in `/etc/resolv.conf`.
    pub resolver: Option<SocketAddr>,
}

/// XEP-0363 HTTP File Upload: limits and retention of shared files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Offer the service (disco item `upload.DOMAIN`, slots, the HTTP handler).
    pub enabled: bool,
    /// Largest file one slot may be for, in bytes (advertised in disco#info).
    pub max_file_size: u64,
    /// Bytes one account may keep stored at once (files not yet expired).
    pub quota: u64,
    /// Files older than this are deleted; `None` keeps them until the account is deleted.
    pub expire_after: Option<Duration>,
}

/// XEP-0045 Multi-User Chat at `conference.DOMAIN` (`[muc]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Muc {
    /// Offer the service (disco item `conference.DOMAIN`, rooms).
    pub enabled: bool,
    /// Who may create rooms.
    pub restrict_room_creation: RoomCreation,
    /// Messages a new room keeps for history on join.
    pub history_length: usize,
    /// The most a room's owner may set `history_length` to.
    pub max_history: usize,
}

impl Default for Muc {
    fn default() -> Muc {
        Muc {
            enabled: true,
            restrict_room_creation: RoomCreation::Local,
            history_length: 20,
            max_history: 100,
        }
    }
}

/// `[pubsub]`: the XEP-0060 publish-subscribe service at `pubsub.DOMAIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pubsub {
    pub enabled: bool,
    /// Who may create nodes: every local account, or only the `admins`.
    pub create: PubsubCreate,
}

impl Default for Pubsub {
    fn default() -> Pubsub {
        Pubsub {
            enabled: true,
            create: PubsubCreate::Local,
        }
    }
}

/// Who may create MUC rooms (Prosody's `restrict_room_creation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomCreation {
    /// Server admins only.
    Admins,
    /// Accounts on this server.
    Local,
    /// Anyone, users of other servers included.
    Anyone,
}

impl RoomCreation {
    pub const ALL: [RoomCreation; 3] = [
        RoomCreation::Admins,
        RoomCreation::Local,
        RoomCreation::Anyone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RoomCreation::Admins => "admins",
            RoomCreation::Local => "local",
            RoomCreation::Anyone => "anyone",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubsubCreate {
    Local,
    Admins,
}

/// `[proxy65]`: the XEP-0065 SOCKS5 bytestreams proxy at `proxy.DOMAIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy65 {
    /// Off by default: it needs its TCP port open to the internet, and a streamhost clients
    /// cannot reach only makes their transfers wait for a timeout before the fallback.
    pub enabled: bool,
    pub listen: Vec<SocketAddr>,
    /// The host name clients connect to (default: the domain); the port is the first listen
    /// address's.
    pub public_host: Option<String>,
    /// Bytes per second one transfer may move, each direction.
    pub max_rate: u64,
    /// Transfers relayed at once; more activations are refused.
    pub max_concurrent: usize,
    /// A connection that waits for its peer or moves no data this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Proxy65 {
    fn default() -> Proxy65 {
        Proxy65 {
            enabled: false,
            listen: vec![SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 5000))],
            public_host: None,
            max_rate: 10 * MIB as u64,
            max_concurrent: 8,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The web endpoints (`[http]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http {
    /// The HTTPS address clients reach the web endpoints at, without a trailing `/`, when it
    /// is not `https://DOMAIN[:port]` (behind a reverse proxy, another port forwarded).
    pub public_url: Option<String>,
}

/// XEP-0157 contact addresses: URIs like `mailto:abuse@example.org` or
/// `xmpp:admin@example.org`, one list per field of the serverinfo form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contact {
    pub abuse: Vec<String>,
    /// `None` means the `admins`, as `xmpp:` URIs.
    pub admin: Option<Vec<String>>,
    pub feedback: Vec<String>,
    pub sales: Vec<String>,
    pub security: Vec<String>,
    pub status: Vec<String>,
    pub support: Vec<String>,
}

impl Contact {
    /// The serverinfo form's fields (`abuse-addresses`, ...) and their addresses, admins
    /// filled in.
    pub fn fields(&self, admins: &[String]) -> Vec<(&'static str, Vec<String>)> {
        let admin = match &self.admin {
            Some(list) => list.clone(),
            None => admins.iter().map(|a| format!("xmpp:{a}")).collect(),
        };
        vec![
            ("abuse-addresses", self.abuse.clone()),
            ("admin-addresses", admin),
            ("feedback-addresses", self.feedback.clone()),
            ("sales-addresses", self.sales.clone()),
            ("security-addresses", self.security.clone()),
            ("status-addresses", self.status.clone()),
            ("support-addresses", self.support.clone()),
        ]
    }
}

/// STUN/TURN for audio and video calls (XEP-0215): kith's built-in server by default, or an
/// external one (coturn, eturnal) sharing a secret with kith (coturn's `use-auth-secret` /
/// REST API scheme) when `host` is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Turn {
    /// Whether the built-in server runs; unset means "yes, unless `host` names an external
    /// server". See [`Turn::builtin`].
    pub enabled: Option<bool>,
    /// Built-in: UDP and TCP on each address.
    pub listen: Vec<SocketAddr>,
    /// Built-in: the host name advertised to clients (default: the XMPP domain).
    pub public_host: Option<String>,
    /// Built-in: the UDP ports relayed sockets are taken from.
    pub relay_ports: (u16, u16),
    /// Built-in: the long-term credential realm (default: the XMPP domain).
    pub realm: Option<String>,
    pub max_allocations_per_user: usize,
    pub max_allocations: usize,
    /// Bytes per second per allocation, each direction.
    pub bandwidth: usize,
    /// Let the built-in server relay to loopback, private and link-local addresses.
    pub allow_private_peers: bool,
    /// External server: its host name, as clients reach it.
    pub host: Option<String>,
    pub port: u16,
    /// TURN over TLS (`turns`), when the external server offers it.
    pub tls_port: Option<u16>,
    /// The shared secret. The built-in server generates one into `DATA/turn.secret` when
    /// unset; an external server needs it configured.
    pub secret: Option<String>,
    /// How long handed-out credentials stay valid.
    pub ttl: Duration,
}

impl Default for Turn {
    fn default() -> Turn {
        Turn {
            enabled: None,
            listen: vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 3478)],
            public_host: None,
            relay_ports: (49152, 65535),
            realm: None,
            max_allocations_per_user: 10,
            max_allocations: 500,
            bandwidth: MIB,
            allow_private_peers: false,
            host: None,
            port: 3478,
            tls_port: None,
            secret: None,
            ttl: Duration::from_secs(86_400),
        }
    }
}

impl Turn {
    /// Whether kith runs its own STUN/TURN server: `enabled`, which defaults to true unless
    /// `host` points at an external server, and at least one listen address.
    pub fn builtin(&self) -> bool {
        self.enabled.unwrap_or(self.host.is_none()) && !self.listen.is_empty()
    }

    /// What XEP-0215 advertises: host, port and TLS port; `None` when there is no server.
    pub fn advertised(&self, domain: &str) -> Option<(String, u16, Option<u16>)> {
        if self.builtin() {
            let host = self
                .public_host
                .clone()
                .unwrap_or_else(|| domain.to_string());
            Some((host, self.listen[0].port(), None))
        } else {
            let host = self.host.clone()?;
            Some((host, self.port, self.tls_port))
        }
    }

    /// The realm of the built-in server.
    pub fn realm<'a>(&'a self, domain: &'a str) -> &'a str {
        self.realm.as_deref().unwrap_or(domain)
    }
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of debug output and logs.
        f.debug_struct("Turn")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("public_host", &self.public_host)
            .field("relay_ports", &self.relay_ports)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// `[registration]`: who may create an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub policy: RegistrationPolicy,
    /// How long a deleted account's name cannot be taken by a new account; `None`: forever.
    pub tombstone_ttl: Option<Duration>,
    /// With `open`: one new account per IP address per this long (in-band and web alike).
    pub throttle: Duration,
    /// Admins get a chat message from the server when an account is registered.
    pub notify_admins: bool,
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            policy: RegistrationPolicy::default(),
            tombstone_ttl: None,
            throttle: Duration::from_secs(300),
            notify_admins: true,
        }
    }
}

/// `[invites]`: defaults of `kith invite`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invites {
    /// How long a new invite stays valid unless `--expires` says otherwise.
    pub expires: Duration,
}

impl Default for Invites {
    fn default() -> Self {
        Invites {
            expires: Duration::from_secs(7 * 86_400),
        }
    }
}

/// `[roster]`: where contact lists come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    /// `None`: people manage their own rosters (the default). `Some(url)`: an external service
    /// (Prosody's mod_http_roster_admin protocol) owns them; `%s` in the URL is the username.
    pub http_url: Option<String>,
}

/// One `[circles]` line: a shared roster group whose members see each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Circle {
    pub name: String,
    /// Bare JIDs of local accounts.
    pub members: Vec<String>,
}

/// `[modules]`: built-in features an admin may switch off. Each is on by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modules {
    /// XEP-0280 message carbons.
    pub carbons: bool,
    /// Server announcements (XEP-0133 announce, `kith announce`).
    pub announce: bool,
    /// The message of the day, sent at login.
    pub motd: bool,
}

impl Default for Modules {
    fn default() -> Modules {
        Modules {
            carbons: true,
            announce: true,
            motd: true,
        }
    }
}

/// Whether strangers, invited people or nobody may register (only admins create accounts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegistrationPolicy {
    Open,
    #[default]
    Invite,
    Closed,
}

impl RegistrationPolicy {
    pub const ALL: [RegistrationPolicy; 3] = [
        RegistrationPolicy::Open,
        RegistrationPolicy::Invite,
        RegistrationPolicy::Closed,
    ];

    /// The name used in the config file and by `kith setup --registration`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationPolicy::Open => "open",
            RegistrationPolicy::Invite => "invite",
            RegistrationPolicy::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<RegistrationPolicy> {
        RegistrationPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// `[check]`: settings of `kith check` only; the server ignores them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// The DNS server to ask instead of the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    /// This host's public addresses, for a machine behind NAT whose interfaces only have
    /// private ones. Empty: the interfaces' addresses.
    pub public_addresses: Vec<IpAddr>,
}

/// One `[components]` entry: the component's domain and its shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Component {
    /// Lowercase, checked like `domain`; never equal to `domain`.
    pub domain: String,
    pub secret: String,
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of debug output and logs.
        f.debug_struct("Component")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Where a [`Config`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No config file was found: built-in defaults.
    Defaults,
}

/// Every problem found in a config file. Display prints one problem per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    problems: Vec<Problem>,
}

/// One problem, for the operator: where, what, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// None for problems with the whole file (cannot read it).
    pub position: Option<Position>,
    pub message: String,
    /// A suggested fix ("did you mean 'domain'?").
    pub help: Option<String>,
}

/// 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Loads the configuration. With `explicit`, that file must exist. Without, the first of
/// [`SEARCH_PATHS`] that exists is used, or the built-in defaults if none does.
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigErrors> {
    let candidates: Vec<&Path> = SEARCH_PATHS.iter().map(Path::new).collect();
    load_from(explicit, &candidates)
}

/// Parses and checks the text of a config file; `path` is used in messages and to resolve
/// relative paths. Pure.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut checker = Checker::new(text, path);
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for error in syntax_errors {
            let span = error.span().unwrap_or(0..0);
            checker.problem(span, error.message().replace('\n', " "), None);
        }
        return Err(checker.into_errors());
    }
    let mut config = Config::defaults();
    config.source = ConfigSource::File(path.to_path_buf());
    // The default data_dir is relative to the file too, like one written in it.
    config.data_dir = checker.resolve(&config.data_dir);
    checker.read_root(root.get_ref(), &mut config);
    if checker.problems.is_empty() {
        Ok(config)
    } else {
        Err(checker.into_errors())
    }
}

/// `[http] public_url`: an absolute http(s) URL with a host, stored without a trailing `/`.
fn normalize_public_url(s: &str) -> Result<String, String> {
    let help = || {
        "write a URL like \"https://xmpp.example.org\" or \"https://example.org/xmpp\"".to_string()
    };
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(help)?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"'`{}|\\^".contains(c))
        || s.contains(['?', '#'])
    {
        return Err(help());
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Checks and normalizes an XMPP domain (lowercase; `localhost` or a dotted ASCII DNS name).
/// Shared with `kith setup`, which asks for one. The error is a message plus a possible fix.
pub fn normalize_domain(input: &str) -> Result<String, (String, Option<String>)> {
    let domain = input.to_ascii_lowercase();
    if domain.is_empty() {
        return Err(("the domain is empty".into(), Some(example_domain_help())));
    }
    if !domain.is_ascii() {
        return Err((
            format!("domain '{input}' is not ASCII"),
            Some("write internationalized domain names in their punycode form (xn--...)".into()),
        ));
    }
    if domain.contains('@') || domain.contains('/') {
        return Err((
            format!("'{input}' is an address, not a domain"),
            Some("write only the domain part, like 'example.org'".into()),
        ));
    }
    if domain.parse::<IpAddr>().is_ok() || domain.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
    {
        return Err((
            format!("'{input}' is an IP address; the XMPP domain must be a DNS name"),
            Some(example_domain_help()),
        ));
    }
    if let Some(stripped) = domain.strip_suffix('.') {
        return Err((
            format!("domain '{input}' ends with a dot"),
            Some(format!("write '{stripped}'")),
        ));
    }
    if domain == "localhost" {
        return Ok(domain);
    }
    if domain.len() > 253 {
        return Err((
            format!(
                "domain is {} characters long; the limit is 253",
                domain.len()
            ),
            None,
        ));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err((format!("domain '{input}' has an empty label ('..')"), None));
        }
        if label.len() > 63 {
            return Err((
                format!("'{label}' is longer than 63 characters, the limit for one DNS label"),
                None,
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err((
                format!("domain '{input}' contains '{bad}'"),
                Some("DNS names use only letters, digits, '-' and '.'".into()),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err((
                format!("'{label}' in domain '{input}' starts or ends with '-'"),
                None,
            ));
        }
    }
    if !domain.contains('.') {
        return Err((
            format!("'{input}' is not a fully qualified domain name"),
            Some(example_domain_help()),
        ));
    }
    Ok(domain)
}

impl Config {
    /// The built-in defaults: what an empty config file means.
    pub fn defaults() -> Config {
        fn any(port: u16) -> Vec<SocketAddr> {
            vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)]
        }
        Config {
            domain: "localhost".into(),
            data_dir: PathBuf::from("./kith-data"),
            log_level: LogLevel::Info,
            admins: Vec::new(),
            listen: Listen {
                c2s: any(5222),
                c2s_direct_tls: any(5223),
                s2s: any(5269),
                s2s_direct_tls: any(5270),
                https: any(443),
                http: any(80),
                // Components usually run on the same machine; like Prosody, only loopback.
                components: vec![SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 5347))],
            },
            tls: Tls::default(),
            acme: Acme::default(),
            limits: Limits {
                max_stanza_size: 256 * KIB,
                auth_timeout: Duration::from_secs(30),
                max_offline_messages: 1000,
                resume_timeout: Duration::from_secs(300),
                // A family behind one NAT has a few dozen devices at most.
                connections_per_ip: 100,
                // A person's client sends a few stanzas a second; a reconnect with a
                // large roster or a MAM catch-up sends a few hundred at once.
                stanzas_per_second: 100,
                stanza_burst: 1000,
            },
            auth: Auth::default(),
            mam: Mam {
                archive_expires_after: Some(Duration::from_secs(365 * 86_400)),
            },
            s2s: S2s {
                require_valid_certs: true,
                extra_ca: None,
                connect_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(600),
                resolver: None,
            },
            upload: Upload {
                enabled: true,
                // Snikket's 100 MiB plus 16 bytes: an XEP-0454 encrypted file carries a 16-byte
                // GCM tag, so a 100 MiB file still fits once encrypted.
                max_file_size: 100 * MIB as u64 + 16,
                quota: 1024 * MIB as u64,
                expire_after: Some(Duration::from_secs(30 * 86_400)),
            },
            muc: Muc::default(),
            http: Http::default(),
            contact: Contact::default(),
            turn: Turn::default(),
            components: Vec::new(),
            registration: Registration::default(),
            invites: Invites::default(),
            circles: Vec::new(),
            roster: Roster::default(),
            check: Check::default(),
            modules: Modules::default(),
            pubsub: Pubsub::default(),
            proxy65: Proxy65::default(),
            source: ConfigSource::Defaults,
        }
    }

    /// The base URL (no trailing `/`) of the web endpoints handed to clients: `[http]
    /// public_url`, or `https://DOMAIN` plus the port of the first `[listen] https` address
    /// when that is not 443.
    pub fn public_url(&self) -> String {
        if let Some(url) = &self.http.public_url {
            return url.clone();
        }
        let host = if self.domain.contains(':') {
            format!("[{}]", self.domain)
        } else {
            self.domain.clone()
        };
        match self.listen.https.first().map(|a| a.port()) {
            Some(port) if port != 443 => format!("https://{host}:{port}"),
            _ => format!("https://{host}"),
        }
    }

    /// This configuration as a commented TOML file with every key, noting each default.
    /// `Config::defaults().to_toml_example()` is the example config. Parsing the result gives
    /// back this config (paths as written).
    pub fn to_toml_example(&self) -> String {
        self.to_toml(false)
    }

    /// Only the keys whose value differs from the default, each with its comment: what
    /// `kith setup` writes, so a later change of a default reaches the keys left alone.
    /// Parsing the result gives back this config (paths as written).
    pub fn to_toml_changed(&self) -> String {
        self.to_toml(true)
    }

    fn to_toml(&self, only_changed: bool) -> String {
        let defaults = Config::defaults();
        let mut out = String::new();
        if only_changed {
            out.push_str(
                "# kith configuration. Only settings that differ from the defaults are listed;\n\
                 # see the example config (kith's README) for every key.\n",
            );
        } else {
            out.push_str(
                "# kith configuration.\n\
                 # Every key is optional. The values below are the defaults, except where a\n\
                 # \"Default:\" line says otherwise.\n\
                 # Durations: whole seconds, or strings like \"30s\", \"5m\", \"2h\", \"7d\".\n\
                 # Sizes: bytes, or strings like \"256KiB\", \"1MiB\".\n\
                 # Relative paths are relative to this file's directory.\n",
            );
        }
        for (index, section) in std::iter::once(&ROOT).chain(SECTIONS).enumerate() {
            let changed = |key: &Key| (key.show)(self) != (key.show)(&defaults);
            if only_changed && !section.keys.iter().any(changed) {
                continue;
            }
            out.push('\n');
            if index > 0 {
                push_comment(&mut out, section.doc);
                out.push_str(&format!("[{}]\n", section.name));
            }
            for key in section.keys {
                let value = (key.show)(self);
                let default = (key.show)(&defaults);
                if only_changed && value == default {
                    continue;
                }
                push_comment(&mut out, key.doc);
                if value != default {
                    let default = default.as_deref().unwrap_or("unset");
                    out.push_str(&format!("# Default: {default}\n"));
                }
                match value {
                    Some(value) => out.push_str(&format!("{} = {value}\n", key.name)),
                    None => out.push_str(&format!("# {} = {}\n", key.name, key.unset_example)),
                }
            }
        }
        if !only_changed || !self.circles.is_empty() {
            out.push('\n');
            push_comment(&mut out, CIRCLES_DOC);
            if self.circles.is_empty() {
                out.push_str(
                    "# [circles]\n# family = [\"alice@example.org\", \"bob@example.org\"]\n",
                );
            } else {
                out.push_str("[circles]\n");
                for c in &self.circles {
                    let members = c.members.iter().map(|m| quote(m));
                    out.push_str(&format!("{} = {}\n", quote(&c.name), list(members)));
                }
            }
        }
        if only_changed && self.components.is_empty() {
            return out;
        }
        out.push('\n');
        push_comment(&mut out, COMPONENTS_DOC);
        if self.components.is_empty() {
            out.push_str("# [components]\n# \"bot.example.org\" = \"a long random secret\"\n");
        } else {
            out.push_str("[components]\n");
            for c in &self.components {
                out.push_str(&format!("{} = {}\n", quote(&c.domain), quote(&c.secret)));
            }
        }
        out
    }
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults (no config file)"),
        }
    }
}

impl ConfigErrors {
    /// The problems, in file order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Problem {
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.line)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if let Some(Position { line, column }) = self.position {
            write!(f, "{line}:{column}:")?;
        }
        write!(f, " {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The schema.

/// Sections later versions will add. Rejected with a clear "not supported yet" message; remove a
/// name from here when its section joins `SECTIONS`.
pub const RESERVED_SECTIONS: &[&str] = &["push"];

/// `[circles]` maps circle names to members, so, like `[components]`, it has no fixed keys.
const CIRCLES: &str = "circles";
const CIRCLES_DOC: &str =
    "Circles: members of a circle see each other in their contact lists, with the\n\
    circle's name as the group (more circles: 'kith circle add NAME JID').";

/// `[components]` maps names chosen by the operator to secrets, so it is not a table of
/// fixed keys like the `SECTIONS`; `Checker::read_components` reads it.
const COMPONENTS: &str = "components";
const COMPONENTS_DOC: &str =
    "External components (XEP-0114): gateways and bots such as Slidge or Biboumi.\n\
    Each line maps the component's domain (quoted) to its shared secret; the\n\
    component connects to [listen] components (default 127.0.0.1:5347).";

/// One accepted key.
struct Key {
    name: &'static str,
    /// Comment lines for the example config.
    doc: &'static str,
    /// Checks the value and stores it in the config; problems go to the checker.
    read: for<'v> fn(&mut Checker<'_>, &'static str, &'v Spanned<DeValue<'v>>, &mut Config),
    /// The current value as TOML, None when unset.
    show: fn(&Config) -> Option<String>,
    /// Shown commented out in the example when the value is unset.
    unset_example: &'static str,
}

/// A set of keys: the top level or one `[section]`.
struct Section {
    name: &'static str,
    doc: &'static str,
    keys: &'static [Key],
    /// Checks across keys, run after every key was read (when the section is present).
    check: fn(&mut Checker<'_>, &DeTable<'_>),
}

const ROOT: Section = Section {
    name: "",
    doc: "",
    check: |c, root| {
        // Two certificate sources would leave it unclear which one clients get.
        let has = |section: &str, key: &str| {
            root.iter().find_map(|(k, v)| match v.get_ref() {
                DeValue::Table(t) if k.get_ref() == section => t.get(key).map(|v| v.span()),
                _ => None,
            })
        };
        if let (Some(email), Some(_)) = (has("acme", "email"), has("tls", "cert")) {
            c.problem(
                email,
                "[acme] email and [tls] cert are both set: kith would not know which certificate to use",
                Some("remove [tls] cert and key to let kith obtain certificates, or remove [acme] to use your own".into()),
            );
        }
    },
    keys: &[
        Key {
            name: "domain",
            doc: "The XMPP domain this server hosts: accounts are user@domain.\n\
                  'localhost' is only for trying kith out.",
            read: |c, key, v, cfg| {
                if let Some(s) = c.string(key, v, "a domain name like \"example.org\"") {
                    match normalize_domain(s) {
                        Ok(domain) => cfg.domain = domain,
                        Err((message, help)) => c.problem(v.span(), message, help),
                    }
                }
            },
            show: |cfg| Some(quote(&cfg.domain)),
            unset_example: "",
        },
        Key {
            name: "data_dir",
            doc: "Where kith keeps its database and certificates.",
            read: |c, key, v, cfg| {
                if let Some(path) = c.path(key, v) {
                    cfg.data_dir = path;
                }
            },
            show: |cfg| Some(quote(&cfg.data_dir.to_string_lossy())),
            unset_example: "",
        },
        Key {
            name: "log_level",
            doc: "One of \"error\", \"warn\", \"info\", \"debug\", \"trace\".",
            read: |c, key, v, cfg| {
                if let Some(s) = c.string(key, v, "a log level like \"info\"") {
                    match LogLevel::ALL.into_iter().find(|l| l.as_str() == s) {
                        Some(level) => cfg.log_level = level,
                        None => {
                            let names = LogLevel::ALL.map(LogLevel::as_str);
                            let help = match suggest(s, &names) {
                                Some(near) => format!("did you mean \"{near}\"?"),
                                None => format!("use one of: {}", names.join(", ")),
                            };
                            c.problem(v.span(), format!("unknown log level \"{s}\""), Some(help));
                        }
                    }
                }
            },
            show: |cfg| Some(quote(cfg.log_level.as_str())),
            unset_example: "",
        },
        Key {
            name: "admins",
            doc: "Accounts allowed to administer the server, as bare JIDs.",
            read: |c, key, v, cfg| {
                if let Some(admins) = c.admins(key, v) {
                    cfg.admins = admins;
                }
            },
            show: |cfg| Some(list(cfg.admins.iter().map(|a| quote(a)))),
            unset_example: "",
        },
    ],
};

/// Generates the row of one `[contact]` key (a list of URIs).
macro_rules! contact_key {
    ($name:ident, $doc:expr) => {
        Key {
            name: stringify!($name),
            doc: $doc,
            read: |c, key, v, cfg| {
                if let Some(uris) = c.uris(key, v) {
                    cfg.contact.$name = uris;
                }
            },
            show: |cfg| Some(list(cfg.contact.$name.iter().map(|a| quote(a)))),
            unset_example: "",
        }
    };
}

/// Generates the row of one listener key; `$port` is the conventional port used in hints.
macro_rules! listen_key {
    ($name:ident, $port:expr, $doc:expr) => {
        Key {
            name: stringify!($name),
            doc: $doc,
            read: |c, key, v, cfg| {
                if let Some(addrs) = c.addresses(key, v, $port) {
                    cfg.listen.$name = addrs;
                }
            },
            show: |cfg| Some(list(cfg.listen.$name.iter().map(|a| quote(&a.to_string())))),
            unset_example: "",
        }
    };
}

const SECTIONS: &[Section] = &[
    Section {
        name: "listen",
        doc: "Addresses to listen on, like \"[::]:5222\" (all interfaces; \"*:5222\" means the\n\
              same), \"0.0.0.0:5222\" or \"127.0.0.1:5222\". An empty list turns a listener off.",
        check: |_, _| {},
        keys: &[
            listen_key!(c2s, 5222, "Clients (STARTTLS)."),
            listen_key!(
                c2s_direct_tls,
                5223,
                "Clients with TLS from the first byte (XEP-0368)."
            ),
            listen_key!(s2s, 5269, "Other servers (STARTTLS)."),
            listen_key!(
                s2s_direct_tls,
                5270,
                "Other servers with TLS from the first byte."
            ),
            listen_key!(https, 443, "HTTPS: file upload, websocket, invitations."),
            listen_key!(
                http,
                80,
                "Plain HTTP: redirects to HTTPS and ACME challenges."
            ),
            listen_key!(
                components,
                5347,
                "External components (XEP-0114); only opened when [components] lists one."
            ),
        ],
    },
    Section {
        name: "tls",
        doc: "Certificate and private key in PEM format; set both or neither.",
        check: |c, table| {
            let cert = table.get("cert");
            let key = table.get("key");
            match (cert, key) {
                (Some(cert), None) => c.problem(
                    cert.span(),
                    "'cert' is set but 'key' is not",
                    Some("add key = \"/path/to/privkey.pem\" to [tls], or remove 'cert'".into()),
                ),
                (None, Some(key)) => c.problem(
                    key.span(),
                    "'key' is set but 'cert' is not",
                    Some("add cert = \"/path/to/fullchain.pem\" to [tls], or remove 'key'".into()),
                ),
                _ => {}
            }
        },
        keys: &[
            Key {
                name: "cert",
                doc: "The certificate chain, leaf first.",
                read: |c, key, v, cfg| {
                    if let Some(path) = c.path(key, v) {
                        cfg.tls.cert = Some(path);
                    }
                },
                show: |cfg| cfg.tls.cert.as_ref().map(|p| quote(&p.to_string_lossy())),
                unset_example: "\"/etc/kith/fullchain.pem\"",
            },
            Key {
                name: "key",
                doc: "The private key of that certificate.",
                read: |c, key, v, cfg| {
                    if let Some(path) = c.path(key, v) {
                        cfg.tls.key = Some(path);
                    }
                },
                show: |cfg| cfg.tls.key.as_ref().map(|p| quote(&p.to_string_lossy())),
                unset_example: "\"/etc/kith/privkey.pem\"",
            },
        ],
    },
    Section {
        name: "acme",
        doc: "Certificates from Let's Encrypt (or another ACME CA), obtained and renewed\n\
              automatically for the domain, upload.DOMAIN and conference.DOMAIN. On when\n\
              email is set; needs port 443 (or 80 with challenge = \"http-01\") reachable\n\
              from the internet for all three names. Not together with [tls] cert.",
        check: |c, table| {
            if table.get("email").is_none() {
                if let Some((key, _)) = table.iter().next() {
                    c.problem(
                        key.span(),
                        "[acme] needs 'email' (ACME stays off without it)",
                        Some("add email = \"admin@example.org\" to [acme], or remove the section".into()),
                    );
                }
            }
        },
        keys: &[
            Key {
                name: "email",
                doc: "Where the CA may send notices about the certificates.",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "an email address like \"admin@example.org\"") {
                        let address = s.trim().strip_prefix("mailto:").unwrap_or(s.trim());
                        let valid = address.split_once('@').is_some_and(|(local, domain)| {
                            !local.is_empty()
                                && !domain.is_empty()
                                && !domain.contains('@')
                                && !address.contains(|ch: char| ch.is_whitespace() || ch == ',')
                        });
                        if valid {
                            cfg.acme.email = Some(address.to_string());
                        } else {
                            c.problem(
                                v.span(),
                                format!("'{key}' is not an email address"),
                                Some("write email = \"admin@example.org\"".into()),
                            );
                        }
                    }
                },
                show: |cfg| cfg.acme.email.as_deref().map(quote),
                unset_example: "\"admin@example.org\"",
            },
            Key {
                name: "directory",
                doc: "The ACME server: \"production\" (Let's Encrypt, the default), \"staging\"\n\
                      (Let's Encrypt's test CA) or the https URL of any ACME directory.",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "\"production\", \"staging\" or an https URL") {
                        match acme_directory(s) {
                            Some(url) => cfg.acme.directory = url,
                            None => c.problem(
                                v.span(),
                                format!("'{key}' must be \"production\", \"staging\" or an https:// URL"),
                                Some("for example directory = \"https://acme.example.net/directory\"".into()),
                            ),
                        }
                    }
                },
                show: |cfg| match cfg.acme.directory.as_str() {
                    LETS_ENCRYPT_PRODUCTION => None,
                    LETS_ENCRYPT_STAGING => Some(quote("staging")),
                    url => Some(quote(url)),
                },
                unset_example: "\"production\"",
            },
            Key {
                name: "directory_ca",
                doc: "A PEM file with the CA certificate(s) to trust for the ACME server's own\n\
                      HTTPS, for a private CA. Default: the usual web roots.",
                read: |c, key, v, cfg| {
                    if let Some(path) = c.path(key, v) {
                        cfg.acme.directory_ca = Some(path);
                    }
                },
                show: |cfg| cfg.acme.directory_ca.as_ref().map(|p| quote(&p.to_string_lossy())),
                unset_example: "\"/etc/kith/acme-ca.pem\"",
            },
            Key {
                name: "challenge",
                doc: "\"tls-alpn-01\" (port 443, the default) or \"http-01\" (port 80, when\n\
                      another program owns 443).",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "\"tls-alpn-01\" or \"http-01\"") {
                        match AcmeChallenge::ALL.into_iter().find(|ch| ch.as_str() == s.trim()) {
                            Some(ch) => cfg.acme.challenge = ch,
                            None => {
                                let names = AcmeChallenge::ALL.map(AcmeChallenge::as_str);
                                let help = match suggest(s, &names) {
                                    Some(near) => format!("did you mean \"{near}\"?"),
                                    None => format!("use one of: {}", names.join(", ")),
                                };
                                c.problem(v.span(), format!("unknown ACME challenge \"{s}\""), Some(help));
                            }
                        }
                    }
                },
                show: |cfg| match cfg.acme.challenge {
                    AcmeChallenge::TlsAlpn01 => None,
                    ch => Some(quote(ch.as_str())),
                },
                unset_example: "\"tls-alpn-01\"",
            },
        ],
    },
    Section {
        name: "limits",
        doc: "Resource limits.",
        check: |_, _| {},
        keys: &[
            Key {
                name: "max_stanza_size",
                doc: "Largest stanza accepted, from 10000 bytes to 16MiB.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.size(key, v, 10_000, 16 * MIB) {
                        cfg.limits.max_stanza_size = n;
                    }
                },
                show: |cfg| Some(show_size(cfg.limits.max_stanza_size)),
                unset_example: "",
            },
            Key {
                name: "auth_timeout",
                doc: "How long a new connection may take to log in, from 1s to 1h.",
                read: |c, key, v, cfg| {
                    let range = Duration::from_secs(1)..=Duration::from_secs(3600);
                    if let Some(d) = c.duration(key, v, range) {
                        cfg.limits.auth_timeout = d;
                    }
                },
                show: |cfg| Some(show_duration(cfg.limits.auth_timeout)),
                unset_example: "",
            },
            Key {
                name: "max_offline_messages",
                doc: "Messages kept for each account while it is offline; 0 keeps none.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 0, 1_000_000) {
                        cfg.limits.max_offline_messages = n;
                    }
                },
                show: |cfg| Some(cfg.limits.max_offline_messages.to_string()),
                unset_example: "",
            },
            Key {
                name: "resume_timeout",
                doc: "How long a phone that lost its connection may resume its session without losing anything (XEP-0198), from 10s to 1d.",
                read: |c, key, v, cfg| {
                    let range = Duration::from_secs(10)..=Duration::from_secs(86_400);
                    if let Some(d) = c.duration(key, v, range) {
                        cfg.limits.resume_timeout = d;
                    }
                },
                show: |cfg| Some(show_duration(cfg.limits.resume_timeout)),
                unset_example: "",
            },
            Key {
                name: "connections_per_ip",
                doc: "Client connections one IP address may hold open at once, 0 for no limit.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 0, 1_000_000) {
                        cfg.limits.connections_per_ip = n;
                    }
                },
                show: |cfg| Some(cfg.limits.connections_per_ip.to_string()),
                unset_example: "",
            },
            Key {
                name: "stanzas_per_second",
                doc: "Stanzas per second a client may send on average before its session is closed for flooding, 0 for no limit.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 0, 1_000_000) {
                        cfg.limits.stanzas_per_second = n;
                    }
                },
                show: |cfg| Some(cfg.limits.stanzas_per_second.to_string()),
                unset_example: "",
            },
            Key {
                name: "stanza_burst",
                doc: "Stanzas a client may send at once beyond stanzas_per_second.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 1, 1_000_000) {
                        cfg.limits.stanza_burst = n;
                    }
                },
                show: |cfg| Some(cfg.limits.stanza_burst.to_string()),
                unset_example: "",
            },
        ],
    },
    Section {
        name: "auth",
        doc: "Authentication.",
        check: |_, _| {},
        keys: &[
        Key {
            name: "allow_plain",
            doc: "Offer SASL PLAIN (the password itself, only ever inside TLS) besides SCRAM.",
            read: |c, key, v, cfg| {
                if let Some(b) = c.boolean(key, v) {
                    cfg.auth.allow_plain = b;
                }
            },
            show: |cfg| Some(cfg.auth.allow_plain.to_string()),
            unset_example: "",
        },
        Key {
            name: "scram_sha1_only",
            doc: "Offer SCRAM-SHA-1 only, as Prosody does, not SHA-256/512: accounts imported from \
                  Prosody have SHA-1 keys only, and clients pick the strongest SCRAM offered.",
            read: |c, key, v, cfg| {
                if let Some(b) = c.boolean(key, v) {
                    cfg.auth.scram_sha1_only = b;
                }
            },
            show: |cfg| Some(cfg.auth.scram_sha1_only.to_string()),
            unset_example: "",
        }],
    },
    Section {
        name: "mam",
        doc: "Message archive (XEP-0313): every account's chat history, kept on the server.",
        check: |_, _| {},
        keys: &[Key {
            name: "archive_expires_after",
            doc: "How long archived messages are kept, from 1d, or \"never\" to keep them\n\
                  forever. Units: s, m, h, d, w (weeks), y (365 days).",
            read: |c, key, v, cfg| {
                if let DeValue::String(s) = v.get_ref() {
                    if s.trim() == "never" {
                        cfg.mam.archive_expires_after = None;
                        return;
                    }
                }
                let range = Duration::from_secs(86_400)..=Duration::from_secs(100 * 365 * 86_400);
                if let Some(d) = c.duration(key, v, range) {
                    cfg.mam.archive_expires_after = Some(d);
                }
            },
            show: |cfg| {
                Some(match cfg.mam.archive_expires_after {
                    None => quote("never"),
                    Some(d) => show_duration(d),
                })
            },
            unset_example: "",
        }],
    },
    Section {
        name: "s2s",
        doc: "Federation: chatting with people on other XMPP servers.",
        check: |_, _| {},
        keys: &[
            Key {
                name: "require_valid_certs",
                doc: "Only federate with servers whose certificate is valid for their domain.\n\
                      false also accepts servers proven by dialback (XEP-0220) alone, which\n\
                      trusts DNS.",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.s2s.require_valid_certs = b;
                    }
                },
                show: |cfg| Some(cfg.s2s.require_valid_certs.to_string()),
                unset_example: "",
            },
            Key {
                name: "extra_ca",
                doc: "A PEM file of certificate authorities to trust besides the public ones,\n\
                      for a private federation.",
                read: |c, key, v, cfg| {
                    if let Some(path) = c.path(key, v) {
                        cfg.s2s.extra_ca = Some(path);
                    }
                },
                show: |cfg| cfg.s2s.extra_ca.as_ref().map(|p| quote(&p.to_string_lossy())),
                unset_example: "\"/etc/kith/private-ca.pem\"",
            },
            Key {
                name: "connect_timeout",
                doc: "How long reaching another server may take before waiting messages\n\
                      bounce, from 1s to 10m.",
                read: |c, key, v, cfg| {
                    let range = Duration::from_secs(1)..=Duration::from_secs(600);
                    if let Some(d) = c.duration(key, v, range) {
                        cfg.s2s.connect_timeout = d;
                    }
                },
                show: |cfg| Some(show_duration(cfg.s2s.connect_timeout)),
                unset_example: "",
            },
            Key {
                name: "idle_timeout",
                doc: "Close a connection to another server after this long without traffic,\n\
                      from 10s to 1d.",
                read: |c, key, v, cfg| {
                    let range = Duration::from_secs(10)..=Duration::from_secs(86_400);
                    if let Some(d) = c.duration(key, v, range) {
                        cfg.s2s.idle_timeout = d;
                    }
                },
                show: |cfg| Some(show_duration(cfg.s2s.idle_timeout)),
                unset_example: "",
            },
            Key {
                name: "resolver",
                doc: "A DNS server to ask, as \"IP:PORT\", instead of those in /etc/resolv.conf.",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "an address like \"127.0.0.1:53\"") {
                        match s.trim().parse::<SocketAddr>() {
                            Ok(addr) => cfg.s2s.resolver = Some(addr),
                            Err(_) => c.problem(
                                v.span(),
                                format!("'{s}' is not an IP address and port"),
                                Some("write it like \"127.0.0.1:53\" or \"[::1]:53\"".into()),
                            ),
                        }
                    }
                },
                show: |cfg| cfg.s2s.resolver.map(|a| quote(&a.to_string())),
                unset_example: "\"127.0.0.1:53\"",
            },
        ],
    },
    Section {
        name: "upload",
        doc: "File sharing (XEP-0363 HTTP File Upload) at upload.DOMAIN: clients upload a\n\
              file over HTTPS ([listen] https) and send its link.",
        check: |_, _| {},
        keys: &[
            Key {
                name: "enabled",
                doc: "Offer file sharing.",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.upload.enabled = b;
                    }
                },
                show: |cfg| Some(cfg.upload.enabled.to_string()),
                unset_example: "",
            },
            Key {
                name: "max_file_size",
                doc: "Largest file, from 1KiB to 2GiB.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.size(key, v, KIB, MAX_UPLOAD_SIZE) {
                        cfg.upload.max_file_size = n as u64;
                    }
                },
                show: |cfg| Some(show_size(cfg.upload.max_file_size as usize)),
                unset_example: "",
            },
            Key {
                name: "quota",
                doc: "Bytes each account may keep stored, from 1KiB to 2GiB.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.size(key, v, KIB, MAX_UPLOAD_SIZE) {
                        cfg.upload.quota = n as u64;
                    }
                },
                show: |cfg| Some(show_size(cfg.upload.quota as usize)),
                unset_example: "",
            },
            Key {
                name: "expire_after",
                doc: "How long shared files are kept, from 1h, or \"never\".\n\
                      Units: s, m, h, d, w (weeks), y (365 days).",
                read: |c, key, v, cfg| {
                    if let DeValue::String(s) = v.get_ref() {
                        if s.trim() == "never" {
                            cfg.upload.expire_after = None;
                            return;
                        }
                    }
                    let range = Duration::from_secs(3600)..=Duration::from_secs(100 * 365 * 86_400);
                    if let Some(d) = c.duration(key, v, range) {
                        cfg.upload.expire_after = Some(d);
                    }
                },
                show: |cfg| {
                    Some(match cfg.upload.expire_after {
                        None => quote("never"),
                        Some(d) => show_duration(d),
                    })
                },
                unset_example: "",
            },
        ],
    },
    Section {
        name: "http",
        doc: "The web endpoints on [listen] https: XMPP over WebSocket (RFC 7395) at\n\
              /xmpp-websocket, BOSH (XEP-0206) at /http-bind, announced in\n\
              /.well-known/host-meta (XEP-0156).",
        check: |_, _| {},
        keys: &[Key {
            name: "public_url",
            doc: "The address web clients use to reach this server, when it is not\n\
                  https://DOMAIN (plus the port of the first [listen] https address when\n\
                  that is not 443), e.g. behind a reverse proxy.",
            read: |c, key, v, cfg| {
                if let Some(s) = c.string(key, v, "a URL like \"https://example.org\"") {
                    match normalize_public_url(s) {
                        Ok(url) => cfg.http.public_url = Some(url),
                        Err(help) => c.problem(
                            v.span(),
                            format!("'{key}': '{s}' is not an http(s) URL"),
                            Some(help),
                        ),
                    }
                }
            },
            show: |cfg| cfg.http.public_url.as_deref().map(quote),
            unset_example: "\"https://xmpp.example.org\"",
        }],
    },
    Section {
        name: "contact",
        doc: "Contact addresses published to clients and other servers (XEP-0157), as URIs\n\
              like \"mailto:abuse@example.org\" or \"xmpp:admin@example.org\".",
        check: |_, _| {},
        keys: &[
            contact_key!(abuse, "Where to report abuse (spam, harassment)."),
            Key {
                name: "admin",
                doc: "The server's administrators. Default: the 'admins' accounts as xmpp: URIs.",
                read: |c, key, v, cfg| {
                    if let Some(uris) = c.uris(key, v) {
                        cfg.contact.admin = Some(uris);
                    }
                },
                show: |cfg| {
                    cfg.contact
                        .admin
                        .as_ref()
                        .map(|l| list(l.iter().map(|a| quote(a))))
                },
                unset_example: "[\"xmpp:admin@example.org\", \"mailto:admin@example.org\"]",
            },
            contact_key!(feedback, "Where to send feedback."),
            contact_key!(sales, "Sales enquiries."),
            contact_key!(security, "Where to report security problems."),
            contact_key!(status, "Where the server's status is published."),
            contact_key!(support, "Where users get help."),
        ],
    },
    Section {
        name: "turn",
        doc: "STUN/TURN for audio and video calls (XEP-0215). By default kith runs its own\n\
              server; to use an external one (coturn with use-auth-secret), set host and\n\
              secret (coturn's static-auth-secret) and the built-in server stays off.",
        check: |c, table| {
            let span = |name: &str| table.get(name).map_or(0..0, |v| v.span());
            let enabled = table.get("enabled").map(|v| v.get_ref());
            let forced_on = matches!(enabled, Some(DeValue::Boolean(true)));
            if table.get("host").is_some() {
                if forced_on {
                    c.problem(
                        span("host"),
                        "'host' names an external TURN server, but the built-in one is enabled",
                        Some("set public_host for the built-in server, or enabled = false".into()),
                    );
                } else if table.get("secret").is_none() {
                    c.problem(
                        span("host"),
                        "[turn] needs 'secret' for an external server",
                        Some("add secret = \"...\" (coturn's static-auth-secret) to [turn]".into()),
                    );
                }
            } else {
                for name in ["port", "tls_port"] {
                    if table.get(name).is_some() {
                        c.problem(
                            span(name),
                            format!("[turn] '{name}' is for an external server, which needs 'host'"),
                            Some("the built-in server listens on 'listen', e.g. listen = [\"[::]:3478\"]".into()),
                        );
                    }
                }
            }
        },
        keys: &[
            Key {
                name: "enabled",
                doc: "Run the built-in STUN/TURN server (UDP and TCP). Default: true, unless\n\
                      host names an external server.",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.turn.enabled = Some(b);
                    }
                },
                show: |cfg| cfg.turn.enabled.map(|b| b.to_string()),
                unset_example: "true",
            },
            Key {
                name: "listen",
                doc: "Where the built-in server listens, UDP and TCP on each address.",
                read: |c, key, v, cfg| {
                    if let Some(a) = c.addresses(key, v, 3478) {
                        cfg.turn.listen = a;
                    }
                },
                show: |cfg| Some(list(cfg.turn.listen.iter().map(|a| quote(&a.to_string())))),
                unset_example: "",
            },
            Key {
                name: "public_host",
                doc: "The host name clients use to reach the built-in server (default: the\n\
                      domain). Behind a home router, relayed addresses are advertised on the\n\
                      public address it resolves to: forward UDP and TCP 3478 and UDP\n\
                      relay_ports to this machine.",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "a host name like \"turn.example.org\"") {
                        if s.is_empty() || s.chars().any(char::is_whitespace) {
                            c.problem(v.span(), format!("'{key}' is not a host name"), None);
                        } else {
                            cfg.turn.public_host = Some(s.to_string());
                        }
                    }
                },
                show: |cfg| cfg.turn.public_host.as_deref().map(quote),
                unset_example: "\"turn.example.org\"",
            },
            Key {
                name: "relay_ports",
                doc: "The UDP ports relayed sockets use, as \"FIRST-LAST\".",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "a port range like \"49152-65535\"") {
                        let range = s.split_once('-').and_then(|(a, b)| {
                            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                        });
                        match range {
                            Some((a, b)) if a >= 1024 && a <= b => cfg.turn.relay_ports = (a, b),
                            _ => c.problem(
                                v.span(),
                                format!("'{key}' is not a port range like \"49152-65535\""),
                                Some("the first port must be at least 1024 and not above the last".into()),
                            ),
                        }
                    }
                },
                show: |cfg| Some(quote(&format!("{}-{}", cfg.turn.relay_ports.0, cfg.turn.relay_ports.1))),
                unset_example: "",
            },
            Key {
                name: "realm",
                doc: "The built-in server's authentication realm (default: the domain).",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "a realm like \"example.org\"") {
                        if s.is_empty() {
                            c.problem(v.span(), format!("'{key}' is empty"), None);
                        } else {
                            cfg.turn.realm = Some(s.to_string());
                        }
                    }
                },
                show: |cfg| cfg.turn.realm.as_deref().map(quote),
                unset_example: "\"example.org\"",
            },
            Key {
                name: "max_allocations_per_user",
                doc: "Relays one account may hold at once (each call uses one or two).",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 1, 1000) {
                        cfg.turn.max_allocations_per_user = n;
                    }
                },
                show: |cfg| Some(cfg.turn.max_allocations_per_user.to_string()),
                unset_example: "",
            },
            Key {
                name: "max_allocations",
                doc: "Relays the server holds at once, for all accounts.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 1, 100_000) {
                        cfg.turn.max_allocations = n;
                    }
                },
                show: |cfg| Some(cfg.turn.max_allocations.to_string()),
                unset_example: "",
            },
            Key {
                name: "bandwidth",
                doc: "Bytes per second one relay may carry in each direction (a video call\n\
                      needs about 250KiB).",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.size(key, v, 16 * KIB, 1024 * MIB) {
                        cfg.turn.bandwidth = n;
                    }
                },
                show: |cfg| Some(show_size(cfg.turn.bandwidth)),
                unset_example: "",
            },
            Key {
                name: "allow_private_peers",
                doc: "Relay to loopback, private (10/8, 192.168/16, fc00::/7...) and link-local\n\
                      addresses. Only for tests and closed LANs: it lets anyone with\n\
                      credentials reach the machines behind the server.",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.turn.allow_private_peers = b;
                    }
                },
                show: |cfg| Some(cfg.turn.allow_private_peers.to_string()),
                unset_example: "",
            },
            Key {
                name: "host",
                doc: "An external TURN server's host name (or IP address), as clients reach\n\
                      it. Setting it turns the built-in server off.",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "a host name like \"turn.example.org\"") {
                        if s.is_empty() || s.chars().any(char::is_whitespace) {
                            c.problem(v.span(), format!("'{key}' is not a host name"), None);
                        } else {
                            cfg.turn.host = Some(s.to_string());
                        }
                    }
                },
                show: |cfg| cfg.turn.host.as_deref().map(quote),
                unset_example: "\"turn.example.org\"",
            },
            Key {
                name: "port",
                doc: "The external server's STUN and TURN port (UDP and TCP).",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 1, 65535) {
                        cfg.turn.port = n as u16;
                    }
                },
                show: |cfg| cfg.turn.host.as_ref().map(|_| cfg.turn.port.to_string()),
                unset_example: "3478",
            },
            Key {
                name: "tls_port",
                doc: "TURN over TLS (turns:), if the external server offers it.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 1, 65535) {
                        cfg.turn.tls_port = Some(n as u16);
                    }
                },
                show: |cfg| cfg.turn.tls_port.map(|p| p.to_string()),
                unset_example: "5349",
            },
            Key {
                name: "secret",
                doc: "The secret credentials are derived from (coturn's static-auth-secret).\n\
                      Without it the built-in server keeps a generated one in DATA/turn.secret.",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "a secret string") {
                        if s.is_empty() {
                            c.problem(v.span(), format!("'{key}' is empty"), None);
                        } else {
                            cfg.turn.secret = Some(s.to_string());
                        }
                    }
                },
                show: |cfg| cfg.turn.secret.as_deref().map(quote),
                unset_example: "\"a long random string\"",
            },
            Key {
                name: "ttl",
                doc: "How long handed-out TURN credentials stay valid, from 1m to 30d.",
                read: |c, key, v, cfg| {
                    let range = Duration::from_secs(60)..=Duration::from_secs(30 * 86_400);
                    if let Some(d) = c.duration(key, v, range) {
                        cfg.turn.ttl = d;
                    }
                },
                show: |cfg| Some(show_duration(cfg.turn.ttl)),
                unset_example: "",
            },
        ],
    },
    Section {
        name: "muc",
        doc: "Group chats (XEP-0045 Multi-User Chat) at conference.DOMAIN.",
        check: |_, _| {},
        keys: &[
            Key {
                name: "enabled",
                doc: "Offer group chats.",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.muc.enabled = b;
                    }
                },
                show: |cfg| Some(cfg.muc.enabled.to_string()),
                unset_example: "",
            },
            Key {
                name: "restrict_room_creation",
                doc: "Who may create rooms: \"admins\", \"local\" (accounts on this server) or\n\
                      \"anyone\" (users of other servers too).",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "\"admins\", \"local\" or \"anyone\"") {
                        match RoomCreation::ALL.into_iter().find(|r| r.as_str() == s) {
                            Some(r) => cfg.muc.restrict_room_creation = r,
                            None => {
                                let names = RoomCreation::ALL.map(RoomCreation::as_str);
                                let help = match suggest(s, &names) {
                                    Some(near) => format!("did you mean \"{near}\"?"),
                                    None => format!("use one of: {}", names.join(", ")),
                                };
                                c.problem(v.span(), format!("unknown room creation rule \"{s}\""), Some(help));
                            }
                        }
                    }
                },
                show: |cfg| Some(quote(cfg.muc.restrict_room_creation.as_str())),
                unset_example: "",
            },
            Key {
                name: "history_length",
                doc: "Messages a new room sends to people who join, from 0 to 1000.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 0, 1000) {
                        cfg.muc.history_length = n;
                    }
                },
                show: |cfg| Some(cfg.muc.history_length.to_string()),
                unset_example: "",
            },
            Key {
                name: "max_history",
                doc: "The most a room's owner may set its history length to, from 0 to 1000.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 0, 1000) {
                        cfg.muc.max_history = n;
                    }
                },
                show: |cfg| Some(cfg.muc.max_history.to_string()),
                unset_example: "",
            },
        ],
    },
    Section {
        name: "registration",
        doc: "Who may create an account on this server.",
        check: |_, _| {},
        keys: &[
        Key {
            name: "policy",
            doc: "\"closed\": only admins create accounts (kith user add); \"invite\": people\n\
                  with an invitation (kith invite); \"open\": anyone (attracts spammers).",
            read: |c, key, v, cfg| {
                if let Some(s) = c.string(key, v, "\"closed\", \"invite\" or \"open\"") {
                    match RegistrationPolicy::parse(s) {
                        Some(p) => cfg.registration.policy = p,
                        None => {
                            let names = RegistrationPolicy::ALL.map(RegistrationPolicy::as_str);
                            let help = match suggest(s, &names) {
                                Some(near) => format!("did you mean \"{near}\"?"),
                                None => format!("use one of: {}", names.join(", ")),
                            };
                            let message = format!("unknown registration policy \"{s}\"");
                            c.problem(v.span(), message, Some(help));
                        }
                    }
                }
            },
            show: |cfg| Some(quote(cfg.registration.policy.as_str())),
            unset_example: "",
        },
        Key {
            name: "tombstone_ttl",
            doc: "How long the name of a deleted account stays reserved, so that nobody else\n\
                  can register it and pose as that person to their contacts: from 1h, or\n\
                  \"forever\" (the default). 'kith user add --force' overrides it.",
            read: |c, key, v, cfg| {
                if let DeValue::String(s) = v.get_ref() {
                    if s.trim() == "forever" {
                        cfg.registration.tombstone_ttl = None;
                        return;
                    }
                }
                let range = Duration::from_secs(3600)..=Duration::from_secs(100 * 365 * 86_400);
                if let Some(d) = c.duration(key, v, range) {
                    cfg.registration.tombstone_ttl = Some(d);
                }
            },
            show: |cfg| {
                Some(match cfg.registration.tombstone_ttl {
                    None => quote("forever"),
                    Some(d) => show_duration(d),
                })
            },
            unset_example: "",
        },
        Key {
            name: "throttle",
            doc: "With \"open\": one new account per IP address per this long (0s: no limit).",
            read: |c, key, v, cfg| {
                let range = Duration::ZERO..=Duration::from_secs(30 * 86_400);
                if let Some(d) = c.duration(key, v, range) {
                    cfg.registration.throttle = d;
                }
            },
            show: |cfg| Some(show_duration(cfg.registration.throttle)),
            unset_example: "",
        },
        Key {
            name: "notify_admins",
            doc: "Send the admins a chat message when someone registers.",
            read: |c, key, v, cfg| {
                if let Some(b) = c.boolean(key, v) {
                    cfg.registration.notify_admins = b;
                }
            },
            show: |cfg| Some(cfg.registration.notify_admins.to_string()),
            unset_example: "",
        }],
    },
    Section {
        name: "invites",
        doc: "Invitations made with 'kith invite' (link, QR code, in-band registration).",
        check: |_, _| {},
        keys: &[Key {
            name: "expires",
            doc: "How long a new invite stays valid unless --expires says otherwise (1m to 365d).",
            read: |c, key, v, cfg| {
                let range = Duration::from_secs(60)..=Duration::from_secs(365 * 86_400);
                if let Some(d) = c.duration(key, v, range) {
                    cfg.invites.expires = d;
                }
            },
            show: |cfg| Some(show_duration(cfg.invites.expires)),
            unset_example: "",
        }],
    },
    Section {
        name: "roster",
        doc: "Where contact lists come from: \"local\" (people manage their own) or \"http\"\n\
              (an external service owns them, Prosody's mod_http_roster_admin protocol).",
        check: |c, table| {
            let source = table.get("source").map(|v| v.get_ref());
            let http = matches!(source, Some(DeValue::String(s)) if s == "http");
            match (http, table.get("http_url")) {
                (true, None) => c.problem(
                    table.get("source").map_or(0..0, |v| v.span()),
                    "[roster] source = \"http\" needs 'http_url'",
                    Some("add http_url = \"http://127.0.0.1:8080/roster/%s\" to [roster]".into()),
                ),
                (false, Some(url)) => c.problem(
                    url.span(),
                    "[roster] 'http_url' is used only with source = \"http\"",
                    Some("add source = \"http\" to [roster], or remove http_url".into()),
                ),
                _ => {}
            }
        },
        keys: &[
            Key {
                name: "source",
                doc: "\"local\" (default) or \"http\" (then http_url is required and people\n\
                      cannot edit their rosters themselves).",
                read: |c, key, v, _| {
                    if let Some(s) = c.string(key, v, "\"local\" or \"http\"") {
                        if s != "local" && s != "http" {
                            let message = format!("unknown roster source \"{s}\"");
                            let help = Some("use \"local\" or \"http\"".to_string());
                            c.problem(v.span(), message, help);
                        }
                    }
                },
                show: |cfg| cfg.roster.http_url.as_ref().map(|_| quote("http")),
                unset_example: "source = \"local\"",
            },
            Key {
                name: "http_url",
                doc: "The roster service: GET with %s replaced by the URL-encoded username\n\
                      answers {\"jid\": {\"name\": \"...\"}, ...}. Plain http:// only (keep it\n\
                      on a trusted network).",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "a URL with %s") {
                        if s.starts_with("https://") {
                            let help = Some("use an http:// URL on a trusted network".into());
                            c.problem(v.span(), "https:// roster services are not supported", help);
                        } else if !s.starts_with("http://") {
                            let help = Some("e.g. \"http://127.0.0.1:8080/roster/%s\"".into());
                            c.problem(v.span(), "http_url must be an http:// URL", help);
                        } else if !s.contains("%s") {
                            let help = Some("put %s where the username goes".into());
                            c.problem(v.span(), "http_url has no %s", help);
                        } else {
                            cfg.roster.http_url = Some(s.to_string());
                        }
                    }
                },
                show: |cfg| cfg.roster.http_url.as_deref().map(quote),
                unset_example: "http_url = \"http://127.0.0.1:8080/roster/%s\"",
            },
        ],
    },
    Section {
        name: "modules",
        doc: "Built-in features that can be switched off ('kith module list').",
        check: |_, _| {},
        keys: &[
            Key {
                name: "carbons",
                doc: "XEP-0280 message carbons: a message reaches all of a person's devices.",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.modules.carbons = b;
                    }
                },
                show: |cfg| Some(cfg.modules.carbons.to_string()),
                unset_example: "",
            },
            Key {
                name: "announce",
                doc: "Admins can send a message to everyone online (kith announce, ad-hoc).",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.modules.announce = b;
                    }
                },
                show: |cfg| Some(cfg.modules.announce.to_string()),
                unset_example: "",
            },
            Key {
                name: "motd",
                doc: "A message of the day each person gets once at login (kith motd).",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.modules.motd = b;
                    }
                },
                show: |cfg| Some(cfg.modules.motd.to_string()),
                unset_example: "",
            },
        ],
    },
    Section {
        name: "pubsub",
        doc: "The publish-subscribe service (XEP-0060) at pubsub.DOMAIN: named feeds that\n\
              people and bots publish to and subscribe to. (PEP on each account is always on.)",
        check: |_, _| {},
        keys: &[
            Key {
                name: "enabled",
                doc: "Offer the service.",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.pubsub.enabled = b;
                    }
                },
                show: |cfg| Some(cfg.pubsub.enabled.to_string()),
                unset_example: "",
            },
            Key {
                name: "create",
                doc: "Who may create nodes: \"local\" (every account of this server) or\n\
                      \"admins\".",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "\"local\" or \"admins\"") {
                        match s {
                            "local" => cfg.pubsub.create = PubsubCreate::Local,
                            "admins" => cfg.pubsub.create = PubsubCreate::Admins,
                            other => {
                                let message = format!("unknown pubsub create policy \"{other}\"");
                                let help = Some("use \"local\" or \"admins\"".to_string());
                                c.problem(v.span(), message, help);
                            }
                        }
                    }
                },
                show: |cfg| {
                    Some(quote(match cfg.pubsub.create {
                        PubsubCreate::Local => "local",
                        PubsubCreate::Admins => "admins",
                    }))
                },
                unset_example: "",
            },
        ],
    },
    Section {
        name: "proxy65",
        doc: "A SOCKS5 bytestreams proxy (XEP-0065) at proxy.DOMAIN, for clients that send\n\
              files peer to peer and cannot reach each other directly. Needs its TCP port\n\
              open to the internet; HTTP upload ([upload]) covers most file sharing.",
        check: |_, _| {},
        keys: &[
            Key {
                name: "enabled",
                doc: "Offer the proxy (default off).",
                read: |c, key, v, cfg| {
                    if let Some(b) = c.boolean(key, v) {
                        cfg.proxy65.enabled = b;
                    }
                },
                show: |cfg| Some(cfg.proxy65.enabled.to_string()),
                unset_example: "",
            },
            Key {
                name: "listen",
                doc: "Where the proxy listens (TCP).",
                read: |c, key, v, cfg| {
                    if let Some(a) = c.addresses(key, v, 5000) {
                        cfg.proxy65.listen = a;
                    }
                },
                show: |cfg| Some(list(cfg.proxy65.listen.iter().map(|a| quote(&a.to_string())))),
                unset_example: "",
            },
            Key {
                name: "public_host",
                doc: "The host name or address clients connect to (default: the domain).",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "a host name like \"proxy.example.org\"") {
                        if s.is_empty() || s.chars().any(char::is_whitespace) {
                            c.problem(v.span(), format!("'{key}' is not a host name"), None);
                        } else {
                            cfg.proxy65.public_host = Some(s.to_string());
                        }
                    }
                },
                show: |cfg| cfg.proxy65.public_host.as_deref().map(quote),
                unset_example: "\"proxy.example.org\"",
            },
            Key {
                name: "max_rate",
                doc: "Bytes per second per transfer, from 1KiB to 1GiB.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.size(key, v, KIB, 1024 * MIB) {
                        cfg.proxy65.max_rate = n as u64;
                    }
                },
                show: |cfg| Some(show_size(cfg.proxy65.max_rate as usize)),
                unset_example: "",
            },
            Key {
                name: "max_concurrent",
                doc: "Transfers relayed at once, from 1 to 1000.",
                read: |c, key, v, cfg| {
                    if let Some(n) = c.count(key, v, 1, 1000) {
                        cfg.proxy65.max_concurrent = n;
                    }
                },
                show: |cfg| Some(cfg.proxy65.max_concurrent.to_string()),
                unset_example: "",
            },
            Key {
                name: "idle_timeout",
                doc: "How long a connection may wait for its peer or stay silent, 5s to 1h.",
                read: |c, key, v, cfg| {
                    let range = Duration::from_secs(5)..=Duration::from_secs(3600);
                    if let Some(d) = c.duration(key, v, range) {
                        cfg.proxy65.idle_timeout = d;
                    }
                },
                show: |cfg| Some(show_duration(cfg.proxy65.idle_timeout)),
                unset_example: "",
            },
        ],
    },
    Section {
        name: "check",
        doc: "Settings of 'kith check' (the server itself ignores them).",
        check: |_, _| {},
        keys: &[
            Key {
                name: "resolver",
                doc: "The DNS server to ask, as \"IP\" or \"IP:PORT\" (default: the system's).",
                read: |c, key, v, cfg| {
                    if let Some(s) = c.string(key, v, "an address like \"192.0.2.53:53\"") {
                        match parse_resolver(s) {
                            Some(addr) => cfg.check.resolver = Some(addr),
                            None => c.problem(
                                v.span(),
                                format!("'{key}' is not an IP address with an optional port"),
                                Some("write \"192.0.2.53\", \"192.0.2.53:5353\" or \"[2001:db8::53]:53\"".into()),
                            ),
                        }
                    }
                },
                show: |cfg| cfg.check.resolver.map(|a| quote(&a.to_string())),
                unset_example: "\"127.0.0.1:53\"",
            },
            Key {
                name: "public_addresses",
                doc: "This server's public IP addresses, when it is behind NAT (a home router)\n\
                      and its own interfaces only have private ones.",
                read: |c, key, v, cfg| {
                    let expected = "a list of IP addresses like [\"203.0.113.7\"]";
                    let Some(items) = c.string_list(key, v, expected, "\"203.0.113.7\"", |s| s) else {
                        return;
                    };
                    let mut out = Vec::new();
                    for (text, span) in items {
                        match text.trim().parse::<IpAddr>() {
                            Ok(ip) => out.push(ip),
                            Err(_) => c.problem(
                                span,
                                format!("'{text}' is not an IP address"),
                                Some("write an address like \"203.0.113.7\" or \"2001:db8::7\"".into()),
                            ),
                        }
                    }
                    cfg.check.public_addresses = out;
                },
                show: |cfg| Some(list(cfg.check.public_addresses.iter().map(|a| quote(&a.to_string())))),
                unset_example: "",
            },
        ],
    },
];

// ---------------------------------------------------------------------------------------------
// Reading.

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The upper bound of upload sizes: 2 GiB - 1, which `usize` holds on 32-bit boards too.
const MAX_UPLOAD_SIZE: usize = i32::MAX as usize;

fn load_from(explicit: Option<&Path>, candidates: &[&Path]) -> Result<Config, ConfigErrors> {
    if let Some(path) = explicit {
        return load_file(path);
    }
    for path in candidates {
        match fs::metadata(path) {
            Ok(_) => return load_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(file_problem(path, format!("cannot read: {e}"), None)),
        }
    }
    Ok(Config::defaults())
}

fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = fs::read(path).map_err(|e| {
        let help = (e.kind() == io::ErrorKind::NotFound)
            .then(|| "create it with 'kith setup', or pass the path of an existing file".into());
        file_problem(path, format!("cannot read: {e}"), help)
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, path),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let mut checker = Checker::new(&text, path);
            checker.problem(valid..valid, "the file is not valid UTF-8", None);
            Err(checker.into_errors())
        }
    }
}

fn file_problem(path: &Path, message: String, help: Option<String>) -> ConfigErrors {
    ConfigErrors {
        problems: vec![Problem {
            file: path.to_path_buf(),
            position: None,
            message,
            help,
        }],
    }
}

/// Walks the parsed table against the schema, collecting problems.
struct Checker<'t> {
    text: &'t str,
    file: &'t Path,
    /// Relative paths in the file are relative to this directory.
    base: PathBuf,
    /// (start offset, problem), sorted by offset at the end.
    problems: Vec<(usize, Problem)>,
    /// Listen addresses seen so far, to catch one address in two listeners.
    addresses: Vec<(SocketAddr, &'static str)>,
    /// Component domains read, with their spans, checked against `domain` at the end.
    components: Vec<(String, Range<usize>)>,
}

impl<'t> Checker<'t> {
    fn new(text: &'t str, file: &'t Path) -> Self {
        Checker {
            text,
            file,
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            problems: Vec::new(),
            addresses: Vec::new(),
            components: Vec::new(),
        }
    }

    fn into_errors(mut self) -> ConfigErrors {
        self.problems.sort_by_key(|(offset, _)| *offset);
        ConfigErrors {
            problems: self.problems.into_iter().map(|(_, p)| p).collect(),
        }
    }

    fn problem(&mut self, span: Range<usize>, message: impl Into<String>, help: Option<String>) {
        let offset = span.start.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        self.problems.push((
            offset,
            Problem {
                file: self.file.to_path_buf(),
                position: Some(Position { line, column }),
                message: message.into(),
                help,
            },
        ));
    }

    fn read_root(&mut self, root: &DeTable<'_>, config: &mut Config) {
        for (key, value) in root.iter() {
            let name: &str = key.get_ref();
            if let Some(row) = ROOT.keys.iter().find(|k| k.name == name) {
                (row.read)(self, row.name, value, config);
            } else if name == CIRCLES {
                match value.get_ref() {
                    DeValue::Table(table) => self.read_circles(table, config),
                    other => self.problem(
                        key.span(),
                        format!("expected a section [{name}], found {}", type_name(other)),
                        Some(format!(
                            "write a [{name}] header on its own line, with name = [\"alice@example.org\", ...] lines below it"
                        )),
                    ),
                }
            } else if name == COMPONENTS {
                match value.get_ref() {
                    DeValue::Table(table) => self.read_components(table, config),
                    other => self.problem(
                        key.span(),
                        format!("expected a section [{name}], found {}", type_name(other)),
                        Some(format!(
                            "write a [{name}] header on its own line, with \"domain\" = \"secret\" lines below it"
                        )),
                    ),
                }
            } else if let Some(section) = SECTIONS.iter().find(|s| s.name == name) {
                match value.get_ref() {
                    DeValue::Table(table) => self.read_section(section, table, config),
                    other => self.problem(
                        key.span(),
                        format!("expected a section [{name}], found {}", type_name(other)),
                        Some(format!(
                            "write a [{name}] header on its own line, with its keys below it"
                        )),
                    ),
                }
            } else if let DeValue::Table(_) = value.get_ref() {
                self.unknown_section(key);
            } else {
                self.unknown_key(key, &ROOT);
            }
        }
        (ROOT.check)(self, root);
        for (domain, span) in std::mem::take(&mut self.components) {
            if domain == config.domain {
                self.problem(
                    span,
                    format!("component '{domain}' is the server's own domain"),
                    Some(format!(
                        "give the component a subdomain, like \"bot.{domain}\""
                    )),
                );
            }
        }
    }

    /// `[circles]`: `family = ["alice@example.org", "bob"]` lines (a bare localpart means an
    /// account of the server's domain, resolved by `crate::circles`).
    fn read_circles(&mut self, table: &DeTable<'_>, config: &mut Config) {
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                self.problem(
                    key.span(),
                    format!("circle name '{name}' is empty, too long or has control characters"),
                    Some("use a short name like family".into()),
                );
                continue;
            }
            let expected = "a list of accounts like [\"alice@example.org\"]";
            let Some(items) =
                self.string_list(name, value, expected, "\"alice@example.org\"", |s| s)
            else {
                continue;
            };
            let mut members = Vec::new();
            for (jid, span) in items {
                if jid.is_empty() || jid.chars().any(char::is_whitespace) || jid.contains('/') {
                    self.problem(
                        span,
                        format!("circle '{name}': '{jid}' is not an account"),
                        Some(
                            "write a bare JID like \"alice@example.org\" or just \"alice\"".into(),
                        ),
                    );
                    continue;
                }
                members.push(jid.to_string());
            }
            config.circles.push(Circle {
                name: name.to_string(),
                members,
            });
        }
    }

    /// `[components]`: `"bot.example.org" = "secret"` lines.
    fn read_components(&mut self, table: &DeTable<'_>, config: &mut Config) {
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            let secret = match value.get_ref() {
                DeValue::String(s) => s,
                DeValue::Table(_) => {
                    // `bot.example.org = "x"` unquoted is a dotted key: nested tables.
                    self.problem(
                        key.span(),
                        format!("component name '{name}' must be quoted"),
                        Some(format!(
                            "write \"{name}.…\" = \"secret\" with the whole domain in quotes"
                        )),
                    );
                    continue;
                }
                other => {
                    self.problem(
                        value.span(),
                        format!(
                            "component '{name}': expected the secret as a string, found {}",
                            type_name(other)
                        ),
                        Some(format!("write \"{name}\" = \"a long random secret\"")),
                    );
                    continue;
                }
            };
            let domain = match normalize_domain(name) {
                Ok(d) if d != "localhost" => d,
                Ok(_) => {
                    let help = Some("use a subdomain like \"bot.localhost\"".to_string());
                    self.problem(
                        key.span(),
                        "component name 'localhost' is not allowed",
                        help,
                    );
                    continue;
                }
                Err((message, help)) => {
                    self.problem(key.span(), format!("component name: {message}"), help);
                    continue;
                }
            };
            if secret.is_empty() {
                self.problem(
                    value.span(),
                    format!("component '{domain}' has an empty secret"),
                    Some("set a long random secret, the same as in the component's config".into()),
                );
                continue;
            }
            if config.components.iter().any(|c| c.domain == domain) {
                self.problem(
                    key.span(),
                    format!("component '{domain}' is listed twice"),
                    None,
                );
                continue;
            }
            self.components.push((domain.clone(), key.span()));
            config.components.push(Component {
                domain,
                secret: secret.to_string(),
            });
        }
    }

    fn read_section(&mut self, section: &Section, table: &DeTable<'_>, config: &mut Config) {
        for (key, value) in table.iter() {
            match section
                .keys
                .iter()
                .find(|k| k.name == key.get_ref().as_ref())
            {
                Some(row) => (row.read)(self, row.name, value, config),
                None => self.unknown_key(key, section),
            }
        }
        (section.check)(self, table);
    }

    fn unknown_section(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>) {
        let name: &str = key.get_ref();
        let mut known: Vec<&str> = SECTIONS.iter().map(|s| s.name).collect();
        known.push(COMPONENTS);
        known.push(CIRCLES);
        let listed = || {
            let names: Vec<String> = known.iter().map(|n| format!("[{n}]")).collect();
            format!("known sections: {}", names.join(", "))
        };
        if RESERVED_SECTIONS.contains(&name) {
            let message = format!("section [{name}] is not supported by this version of kith");
            self.problem(key.span(), message, Some(listed()));
            return;
        }
        let help = match suggest(name, &known) {
            Some(near) => format!("did you mean [{near}]?"),
            None => listed(),
        };
        self.problem(key.span(), format!("unknown section [{name}]"), Some(help));
    }

    fn unknown_key(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, section: &Section) {
        let name: &str = key.get_ref();
        let (message, mut candidates) = if section.name.is_empty() {
            let names = SECTIONS.iter().map(|s| s.name);
            (format!("unknown key '{name}'"), names.collect::<Vec<_>>())
        } else {
            (
                format!("unknown key '{name}' in [{}]", section.name),
                Vec::new(),
            )
        };
        candidates.splice(0..0, section.keys.iter().map(|k| k.name));
        // A key that exists elsewhere is a misplaced key, not a typo of a similar name here.
        let home = std::iter::once(&ROOT)
            .chain(SECTIONS)
            .find(|s| s.name != section.name && s.keys.iter().any(|k| k.name == name));
        let help = if let Some(home) = home {
            if home.name.is_empty() {
                // The classic TOML trap: a top-level key written below a [section] header.
                format!("'{name}' is a top-level key: move it above the first [section] header")
            } else {
                format!("'{name}' belongs in the [{}] section", home.name)
            }
        } else if let Some(near) = suggest(name, &candidates) {
            format!("did you mean '{near}'?")
        } else {
            let names: Vec<&str> = section.keys.iter().map(|k| k.name).collect();
            format!("known keys here: {}", names.join(", "))
        };
        self.problem(key.span(), message, Some(help));
    }

    /// Reports a type mismatch: what was expected, what was found, and the corrected line.
    fn wrong_type(&mut self, key: &str, v: &Spanned<DeValue<'_>>, expected: &str, fix: String) {
        let message = format!(
            "'{key}': expected {expected}, found {}",
            type_name(v.get_ref())
        );
        self.problem(v.span(), message, Some(format!("write {key} = {fix}")));
    }

    fn string<'v>(
        &mut self,
        key: &str,
        v: &'v Spanned<DeValue<'v>>,
        expected: &str,
    ) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s),
            other => {
                let fix = quote(&scalar_text(other, self.source(v.span())));
                self.wrong_type(key, v, expected, fix);
                None
            }
        }
    }

    fn path(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<PathBuf> {
        let s = self.string(key, v, "a path string")?;
        if s.is_empty() {
            self.problem(v.span(), format!("'{key}' is empty"), None);
            return None;
        }
        Some(self.resolve(Path::new(s)))
    }

    /// The source text of a span (empty if the parser's span were ever out of bounds).
    fn source(&self, span: Range<usize>) -> &'t str {
        self.text.get(span).unwrap_or_default()
    }

    /// A path from the file, relative to the file's directory.
    fn resolve(&self, path: &Path) -> PathBuf {
        // Path::components drops the "." segments that joining "./x" to a directory leaves.
        self.base.join(path).components().collect()
    }

    fn boolean(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            DeValue::String(s) if matches!(s.as_ref(), "true" | "false") => {
                self.wrong_type(key, v, "true or false", format!("{s}, without quotes"));
                None
            }
            _ => {
                self.wrong_type(key, v, "true or false", "true".into());
                None
            }
        }
    }

    /// A count in `min..=max`.
    fn count(
        &mut self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        min: usize,
        max: usize,
    ) -> Option<usize> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => self.integer(v, i)?,
            DeValue::String(s) if s.trim().parse::<u64>().is_ok() => {
                let fix = format!("{}, without quotes", s.trim());
                self.wrong_type(key, v, "a whole number", fix);
                return None;
            }
            _ => {
                self.wrong_type(key, v, "a whole number", min.max(1).to_string());
                return None;
            }
        };
        self.in_range(key, v, n, min, max, |n| n.to_string())
    }

    /// A size in bytes in `min..=max`: an integer or a string like "256KiB".
    fn size(
        &mut self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        min: usize,
        max: usize,
    ) -> Option<usize> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => self.integer(v, i)?,
            DeValue::String(s) => match parse_size(s) {
                Ok(n) => n,
                Err((message, help)) => {
                    self.problem(v.span(), format!("'{key}': {message}"), help);
                    return None;
                }
            },
            _ => {
                let expected = "a size in bytes, or a string like \"256KiB\"";
                self.wrong_type(key, v, expected, "\"256KiB\"".into());
                return None;
            }
        };
        self.in_range(key, v, n, min, max, show_size)
    }

    /// A duration in `range`: whole seconds or a string like "30s".
    fn duration(
        &mut self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        range: std::ops::RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let d = match v.get_ref() {
            DeValue::Integer(i) => Duration::from_secs(self.integer(v, i)? as u64),
            DeValue::String(s) => match parse_duration(s) {
                Ok(d) => d,
                Err((message, help)) => {
                    self.problem(v.span(), format!("'{key}': {message}"), help);
                    return None;
                }
            },
            _ => {
                let expected = "a number of seconds, or a string like \"30s\"";
                self.wrong_type(key, v, expected, "\"30s\"".into());
                return None;
            }
        };
        if range.contains(&d) {
            Some(d)
        } else {
            let (lo, hi) = (show_duration(*range.start()), show_duration(*range.end()));
            let message = format!(
                "'{key}' must be between {lo} and {hi}, found {}",
                show_duration(d)
            );
            self.problem(v.span(), message, None);
            None
        }
    }

    fn integer(&mut self, v: &Spanned<DeValue<'_>>, i: &toml::de::DeInteger<'_>) -> Option<usize> {
        match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if n < 0 => {
                self.problem(
                    v.span(),
                    format!("expected a positive number, found {n}"),
                    None,
                );
                None
            }
            Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(_) => {
                self.problem(v.span(), "number out of range", None);
                None
            }
        }
    }

    fn in_range(
        &mut self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        n: usize,
        min: usize,
        max: usize,
        show: fn(usize) -> String,
    ) -> Option<usize> {
        if (min..=max).contains(&n) {
            return Some(n);
        }
        let message = format!(
            "'{key}' must be between {} and {}, found {}",
            show(min),
            show(max),
            show(n)
        );
        self.problem(v.span(), message, None);
        None
    }

    /// The items of a list of strings; a lone string is an error whose fix wraps it in [ ].
    /// `fix` turns the text of a wrongly typed item into the string it probably meant.
    fn string_list<'v>(
        &mut self,
        key: &str,
        v: &'v Spanned<DeValue<'v>>,
        expected: &str,
        example: &str,
        fix: fn(String) -> String,
    ) -> Option<Vec<(&'v str, Range<usize>)>> {
        match v.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.as_ref(), item.span())),
                        other => {
                            let message = format!(
                                "'{key}': expected each item to be a string like {example}, found {}",
                                type_name(other)
                            );
                            let fix = quote(&fix(scalar_text(other, self.source(item.span()))));
                            self.problem(item.span(), message, Some(format!("write {fix}")));
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            }
            DeValue::String(s) => {
                self.wrong_type(key, v, expected, format!("[{}]", quote(s)));
                None
            }
            other => {
                let fix = quote(&fix(scalar_text(other, self.source(v.span()))));
                let fix = format!("[{fix}]");
                self.wrong_type(key, v, expected, fix);
                None
            }
        }
    }

    fn admins(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<Vec<String>> {
        let expected = "a list of accounts like [\"me@example.org\"]";
        let items = self.string_list(key, v, expected, "\"me@example.org\"", |s| s)?;
        let mut admins = Vec::new();
        for (jid, span) in items {
            let problem = if jid.chars().any(char::is_whitespace) {
                Some("contains a space")
            } else if jid.contains('/') {
                Some("has a resource ('/...'); admins are bare JIDs")
            } else if !matches!(jid.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty())
            {
                Some("is not an account address")
            } else {
                None
            };
            match problem {
                Some(what) => self.problem(
                    span,
                    format!("admin '{jid}' {what}"),
                    Some("write a bare JID like \"me@example.org\"".into()),
                ),
                None => admins.push(jid.to_string()),
            }
        }
        Some(admins)
    }

    /// A list of URIs (`scheme:rest`, no spaces), for `[contact]`.
    fn uris(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<Vec<String>> {
        let expected = "a list of URIs like [\"mailto:abuse@example.org\"]";
        let items = self.string_list(key, v, expected, "\"mailto:abuse@example.org\"", |s| s)?;
        let mut out = Vec::new();
        for (uri, span) in items {
            let scheme_ok = uri.split_once(':').is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && !rest.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            });
            if !scheme_ok || uri.chars().any(char::is_whitespace) {
                self.problem(
                    span,
                    format!("'{uri}' is not a URI"),
                    Some(format!(
                        "write a URI like \"mailto:{uri}\" or \"xmpp:{uri}\""
                    )),
                );
            } else {
                out.push(uri.to_string());
            }
        }
        Some(out)
    }

    fn addresses(
        &mut self,
        key: &'static str,
        v: &Spanned<DeValue<'_>>,
        port: u16,
    ) -> Option<Vec<SocketAddr>> {
        let expected = format!("a list of addresses like [\"[::]:{port}\"]");
        let example = format!("\"[::]:{port}\"");
        // A bare port number probably meant all interfaces.
        let fix = |s: String| match s.parse::<u16>() {
            Ok(p) => format!("[::]:{p}"),
            Err(_) => s,
        };
        let items = self.string_list(key, v, &expected, &example, fix)?;
        let mut out = Vec::new();
        for (text, span) in items {
            match parse_listen_address(text, port) {
                Ok(addr) => {
                    let clash = self.addresses.iter().find(|(a, _)| *a == addr);
                    if let Some((_, other)) = clash.filter(|_| addr.port() != 0) {
                        let message = if *other == key {
                            format!("address {addr} is listed twice in '{key}'")
                        } else {
                            format!("address {addr} is already used by '{other}'")
                        };
                        self.problem(span, message, None);
                    } else {
                        self.addresses.push((addr, key));
                        out.push(addr);
                    }
                }
                Err((message, help)) => self.problem(span, message, help),
            }
        }
        Some(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Values.

/// An `[acme] directory` value as a URL: the words `production` and `staging` (Let's
/// Encrypt's), or an `https://` URL; `None` for anything else.
pub fn acme_directory(s: &str) -> Option<String> {
    match s.trim() {
        "production" => Some(LETS_ENCRYPT_PRODUCTION.into()),
        "staging" => Some(LETS_ENCRYPT_STAGING.into()),
        url if url.strip_prefix("https://").is_some_and(|rest| {
            !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
        }) =>
        {
            Some(url.to_string())
        }
        _ => None,
    }
}

/// `"192.0.2.53"` (port 53), `"192.0.2.53:5353"`, `"2001:db8::53"`, `"[2001:db8::53]:53"`.
pub fn parse_resolver(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

/// `"[::]:5222"`, `"0.0.0.0:5222"`, `"127.0.0.1:5222"`; `"*:5222"` means `"[::]:5222"`.
fn parse_listen_address(text: &str, port: u16) -> Result<SocketAddr, (String, Option<String>)> {
    let text = text.trim();
    if let Some(p) = text.strip_prefix("*:") {
        if let Ok(p) = p.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), p));
        }
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let both = |p: u16| {
        format!("use \"[::]:{p}\" for all interfaces or \"127.0.0.1:{p}\" for this machine only")
    };
    if let Ok(p) = text.parse::<u16>() {
        return Err((format!("'{text}' has no IP address"), Some(both(p))));
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        let fix = SocketAddr::new(ip, port);
        return Err((
            format!("'{text}' has no port"),
            Some(format!("write \"{fix}\"")),
        ));
    }
    if let Some((host, p)) = text.rsplit_once(':') {
        if !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
        {
            let p = p.parse::<u16>().unwrap_or(port);
            return Err((
                format!("'{text}': listen addresses must be IP addresses, not host names"),
                Some(both(p)),
            ));
        }
    }
    Err((
        format!("'{text}' is not an address"),
        Some(format!("write an IP address and port like \"[::]:{port}\"")),
    ))
}

/// `"30s"`, `"5m"`, `"2h"`, `"7d"`, or several pairs like `"1h30m"`.
fn parse_duration(text: &str) -> Result<Duration, (String, Option<String>)> {
    let help = || {
        Some("write a number with a unit s, m, h or d, like \"30s\", \"5m\", \"2h\", \"7d\"".into())
    };
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(("empty duration".into(), help()));
    }
    if let Ok(n) = compact.parse::<u64>() {
        return Err((
            format!("\"{text}\" has no unit"),
            Some(format!("write {n} without quotes (seconds), or \"{n}s\"")),
        ));
    }
    let mut total: u64 = 0;
    let mut rest = compact.as_str();
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, after) = rest.split_at(digits);
        let unit_len = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "y" => 365 * 86_400,
            _ if number.is_empty() => return Err((format!("invalid duration \"{text}\""), help())),
            _ => {
                return Err((
                    format!("unknown unit '{unit}' in duration \"{text}\""),
                    help(),
                ))
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| (format!("invalid duration \"{text}\""), help()))?;
        total = n
            .checked_mul(scale)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| (format!("duration \"{text}\" is too long"), None))?;
        rest = after;
    }
    Ok(Duration::from_secs(total))
}

/// `"256KiB"`, `"1MiB"`, `"10000B"`; units B, KiB, MiB, GiB (case-insensitive).
fn parse_size(text: &str) -> Result<usize, (String, Option<String>)> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let Ok(n) = number.parse::<usize>() else {
        return Err((
            format!("invalid size \"{text}\""),
            Some("write a number of bytes, or a string like \"256KiB\" or \"1MiB\"".into()),
        ));
    };
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" => {
            return Err((
                format!("\"{text}\" has no unit"),
                Some(format!("write {n} without quotes (bytes), or \"{n}B\"")),
            ))
        }
        "b" => 1,
        "kib" => KIB,
        "mib" => MIB,
        "gib" => 1024 * MIB,
        lower => {
            let binary = match lower {
                "k" | "kb" => Some("KiB"),
                "m" | "mb" => Some("MiB"),
                "g" | "gb" => Some("GiB"),
                _ => None,
            };
            let help = match binary {
                Some(b) => format!("sizes use binary units: write \"{n}{b}\""),
                None => "use one of the units B, KiB, MiB, GiB".into(),
            };
            return Err((
                format!("unknown unit '{unit}' in size \"{text}\""),
                Some(help),
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| (format!("size \"{text}\" is too large"), None))
}

fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let unit = [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(scale, _)| secs != 0 && secs % scale == 0);
    match unit {
        Some((scale, name)) => quote(&format!("{}{name}", secs / scale)),
        None => quote(&format!("{secs}s")),
    }
}

/// A size as TOML: `"256KiB"` when it is a whole number of KiB/MiB, else plain bytes.
fn show_size(n: usize) -> String {
    if n != 0 && n % MIB == 0 {
        quote(&format!("{}MiB", n / MIB))
    } else if n != 0 && n % KIB == 0 {
        quote(&format!("{}KiB", n / KIB))
    } else {
        n.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn example_domain_help() -> String {
    "use the full domain name, like \"chat.example.org\", or \"localhost\" for testing".into()
}

/// "a string", "an integer", ... as a user would say it.
fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "a number",
        DeValue::Float(_) => "a decimal number",
        DeValue::Boolean(_) => "true/false",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// The text of a scalar, to reuse in a suggested fix; a placeholder for lists and tables.
fn scalar_text(value: &DeValue<'_>, source: &str) -> String {
    match value {
        DeValue::String(s) => s.to_string(),
        DeValue::Array(_) | DeValue::Table(_) => "...".into(),
        _ => source.trim().to_string(),
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

fn push_comment(out: &mut String, doc: &str) {
    for line in doc.lines() {
        out.push_str("# ");
        out.push_str(line.trim());
        out.push('\n');
    }
}

/// The closest candidate within a small edit distance, or one that is a prefix either way.
fn suggest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    let limit = match input.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    let best = candidates
        .iter()
        .map(|c| (edit_distance(&input, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    best.or_else(|| {
        candidates
            .iter()
            .find(|c| input.len() >= 3 && (c.starts_with(&input) || input.starts_with(**c)))
            .copied()
    })
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("domian").
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Config {
        match parse(text, Path::new("/etc/kith/kith.toml")) {
            Ok(config) => config,
            Err(e) => panic!("unexpected problems:\n{e}"),
        }
    }

    /// The problems as the operator sees them, with the file name shortened.
    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("kith.toml")) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = ok("");
        let expected = Config {
            data_dir: PathBuf::from("/etc/kith/kith-data"),
            source: ConfigSource::File("/etc/kith/kith.toml".into()),
            ..Config::defaults()
        };
        assert_eq!(config, expected);
        assert_eq!(config.limits.max_stanza_size, 262_144);
        assert_eq!(config.listen.c2s, vec![addr("[::]:5222")]);
        assert_eq!(config.log_level, LogLevel::Info);
    }

    #[test]
    fn full_valid_file() {
        let config = ok(r#"
domain = "Example.ORG"
data_dir = "/var/lib/kith"
log_level = "debug"
admins = ["me@example.org", "you@example.org"]

[listen]
c2s = ["[::]:5222", "0.0.0.0:15222"]
c2s_direct_tls = []
s2s = ["*:5269"]
s2s_direct_tls = []
https = ["127.0.0.1:8443"]
http = []
components = ["[::1]:5347"]

[tls]
cert = "/etc/kith/fullchain.pem"
key = "privkey.pem"

[limits]
max_stanza_size = "1MiB"
auth_timeout = "1m"
max_offline_messages = 50

[auth]
allow_plain = true
"#);
        assert_eq!(config.domain, "example.org");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/kith"));
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.admins, ["me@example.org", "you@example.org"]);
        assert_eq!(
            config.listen,
            Listen {
                c2s: vec![addr("[::]:5222"), addr("0.0.0.0:15222")],
                c2s_direct_tls: vec![],
                s2s: vec![addr("[::]:5269")],
                s2s_direct_tls: vec![],
                https: vec![addr("127.0.0.1:8443")],
                http: vec![],
                components: vec![addr("[::1]:5347")],
            }
        );
        assert_eq!(
            config.tls,
            Tls {
                cert: Some("/etc/kith/fullchain.pem".into()),
                key: Some("/etc/kith/privkey.pem".into()),
            }
        );
        assert_eq!(
            config.limits,
            Limits {
                max_stanza_size: MIB,
                auth_timeout: Duration::from_secs(60),
                max_offline_messages: 50,
                resume_timeout: Duration::from_secs(300),
                ..Config::defaults().limits
            }
        );
        assert!(config.auth.allow_plain);
    }

    #[test]
    fn misspelled_key_suggests_the_right_one() {
        assert_eq!(
            problems("domian = \"example.org\"\n"),
            ["kith.toml:1:1: unknown key 'domian' (did you mean 'domain'?)"]
        );
        assert_eq!(
            problems("[listen]\nc2ss = []\n"),
            ["kith.toml:2:1: unknown key 'c2ss' in [listen] (did you mean 'c2s'?)"]
        );
    }

    #[test]
    fn unknown_key_without_a_near_match_lists_the_known_ones() {
        assert_eq!(
            problems("[auth]\nzzz = 1\n"),
            ["kith.toml:2:1: unknown key 'zzz' in [auth] (known keys here: allow_plain, scram_sha1_only)"]
        );
    }

    #[test]
    fn top_level_key_below_a_section_says_where_it_belongs() {
        assert_eq!(
            problems("[listen]\ndomain = \"example.org\"\n"),
            ["kith.toml:2:1: unknown key 'domain' in [listen] \
                 ('domain' is a top-level key: move it above the first [section] header)"]
        );
        assert_eq!(
            problems("c2s = []\n"),
            ["kith.toml:1:1: unknown key 'c2s' ('c2s' belongs in the [listen] section)"]
        );
    }

    #[test]
    fn unknown_section_suggests_only_existing_sections() {
        assert_eq!(
            problems("[s2ss]\n"),
            ["kith.toml:1:2: unknown section [s2ss] (did you mean [s2s]?)"]
        );
        assert_eq!(
            problems("[zzz]\n"),
            [format!(
                "kith.toml:1:2: unknown section [zzz] (known sections: {})",
                known_sections()
            )]
        );
        assert_eq!(
            problems("\n[limit]\n"),
            ["kith.toml:2:2: unknown section [limit] (did you mean [limits]?)"]
        );
    }

    #[test]
    fn muc_section() {
        let m = |text: &str| ok(text).muc;
        assert_eq!(m(""), Muc::default());
        let set = m("[muc]\nenabled = false\nrestrict_room_creation = \"admins\"\nhistory_length = 5\nmax_history = 50\n");
        assert!(!set.enabled);
        assert_eq!(set.restrict_room_creation, RoomCreation::Admins);
        assert_eq!((set.history_length, set.max_history), (5, 50));
        let p = problems("[muc]\nrestrict_room_creation = \"local users\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("did you mean \"local\""), "{p:?}");
        assert_eq!(problems("[muc]\nhistory_length = 5000\n").len(), 1);
    }

    #[test]
    fn reserved_section_is_not_supported_yet() {
        assert_eq!(
            problems("[push]\nenabled = true\n"),
            [format!(
                "kith.toml:1:2: section [push] is not supported by this version of kith \
                 (known sections: {})",
                known_sections()
            )]
        );
    }

    #[test]
    fn circles_and_invites_sections() {
        let config = ok(
            "[circles]\nfamily = [\"alice\", \"bob@example.org\"]\n\"old friends\" = []\n\
                         [invites]\nexpires = \"2d\"\n[registration]\nthrottle = \"0s\"\n\
                         notify_admins = false\n",
        );
        assert_eq!(config.circles.len(), 2);
        assert_eq!(config.circles[0].name, "family");
        assert_eq!(config.circles[0].members, ["alice", "bob@example.org"]);
        assert_eq!(config.invites.expires, Duration::from_secs(2 * 86_400));
        assert_eq!(config.registration.throttle, Duration::ZERO);
        assert!(!config.registration.notify_admins);
        assert_eq!(
            problems("[circles]\nfamily = \"alice\"\nfriends = [\"a b\"]\n"),
            [
                "kith.toml:2:10: 'family': expected a list of accounts like \
                 [\"alice@example.org\"], found a string (write family = [\"alice\"])",
                "kith.toml:3:12: circle 'friends': 'a b' is not an account (write a bare JID like \
                 \"alice@example.org\" or just \"alice\")"
            ]
        );
        let text = config.to_toml_changed();
        assert!(
            text.contains("[circles]\n\"family\" = [\"alice\", \"bob@example.org\"]"),
            "{text}"
        );
        assert_eq!(ok(&text).circles, config.circles);
    }

    #[test]
    fn roster_section() {
        assert_eq!(ok("").roster.http_url, None);
        let url = "http://127.0.0.1:8080/roster/%s";
        let config = ok(&format!(
            "[roster]\nsource = \"http\"\nhttp_url = \"{url}\"\n"
        ));
        assert_eq!(config.roster.http_url.as_deref(), Some(url));
        let text = config.to_toml_changed();
        assert!(text.contains("source = \"http\"\n"), "{text}");
        assert_eq!(ok(&text).roster, config.roster);
        assert_eq!(ok("[roster]\nsource = \"local\"\n").roster.http_url, None);
        let bad = problems("[roster]\nsource = \"http\"\nhttp_url = \"https://x/%s\"\n");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("https:// roster services are not supported"),
            "{bad:?}"
        );
        let bad = problems("[roster]\nsource = \"http\"\n");
        assert!(
            bad[0].starts_with("kith.toml:2:10: [roster] source = \"http\" needs 'http_url'"),
            "{bad:?}"
        );
        let bad = problems("[roster]\nsource = \"ldap\"\nhttp_url = \"http://x/\"\n");
        assert_eq!(bad.len(), 3, "{bad:?}");
    }

    /// The list the "known sections" hint gives, in schema order.
    fn known_sections() -> String {
        let names: Vec<String> = SECTIONS
            .iter()
            .map(|s| format!("[{}]", s.name))
            .chain(["[components]".to_string(), "[circles]".to_string()])
            .collect();
        names.join(", ")
    }

    #[test]
    fn http_public_url() {
        let c = ok("domain = \"example.org\"\n");
        assert_eq!(c.public_url(), "https://example.org");
        let c = ok("domain = \"example.org\"\n[listen]\nhttps = [\"127.0.0.1:5443\"]\n");
        assert_eq!(c.public_url(), "https://example.org:5443");
        let c = ok("[http]\npublic_url = \"https://chat.example.org/xmpp/\"\n");
        assert_eq!(c.public_url(), "https://chat.example.org/xmpp");
        assert_eq!(
            problems("[http]\npublic_url = \"chat.example.org\"\n"),
            [
                "kith.toml:2:14: 'public_url': 'chat.example.org' is not an http(s) URL \
              (write a URL like \"https://xmpp.example.org\" or \"https://example.org/xmpp\")"
            ]
        );
    }

    #[test]
    fn upload_limits_and_retention() {
        let u = |text: &str| ok(text).upload;
        let d = u("");
        assert!(d.enabled);
        assert_eq!(d.max_file_size, 100 * 1024 * 1024 + 16);
        assert_eq!(d.quota, 1024 * 1024 * 1024);
        assert_eq!(d.expire_after, Some(Duration::from_secs(30 * 86_400)));
        let set = u("[upload]\nmax_file_size = \"10MiB\"\nquota = \"1GiB\"\nexpire_after = \"never\"\nenabled = false\n");
        assert_eq!(set.max_file_size, 10 * 1024 * 1024);
        assert_eq!(set.expire_after, None);
        assert!(!set.enabled);
        assert_eq!(
            u("[upload]\nexpire_after = \"2d\"\n").expire_after,
            Some(Duration::from_secs(2 * 86_400))
        );
        assert_eq!(problems("[upload]\nmax_file_size = \"3GiB\"\n").len(), 1);
        assert_eq!(problems("[upload]\nexpire_after = \"1m\"\n").len(), 1);
        assert_eq!(problems("[upload]\nquota = 10\n").len(), 1);
    }

    #[test]
    fn mam_retention() {
        let d = |text: &str| ok(text).mam.archive_expires_after;
        assert_eq!(d(""), Some(Duration::from_secs(365 * 86_400)));
        assert_eq!(d("[mam]\narchive_expires_after = \"never\"\n"), None);
        assert_eq!(
            d("[mam]\narchive_expires_after = \"2w\"\n"),
            Some(Duration::from_secs(14 * 86_400))
        );
        assert_eq!(problems("[mam]\narchive_expires_after = \"1h\"\n").len(), 1);
    }

    #[test]
    fn components_section() {
        let c = ok("domain = \"example.org\"\n[components]\n\"Bot.example.org\" = \"s3cret\"\n");
        assert_eq!(c.components.len(), 1);
        assert_eq!(c.components[0].domain, "bot.example.org");
        assert_eq!(c.components[0].secret, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            Config::defaults().listen.components,
            vec![addr("127.0.0.1:5347")]
        );
        assert_eq!(
            problems("domain = \"example.org\"\n[components]\nbot.example.org = \"x\"\n"),
            ["kith.toml:3:1: component name 'bot' must be quoted \
              (write \"bot.…\" = \"secret\" with the whole domain in quotes)"]
        );
        assert_eq!(
            problems("domain = \"example.org\"\n[components]\n\"example.org\" = \"x\"\n"),
            [
                "kith.toml:3:1: component 'example.org' is the server's own domain \
              (give the component a subdomain, like \"bot.example.org\")"
            ]
        );
        let p =
            problems("[components]\n\"a b\" = \"x\"\n\"c.example\" = 3\n\"d.example\" = \"\"\n");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("kith.toml:2:1: component name:"), "{p:?}");
        assert!(
            p[1].starts_with("kith.toml:3:15: component 'c.example'"),
            "{p:?}"
        );
        assert!(
            p[2].starts_with("kith.toml:4:15: component 'd.example' has an empty"),
            "{p:?}"
        );
        let back = ok(&c.to_toml_example());
        assert_eq!(back.components, c.components);
    }

    #[test]
    fn reserved_sections_are_not_implemented_ones() {
        for section in SECTIONS {
            assert!(
                !RESERVED_SECTIONS.contains(&section.name),
                "{}",
                section.name
            );
            assert!(ROOT.keys.iter().all(|k| k.name != section.name));
        }
    }

    #[test]
    fn section_written_as_a_value() {
        assert_eq!(
            problems("listen = \"[::]:5222\"\n"),
            [
                "kith.toml:1:1: expected a section [listen], found a string \
                 (write a [listen] header on its own line, with its keys below it)"
            ]
        );
    }

    #[test]
    fn single_address_where_a_list_is_expected_shows_the_fix() {
        assert_eq!(
            problems("[listen]\nc2s = \"0.0.0.0:5222\"\n"),
            [
                "kith.toml:2:7: 'c2s': expected a list of addresses like [\"[::]:5222\"], \
                 found a string (write c2s = [\"0.0.0.0:5222\"])"
            ]
        );
        assert_eq!(
            problems("[listen]\nhttp = [80]\n"),
            [
                "kith.toml:2:9: 'http': expected each item to be a string like \"[::]:80\", \
                 found a number (write \"[::]:80\")"
            ]
        );
    }

    #[test]
    fn wrong_scalar_types() {
        assert_eq!(
            problems("domain = 5\n[auth]\nallow_plain = \"true\"\n[limits]\nmax_offline_messages = \"10\"\n"),
            [
                "kith.toml:1:10: 'domain': expected a domain name like \"example.org\", \
                 found a number (write domain = \"5\")",
                "kith.toml:3:15: 'allow_plain': expected true or false, found a string \
                 (write allow_plain = true, without quotes)",
                "kith.toml:5:24: 'max_offline_messages': expected a whole number, found a string \
                 (write max_offline_messages = 10, without quotes)",
            ]
        );
    }

    #[test]
    fn bad_addresses() {
        let text = "[listen]\n\
                    c2s = [\"localhost:5222\"]\n\
                    s2s = [\"5269\"]\n\
                    https = [\"[::1]\"]\n\
                    http = [\"nonsense here\"]\n";
        assert_eq!(
            problems(text),
            [
                "kith.toml:2:8: 'localhost:5222': listen addresses must be IP addresses, not host \
                 names (use \"[::]:5222\" for all interfaces or \"127.0.0.1:5222\" for this machine only)",
                "kith.toml:3:8: '5269' has no IP address \
                 (use \"[::]:5269\" for all interfaces or \"127.0.0.1:5269\" for this machine only)",
                "kith.toml:4:10: '[::1]' has no port (write \"[::1]:443\")",
                "kith.toml:5:9: 'nonsense here' is not an address \
                 (write an IP address and port like \"[::]:80\")",
            ]
        );
    }

    #[test]
    fn star_means_all_interfaces() {
        assert_eq!(
            ok("[listen]\nc2s = [\"*:5222\"]\n").listen.c2s,
            [addr("[::]:5222")]
        );
    }

    #[test]
    fn empty_list_turns_a_listener_off() {
        let config = ok("[listen]\nc2s = []\n");
        assert!(config.listen.c2s.is_empty());
        assert_eq!(config.listen.c2s_direct_tls, [addr("[::]:5223")]);
    }

    #[test]
    fn one_address_in_two_listeners() {
        assert_eq!(
            problems("[listen]\nc2s = [\"[::]:5222\"]\nc2s_direct_tls = [\"[::]:5222\"]\n"),
            ["kith.toml:3:19: address [::]:5222 is already used by 'c2s'"]
        );
        // Port 0 means "any free port": no clash.
        ok("[listen]\nc2s = [\"127.0.0.1:0\"]\ns2s = [\"127.0.0.1:0\"]\n");
    }

    #[test]
    fn bad_durations_and_ranges() {
        assert_eq!(
            problems("[limits]\nauth_timeout = \"30 sec\"\n"),
            [
                "kith.toml:2:16: 'auth_timeout': unknown unit 'sec' in duration \"30 sec\" \
                 (write a number with a unit s, m, h or d, like \"30s\", \"5m\", \"2h\", \"7d\")"
            ]
        );
        assert_eq!(
            problems("[limits]\nauth_timeout = \"2d\"\nmax_stanza_size = 5000\n"),
            [
                "kith.toml:2:16: 'auth_timeout' must be between \"1s\" and \"1h\", found \"2d\"",
                "kith.toml:3:19: 'max_stanza_size' must be between 10000 and \"16MiB\", found 5000",
            ]
        );
        assert_eq!(
            problems("[limits]\nmax_stanza_size = \"256KB\"\n"),
            [
                "kith.toml:2:19: 'max_stanza_size': unknown unit 'KB' in size \"256KB\" \
                 (sizes use binary units: write \"256KiB\")"
            ]
        );
        assert_eq!(
            problems("[limits]\nmax_offline_messages = -1\n"),
            ["kith.toml:2:24: expected a positive number, found -1"]
        );
    }

    #[test]
    fn durations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs()).map_err(|e| e.0);
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("5m"), Ok(300));
        assert_eq!(secs("2h"), Ok(7200));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("1h 30m"), Ok(5400));
        assert!(secs("30").unwrap_err().contains("no unit"));
        assert!(secs("").is_err());
        assert!(secs("s").is_err());
        assert!(secs("5ms").is_err());
        assert!(secs("1.5h").is_err());
        assert!(secs("99999999999999999999d").is_err());
        assert_eq!(
            ok("[limits]\nauth_timeout = 45\n")
                .limits
                .auth_timeout
                .as_secs(),
            45
        );
        for (secs, text) in [
            (30, "\"30s\""),
            (60, "\"1m\""),
            (90, "\"90s\""),
            (7200, "\"2h\""),
        ] {
            assert_eq!(show_duration(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn sizes() {
        let size = |s: &str| parse_size(s).map_err(|e| e.0);
        assert_eq!(size("256KiB"), Ok(262_144));
        assert_eq!(size("1MiB"), Ok(1_048_576));
        assert_eq!(size("1 mib"), Ok(1_048_576));
        assert_eq!(size("10000B"), Ok(10_000));
        assert!(size("10000").unwrap_err().contains("no unit"));
        assert!(size("1.5MiB").is_err());
        assert!(size("MiB").is_err());
        assert!(size("1MB").is_err());
        assert!(size("1 parsec").is_err());
        assert_eq!(
            ok("[limits]\nmax_stanza_size = 20_000\n")
                .limits
                .max_stanza_size,
            20_000
        );
        assert_eq!(
            ok("[limits]\nmax_stanza_size = \"16MiB\"\n")
                .limits
                .max_stanza_size,
            16 * MIB
        );
        assert_eq!(show_size(262_144), "\"256KiB\"");
        assert_eq!(show_size(10_000), "10000");
    }

    #[test]
    fn cert_without_key() {
        assert_eq!(
            problems("[tls]\ncert = \"/etc/kith/fullchain.pem\"\n"),
            ["kith.toml:2:8: 'cert' is set but 'key' is not \
                 (add key = \"/path/to/privkey.pem\" to [tls], or remove 'cert')"]
        );
        assert_eq!(
            problems("[tls]\nkey = \"k.pem\"\n"),
            ["kith.toml:2:7: 'key' is set but 'cert' is not \
                 (add cert = \"/path/to/fullchain.pem\" to [tls], or remove 'key')"]
        );
    }

    #[test]
    fn acme_section() {
        assert!(!ok("").acme.enabled());
        let acme = ok("[acme]\nemail = \"mailto:Admin@example.org\"\n").acme;
        assert!(acme.enabled());
        assert_eq!(acme.email.as_deref(), Some("Admin@example.org"));
        assert_eq!(acme.directory, LETS_ENCRYPT_PRODUCTION);
        assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
        let acme = ok(
            "[acme]\nemail = \"a@example.org\"\ndirectory = \"staging\"\n\
                       challenge = \"http-01\"\ndirectory_ca = \"/x/ca.pem\"\n",
        )
        .acme;
        assert_eq!(acme.directory, LETS_ENCRYPT_STAGING);
        assert_eq!(acme.challenge, AcmeChallenge::Http01);
        assert_eq!(acme.directory_ca.as_deref(), Some(Path::new("/x/ca.pem")));
        let url = "https://127.0.0.1:14000/dir";
        let acme = ok(&format!("[acme]\nemail = \"a@b\"\ndirectory = \"{url}\"\n")).acme;
        assert_eq!(acme.directory, url);

        assert_eq!(
            problems("[acme]\ndirectory = \"staging\"\n"),
            [
                "kith.toml:2:1: [acme] needs 'email' (ACME stays off without it) \
              (add email = \"admin@example.org\" to [acme], or remove the section)"
            ]
        );
        assert_eq!(
            problems("[acme]\nemail = \"a@b\"\ndirectory = \"http://ca.example/dir\"\n"),
            ["kith.toml:3:13: 'directory' must be \"production\", \"staging\" or an https:// URL \
              (for example directory = \"https://acme.example.net/directory\")"]
        );
        assert_eq!(
            problems("[acme]\nemail = \"a@b\"\nchallenge = \"http01\"\n"),
            ["kith.toml:3:13: unknown ACME challenge \"http01\" (did you mean \"http-01\"?)"]
        );
        let p = problems("[acme]\nemail = \"not an address\"\n");
        assert!(
            p.len() == 1 && p[0].contains("not an email address"),
            "{p:?}"
        );
        assert_eq!(
            problems("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[acme]\nemail = \"a@b\"\n"),
            ["kith.toml:5:9: [acme] email and [tls] cert are both set: kith would not know which \
              certificate to use (remove [tls] cert and key to let kith obtain certificates, or \
              remove [acme] to use your own)"]
        );

        let mut custom = Config::defaults();
        custom.acme.email = Some("a@example.org".into());
        custom.acme.directory = LETS_ENCRYPT_STAGING.into();
        custom.acme.challenge = AcmeChallenge::Http01;
        assert_eq!(ok(&custom.to_toml_example()).acme, custom.acme);
    }

    #[test]
    fn syntax_errors_have_their_line() {
        let found = parse(
            "domain = \"example.org\"\nlog_level = info\n",
            Path::new("kith.toml"),
        )
        .unwrap_err();
        assert_eq!(found.problems().len(), 1);
        assert_eq!(found.problems()[0].line(), Some(2));
        assert!(found.to_string().starts_with("kith.toml:2:13: "), "{found}");
        let twice = problems("a = 1\na = 2\n");
        assert_eq!(twice.len(), 1);
        assert!(twice[0].starts_with("kith.toml:2:1: "), "{twice:?}");
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = "\
domian = \"example.org\"
log_level = \"verbose\"
admins = [\"me\", \"you@example.org/phone\"]
[listen]
c2s = \"[::]:5222\"
[tls]
cert = \"c.pem\"
[limits]
auth_timeout = \"soon\"
[push]
";
        let found = parse(text, Path::new("kith.toml")).unwrap_err();
        let lines: Vec<_> = found.problems().iter().map(|p| p.line().unwrap()).collect();
        assert_eq!(lines, [1, 2, 3, 3, 5, 7, 9, 10]);
        assert_eq!(found.to_string().lines().count(), 8);
        assert_eq!(
            found.to_string().lines().nth(1),
            Some("kith.toml:2:13: unknown log level \"verbose\" (use one of: error, warn, info, debug, trace)")
        );
    }

    #[test]
    fn log_level_suggestion() {
        assert_eq!(
            problems("log_level = \"warning\"\n"),
            ["kith.toml:1:13: unknown log level \"warning\" (did you mean \"warn\"?)"]
        );
    }

    #[test]
    fn admins_are_bare_jids() {
        assert_eq!(
            problems("admins = [\"me @example.org\", \"me@example.org/x\", \"example.org\"]\n"),
            [
                "kith.toml:1:11: admin 'me @example.org' contains a space \
                 (write a bare JID like \"me@example.org\")",
                "kith.toml:1:30: admin 'me@example.org/x' has a resource ('/...'); admins are \
                 bare JIDs (write a bare JID like \"me@example.org\")",
                "kith.toml:1:50: admin 'example.org' is not an account address \
                 (write a bare JID like \"me@example.org\")",
            ]
        );
    }

    #[test]
    fn domains() {
        let domain = |s: &str| normalize_domain(s).map_err(|e| e.0);
        assert_eq!(domain("localhost"), Ok("localhost".into()));
        assert_eq!(domain("Chat.Example.ORG"), Ok("chat.example.org".into()));
        assert_eq!(
            domain("xn--bcher-kva.example"),
            Ok("xn--bcher-kva.example".into())
        );
        for bad in [
            "",
            "example.org.",
            "example",
            "127.0.0.1",
            "[::1]",
            "me@example.org",
            "bücher.example",
            "a..b",
            "-a.example",
            "a_b.example",
            &format!("{}.example", "a".repeat(64)),
        ] {
            assert!(domain(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            problems("domain = \"example.org.\"\n"),
            ["kith.toml:1:10: domain 'example.org.' ends with a dot (write 'example.org')"]
        );
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let config = ok("data_dir = \"data\"\n[tls]\ncert = \"./c.pem\"\nkey = \"../k.pem\"\n");
        assert_eq!(config.data_dir, PathBuf::from("/etc/kith/data"));
        assert_eq!(config.tls.cert, Some(PathBuf::from("/etc/kith/c.pem")));
        assert_eq!(config.tls.key, Some(PathBuf::from("/etc/kith/../k.pem")));
        let here = parse("", Path::new("./kith.toml")).unwrap();
        assert_eq!(here.data_dir, PathBuf::from("./kith-data"));
        let bare = parse("", Path::new("kith.toml")).unwrap();
        assert_eq!(bare.data_dir, PathBuf::from("./kith-data"));
        let absolute = ok("data_dir = \"/srv/kith\"\n");
        assert_eq!(absolute.data_dir, PathBuf::from("/srv/kith"));
    }

    #[test]
    fn example_parses_back_to_the_same_config() {
        let defaults = Config::defaults();
        let example = defaults.to_toml_example();
        let parsed = parse(&example, Path::new("kith.toml")).unwrap();
        assert_eq!(
            parsed,
            Config {
                source: parsed.source.clone(),
                ..defaults
            }
        );
        for section in std::iter::once(&ROOT).chain(SECTIONS) {
            for key in section.keys {
                assert!(
                    example.contains(&format!("{} = ", key.name)),
                    "{}",
                    key.name
                );
            }
        }
        assert!(!example.contains("# Default:"), "{example}");

        let mut custom = Config::defaults();
        custom.domain = "example.org".into();
        custom.admins = vec!["me@example.org".into()];
        custom.listen.http = vec![];
        custom.tls.cert = Some("/etc/kith/fullchain.pem".into());
        custom.tls.key = Some("/etc/kith/privkey.pem".into());
        custom.limits.max_stanza_size = 12_345;
        custom.limits.auth_timeout = Duration::from_secs(90);
        custom.auth.allow_plain = true;
        let example = custom.to_toml_example();
        assert!(example.contains("# Default: \"localhost\"\ndomain = \"example.org\"\n"));
        let parsed = parse(&example, Path::new("kith.toml")).unwrap();
        assert_eq!(
            parsed,
            Config {
                source: parsed.source.clone(),
                ..custom
            }
        );
    }

    #[test]
    fn changed_keys_only_parse_back_to_the_same_config() {
        assert!(!Config::defaults().to_toml_changed().contains(" = "));
        let mut custom = Config::defaults();
        custom.domain = "example.org".into();
        custom.data_dir = "/var/lib/kith".into();
        custom.admins = vec!["me@example.org".into()];
        custom.registration.policy = RegistrationPolicy::Closed;
        custom.tls.cert = Some("/etc/kith/fullchain.pem".into());
        custom.tls.key = Some("/etc/kith/privkey.pem".into());
        let text = custom.to_toml_changed();
        assert!(
            text.contains("# Default: \"localhost\"\ndomain = \"example.org\"\n"),
            "{text}"
        );
        assert!(text.contains("[registration]\n") && text.contains("policy = \"closed\""));
        assert!(
            !text.contains("[limits]") && !text.contains("c2s ="),
            "{text}"
        );
        let parsed = parse(&text, Path::new("/etc/kith/kith.toml")).unwrap();
        assert_eq!(
            parsed,
            Config {
                source: parsed.source.clone(),
                ..custom
            }
        );
    }

    #[test]
    fn registration_and_check_sections() {
        let config = ok(
            "[registration]\npolicy = \"open\"\n[check]\nresolver = \"127.0.0.1:5353\"\n\
                         public_addresses = [\"203.0.113.7\", \"2001:db8::7\"]\n",
        );
        assert_eq!(config.registration.policy, RegistrationPolicy::Open);
        assert_eq!(config.check.resolver, Some(addr("127.0.0.1:5353")));
        assert_eq!(config.check.public_addresses.len(), 2);
        assert_eq!(ok("").registration.policy, RegistrationPolicy::Invite);
        assert_eq!(
            ok("[check]\nresolver = \"::1\"\n").check.resolver,
            Some(addr("[::1]:53"))
        );
        assert_eq!(
            problems("[registration]\npolicy = \"invites\"\n[check]\nresolver = \"dns.example\"\n"),
            [
                "kith.toml:2:10: unknown registration policy \"invites\" (did you mean \"invite\"?)",
                "kith.toml:4:12: 'resolver' is not an IP address with an optional port \
                 (write \"192.0.2.53\", \"192.0.2.53:5353\" or \"[2001:db8::53]:53\")",
            ]
        );
    }

    #[test]
    fn tombstone_ttl_is_forever_or_a_duration_from_an_hour() {
        assert_eq!(ok("").registration.tombstone_ttl, None);
        let c = ok("[registration]\ntombstone_ttl = \"forever\"\n");
        assert_eq!(c.registration.tombstone_ttl, None);
        let c = ok("[registration]\ntombstone_ttl = \"30d\"\n");
        assert_eq!(
            c.registration.tombstone_ttl,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            problems("[registration]\ntombstone_ttl = \"1m\"\n").len(),
            1,
            "below the 1h minimum"
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kith-config-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn load_explicit_and_search_paths() {
        let dir = temp_dir("load");
        let missing = dir.join("missing.toml");
        let err = load(Some(&missing)).unwrap_err();
        assert_eq!(err.problems()[0].position, None);
        assert!(err.to_string().contains("cannot read"), "{err}");
        assert!(err.to_string().contains("kith setup"), "{err}");

        let file = dir.join("kith.toml");
        fs::write(&file, "domain = \"example.org\"\n").unwrap();
        let config = load(Some(&file)).unwrap();
        assert_eq!(config.domain, "example.org");
        assert_eq!(config.source, ConfigSource::File(file.clone()));
        assert_eq!(config.data_dir, dir.join("kith-data"));

        let found = load_from(None, &[&missing, &file]).unwrap();
        assert_eq!(found.source, ConfigSource::File(file.clone()));
        let none = load_from(None, &[&missing]).unwrap();
        assert_eq!(none, Config::defaults());
        assert_eq!(
            none.source.to_string(),
            "built-in defaults (no config file)"
        );

        fs::write(&file, b"domain = \"ex\xffample.org\"\n").unwrap();
        let err = load(Some(&file)).unwrap_err();
        assert_eq!(
            err.problems()[0].position,
            Some(Position {
                line: 1,
                column: 13
            })
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn contact_addresses() {
        let config = ok(
            "admins = [\"me@example.org\"]\n[contact]\nabuse = [\"mailto:abuse@example.org\"]\n",
        );
        let fields = config.contact.fields(&config.admins);
        assert!(fields.contains(&("abuse-addresses", vec!["mailto:abuse@example.org".into()])));
        assert!(fields.contains(&("admin-addresses", vec!["xmpp:me@example.org".into()])));
        let config = ok("[contact]\nadmin = [\"https://example.org/help\"]\n");
        let fields = config.contact.fields(&["me@example.org".into()]);
        assert!(fields.contains(&("admin-addresses", vec!["https://example.org/help".into()])));
        let p = problems("[contact]\nabuse = [\"abuse@example.org\"]\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("is not a URI"), "{p:?}");
    }

    #[test]
    fn turn_section() {
        // The built-in server by default.
        let turn = ok("").turn;
        assert!(turn.builtin());
        assert_eq!(
            turn.advertised("example.org"),
            Some(("example.org".to_string(), 3478, None))
        );
        assert_eq!(turn.relay_ports, (49152, 65535));
        assert_eq!(
            (turn.max_allocations_per_user, turn.max_allocations),
            (10, 500)
        );
        assert_eq!(ok("[turn]\n").turn, Turn::default());
        let turn = ok("[turn]\nlisten = [\"127.0.0.1:3479\"]\npublic_host = \"t.example.org\"\n\
                      relay_ports = \"50000-50010\"\nrealm = \"r\"\nbandwidth = \"64KiB\"\n\
                      allow_private_peers = true\nmax_allocations = 3\nmax_allocations_per_user = 2\n")
        .turn;
        assert_eq!(
            turn.advertised("example.org"),
            Some(("t.example.org".to_string(), 3479, None))
        );
        assert_eq!(
            (
                turn.relay_ports,
                turn.realm("x"),
                turn.bandwidth,
                turn.allow_private_peers
            ),
            ((50000, 50010), "r", 65536, true)
        );
        assert!(!ok("[turn]\nenabled = false\n").turn.builtin());
        assert!(!ok("[turn]\nlisten = []\n").turn.builtin());
        assert_eq!(ok("[turn]\nenabled = false\n").turn.advertised("x"), None);

        // An external server: today's keys keep working and turn the built-in one off.
        let config = ok("[turn]\nhost = \"turn.example.org\"\nsecret = \"s3cret\"\n");
        let turn = config.turn;
        assert!(!turn.builtin());
        assert_eq!(
            (turn.advertised("x"), turn.ttl),
            (
                Some(("turn.example.org".to_string(), 3478, None)),
                Duration::from_secs(86_400)
            )
        );
        assert!(!format!("{turn:?}").contains("s3cret"));
        let config = ok("[turn]\nhost = \"t.example.org\"\nsecret = \"s\"\nport = 3479\ntls_port = 5349\nttl = \"2h\"\n");
        let turn = config.turn;
        assert_eq!(
            (turn.port, turn.tls_port, turn.ttl.as_secs()),
            (3479, Some(5349), 7200)
        );
        let p = problems("[turn]\nport = 3478\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("needs 'host'"), "{p:?}");
        let p = problems("[turn]\nhost = \"t.example.org\"\n");
        assert!(p.len() == 1 && p[0].contains("needs 'secret'"), "{p:?}");
        let p = problems("[turn]\nenabled = true\nhost = \"t.example.org\"\nsecret = \"s\"\n");
        assert!(p.len() == 1 && p[0].contains("external"), "{p:?}");
        let p = problems("[turn]\nrelay_ports = \"60000-50000\"\n");
        assert!(p.len() == 1 && p[0].contains("port range"), "{p:?}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("domian", &["domain", "data_dir"]), Some("domain"));
        assert_eq!(suggest("DOMAIN", &["domain"]), Some("domain"));
        assert_eq!(suggest("s2ss", &["listen", "tls", "limits", "auth"]), None);
        assert_eq!(suggest("xyz", &["domain"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }
}
