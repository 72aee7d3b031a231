//! `net::dns` against a real DNS server: Debian's dnsmasq (`apt-get install dnsmasq-base`) on a
//! free loopback port, serving SRV and A/AAAA records for made-up `.test` domains. Checks the
//! XMPP server targets (XEP-0368 and RFC 6120 SRV records, merged by priority), the `.` target,
//! the fallback without SRV, address lookups and the error text of a failing lookup; and the
//! timeout against a nameserver that never answers (no dnsmasq needed for that one).
//!
//! A missing dnsmasq is a test failure unless `KITH_SKIP_INTEROP=1` says to skip, as in the
//! other interop tests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kith::net::dns::{DnsError, Resolver, Target};
use smol::Executor;

mod common;
use common::dnsmasq::{self, silent_dns_port, Dnsmasq};

/// The records dnsmasq serves (`--srv-host=NAME,TARGET,PORT,PRIORITY,WEIGHT`).
const RECORDS: &[&str] = &[
    // example.test: direct TLS at priority 5 and 20, STARTTLS at priority 10.
    "--srv-host=_xmpps-server._tcp.example.test,tls.example.test,5270,5,0",
    "--srv-host=_xmpps-server._tcp.example.test,tls2.example.test,5271,20,0",
    "--srv-host=_xmpp-server._tcp.example.test,xmpp.example.test,5269,10,0",
    "--host-record=xmpp.example.test,127.0.0.1,::1",
    "--host-record=tls.example.test,127.0.0.2",
    "--host-record=v6only.example.test,::2",
    // nope.test: "service decidedly not available" (an SRV record without a target is '.').
    "--srv-host=_xmpp-server._tcp.nope.test",
    // plain.test: no SRV records at all.
    "--host-record=plain.test,127.0.0.3",
];

/// Starts dnsmasq with `RECORDS`, or returns None when it is missing and KITH_SKIP_INTEROP=1.
fn start_dnsmasq() -> Option<Dnsmasq> {
    if !dnsmasq::available() {
        return None;
    }
    let records: Vec<String> = RECORDS.iter().map(|r| r.to_string()).collect();
    Some(Dnsmasq::start(&records))
}

fn target(host: &str, port: u16, direct_tls: bool) -> Target {
    Target {
        host: host.to_owned(),
        port,
        direct_tls,
    }
}

#[test]
fn kith_resolves_xmpp_server_targets_through_dnsmasq() {
    let Some(dnsmasq) = start_dnsmasq() else {
        return;
    };
    let ex = Arc::new(Executor::new());
    let resolver = Resolver::with_nameserver(ex.clone(), dnsmasq.addr).expect("resolver");
    smol::block_on(ex.run(async {
        // Both services, merged by priority (all weights zero, so no randomness involved).
        assert_eq!(
            resolver.xmpp_server_targets("example.test").await.unwrap(),
            vec![
                target("tls.example.test", 5270, true),
                target("xmpp.example.test", 5269, false),
                target("tls2.example.test", 5271, true),
            ]
        );
        // A trailing dot changes nothing.
        assert_eq!(
            resolver.xmpp_server_targets("example.test.").await.unwrap()[0],
            target("tls.example.test", 5270, true)
        );

        // '.': no XMPP service, a distinct error.
        let err = resolver.xmpp_server_targets("nope.test").await.unwrap_err();
        assert!(
            matches!(err, DnsError::NoXmppService { ref domain } if domain == "nope.test"),
            "{err:?}"
        );

        // No SRV at all: the domain on 5269.
        assert_eq!(
            resolver.xmpp_server_targets("plain.test").await.unwrap(),
            vec![target("plain.test", 5269, false)]
        );
        // Also for a domain that does not exist (NXDOMAIN): connecting will fail later.
        assert_eq!(
            resolver.xmpp_server_targets("absent.test").await.unwrap(),
            vec![target("absent.test", 5269, false)]
        );

        // Addresses: IPv6 first.
        assert_eq!(
            resolver.lookup_ips("xmpp.example.test").await.unwrap(),
            vec![
                "::1".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
        assert_eq!(
            resolver.lookup_ips("tls.example.test.").await.unwrap(),
            vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            resolver.lookup_ips("v6only.example.test").await.unwrap(),
            vec!["::2".parse::<IpAddr>().unwrap()]
        );
        // IP literals are not looked up.
        assert_eq!(
            resolver.xmpp_server_targets("[::1]").await.unwrap(),
            vec![target("::1", 5269, false)]
        );
        assert_eq!(
            resolver.lookup_ips("192.0.2.7").await.unwrap(),
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        let err = resolver.lookup_ips("absent.test").await.unwrap_err();
        assert!(matches!(err, DnsError::NoAddresses { .. }), "{err:?}");
        assert_eq!(err.to_string(), "absent.test has no A or AAAA records");

        // dnsmasq has no upstream for names outside .test and answers REFUSED: a lookup error
        // that names what was looked up, not a silent fallback.
        let err = resolver
            .xmpp_server_targets("example.org")
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("DNS lookup of _xmpp-server._tcp.example.org failed: "),
            "{err}"
        );
        eprintln!("a failed lookup reads: {err}");
    }));
    drop(dnsmasq);
}

#[test]
fn a_nameserver_that_never_answers_times_out_with_the_name() {
    // Bound but never read (UDP) and never served (TCP: the kernel accepts, nobody answers).
    let (port, _udp, _tcp) = silent_dns_port();
    let ex = Arc::new(Executor::new());
    let mut resolver =
        Resolver::with_nameserver(ex.clone(), SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("resolver");
    resolver.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = smol::block_on(ex.run(resolver.xmpp_server_targets("example.test"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "DNS lookup of _xmpp-server._tcp.example.test failed: no answer within 500ms"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = smol::block_on(ex.run(resolver.lookup_ips("xmpp.example.test"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "DNS lookup of xmpp.example.test failed: no answer within 500ms"
    );
}
