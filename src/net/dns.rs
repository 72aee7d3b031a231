//! DNS for federation: where to connect to reach another XMPP server (RFC 6120 §3.2, XEP-0368)
//! and the addresses of a host; for `kith check`, raw SRV answers and one record type at a
//! time. The only user of hickory; hickory runs on kith's smol executor
//! through the small `RuntimeProvider` at the bottom of this file (no second runtime, no extra
//! thread).
//!
//! The RFC 2782 ordering of SRV records (`order_targets`) is pure and takes its randomness as a
//! parameter; the I/O part only fetches records. Knows nothing about connecting, TLS or streams.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, FutureExt as _};
use hickory_net::runtime::{DnsTcpStream, DnsUdpSocket, RuntimeProvider, Spawn, Time};
use hickory_net::NetError;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::proto::rr::{RData, RecordType};
use smol::{Async, Executor, Timer};

/// The port of `_xmpp-server._tcp` when a domain publishes no SRV records (RFC 6120 §3.2.2).
pub const DEFAULT_S2S_PORT: u16 = 5269;

/// How long one lookup (all of hickory's retries included) may take before we give up.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);

/// One place to try to connect to, in the order `xmpp_server_targets` returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A host name without the trailing dot, to be resolved with `lookup_ips`.
    pub host: String,
    pub port: u16,
    /// From `_xmpps-server._tcp` (XEP-0368): TLS from the first byte, ALPN `xmpp-server`.
    /// Otherwise a plaintext stream that negotiates STARTTLS.
    pub direct_tls: bool,
}

/// An address family, for lookups of one record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

/// One SRV record as the ordering needs it: the I/O side converts hickory's records to this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Without the trailing dot; empty for the root (`.`), "service decidedly not available".
    pub target: String,
}

/// Why a lookup gave no usable answer. Messages carry the name looked up, for the log.
#[derive(Debug)]
pub enum DnsError {
    /// The resolver could not be set up (unreadable `/etc/resolv.conf`, …).
    Setup(String),
    /// The name does not parse as a domain name.
    BadName { name: String, reason: String },
    /// The lookup itself failed (timeout, SERVFAIL, no reachable nameserver).
    Lookup { name: String, reason: String },
    /// The domain says it offers no XMPP server service: its SRV target is `.` (RFC 2782,
    /// RFC 6120 §3.2.1). Not worth retrying soon.
    NoXmppService { domain: String },
    /// The host has no A or AAAA records.
    NoAddresses { host: String },
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::Setup(reason) => write!(f, "cannot set up the DNS resolver: {reason}"),
            DnsError::BadName { name, reason } => {
                write!(f, "cannot look up '{name}': not a domain name ({reason})")
            }
            DnsError::Lookup { name, reason } => write!(f, "DNS lookup of {name} failed: {reason}"),
            DnsError::NoXmppService { domain } => write!(
                f,
                "{domain} offers no XMPP server service (its _xmpp-server._tcp SRV record is '.')"
            ),
            DnsError::NoAddresses { host } => write!(f, "{host} has no A or AAAA records"),
        }
    }
}

impl std::error::Error for DnsError {}

/// kith's DNS resolver: hickory with a cache, driven by the executor it was given. Lookups
/// need that executor to be running (hickory spawns its connection tasks on it).
pub struct Resolver {
    inner: hickory_resolver::Resolver<SmolRuntime>,
    timeout: Duration,
}

