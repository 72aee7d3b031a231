//! `kith check dns`: the records clients and other servers use to find this server.
//!
//! Looked at: A/AAAA of the domain and of `upload.` and `conference.` under it; the SRV
//! records `_xmpp-client._tcp`, `_xmpps-client._tcp`, `_xmpp-server._tcp` and
//! `_xmpps-server._tcp` (RFC 6120 §3.2.1, XEP-0368): their ports against the configured
//! listeners, their targets' addresses; and whether every address record points at this
//! machine. `evaluate` is pure over the answers `gather` fetched (through `net::dns`), so every
//! rule has a unit test without a DNS server. Also the records to create, which `kith setup`
//! prints.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use smol::Executor;

use super::host::{is_public, HostAddresses};
use super::{Finding, Options, Part, Severity};
use crate::config::Config;
use crate::net::dns::{Family, Resolver, SrvRecord};

/// One SRV service and the listener that serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `_xmpp-client._tcp`, ...
    pub label: &'static str,
    /// The `[listen]` key.
    pub listener: &'static str,
    /// Where clients go without an SRV record (RFC 6120 §3.2.2); `None` for direct TLS, which
    /// is only found through SRV (XEP-0368).
    pub fallback_port: Option<u16>,
    /// The configured ports; empty when the listener is off.
    pub ports: Vec<u16>,
}

/// What the DNS server said about one host name. Errors are the lookup's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAnswer {
    pub v4: Result<Vec<IpAddr>, String>,
    pub v6: Result<Vec<IpAddr>, String>,
}

/// Everything `evaluate` looks at: SRV answers by service label, addresses by host name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    pub srv: BTreeMap<&'static str, Result<Option<Vec<SrvRecord>>, String>>,
    pub hosts: BTreeMap<String, HostAnswer>,
}

/// The four XMPP services and their configured ports.
pub fn services(config: &Config) -> Vec<Service> {
    let ports = |addrs: &[std::net::SocketAddr]| {
        let mut p: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
        p.dedup();
        p
    };
    let l = &config.listen;
    vec![
        Service {
            label: "_xmpp-client._tcp",
            listener: "c2s",
            fallback_port: Some(5222),
            ports: ports(&l.c2s),
        },
        Service {
            label: "_xmpps-client._tcp",
            listener: "c2s_direct_tls",
            fallback_port: None,
            ports: ports(&l.c2s_direct_tls),
        },
        Service {
            label: "_xmpp-server._tcp",
            listener: "s2s",
            fallback_port: Some(crate::net::dns::DEFAULT_S2S_PORT),
            ports: ports(&l.s2s),
        },
        Service {
            label: "_xmpps-server._tcp",
            listener: "s2s_direct_tls",
            fallback_port: None,
            ports: ports(&l.s2s_direct_tls),
        },
    ]
}

/// The names under the domain that need addresses: file upload and group chats.
pub fn subdomains(domain: &str) -> [String; 2] {
    [format!("upload.{domain}"), format!("conference.{domain}")]
}

/// The records a zone needs for this config, in zone-file syntax: A/AAAA for the domain and
/// its subdomains (this host's public addresses, or a placeholder), and one SRV record per
/// listening service.
pub fn records_to_create(config: &Config, host: &HostAddresses) -> Vec<String> {
    let domain = &config.domain;
    let mut out = Vec::new();
    let public = if host.sure { host.public() } else { Vec::new() };
    let names = std::iter::once(domain.clone()).chain(subdomains(domain));
    for name in names {
        if public.is_empty() {
            out.push(format!(
                "{name}. 3600 IN A <this server's public IPv4 address>"
            ));
        }
        for ip in &public {
            let kind = if ip.is_ipv4() { "A" } else { "AAAA" };
            out.push(format!("{name}. 3600 IN {kind} {ip}"));
        }
    }
    for s in services(config) {
        if let Some(port) = s.ports.first() {
            out.push(srv_record_text(s.label, domain, *port));
        }
    }
    out
}

