//! Debian's dnsmasq on a free loopback port, serving the records a test gives
//! (`--host-record=…`, `--srv-host=…`), for `kith check` and `kith setup` tests. Included
//! with `#[path = "common/dnsmasq.rs"] mod dnsmasq;`. A missing dnsmasq is a failure unless
//! `KITH_SKIP_INTEROP=1`, as in tests/dns.rs.
#![allow(dead_code)]

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

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

fn free_dns_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// dnsmasq serving `records`; None when it is missing and KITH_SKIP_INTEROP=1.
pub fn start(records: &[String]) -> Option<Dnsmasq> {
    if !Path::new(DNSMASQ).exists() {
        let why = format!("{DNSMASQ} is missing; install it with `apt-get install dnsmasq-base`");
        if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") {
            eprintln!("\n!!!!! SKIPPED dnsmasq test (KITH_SKIP_INTEROP=1): {why}\n");
            return None;
        }
        panic!("{why} (or set KITH_SKIP_INTEROP=1 to skip)");
    }
    for _ in 0..5 {
        let port = free_dns_port();
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "--no-resolv",
            "--no-hosts",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--local=/test/",
        ])
        .arg(format!("--port={port}"))
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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
                    let _ = e.read_to_string(&mut err);
                }
                eprintln!("dnsmasq on port {port} exited ({status}): {err}");
                break;
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
    panic!("dnsmasq did not start on any of 5 free ports");
}