impl Resolver {
    /// Uses the system's configuration (`/etc/resolv.conf`).
    pub fn from_system(ex: Arc<Executor<'static>>) -> Result<Resolver, DnsError> {
        let builder = hickory_resolver::Resolver::builder(SmolRuntime { ex })
            .map_err(|e| DnsError::Setup(format!("reading /etc/resolv.conf: {e}")))?;
        let inner = builder
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Resolver {
            inner,
            timeout: LOOKUP_TIMEOUT,
        })
    }

    /// Asks only `server` (UDP, and TCP for truncated answers); for tests against a local DNS
    /// server on a non-standard port.
    pub fn with_nameserver(
        ex: Arc<Executor<'static>>,
        server: SocketAddr,
    ) -> Result<Resolver, DnsError> {
        let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
        udp.port = server.port();
        let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
        tcp.port = server.port();
        let mut config = ResolverConfig::default();
        config
            .name_servers
            .push(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(2);
        let inner = hickory_resolver::Resolver::builder_with_config(config, SmolRuntime { ex })
            .with_options(opts)
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Resolver {
            inner,
            timeout: LOOKUP_TIMEOUT,
        })
    }

    /// Bounds each lookup, hickory's own retries included (default 15 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Where to connect to reach the XMPP server of `domain`, in the order to try: the
    /// `_xmpps-server._tcp` (direct TLS) and `_xmpp-server._tcp` records merged and ordered by
    /// RFC 2782; without any SRV record, `domain` itself on port 5269 (RFC 6120 §3.2.2).
    pub async fn xmpp_server_targets(&self, domain: &str) -> Result<Vec<Target>, DnsError> {
        let domain = domain.trim_end_matches('.');
        // An IP-literal domain (RFC 7622 §3.2) has no SRV records to look up.
        if let Some(ip) = ip_literal(domain) {
            return Ok(vec![Target {
                host: ip.to_string(),
                port: DEFAULT_S2S_PORT,
                direct_tls: false,
            }]);
        }
        let xmpps_name = format!("_xmpps-server._tcp.{domain}");
        let xmpp_name = format!("_xmpp-server._tcp.{domain}");
        let (xmpps, xmpp) =
            futures_lite::future::zip(self.srv_records(&xmpps_name), self.srv_records(&xmpp_name))
                .await;
        // Direct TLS is an extra (XEP-0368): when only its lookup fails, go on without it.
        let xmpps = xmpps.unwrap_or_else(|e| {
            log::debug!("{e}; trying _xmpp-server._tcp only");
            None
        });
        order_targets(domain, xmpps, xmpp?, &mut |n| fastrand::u32(0..=n))
    }

    /// The addresses of `host` (AAAA and A), IPv6 first, for a happy-eyeballs connect.
    pub async fn lookup_ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let host = host.trim_end_matches('.');
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![ip]);
        }
        let name = fqdn(host)?;
        let lookup = self.with_timeout(host, self.inner.lookup_ip(name)).await?;
        let mut ips: Vec<IpAddr> = match lookup {
            Ok(found) => found.iter().collect(),
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(lookup_error(host, &e)),
        };
        if ips.is_empty() {
            return Err(DnsError::NoAddresses {
                host: host.to_owned(),
            });
        }
        ips.sort_by_key(|ip| ip.is_ipv4()); // stable: keeps the server's order within a family
        Ok(ips)
    }

    /// Only the A (`Family::V4`) or only the AAAA (`Family::V6`) records of `host`, in the
    /// server's order; empty when there are none. For `kith check`, which reports each family.
    pub async fn lookup_family(&self, host: &str, family: Family) -> Result<Vec<IpAddr>, DnsError> {
        let host = host.trim_end_matches('.');
        let name = fqdn(host)?;
        let record_type = match family {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        };
        match self
            .with_timeout(host, self.inner.lookup(name, record_type))
            .await?
        {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(lookup_error(host, &e)),
        }
    }

    /// The SRV records at `name` (like `_xmpp-client._tcp.example.org`), in answer order;
    /// `None` when there are none (NXDOMAIN or no SRV records).
    pub async fn srv_records(&self, name: &str) -> Result<Option<Vec<SrvRecord>>, DnsError> {
        let fq = fqdn(name)?;
        match self.with_timeout(name, self.inner.srv_lookup(fq)).await? {
            Ok(lookup) => {
                let records: Vec<SrvRecord> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some(SrvRecord {
                            priority: srv.priority,
                            weight: srv.weight,
                            port: srv.port,
                            target: srv.target.to_ascii().trim_end_matches('.').to_owned(),
                        }),
                        _ => None,
                    })
                    .collect();
                Ok((!records.is_empty()).then_some(records))
            }
            Err(e) if e.is_no_records_found() => Ok(None),
            Err(e) => Err(lookup_error(name, &e)),
        }
    }

    async fn with_timeout<T>(
        &self,
        name: &str,
        lookup: impl Future<Output = Result<T, NetError>>,
    ) -> Result<Result<T, NetError>, DnsError> {
        let timeout = self.timeout;
        async { Ok(lookup.await) }
            .or(async {
                Timer::after(timeout).await;
                Err(DnsError::Lookup {
                    name: name.to_owned(),
                    reason: format!("no answer within {timeout:?}"),
                })
            })
            .await
    }
}

