//! Certificates end to end: ACME against Debian's `pebble` (a small ACME test CA), and the
//! `[tls]` file reload.
//!
//! The ACME test builds a throwaway CA for pebble's own HTTPS (`[acme] directory_ca` trusts
//! it), runs dnsmasq on loopback mapping `kith.test`, `upload.kith.test` and
//! `conference.kith.test` to 127.0.0.1 (pebble's `-dnsserver`), and points pebble's
//! TLS-ALPN-01 checks at kith's direct-TLS port. It then checks that kith serves a certificate
//! chaining to pebble's root for all three names, that a restart reuses the cached certificate
//! without a new order, and that a renewal (pebble issues certificates valid for
//! `LIFETIME`, renewed after two thirds of it) is served without a restart.
//!
//! `install_and_setup_lead_to_a_server_with_a_pebble_certificate` is the appliance path:
//! `scripts/install.sh` into a scratch root, an unattended `kith setup` choosing ACME, the
//! installed binary getting its certificate, the admin logging in.
//!
//! pebble and dnsmasq come from Debian (`apt-get install pebble dnsmasq-base`, as `.ci/run`
//! does); missing, they fail the test unless `KITH_SKIP_INTEROP=1` turns that into a loud skip.

mod common;

use std::io::{Read as _, Write as _};

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dnsmasq::{Dnsmasq, DNSMASQ};
use common::{free_port, Options, TestServer};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

const PEBBLE: &str = "/usr/bin/pebble";
const DOMAIN: &str = "kith.test";
const NAMES: [&str; 3] = ["kith.test", "upload.kith.test", "conference.kith.test"];
/// Certificate lifetime pebble is told to use; rustls-acme renews after two thirds of it. Long
/// enough for the issuance checks and a restart to happen before the renewal starts.
const LIFETIME: Duration = Duration::from_secs(24);