/// `kith check dns`: fetch, then evaluate.
pub fn check(config: &Config, options: &Options) -> Vec<Finding> {
    let host = HostAddresses::discover(public_addresses(config, options));
    let ex = Arc::new(Executor::new());
    let resolver = match resolver(config, options, ex.clone()) {
        Ok(r) => r,
        Err(finding) => return vec![finding],
    };
    let services = services(config);
    let resolver = Arc::new(resolver);
    let answers = smol::block_on(ex.run(gather(&ex, resolver, &config.domain, &services)));
    evaluate(&config.domain, &services, &answers, &host)
}

/// `--public-ip`, else `[check] public_addresses`.
pub fn public_addresses<'a>(config: &'a Config, options: &'a Options) -> &'a [IpAddr] {
    if options.public_addresses.is_empty() {
        &config.check.public_addresses
    } else {
        &options.public_addresses
    }
}

/// The resolver `kith check` uses: `--resolver`, `[check] resolver`, or the system's.
pub fn resolver(
    config: &Config,
    options: &Options,
    ex: Arc<Executor<'static>>,
) -> Result<Resolver, Finding> {
    let server = options.resolver.or(config.check.resolver);
    let made = match server {
        Some(addr) => Resolver::with_nameserver(ex, addr),
        None => Resolver::from_system(ex),
    };
    let mut resolver = made.map_err(|e| {
        Finding::new(Part::Dns, Severity::Error, "resolver", e.to_string())
            .fix("check /etc/resolv.conf, or set [check] resolver = \"IP:PORT\"")
    })?;
    resolver.set_timeout(options.timeout.unwrap_or(Duration::from_secs(5)));
    Ok(resolver)
}

/// Fetches the SRV records of every service, then the addresses of the domain, its
/// subdomains and every SRV target. Lookups of one round run at once on `ex` (against an
/// unreachable DNS server, the run takes two timeouts, not one per name).
pub async fn gather(
    ex: &Arc<Executor<'static>>,
    resolver: Arc<Resolver>,
    domain: &str,
    services: &[Service],
) -> Answers {
    let mut answers = Answers::default();
    let srv_tasks: Vec<_> = services
        .iter()
        .map(|s| {
            let (resolver, name) = (resolver.clone(), format!("{}.{domain}", s.label));
            let task = ex
                .spawn(async move { resolver.srv_records(&name).await.map_err(|e| e.to_string()) });
            (s.label, task)
        })
        .collect();
    for (label, task) in srv_tasks {
        answers.srv.insert(label, task.await);
    }
    let mut names: Vec<String> = std::iter::once(domain.to_string())
        .chain(subdomains(domain))
        .collect();
    for records in answers.srv.values().flatten().flatten() {
        for r in records {
            if !r.target.is_empty() && !names.contains(&r.target) {
                names.push(r.target.clone());
            }
        }
    }
    let host_tasks: Vec<_> = names
        .into_iter()
        .map(|name| {
            let lookup = |family| {
                let (resolver, name) = (resolver.clone(), name.clone());
                ex.spawn(async move {
                    resolver
                        .lookup_family(&name, family)
                        .await
                        .map_err(|e| e.to_string())
                })
            };
            let (v4, v6) = (lookup(Family::V4), lookup(Family::V6));
            (name, v4, v6)
        })
        .collect();
    for (name, v4, v6) in host_tasks {
        let (v4, v6) = (v4.await, v6.await);
        answers.hosts.insert(name, HostAnswer { v4, v6 });
    }
    answers
}