/// Orders SRV answers into connection targets (RFC 2782, XEP-0368 §3, RFC 6120 §3.2.1).
///
/// `xmpps` and `xmpp` are the `_xmpps-server._tcp` and `_xmpp-server._tcp` answers (`None`:
/// no records). The two lists are merged into one and ordered by priority, lowest first; within
/// one priority, by RFC 2782's weighted random selection. `random(n)` must return a number in
/// `0..=n` (uniform in production; fixed in tests).
///
/// A `.` target means that service is not offered: on `_xmpps-server` that only rules out
/// direct TLS; on `_xmpp-server` it means no XMPP at all unless `_xmpps-server` names real
/// hosts. Without any SRV record, the domain itself on port 5269 (RFC 6120 §3.2.2).
pub fn order_targets(
    domain: &str,
    xmpps: Option<Vec<SrvRecord>>,
    xmpp: Option<Vec<SrvRecord>>,
    random: &mut dyn FnMut(u32) -> u32,
) -> Result<Vec<Target>, DnsError> {
    let domain = domain.trim_end_matches('.');
    let xmpp_refused = xmpp
        .as_ref()
        .is_some_and(|rs| rs.iter().all(|r| r.target.is_empty()));
    let mut records: Vec<(SrvRecord, bool)> = Vec::new();
    for (list, direct_tls) in [(xmpps.as_ref(), true), (xmpp.as_ref(), false)] {
        for r in list.into_iter().flatten() {
            if !r.target.is_empty() {
                records.push((r.clone(), direct_tls));
            }
        }
    }
    if records.is_empty() {
        if xmpp_refused {
            return Err(DnsError::NoXmppService {
                domain: domain.to_owned(),
            });
        }
        return Ok(vec![Target {
            host: domain.to_owned(),
            port: DEFAULT_S2S_PORT,
            direct_tls: false,
        }]);
    }
    // Stable: at equal priority the answer order stays, and so does the result of a fixed
    // `random` in tests.
    records.sort_by_key(|(r, _)| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = &mut records[..];
    while let Some((first, _)) = rest.first() {
        let priority = first.priority;
        let len = rest
            .iter()
            .take_while(|(r, _)| r.priority == priority)
            .count();
        let (group, tail) = rest.split_at_mut(len);
        out.extend(
            weighted_order(group, random)
                .into_iter()
                .map(|(r, direct_tls)| Target {
                    host: r.target,
                    port: r.port,
                    direct_tls,
                }),
        );
        rest = tail;
    }
    Ok(out)
}

/// RFC 2782's selection within one priority: zero weights first, then repeatedly a random
/// number in `0..=sum of weights` picks the first record whose running sum reaches it. Zero-
/// weight records thus have a small chance when others weigh more, and all are chosen in the
/// end.
fn weighted_order(
    group: &mut [(SrvRecord, bool)],
    random: &mut dyn FnMut(u32) -> u32,
) -> Vec<(SrvRecord, bool)> {
    let mut left: Vec<(SrvRecord, bool)> = group.to_vec();
    left.sort_by_key(|(r, _)| r.weight != 0);
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let total: u32 = left.iter().map(|(r, _)| u32::from(r.weight)).sum();
        let pick = random(total).min(total);
        let mut running = 0u32;
        let index = left
            .iter()
            .position(|(r, _)| {
                running += u32::from(r.weight);
                running >= pick
            })
            .unwrap_or(0);
        out.push(left.remove(index));
    }
    out
}

