//! A throwaway DNS server for tests: Debian's dnsmasq (`apt-get install dnsmasq-base`) on a
//! loopback port, answering only the records a test gives it (`--srv-host=`, `--host-record=`
//! options) and NXDOMAIN for anything else under `.test`. Killed by its PID when dropped.
//!
//! A missing dnsmasq is a test failure unless `KITH_SKIP_INTEROP=1` says to skip, as in the
//! other interop tests.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP socket and a TCP listener bound to the same loopback port and kept: a nameserver
/// that never answers. Holding both (rather than `free_udp_port` and binding again) leaves no
/// moment in which a concurrent test's outgoing connection can take the port.
pub fn silent_dns_port() -> (u16, UdpSocket, TcpListener) {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            return (port, udp, tcp);
        }
    }
}

/// Whether dnsmasq can run here; `false` (after a loud note) only with KITH_SKIP_INTEROP=1.
pub fn available() -> bool {
    if std::path::Path::new(DNSMASQ).exists() {
        return true;
    }
    let why = format!("{DNSMASQ} is missing; install it with `apt-get install dnsmasq-base`");
    if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED dnsmasq test (KITH_SKIP_INTEROP=1): {why}\n"
        );
        return false;
    }
    panic!("{why} (or set KITH_SKIP_INTEROP=1 to skip)");
}

impl Dnsmasq {
    /// Starts dnsmasq on a free port, serving `records`.
    pub fn start(records: &[String]) -> Dnsmasq {
        // A port that was free a moment ago can be taken in between: try a few.
        for _ in 0..5 {
            if let Some(d) = Dnsmasq::try_start_on(super::free_udp_port(), records) {
                return d;
            }
        }
        panic!("dnsmasq did not start on any of 5 free ports");
    }

    /// Starts dnsmasq on `port` (chosen earlier, e.g. written into a config already).
    pub fn start_on(port: u16, records: &[String]) -> Dnsmasq {
        Dnsmasq::try_start_on(port, records)
            .unwrap_or_else(|| panic!("dnsmasq did not start on port {port}"))
    }

    fn try_start_on(port: u16, records: &[String]) -> Option<Dnsmasq> {
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "--no-resolv",
            "--no-hosts",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            // Answer NXDOMAIN for unknown names under .test instead of REFUSED.
            "--local=/test/",
        ])
        .arg(format!("--port={port}"))
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // As root dnsmasq drops privileges to the 'dnsmasq' user, which dnsmasq-base alone
        // does not create; stay root in that (CI) case.
        if is_root() {
            cmd.arg("--user=root");
        }
        let mut child = cmd.spawn().expect("start dnsmasq");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("dnsmasq status") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                eprintln!("dnsmasq on port {port} exited ({status}): {err}");
                return None;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Some(Dnsmasq { child, addr });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dnsmasq did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