/// A child process killed (by its own PID) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acme_certificate_from_pebble_for_all_names_cached_and_renewed() {
    if !tools_present() {
        return;
    }
    let started = Instant::now();
    let dir = common::unique_temp_dir();
    let ca = test_ca(&dir);
    let (_dns, dns_port) = start_dnsmasq();

    // kith first: pebble's TLS-ALPN-01 checks must reach its HTTPS port (443 in real life),
    // which the harness picks. Its first order fails (pebble is not up yet) and is retried
    // in 1 s.
    let acme_port = free_port();
    let mut server = Options::default()
        .domain(DOMAIN)
        .listen("https")
        .extra_toml(&format!(
            "[acme]\nemail = \"admin@{DOMAIN}\"\ndirectory = \"https://127.0.0.1:{acme_port}/dir\"\n\
             directory_ca = \"{}\"\n",
            ca.display()
        ))
        .start();
    let (_pebble, mgmt_port) =
        start_pebble(&dir, acme_port, dns_port, free_port(), server.port("https"));
    let root = pebble_root(&ca, mgmt_port);

    assert!(
        server.wait_for_log("acme: new certificate for", Duration::from_secs(30)),
        "no certificate from pebble within 30 s\n{}",
        server.log_report()
    );
    let issued = started.elapsed();
    let first = served_leaf(&server, &root, NAMES[0]).expect("kith.test verifies");
    for name in &NAMES[1..] {
        let leaf = served_leaf(&server, &root, name)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.log_report()));
        assert_eq!(leaf, first, "one certificate for all names");
    }
    // Not the self-signed fallback: that one does not chain to pebble's root at all.
    assert!(server
        .log()
        .contains("acme: answered a TLS-ALPN-01 challenge for upload.kith.test"));
    // The cache holds keys: only the owner may enter it.
    let mode = std::fs::metadata(server.data_dir.join("acme")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );

    // A restart uses the cached certificate: no new order.
    let before = server.log().len();
    server.restart();
    assert!(
        server.wait_for_log(
            "acme: using the cached certificate",
            Duration::from_secs(10)
        ),
        "{}",
        server.log_report()
    );
    let after_restart = server.log()[before..].to_string();
    assert!(
        !after_restart.contains("ordering one") && !after_restart.contains("new certificate"),
        "a restart ordered again\n{}",
        server.log_report()
    );
    assert_eq!(served_leaf(&server, &root, NAMES[1]).unwrap(), first);

    // Renewal: the same process serves a new certificate once two thirds of the lifetime
    // passed.
    let pid = server.pid();
    let deadline = Instant::now() + LIFETIME + Duration::from_secs(15);
    let renewed = loop {
        let leaf = served_leaf(&server, &root, NAMES[2]).expect("verifies during renewal");
        if leaf != first {
            break leaf;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal served within {:?}\n{}",
            deadline,
            server.log_report()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(server.pid(), pid, "renewed without a restart");
    assert_eq!(served_leaf(&server, &root, NAMES[0]).unwrap(), renewed);
    assert!(server
        .log()
        .contains("acme: renewed certificate for kith.test"));
    eprintln!(
        "acme e2e: issued after {:.1?}, renewal served after {:.1?}",
        issued,
        started.elapsed()
    );
    let status = server.stop();
    assert!(status.success(), "{}", server.log_report());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_files_are_reloaded_when_they_change() {
    let dir = common::unique_temp_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let first = write_pair(&cert, &key, "localhost");
    let server = Options::default()
        .extra_toml(&format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ))
        .start();
    let roots = |ca: &CertificateDer<'static>| {
        let mut r = RootCertStore::empty();
        r.add(ca.clone()).unwrap();
        r
    };
    assert_eq!(
        served_leaf(&server, &roots(&first), "localhost").unwrap(),
        first.to_vec()
    );

    // New files in place of the old (a renewal by certbot or by hand): served without a
    // restart, within one poll of the files (5 s).
    let (new_cert, new_key) = (dir.join("new-cert.pem"), dir.join("new-key.pem"));
    let second = write_pair(&new_cert, &new_key, "localhost");
    let swapped = Instant::now();
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();
    let deadline = swapped + Duration::from_secs(15);
    loop {
        if served_leaf(&server, &roots(&second), "localhost").is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reloaded\n{}",
            server.log_report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "tls reload: new certificate served {:.1?} after the swap",
        swapped.elapsed()
    );
    assert!(
        server.log().contains("tls: reloaded"),
        "{}",
        server.log_report()
    );

    // A broken file keeps the certificate in service, and says so once it stayed broken for
    // a poll (up to three polls when one catches the write half done).
    std::fs::write(&cert, "not a certificate\n").unwrap();
    assert!(
        server.wait_for_log(
            "still serving the previous certificate",
            Duration::from_secs(25)
        ),
        "{}",
        server.log_report()
    );
    assert!(served_leaf(&server, &roots(&second), "localhost").is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTTP-01 (`[acme] challenge = "http-01"`) through kith's own plain HTTP listener (port 80
/// in real life): pebble fetches `/.well-known/acme-challenge/TOKEN` from it for each name.
#[test]
fn acme_http01_through_the_plain_http_listener() {
    if !tools_present() {
        return;
    }
    let dir = common::unique_temp_dir();
    let ca = test_ca(&dir);
    let (_dns, dns_port) = start_dnsmasq();
    let acme_port = free_port();
    let mut server = Options::default()
        .domain(DOMAIN)
        .listen("http")
        .extra_toml(&format!(
            "[acme]\nemail = \"admin@{DOMAIN}\"\ndirectory = \"https://127.0.0.1:{acme_port}/dir\"\n\
             directory_ca = \"{}\"\nchallenge = \"http-01\"\n",
            ca.display()
        ))
        .start();
    let (_pebble, mgmt_port) =
        start_pebble(&dir, acme_port, dns_port, server.port("http"), free_port());
    let root = pebble_root(&ca, mgmt_port);
    assert!(
        server.wait_for_log("acme: new certificate for", Duration::from_secs(30)),
        "no certificate from pebble by HTTP-01 within 30 s\n{}",
        server.log_report()
    );
    for name in NAMES {
        served_leaf(&server, &root, name)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.log_report()));
    }
    // Without a pending challenge the path is just not found.
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port("http"))).unwrap();
    tcp.write_all(b"GET /.well-known/acme-challenge/nothing HTTP/1.1\r\nHost: kith.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let status = server.stop();
    assert!(status.success(), "{}", server.log_report());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The appliance path of issue #4 end to end: `scripts/install.sh` into a scratch root runs an
/// unattended `kith setup` that chooses ACME (pointed at pebble); the installed binary then
/// runs the written config and gets its certificate, and the admin setup created logs in.
#[test]
fn install_and_setup_lead_to_a_server_with_a_pebble_certificate() {
    if !tools_present() {
        return;
    }
    let dir = common::unique_temp_dir();
    let ca = test_ca(&dir);
    let (_dns, dns_port) = start_dnsmasq();
    let acme_port = free_port();
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let mut install = Command::new("bash")
        .arg(script)
        .args([
            "--root",
            &root.display().to_string(),
            "--binary",
            common::KITH_BIN,
            "--",
        ])
        .args([
            "--domain",
            DOMAIN,
            "--admin",
            "admin",
            "--yes",
            "--no-start",
        ])
        .args(["--acme-email", "admin@kith.test"])
        .args([
            "--acme-directory",
            &format!("https://127.0.0.1:{acme_port}/dir"),
        ])
        .args(["--acme-ca", &ca.display().to_string()])
        .args([
            "--resolver",
            &format!("127.0.0.1:{dns_port}"),
            "--public-ip",
            "127.0.0.1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run install.sh");
    install
        .stdin
        .take()
        .unwrap()
        .write_all(b"admin-secret\n")
        .unwrap();
    let out = install.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::describe_output(&out));

    // The written config, on free loopback ports instead of the real ones (other tests run
    // beside this one). Setup writes only what differs from the defaults: no [listen].
    let config_path = root.join("etc/kith/kith.toml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        config.contains("[acme]") && config.contains("admin@kith.test"),
        "{config}"
    );
    assert!(
        !config.contains("[listen]") && !config.contains("[turn]"),
        "{config}"
    );
    let (c2s, direct, https) = (free_port(), free_port(), free_port());
    config.push_str(&format!(
        "\n[turn]\nenabled = false\n\n[listen]\nc2s = [\"127.0.0.1:{c2s}\"]\n\
         c2s_direct_tls = [\"127.0.0.1:{direct}\"]\nhttps = [\"127.0.0.1:{https}\"]\n\
         http = []\ns2s = []\ns2s_direct_tls = []\n"
    ));
    std::fs::write(&config_path, config).unwrap();

    let (_pebble, mgmt_port) = start_pebble(&dir, acme_port, dns_port, free_port(), https);
    let roots = pebble_root(&ca, mgmt_port);
    let log_path = dir.join("kith.log");
    let kith = Command::new(root.join("usr/local/bin/kith"))
        .arg("--config")
        .arg(&config_path)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start the installed kith");
    let kith = Proc(kith);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !log().contains("acme: new certificate for") {
        assert!(
            Instant::now() < deadline,
            "no certificate within 40 s\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for name in NAMES {
        served_leaf_at(direct, &roots, name).unwrap_or_else(|e| panic!("{name}: {e}\n{}", log()));
    }
    // The admin account setup created logs in, over a certificate the client verifies.
    let root_pem = dir.join("pebble-root.pem");
    std::fs::write(&root_pem, pebble_root_pem(&ca, mgmt_port)).unwrap();
    let mut admin = common::client::Client::connect_starttls(c2s, DOMAIN, &root_pem);
    admin.login("admin", "admin-secret");
    admin.bind(Some("setup"));
    drop(kith);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether pebble and dnsmasq are installed; without them, fail unless KITH_SKIP_INTEROP=1.
fn tools_present() -> bool {
    let missing: Vec<&str> = [PEBBLE, DNSMASQ]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} missing; install with `apt-get install pebble dnsmasq-base`",
        missing.join(" and ")
    );
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED ACME test (KITH_SKIP_INTEROP=1): {why}\n"
        );
        return false;
    }
    panic!("{why} (or set KITH_SKIP_INTEROP=1 to skip)");
}