/// `192.0.2.1`, `2001:db8::1` or `[2001:db8::1]` (the JID form) as an address.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// `name` as an absolute name, so the resolver's search domains never apply.
fn fqdn(name: &str) -> Result<hickory_resolver::proto::rr::Name, DnsError> {
    hickory_resolver::proto::rr::Name::from_utf8(format!("{name}.")).map_err(|e| {
        DnsError::BadName {
            name: name.to_owned(),
            reason: e.to_string(),
        }
    })
}

fn lookup_error(name: &str, e: &NetError) -> DnsError {
    DnsError::Lookup {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

// hickory's runtime on smol: spawning on kith's executor, UDP and TCP on async-io's reactor,
// async-io timers.

#[derive(Clone)]
struct SmolRuntime {
    ex: Arc<Executor<'static>>,
}

#[derive(Clone)]
struct SmolHandle(Arc<Executor<'static>>);

impl Spawn for SmolHandle {
    fn spawn_bg(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        // hickory owns these tasks (one per nameserver connection) and ends them itself.
        self.0.spawn(future).detach();
    }
}

#[derive(Clone, Copy)]
struct SmolTime;

#[async_trait::async_trait]
impl Time for SmolTime {
    async fn delay_for(duration: Duration) {
        Timer::after(duration).await;
    }

    async fn timeout<F: 'static + Future + Send>(
        duration: Duration,
        future: F,
    ) -> io::Result<F::Output> {
        async { Ok(future.await) }
            .or(async {
                Timer::after(duration).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await
    }
}

struct SmolUdp(Async<UdpSocket>);

#[async_trait::async_trait]
impl DnsUdpSocket for SmolUdp {
    type Time = SmolTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        loop {
            match self.0.get_ref().recv_from(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_readable(cx))?
                }
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.0.get_ref().send_to(buf, target) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_writable(cx))?
                }
                result => return Poll::Ready(result),
            }
        }
    }
}

/// A newtype because hickory's trait and smol's type are both foreign.
struct SmolTcp(smol::net::TcpStream);

impl DnsTcpStream for SmolTcp {
    type Time = SmolTime;
}

impl AsyncRead for SmolTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SmolTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl RuntimeProvider for SmolRuntime {
    type Handle = SmolHandle;
    type Timer = SmolTime;
    type Udp = SmolUdp;
    type Tcp = SmolTcp;

    fn create_handle(&self) -> SmolHandle {
        SmolHandle(self.ex.clone())
    }