/// The findings for `domain` given the answers. Pure.
pub fn evaluate(
    domain: &str,
    services: &[Service],
    answers: &Answers,
    host: &HostAddresses,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let any_srv = answers
        .srv
        .values()
        .any(|a| matches!(a, Ok(Some(rs)) if rs.iter().any(|r| !r.target.is_empty())));
    // The domain itself needs addresses unless SRV records send everyone elsewhere; HTTPS
    // (upload, invitations) is always at the names themselves.
    let domain_missing = if any_srv {
        Severity::Warning
    } else {
        Severity::Error
    };
    let mut checked = Vec::new();
    addresses(
        domain,
        answers.hosts.get(domain),
        host,
        domain_missing,
        &mut out,
    );
    checked.push(domain.to_string());
    for name in subdomains(domain) {
        addresses(
            &name,
            answers.hosts.get(&name),
            host,
            Severity::Warning,
            &mut out,
        );
        checked.push(name);
    }
    for s in services {
        srv(domain, s, answers, host, &mut checked, &mut out);
    }
    out
}

fn srv(
    domain: &str,
    s: &Service,
    answers: &Answers,
    host: &HostAddresses,
    checked: &mut Vec<String>,
    out: &mut Vec<Finding>,
) {
    let name = format!("{}.{domain}", s.label);
    let finding = |severity, what: String| Finding::new(Part::Dns, severity, name.clone(), what);
    let ports_text = ports_text(&s.ports);
    let record_fix = |port: u16| format!("publish {}", srv_record_text(s.label, domain, port));
    let records = match answers.srv.get(s.label) {
        None => return,
        Some(Err(e)) => {
            out.push(
                finding(Severity::Error, format!("SRV lookup failed: {e}"))
                    .fix("check that the domain's DNS servers answer (dig SRV NAME)"),
            );
            return;
        }
        Some(Ok(records)) => records,
    };
    let Some(records) = records else {
        let Some(&port) = s.ports.first() else {
            out.push(finding(
                Severity::Ok,
                format!("no SRV record, and [listen] {} is off", s.listener),
            ));
            return;
        };
        match s.fallback_port {
            Some(fallback) if s.ports.contains(&fallback) => out.push(finding(
                Severity::Ok,
                format!("no SRV record; connections go to {domain}:{fallback}, where kith listens"),
            )),
            Some(fallback) => out.push(
                finding(
                    Severity::Error,
                    format!("no SRV record, so connections go to {domain}:{fallback}, but kith listens for {} on {ports_text}", s.listener),
                )
                .fix(record_fix(port)),
            ),
            None => out.push(
                finding(
                    Severity::Warning,
                    format!("no SRV record: nobody learns that kith offers direct TLS on {ports_text} (XEP-0368)"),
                )
                .fix(record_fix(port)),
            ),
        }
        return;
    };
    let real: Vec<&SrvRecord> = records.iter().filter(|r| !r.target.is_empty()).collect();
    if real.is_empty() {
        match s.ports.first() {
            None => out.push(finding(Severity::Ok, "says the service is not offered ('.'), and it is off".into())),
            Some(&port) => out.push(
                finding(
                    Severity::Warning,
                    format!("says the service is not offered (target '.'), but kith listens for {} on {ports_text}", s.listener),
                )
                .fix(format!("replace it: {}", srv_record_text(s.label, domain, port))),
            ),
        }
        return;
    }
    if s.ports.is_empty() {
        out.push(
            finding(
                Severity::Warning,
                format!(
                    "SRV records are published, but [listen] {} is off",
                    s.listener
                ),
            )
            .fix(format!(
                "remove the records, or set [listen] {} in the config",
                s.listener
            )),
        );
        return;
    }
    for r in real {
        let about = format!("{name} -> {}:{}", r.target, r.port);
        let mut fine = true;
        if !s.ports.contains(&r.port) {
            fine = false;
            out.push(
                Finding::new(
                    Part::Dns,
                    Severity::Error,
                    about.clone(),
                    format!(
                        "port {} is not where kith listens for {} ({ports_text})",
                        r.port, s.listener
                    ),
                )
                .fix(format!("change the record's port to {}", s.ports[0])),
            );
        }
        match answers.hosts.get(&r.target) {
            Some(HostAnswer {
                v4: Ok(v4),
                v6: Ok(v6),
            }) if v4.is_empty() && v6.is_empty() => {
                fine = false;
                out.push(
                    Finding::new(
                        Part::Dns,
                        Severity::Error,
                        about.clone(),
                        format!("the target {} has no A or AAAA record", r.target),
                    )
                    .fix(format!(
                        "add an A record for {} pointing here, or point the SRV record at {domain}",
                        r.target
                    )),
                );
            }
            _ if checked.contains(&r.target) => {}
            answer => {
                checked.push(r.target.clone());
                let before = out.len();
                addresses(&r.target, answer, host, Severity::Error, out);
                fine &= !out[before..].iter().any(|f| f.severity.is_problem());
            }
        }
        if fine {
            out.push(Finding::new(
                Part::Dns,
                Severity::Ok,
                about,
                format!(
                    "points to a host of this server, port {} ({})",
                    r.port, s.listener
                ),
            ));
        }
    }
}