/// A self-signed certificate for `name` into `cert`/`key`; returns its DER.
fn write_pair(cert: &Path, key: &Path, name: &str) -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    std::fs::write(key, ck.key_pair.serialize_pem()).unwrap();
    std::fs::write(cert, ck.cert.pem()).unwrap();
    ck.cert.der().clone()
}

/// A throwaway CA and, signed by it, pebble's HTTPS certificate for 127.0.0.1, written to
/// `dir`; returns the CA file kith and the test trust.
fn test_ca(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kith test CA for pebble");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("pebble.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

/// dnsmasq on a free loopback port answering the three names with 127.0.0.1.
fn start_dnsmasq() -> (Dnsmasq, u16) {
    let records: Vec<String> = NAMES
        .iter()
        .map(|n| format!("--host-record={n},127.0.0.1"))
        .collect();
    let dns = Dnsmasq::start(&records);
    let port = dns.addr.port();
    (dns, port)
}

/// pebble on free loopback ports, validating TLS-ALPN-01 on `tls_port` and resolving names
/// through dnsmasq. Returns it and its management port.
fn start_pebble(
    dir: &Path,
    acme_port: u16,
    dns_port: u16,
    http_port: u16,
    tls_port: u16,
) -> (Proc, u16) {
    let mgmt_port = free_port();
    let config = format!(
        r#"{{"pebble": {{
            "listenAddress": "127.0.0.1:{acme_port}",
            "managementListenAddress": "127.0.0.1:{mgmt_port}",
            "certificate": "{}",
            "privateKey": "{}",
            "httpPort": {http_port},
            "tlsPort": {tls_port},
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": {}
        }}}}"#,
        dir.join("pebble.crt").display(),
        dir.join("pebble.key").display(),
        LIFETIME.as_secs()
    );
    let path = dir.join("pebble.json");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let child = Command::new(PEBBLE)
        .arg("-config")
        .arg(&path)
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{dns_port}"))
        // No artificial validation delays; no rejected nonces (rustls-acme retries a
        // badNonce by redoing the whole order after a back-off, which only costs time here).
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        // Fresh challenges on renewal too, so the renewal really validates again.
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start pebble");
    let proc = Proc(child);
    for port in [acme_port, mgmt_port] {
        assert!(
            wait_listening(port, Duration::from_secs(10)),
            "pebble did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
        );
    }
    (proc, mgmt_port)
}