    fn connect_tcp(
        &self,
        server: SocketAddr,
        // A source address is never configured in kith; honouring one needs bind-before-connect.
        _bind: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<SmolTcp>>>> {
        let timeout = timeout.unwrap_or(Duration::from_secs(5));
        Box::pin(async move {
            SmolTime::timeout(timeout, smol::net::TcpStream::connect(server))
                .await?
                .map(SmolTcp)
        })
    }

    fn bind_udp(
        &self,
        local: SocketAddr,
        _server: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<SmolUdp>>>> {
        Box::pin(async move { Ok(SmolUdp(Async::<UdpSocket>::bind(local)?)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }

    fn order(
        xmpps: Option<Vec<SrvRecord>>,
        xmpp: Option<Vec<SrvRecord>>,
        random: &mut dyn FnMut(u32) -> u32,
    ) -> Vec<(String, u16, bool)> {
        order_targets("example.test", xmpps, xmpp, random)
            .expect("targets")
            .into_iter()
            .map(|t| (t.host, t.port, t.direct_tls))
            .collect()
    }

    fn t(host: &str, port: u16, direct_tls: bool) -> (String, u16, bool) {
        (host.to_owned(), port, direct_tls)
    }

    #[test]
    fn no_srv_records_fall_back_to_the_domain_on_5269() {
        assert_eq!(
            order(None, None, &mut |_| 0),
            vec![t("example.test", 5269, false)]
        );
    }

    #[test]
    fn lower_priority_comes_first_whatever_the_weights() {
        let xmpp = vec![
            srv(20, 100, 5270, "b.example.test"),
            srv(10, 0, 5269, "a.example.test"),
            srv(30, 65535, 5271, "c.example.test"),
        ];
        // The largest random number at every step: weights never override priorities.
        assert_eq!(
            order(None, Some(xmpp), &mut |n| n),
            vec![
                t("a.example.test", 5269, false),
                t("b.example.test", 5270, false),
                t("c.example.test", 5271, false),
            ]
        );
    }

    #[test]
    fn weights_pick_by_running_sum() {
        let xmpp = || {
            Some(vec![
                srv(10, 60, 1, "sixty.example.test"),
                srv(10, 30, 2, "thirty.example.test"),
                srv(10, 10, 3, "ten.example.test"),
            ])
        };
        // 0..=60 hits the first, 61..=90 the second, 91..=100 the third (RFC 2782).
        let hosts = |random: u32| -> Vec<String> {
            let mut first = Some(random);
            order(None, xmpp(), &mut |n| first.take().unwrap_or(n))
                .into_iter()
                .map(|t| t.0)
                .collect()
        };
        assert_eq!(hosts(60)[0], "sixty.example.test");
        assert_eq!(hosts(61)[0], "thirty.example.test");
        assert_eq!(hosts(90)[0], "thirty.example.test");
        assert_eq!(hosts(91)[0], "ten.example.test");
        assert_eq!(hosts(100)[0], "ten.example.test");
        // After the first pick the rest is re-weighted: with 91 then the maximum, ten, then
        // of sixty and thirty (sum 90) the maximum reaches thirty last.
        assert_eq!(
            hosts(91),
            [
                "ten.example.test",
                "thirty.example.test",
                "sixty.example.test"
            ]
        );
    }

    #[test]
    fn zero_weights_go_first_in_the_draw_and_are_never_lost() {
        let xmpp = vec![
            srv(5, 50, 1, "heavy.example.test"),
            srv(5, 0, 2, "zero1.example.test"),
            srv(5, 0, 3, "zero2.example.test"),
        ];
        // A random 0 picks a zero-weight record (they are placed first); the maximum the heavy one.
        assert_eq!(
            order(None, Some(xmpp.clone()), &mut |_| 0)[0].0,
            "zero1.example.test"
        );
        let all = order(None, Some(xmpp), &mut |n| n);
        assert_eq!(all[0].0, "heavy.example.test");
        assert_eq!(all.len(), 3);
        // All weights zero: every record is still returned, in answer order for a random 0.
        let zeros = vec![
            srv(1, 0, 1, "a.example.test"),
            srv(1, 0, 2, "b.example.test"),
        ];
        assert_eq!(
            order(None, Some(zeros), &mut |_| 0),
            vec![t("a.example.test", 1, false), t("b.example.test", 2, false)]
        );
    }

    #[test]
    fn with_a_uniform_source_first_picks_follow_the_weights() {
        let xmpp = vec![
            srv(1, 300, 1, "a.example.test"),
            srv(1, 100, 2, "b.example.test"),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let draws = 4000;
        let a_first = (0..draws)
            .filter(|_| {
                order(None, Some(xmpp.clone()), &mut |n| rng.u32(0..=n))[0].0 == "a.example.test"
            })
            .count();
        // 300:100 gives a 301/401 chance (the extra 1: a draw of 0 hits the first record).
        assert!((2850..3150).contains(&a_first), "{a_first} of {draws}");
    }

    #[test]
    fn a_random_source_out_of_range_is_clamped() {
        let xmpp = vec![
            srv(1, 1, 1, "a.example.test"),
            srv(1, 1, 2, "b.example.test"),
        ];
        assert_eq!(order(None, Some(xmpp), &mut |_| u32::MAX).len(), 2);
    }

    #[test]
    fn direct_tls_and_starttls_records_merge_by_priority() {
        let xmpps = vec![
            srv(5, 0, 443, "tls.example.test"),
            srv(20, 0, 5270, "tls2.example.test"),
        ];
        let xmpp = vec![srv(10, 0, 5269, "plain.example.test")];
        assert_eq!(
            order(Some(xmpps), Some(xmpp), &mut |_| 0),
            vec![
                t("tls.example.test", 443, true),
                t("plain.example.test", 5269, false),
                t("tls2.example.test", 5270, true),
            ]
        );
    }

    #[test]
    fn equal_priorities_across_services_share_one_weighted_draw() {
        let xmpps = vec![srv(10, 1, 5223, "tls.example.test")];
        let xmpp = vec![srv(10, 99, 5269, "plain.example.test")];
        let first = |r: u32| {
            let mut once = Some(r);
            order(Some(xmpps.clone()), Some(xmpp.clone()), &mut |n| {
                once.take().unwrap_or(n)
            })[0]
                .clone()
        };
        assert_eq!(first(1), t("tls.example.test", 5223, true));
        assert_eq!(first(2), t("plain.example.test", 5269, false));
    }

    #[test]
    fn a_dot_target_on_xmpp_server_means_no_service() {
        let err = order_targets(
            "example.test",
            None,
            Some(vec![srv(0, 0, 0, "")]),
            &mut |_| 0,
        )
        .unwrap_err();
        assert!(matches!(err, DnsError::NoXmppService { ref domain } if domain == "example.test"));
        assert!(err.to_string().contains("offers no XMPP server service"));
        // Also when direct TLS is refused too.
        assert!(matches!(
            order_targets(
                "example.test",
                Some(vec![srv(0, 0, 0, "")]),
                Some(vec![srv(0, 0, 0, "")]),
                &mut |_| 0
            ),
            Err(DnsError::NoXmppService { .. })
        ));
    }

    #[test]
    fn a_dot_target_on_xmpps_server_only_rules_out_direct_tls() {
        let xmpps = Some(vec![srv(0, 0, 0, "")]);
        assert_eq!(
            order(xmpps.clone(), None, &mut |_| 0),
            vec![t("example.test", 5269, false)]
        );
        assert_eq!(
            order(
                xmpps,
                Some(vec![srv(1, 0, 5269, "x.example.test")]),
                &mut |_| 0
            ),
            vec![t("x.example.test", 5269, false)]
        );
        // And direct TLS hosts still count when only _xmpp-server says '.'.
        assert_eq!(
            order(
                Some(vec![srv(1, 0, 5223, "tls.example.test")]),
                Some(vec![srv(0, 0, 0, "")]),
                &mut |_| 0
            ),
            vec![t("tls.example.test", 5223, true)]
        );
    }

    #[test]
    fn a_dot_among_real_records_is_skipped() {
        let xmpp = vec![srv(0, 0, 0, ""), srv(1, 0, 5269, "x.example.test")];
        assert_eq!(
            order(None, Some(xmpp), &mut |_| 0),
            vec![t("x.example.test", 5269, false)]
        );
    }

    #[test]
    fn errors_name_what_was_looked_up() {
        let e = DnsError::Lookup {
            name: "_xmpp-server._tcp.example.org".into(),
            reason: "timed out".into(),
        };
        assert_eq!(
            e.to_string(),
            "DNS lookup of _xmpp-server._tcp.example.org failed: timed out"
        );
    }
}