/// The address findings for one name: missing records (with `missing` severity), failed
/// lookups, and each record that does not point here.
fn addresses(
    name: &str,
    answer: Option<&HostAnswer>,
    host: &HostAddresses,
    missing: Severity,
    out: &mut Vec<Finding>,
) {
    let Some(answer) = answer else {
        return;
    };
    let mut ips = Vec::new();
    for (kind, result) in [("A", &answer.v4), ("AAAA", &answer.v6)] {
        match result {
            Ok(list) => ips.extend(list.iter().map(|ip| (kind, *ip))),
            Err(e) => out.push(
                Finding::new(
                    Part::Dns,
                    Severity::Error,
                    name,
                    format!("{kind} lookup failed: {e}"),
                )
                .fix("check that the domain's DNS servers answer"),
            ),
        }
    }
    let lookups_ok = answer.v4.is_ok() && answer.v6.is_ok();
    if ips.is_empty() {
        if lookups_ok {
            let fix = match host.public().first() {
                Some(ip) if host.sure => format!(
                    "add {name}. 3600 IN {} {ip}",
                    if ip.is_ipv4() { "A" } else { "AAAA" }
                ),
                _ => format!("add an A record for {name} with this server's public address"),
            };
            out.push(Finding::new(Part::Dns, missing, name, "has no A or AAAA record").fix(fix));
        }
        return;
    }
    let mut here = Vec::new();
    for (kind, ip) in ips {
        if host.contains(ip) {
            here.push(format!("{kind} {ip}"));
            continue;
        }
        let subject = format!("{name} {kind} {ip}");
        let finding = if !host.sure {
            Finding::new(
                Part::Dns,
                Severity::Note,
                subject,
                "cannot tell whether this points here: this machine has only private addresses (behind NAT?)",
            )
            .fix("set [check] public_addresses = [\"YOUR.PUBLIC.IP\"] or pass --public-ip")
        } else if !is_public(ip) {
            Finding::new(
                Part::Dns,
                Severity::Error,
                subject,
                "points to an internal address that others cannot reach",
            )
            .fix(format!("change it to {}", show_ips(&host.public())))
        } else {
            Finding::new(
                Part::Dns,
                Severity::Error,
                subject,
                format!("points to another machine, not this server ({})", show_ips(&host.public())),
            )
            .fix(format!(
                "change the record to {} (or, if this server is behind NAT, set [check] public_addresses)",
                show_ips(&host.public())
            ))
        };
        out.push(finding);
    }
    if !here.is_empty() {
        out.push(Finding::new(
            Part::Dns,
            Severity::Ok,
            name,
            format!("{} (this server)", here.join(", ")),
        ));
    }
}

/// `_xmpp-client._tcp.example.org. 3600 IN SRV 0 5 5222 example.org.`
pub fn srv_record_text(label: &str, domain: &str, port: u16) -> String {
    format!("{label}.{domain}. 3600 IN SRV 0 5 {port} {domain}.")
}

fn ports_text(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    match list.len() {
        1 => format!("port {}", list[0]),
        _ => format!("ports {}", list.join(", ")),
    }
}