/// With ACME, outgoing federation presents the issued certificate as the TLS client
/// certificate, so a peer that trusts the CA authenticates kith by SASL EXTERNAL (XEP-0178)
/// and needs no dialback (refused here: `require_valid_certs` is on by default).
#[test]
fn acme_certificate_authenticates_outgoing_federation() {
    if !tools_present() {
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    const PEER: &str = "peer.test";
    let dir = common::unique_temp_dir();
    let ca = test_ca(&dir);
    // The peer's certificate comes from a CA of its own, which kith is told to trust.
    let peer_ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let peer_ca = params.self_signed(&peer_ca_key).unwrap();
    let peer_key = KeyPair::generate().unwrap();
    let peer_cert = CertificateParams::new(vec![PEER.to_string()])
        .unwrap()
        .signed_by(&peer_key, &peer_ca, &peer_ca_key)
        .unwrap();
    std::fs::write(dir.join("peer-ca.pem"), peer_ca.pem()).unwrap();
    std::fs::write(dir.join("peer.crt"), peer_cert.pem()).unwrap();
    std::fs::write(dir.join("peer.key"), peer_key.serialize_pem()).unwrap();

    let dns_port = common::free_udp_port();
    let mut records: Vec<String> = NAMES
        .iter()
        .map(|n| format!("--host-record={n},127.0.0.1"))
        .collect();
    let dns = Dnsmasq::start_on(dns_port, &records);
    let acme_port = free_port();
    let kith = Options::default()
        .domain(DOMAIN)
        .listen("https")
        .listen("s2s")
        .extra_toml(&format!(
            "[acme]\nemail = \"admin@{DOMAIN}\"\ndirectory = \"https://127.0.0.1:{acme_port}/dir\"\n\
             directory_ca = \"{}\"\n[s2s]\nresolver = \"127.0.0.1:{dns_port}\"\n\
             extra_ca = \"{}\"\n",
            ca.display(),
            dir.join("peer-ca.pem").display()
        ))
        .start();
    kith.add_user("alice", "alice-secret");
    let (_pebble, mgmt_port) =
        start_pebble(&dir, acme_port, dns_port, free_port(), kith.port("https"));
    assert!(
        kith.wait_for_log("acme: new certificate for", Duration::from_secs(30)),
        "no certificate from pebble within 30 s\n{}",
        kith.log_report()
    );
    // The peer trusts pebble's root (fresh at each pebble start) and nothing else extra.
    let root = dir.join("pebble-root.pem");
    std::fs::write(&root, pebble_root_pem(&ca, mgmt_port)).unwrap();
    let peer = Options::default()
        .domain(PEER)
        .listen("s2s")
        .extra_toml(&format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[s2s]\nresolver = \"127.0.0.1:{dns_port}\"\n\
             extra_ca = \"{}\"\n",
            dir.join("peer.crt").display(),
            dir.join("peer.key").display(),
            root.display()
        ))
        .start();
    peer.add_user("bob", "bob-secret");
    // Now both servers' s2s ports are known: the same DNS port answers for both.
    drop(dns);
    for (domain, port) in [(DOMAIN, kith.port("s2s")), (PEER, peer.port("s2s"))] {
        records.push(format!(
            "--srv-host=_xmpp-server._tcp.{domain},xmpp.{domain},{port},0,0"
        ));
        records.push(format!("--host-record=xmpp.{domain},127.0.0.1"));
    }
    records.push(format!("--host-record={PEER},127.0.0.1"));
    let _dns = Dnsmasq::start_on(dns_port, &records);

    let mut bob =
        common::client::Client::connect_starttls(peer.c2s_port, PEER, &dir.join("peer-ca.pem"));
    bob.login("bob", "bob-secret");
    bob.bind(Some("phone"));
    bob.presence();
    bob.clear_backlog();
    let mut alice = common::client::Client::connect_starttls(kith.c2s_port, DOMAIN, &root);
    alice.login("alice", "alice-secret");
    alice.bind(Some("phone"));
    alice.send(&format!(
        "<message to='bob@{PEER}' type='chat' id='acme1'><body>signed by pebble</body></message>"
    ));
    let m = bob.recv_until(|e| e.name() == "message" && e.attr("id") == Some("acme1"));
    assert_eq!(m.attr("from"), Some("alice@kith.test/phone"), "{m}");
    let log = peer.log();
    assert!(
        log.contains(&format!("{DOMAIN} authenticated from")) && log.contains("(certificate)"),
        "the peer did not authenticate kith by its ACME certificate\n{}",
        peer.log_report()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// pebble's issuing root (made fresh at each start), from its management API.
fn pebble_root(ca: &Path, mgmt_port: u16) -> RootCertStore {
    let pem = pebble_root_pem(ca, mgmt_port);
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    assert!(!roots.is_empty(), "no root from pebble: {pem}");
    roots
}

/// pebble's issuing root as PEM, from its management port (HTTPS with the test CA).
fn pebble_root_pem(ca: &Path, mgmt_port: u16) -> String {
    let mut trust = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        trust.add(c.unwrap()).unwrap();
    }
    let config = client_config(trust, &[]);
    let tcp = TcpStream::connect(("127.0.0.1", mgmt_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /roots/0 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    // pebble closes without close_notify; what was read is complete for HTTP/1.0.
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Connects to kith's direct-TLS port with SNI `name`, verifying the chain and the name
/// against `roots`; returns the leaf certificate it presented.
fn served_leaf(server: &TestServer, roots: &RootCertStore, name: &str) -> Result<Vec<u8>, String> {
    served_leaf_at(server.tls_port, roots, name)
}

/// `served_leaf` on any direct-TLS client port.
fn served_leaf_at(port: u16, roots: &RootCertStore, name: &str) -> Result<Vec<u8>, String> {
    let config = client_config(roots.clone(), &[b"xmpp-client"]);
    let tcp =
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    Ok(leaf.to_vec())
}

fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
}

fn wait_listening(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}
