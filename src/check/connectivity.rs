//! `kith check connectivity`: can the listeners be reached where clients and servers will
//! look, i.e. at the domain's public addresses (from DNS) on each configured port? A TCP
//! connection per address and listener, with a short timeout; on the STARTTLS client port also
//! an XMPP stream header exchange (RFC 6120 §4.2), which tells kith from another program on
//! the port. Run on the server itself this proves the port is open on that address, not that
//! a router forwards it; the findings say so.
//!
//! A blocking client on std sockets: it runs in the CLI, outside the server's executor; the
//! addresses come through `net::dns` on a small executor of its own.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::Executor;

use super::{Finding, Options, Part, Severity};
use crate::config::Config;
use crate::net::dns::Family;

/// `kith check connectivity`.
pub fn check(config: &Config, options: &Options) -> Vec<Finding> {
    let timeout = options.timeout.unwrap_or(Duration::from_secs(5));
    let ex = Arc::new(Executor::new());
    let resolver = match super::dns::resolver(config, options, ex.clone()) {
        Ok(r) => r,
        Err(mut f) => {
            f.part = Part::Connectivity;
            return vec![f];
        }
    };
    let domain = config.domain.clone();
    let ips: Vec<IpAddr> = smol::block_on(ex.run(async {
        let mut ips = Vec::new();
        for family in [Family::V4, Family::V6] {
            ips.extend(
                resolver
                    .lookup_family(&domain, family)
                    .await
                    .unwrap_or_default(),
            );
        }
        ips
    }));
    if ips.is_empty() {
        return vec![Finding::new(
            Part::Connectivity,
            Severity::Error,
            domain,
            "has no address in DNS, so nothing can connect to it",
        )
        .fix("add an A record for the domain (see 'kith check dns')")];
    }
    let l = &config.listen;
    let mut out = Vec::new();
    for (kind, addrs) in [
        ("c2s", &l.c2s),
        ("c2s_direct_tls", &l.c2s_direct_tls),
        ("s2s", &l.s2s),
        ("s2s_direct_tls", &l.s2s_direct_tls),
        ("https", &l.https),
    ] {
        let mut ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
        ports.dedup();
        if ports.is_empty() {
            continue;
        }
        for port in ports {
            for ip in &ips {
                let addr = SocketAddr::new(*ip, port);
                out.push(probe(kind, &config.domain, addr, timeout));
            }
        }
    }
    out
}

/// One connection attempt and its finding.
fn probe(kind: &str, domain: &str, addr: SocketAddr, timeout: Duration) -> Finding {
    let subject = format!("{kind} {domain} {addr}");
    let started = Instant::now();
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return Finding::new(Part::Connectivity, Severity::Error, subject, format!("cannot connect: {e}"))
                .fix(format!(
                    "is kith running? Open TCP port {} in the firewall, and forward it to this machine if it is behind a router",
                    addr.port()
                ))
        }
    };
    if kind != "c2s" {
        return Finding::new(
            Part::Connectivity,
            Severity::Ok,
            subject,
            format!(
                "TCP connection accepted in {} ms",
                started.elapsed().as_millis()
            ),
        );
    }
    match stream_header_exchange(&mut stream, domain, timeout) {
        Ok(()) => Finding::new(
            Part::Connectivity,
            Severity::Ok,
            subject,
            format!("XMPP stream opened, STARTTLS offered, in {} ms", started.elapsed().as_millis()),
        ),
        Err(e) => Finding::new(Part::Connectivity, Severity::Error, subject, e)
            .fix("another program may own this port, or a proxy stands in between: check what listens there (ss -ltnp)"),
    }
}

/// Sends a client stream header and waits for the server's features with STARTTLS.
fn stream_header_exchange(
    stream: &mut TcpStream,
    domain: &str,
    timeout: Duration,
) -> Result<(), String> {
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        crate::xml::escape_attr_value(domain)
    );
    stream
        .write_all(header.as_bytes())
        .map_err(|e| format!("connected, but sending a stream header failed: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && got.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // What came before a reset still tells who answered.
            Err(_) if !got.is_empty() => break,
            Err(e) => return Err(format!("connected, but no XMPP answer: {e}")),
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains("</stream:features>") {
            let _ = stream.write_all(b"</stream:stream>");
            return if text.contains("urn:ietf:params:xml:ns:xmpp-tls") {
                Ok(())
            } else {
                Err("the server answers but does not offer STARTTLS".into())
            };
        }
    }
    let text = String::from_utf8_lossy(&got);
    if text.contains("<stream:stream") {
        Err("the server opened a stream but sent no features".into())
    } else if text.is_empty() {
        Err("connected, but nothing answered the XMPP stream header".into())
    } else {
        Err(format!(
            "something else answers on this port: {:?}",
            text.chars().take(60).collect::<String>()
        ))
    }
}