fn show_ips(ips: &[IpAddr]) -> String {
    let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    if list.is_empty() {
        "this server's address".into()
    } else {
        list.join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: &str = "203.0.113.7";

    fn host() -> HostAddresses {
        HostAddresses {
            addresses: vec!["127.0.0.1".parse().unwrap(), HERE.parse().unwrap()],
            sure: true,
        }
    }

    fn a(ips: &[&str]) -> HostAnswer {
        HostAnswer {
            v4: Ok(ips.iter().map(|s| s.parse().unwrap()).collect()),
            v6: Ok(Vec::new()),
        }
    }

    fn srv(port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority: 0,
            weight: 5,
            port,
            target: target.into(),
        }
    }

    fn services() -> Vec<Service> {
        super::services(&Config::defaults())
    }

    /// Good answers: every name points here, SRV records for all four services.
    fn good() -> Answers {
        let mut answers = Answers::default();
        for name in [
            "example.org",
            "upload.example.org",
            "conference.example.org",
            "xmpp.example.org",
        ] {
            answers.hosts.insert(name.into(), a(&[HERE]));
        }
        answers.srv.insert(
            "_xmpp-client._tcp",
            Ok(Some(vec![srv(5222, "xmpp.example.org")])),
        );
        answers.srv.insert(
            "_xmpps-client._tcp",
            Ok(Some(vec![srv(5223, "example.org")])),
        );
        answers.srv.insert(
            "_xmpp-server._tcp",
            Ok(Some(vec![srv(5269, "example.org")])),
        );
        answers.srv.insert(
            "_xmpps-server._tcp",
            Ok(Some(vec![srv(5270, "example.org")])),
        );
        answers
    }

    fn problems(answers: &Answers, host: &HostAddresses) -> Vec<String> {
        evaluate("example.org", &services(), answers, host)
            .into_iter()
            .filter(|f| f.severity != Severity::Ok)
            .map(|f| format!("{} {}: {}", f.severity.as_str(), f.subject, f.what))
            .collect()
    }

    #[test]
    fn good_records_have_no_problems() {
        assert_eq!(problems(&good(), &host()), Vec::<String>::new());
        let all = evaluate("example.org", &services(), &good(), &host());
        assert!(all
            .iter()
            .any(|f| f.subject == "_xmpp-client._tcp.example.org -> xmpp.example.org:5222"));
    }

    #[test]
    fn each_broken_record_is_its_own_finding() {
        let mut answers = good();
        answers
            .hosts
            .insert("example.org".into(), a(&["198.51.100.9"]));
        answers.hosts.insert("upload.example.org".into(), a(&[]));
        answers
            .hosts
            .insert("conference.example.org".into(), a(&["10.0.0.5"]));
        answers.srv.insert(
            "_xmpp-client._tcp",
            Ok(Some(vec![srv(5999, "xmpp.example.org")])),
        );
        answers.srv.insert(
            "_xmpps-client._tcp",
            Ok(Some(vec![srv(5223, "gone.example.org")])),
        );
        answers.hosts.insert("gone.example.org".into(), a(&[]));
        answers.srv.insert("_xmpps-server._tcp", Ok(None));
        let found = problems(&answers, &host());
        assert_eq!(
            found,
            [
                "error example.org A 198.51.100.9: points to another machine, not this server (203.0.113.7)",
                "warning upload.example.org: has no A or AAAA record",
                "error conference.example.org A 10.0.0.5: points to an internal address that others cannot reach",
                "error _xmpp-client._tcp.example.org -> xmpp.example.org:5999: port 5999 is not where kith listens for c2s (port 5222)",
                "error _xmpps-client._tcp.example.org -> gone.example.org:5223: the target gone.example.org has no A or AAAA record",
                "warning _xmpps-server._tcp.example.org: no SRV record: nobody learns that kith offers direct TLS on port 5270 (XEP-0368)",
            ]
        );
        // The fixes name the record to publish.
        let all = evaluate("example.org", &services(), &answers, &host());
        let fix = all
            .iter()
            .find(|f| f.subject == "_xmpps-server._tcp.example.org")
            .and_then(|f| f.fix.clone());
        assert_eq!(
            fix.as_deref(),
            Some("publish _xmpps-server._tcp.example.org. 3600 IN SRV 0 5 5270 example.org.")
        );
    }

    #[test]
    fn missing_srv_is_fine_on_default_ports_but_not_elsewhere() {
        let mut answers = good();
        answers.srv.insert("_xmpp-client._tcp", Ok(None));
        assert!(problems(&answers, &host()).is_empty());
        let mut config = Config::defaults();
        config.listen.c2s = vec!["[::]:5999".parse().unwrap()];
        let found = evaluate("example.org", &super::services(&config), &answers, &host());
        let f = found
            .iter()
            .find(|f| f.subject == "_xmpp-client._tcp.example.org")
            .unwrap();
        assert_eq!(f.severity, Severity::Error);
        assert!(f.what.contains("port 5999"), "{f:?}");
    }

    #[test]
    fn dot_targets_and_listeners_that_are_off() {
        let mut answers = good();
        answers
            .srv
            .insert("_xmpps-client._tcp", Ok(Some(vec![srv(0, "")])));
        let mut config = Config::defaults();
        config.listen.s2s = vec![];
        let found: Vec<String> =
            evaluate("example.org", &super::services(&config), &answers, &host())
                .into_iter()
                .filter(|f| f.severity.is_problem())
                .map(|f| f.what)
                .collect();
        assert_eq!(
            found,
            [
                "says the service is not offered (target '.'), but kith listens for c2s_direct_tls on port 5223",
                "SRV records are published, but [listen] s2s is off",
            ]
        );
    }

    #[test]
    fn unsure_host_gives_notes_not_errors() {
        let mut answers = good();
        answers
            .hosts
            .insert("example.org".into(), a(&["198.51.100.9"]));
        let unsure = HostAddresses {
            addresses: vec!["192.168.1.5".parse().unwrap()],
            sure: false,
        };
        let all = evaluate("example.org", &services(), &answers, &unsure);
        assert!(!all.iter().any(|f| f.severity.is_problem()), "{all:?}");
        assert!(all
            .iter()
            .any(|f| f.severity == Severity::Note && f.subject == "example.org A 198.51.100.9"));
    }

    #[test]
    fn lookup_failures_and_no_address_at_all() {
        let mut answers = good();
        answers.srv = BTreeMap::new();
        answers.hosts.insert(
            "example.org".into(),
            HostAnswer {
                v4: Err("SERVFAIL".into()),
                v6: Ok(vec![]),
            },
        );
        answers
            .srv
            .insert("_xmpp-client._tcp", Err("timed out".into()));
        let found = problems(&answers, &host());
        assert_eq!(
            found,
            [
                "error example.org: A lookup failed: SERVFAIL",
                "error _xmpp-client._tcp.example.org: SRV lookup failed: timed out",
            ]
        );
        answers.hosts.insert("example.org".into(), a(&[]));
        let found = problems(&answers, &host());
        assert_eq!(found[0], "error example.org: has no A or AAAA record");
    }

    #[test]
    fn records_to_create_for_setup() {
        let records = records_to_create(
            &Config {
                domain: "example.org".into(),
                ..Config::defaults()
            },
            &host(),
        );
        assert!(
            records.contains(&"example.org. 3600 IN A 203.0.113.7".to_string()),
            "{records:?}"
        );
        assert!(records.contains(&"upload.example.org. 3600 IN A 203.0.113.7".to_string()));
        assert!(!records.iter().any(|r| r.contains("127.0.0.1")));
        assert!(records.contains(
            &"_xmpps-client._tcp.example.org. 3600 IN SRV 0 5 5223 example.org.".to_string()
        ));
        assert_eq!(records.len(), 3 + 4);
    }
}
