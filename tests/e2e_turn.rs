//! End to end: the built-in STUN/TURN server (`[turn]`), driven by Debian's coturn client
//! tools (`turnutils_stunclient`, `turnutils_uclient`, `turnutils_peer`; `apt-get install
//! coturn`, only the client tools are used) and by a small STUN client on kith's own codec for
//! the refusals the tools do not show. Also `kith check turn` and the XEP-0215 answer.
//!
//! A missing coturn is a test failure unless `KITH_SKIP_INTEROP=1` says to skip, as in the
//! other interop tests.

mod common;

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::client::Client;
use common::{describe_output, free_udp_port, Options, TestServer};
use kith::turn::alloc::rest_password;
use kith::turn::stun::{self, Builder, Class, Integrity, Message};

const SECRET: &str = "north wind";
const NS_EXTDISCO: &str = "urn:xmpp:extdisco:2";

/// A server with the built-in STUN/TURN server on a free loopback port.
fn turn_server(allow_private: bool, extra: &str) -> (TestServer, u16) {
    let port = free_udp_port();
    let relay = free_udp_port();
    let toml = format!(
        "[turn]\nlisten = [\"127.0.0.1:{port}\"]\nsecret = \"{SECRET}\"\n\
         allow_private_peers = {allow_private}\nrelay_ports = \"{relay}-{}\"\n{extra}",
        relay + 40
    );
    let server = TestServer::start_opts(Options::default().extra_toml(&toml));
    (server, port)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `name`'s path, or None when coturn is missing and KITH_SKIP_INTEROP=1.
fn coturn_tool(name: &str) -> Option<&'static str> {
    let path: &'static str = match name {
        "turnutils_stunclient" => "/usr/bin/turnutils_stunclient",
        "turnutils_uclient" => "/usr/bin/turnutils_uclient",
        _ => "/usr/bin/turnutils_peer",
    };
    if std::path::Path::new(path).exists() {
        return Some(path);
    }
    let why = format!("{path} is missing; install it with `apt-get install coturn`");
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED coturn interop test (KITH_SKIP_INTEROP=1): {why}\n"
        );
        return None;
    }
    panic!("{why}\nSet KITH_SKIP_INTEROP=1 to skip this test instead.");
}

/// Runs a coturn tool with a watchdog.
fn run_tool(path: &str, args: &[&str]) -> Output {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {path}: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{path} {args:?} hung\n{}", describe_output(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// turnutils_peer, the echo peer turnutils_uclient sends to; killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer(path: &str, port: u16) -> Peer {
    let child = Command::new(path)
        .args(["-p", &port.to_string(), "-L", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {path}: {e}"));
    std::thread::sleep(Duration::from_millis(300));
    Peer(child)
}

#[test]
fn stun_binding_with_turnutils_stunclient() {
    let Some(tool) = coturn_tool("turnutils_stunclient") else {
        return;
    };
    let (server, port) = turn_server(false, "");
    let out = run_tool(tool, &["-p", &port.to_string(), "127.0.0.1"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("UDP reflexive addr: 127.0.0.1:"),
        "{}\n{}",
        describe_output(&out),
        server.log()
    );
}

/// turnutils_uclient: allocation, permission, channel or Send indications, relayed datagrams
/// echoed by turnutils_peer, over UDP and TCP; credentials from the REST secret (-W).
#[test]
fn relayed_datagrams_with_turnutils_uclient() {
    let (Some(uclient), Some(peer)) = (
        coturn_tool("turnutils_uclient"),
        coturn_tool("turnutils_peer"),
    ) else {
        return;
    };
    let (server, port) = turn_server(true, "");
    let peer_port = free_udp_port();
    let _peer = start_peer(peer, peer_port);
    let (port, peer_port) = (port.to_string(), peer_port.to_string());
    // Default: channels, and an RTP/RTCP pair of allocations per client (EVEN-PORT with a
    // reservation, then RESERVATION-TOKEN). -c: no RTCP pair; -s: Send indications instead of
    // channels; -t: TCP to the server (ChannelData padded to 4 bytes); -y: the clients send to
    // each other's relayed addresses (two callers on one server).
    for flags in [
        &[][..],
        &["-t"][..],
        &["-c", "-s"][..],
        &["-t", "-c", "-s"][..],
        &["-c", "-y"][..],
        &["-t", "-c", "-y"][..],
    ] {
        let mut args: Vec<&str> = flags.to_vec();
        args.extend([
            "-n",
            "20",
            "-m",
            "2",
            "-p",
            &port,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-u",
            "alice@localhost",
            "-W",
            SECRET,
            "127.0.0.1",
        ]);
        let out = run_tool(uclient, &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("tot_send_msgs=40, tot_recv_msgs=40")
                && text.contains("Total lost packets 0 "),
            "uclient {flags:?}:\n{}\n{}",
            describe_output(&out),
            server.log()
        );
    }
    assert!(
        server.wait_for_log(
            "turn: allocation of alice@localhost",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    assert!(!server.log().contains(SECRET));
}

/// A small TURN client on kith's codec.
struct Turn {
    sock: UdpSocket,
    username: String,
    password: String,
    realm: String,
    nonce: String,
}

impl Turn {
    fn new(port: u16, username: &str, password: &str) -> Turn {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Turn {
            sock,
            username: username.into(),
            password: password.into(),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    fn tid() -> stun::Tid {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut t = [7u8; 12];
        t[..8].copy_from_slice(&(n as u64).to_be_bytes());
        t
    }

    fn exchange(&self, req: Vec<u8>) -> Message {
        self.sock.send(&req).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = self
                .sock
                .recv(&mut buf)
                .expect("no answer from the TURN server");
            let m = Message::parse(&buf[..n]).expect("a STUN message");
            if m.tid[..] == req[8..20] {
                return m;
            }
        }
    }

    /// Sends `method` with `attrs`, authenticated (after the 401 challenge, once).
    fn request(
        &mut self,
        method: u16,
        attrs: impl Fn(Builder) -> Builder,
        sha256: bool,
    ) -> Message {
        if self.nonce.is_empty() {
            let m = self
                .exchange(attrs(Builder::new(Class::Request, method, Self::tid())).fingerprint());
            assert_eq!(m.error_code().map(|c| c.0), Some(401), "{m:?}");
            self.realm = m.get_str(stun::REALM).unwrap().into();
            self.nonce = m.get_str(stun::NONCE).unwrap().into();
        }
        let key = stun::long_term_key(&self.username, &self.realm, &self.password);
        let which = if sha256 {
            Integrity::Sha256
        } else {
            Integrity::Sha1
        };
        let req = attrs(Builder::new(Class::Request, method, Self::tid()))
            .attr(stun::USERNAME, self.username.as_bytes())
            .attr(stun::REALM, self.realm.as_bytes())
            .attr(stun::NONCE, self.nonce.as_bytes())
            .integrity(which, &key)
            .fingerprint();
        let m = self.exchange(req);
        if m.class == Class::Success {
            assert!(m.check_integrity(&key), "response integrity: {m:?}");
            assert_eq!(
                m.integrity(),
                Some(which),
                "answered with the client's integrity"
            );
        }
        m
    }

    fn allocate(&mut self) -> Message {
        self.request(
            stun::ALLOCATE,
            |b| b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0]),
            false,
        )
    }

    fn permit(&mut self, peer: &str) -> Message {
        let peer: SocketAddr = peer.parse().unwrap();
        self.request(
            stun::CREATE_PERMISSION,
            |b| b.xor_address(stun::XOR_PEER_ADDRESS, peer),
            false,
        )
    }
}

fn rest_user(expiry: u64) -> (String, String) {
    let username = format!("{expiry}:alice@localhost");
    let password = rest_password(SECRET, &username);
    (username, password)
}

fn code(m: &Message) -> Option<u16> {
    m.error_code().map(|c| c.0)
}

#[test]
fn forbidden_peers_are_refused_with_403() {
    let (server, port) = turn_server(false, "");
    let (u, p) = rest_user(now() + 600);
    let mut t = Turn::new(port, &u, &p);
    let m = t.allocate();
    assert_eq!(m.class, Class::Success, "{m:?}\n{}", server.log());
    let relayed = m.get_xor_address(stun::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    for peer in [
        "127.0.0.1:9",
        "10.1.2.3:9",
        "192.168.1.1:9",
        "169.254.1.1:9",
        "0.0.0.0:9",
        "224.0.0.1:9",
    ] {
        assert_eq!(code(&t.permit(peer)), Some(403), "{peer}");
    }
    let bind = t.request(
        stun::CHANNEL_BIND,
        |b| {
            b.attr(stun::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
                .xor_address(stun::XOR_PEER_ADDRESS, "172.16.0.1:9".parse().unwrap())
        },
        false,
    );
    assert_eq!(code(&bind), Some(403));
    // A public peer is fine, with MESSAGE-INTEGRITY-SHA256 too.
    assert_eq!(t.permit("192.0.2.1:9").class, Class::Success);
    let peer: SocketAddr = "198.51.100.1:9".parse().unwrap();
    let m = t.request(
        stun::CREATE_PERMISSION,
        |b| b.xor_address(stun::XOR_PEER_ADDRESS, peer),
        true,
    );
    assert_eq!(m.class, Class::Success, "{m:?}");
    // Refresh with lifetime 0 deletes the allocation; after that it is gone (437).
    let m = t.request(stun::REFRESH, |b| b.u32(stun::LIFETIME, 0), false);
    assert_eq!(
        (m.class, m.get_u32(stun::LIFETIME)),
        (Class::Success, Some(0))
    );
    assert_eq!(code(&t.permit("192.0.2.1:9")), Some(437));
    assert!(
        server.wait_for_log("ended (client released it)", Duration::from_secs(5)),
        "{}",
        server.log()
    );
}

#[test]
fn wrong_password_expired_username_and_stale_nonce() {
    let (server, port) = turn_server(true, "");
    // Wrong password: 401 again.
    let (u, _) = rest_user(now() + 600);
    let mut t = Turn::new(port, &u, "not the password");
    assert_eq!(code(&t.allocate()), Some(401));
    // Expired username (with its otherwise right password): 401.
    let (u, p) = rest_user(now() - 10);
    let mut t = Turn::new(port, &u, &p);
    assert_eq!(code(&t.allocate()), Some(401));
    // A nonce that is not ours: 438 with a fresh one, which then works.
    let (u, p) = rest_user(now() + 600);
    let mut t = Turn::new(port, &u, &p);
    t.realm = "localhost".into();
    t.nonce = "00000000000000000000000000000000".into();
    let m = t.allocate();
    assert_eq!(code(&m), Some(438), "{m:?}");
    t.nonce = m.get_str(stun::NONCE).unwrap().into();
    let m = t.allocate();
    assert_eq!(m.class, Class::Success, "{m:?}\n{}", server.log());
    // A second Allocate on the same 5-tuple is a mismatch; requests need credentials.
    let m = t.request(
        stun::ALLOCATE,
        |b| b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0]),
        false,
    );
    assert_eq!(code(&m), Some(437));
    let m = t.request(
        stun::ALLOCATE,
        |b| b.attr(stun::REQUESTED_TRANSPORT, &[6, 0, 0, 0]),
        false,
    );
    assert_eq!(code(&m), Some(437));
    // An unknown comprehension-required attribute: 420 naming it.
    let m = t.exchange(
        Builder::new(Class::Request, stun::BINDING, Turn::tid())
            .attr(0x0031, b"?")
            .fingerprint(),
    );
    assert_eq!(code(&m), Some(420));
    assert_eq!(m.get(stun::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x31][..]));
    let log = server.log();
    assert!(!log.contains(SECRET) && !log.contains(&p), "{log}");
}

#[test]
fn quota_per_user() {
    let (server, port) = turn_server(true, "max_allocations_per_user = 2\n");
    let (u, p) = rest_user(now() + 600);
    let mut clients: Vec<Turn> = (0..3).map(|_| Turn::new(port, &u, &p)).collect();
    let codes: Vec<Option<u16>> = clients.iter_mut().map(|t| code(&t.allocate())).collect();
    assert_eq!(codes, vec![None, None, Some(486)], "{}", server.log());
}

#[test]
fn kith_check_turn_succeeds() {
    let (server, _) = turn_server(true, "");
    let out = server.cli_ok(["check", "turn"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("everything works"),
        "{}",
        describe_output(&out)
    );
    assert!(text.contains("echo came back"), "{}", describe_output(&out));
    assert!(
        text.contains("STUN Binding over TCP"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn kith_check_turn_reports_a_missing_server() {
    let port = free_udp_port();
    let server = TestServer::start();
    // The harness turned [turn] off: nothing to check.
    let out = server.cli(["check", "turn"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no STUN/TURN server"));
    // A server that does not answer.
    let out = server.cli(["check", "turn", "--server", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
}

/// XEP-0215 lists the built-in server by default, with credentials it accepts; without a
/// configured secret, one is generated into DATA/turn.secret (mode 0600).
#[test]
fn extdisco_lists_the_builtin_server() {
    let port = free_udp_port();
    let server = TestServer::start_opts(
        Options::default().extra_toml(&format!("[turn]\nlisten = [\"127.0.0.1:{port}\"]\n")),
    );
    server.add_user("alice", "alice-secret");
    let secret_path = server.data_dir.join("turn.secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let mut alice = Client::login_bound(&server, "alice", "alice-secret", "phone");
    let r = alice
        .iq("<iq type='get' id='ID' to='localhost'><services xmlns='urn:xmpp:extdisco:2'/></iq>");
    let services = r
        .get_child("services", NS_EXTDISCO)
        .unwrap_or_else(|| panic!("{r}"));
    let mut kinds = Vec::new();
    for s in services.children() {
        assert_eq!(s.attr("host"), Some("localhost"), "{r}");
        assert_eq!(s.attr("port"), Some(port.to_string().as_str()), "{r}");
        kinds.push(format!(
            "{}/{}",
            s.attr("type").unwrap(),
            s.attr("transport").unwrap()
        ));
    }
    assert_eq!(
        kinds,
        ["stun/udp", "stun/tcp", "turn/udp", "turn/tcp"],
        "{r}"
    );
    let turn = services
        .children()
        .find(|s| s.attr("type") == Some("turn"))
        .unwrap();
    let (u, p) = (
        turn.attr("username").unwrap(),
        turn.attr("password").unwrap(),
    );
    // The handed-out credentials work on the built-in server.
    let mut t = Turn::new(port, u, p);
    let m = t.allocate();
    assert_eq!(m.class, Class::Success, "{m:?}\n{}", server.log());
    // kith check turn finds the generated secret; private peers are refused here, so the
    // relay round trip is skipped with a note rather than failed.
    let out = server.cli_ok(["check", "turn"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("everything works") && text.contains("refuses to relay"),
        "{}",
        describe_output(&out)
    );
}
