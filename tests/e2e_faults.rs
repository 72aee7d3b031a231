//! End to end: faults and hostile clients (issue #7). Bad XML, bombs and oversize stanzas are
//! in e2e_robustness.rs; this file is about volume and the machine failing: a thousand
//! connections that send garbage, half a stream or half a TLS handshake and vanish; a slow
//! trickle; a client flooding stanzas; too many connections from one address; `kill -9`
//! while messages flow; a full disk; a damaged data file.
//!
//! The full-disk test mounts a small tmpfs as the data dir, so it needs root (as CI and
//! `interop_federation.rs` do); elsewhere it fails unless `KITH_SKIP_INTEROP=1`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{bodies, ca_path, Client, Raw, NS_CLIENT, NS_STREAM, NS_STREAM_ERR};
use common::TestServer;

const NS_SM: &str = "urn:xmpp:sm:3";

fn server_with_users(extra_toml: &str) -> TestServer {
    let server = TestServer::start_with(extra_toml);
    for u in ["alice", "bob", "mallory"] {
        server.add_user(u, &format!("{u}-secret"));
    }
    server
}

fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    Client::online(server, user, &format!("{user}-secret"), resource)
}

/// alice and bob still exchange messages both ways.
fn still_chatting(alice: &mut Client, bob: &mut Client, text: &str) {
    alice.send(&format!(
        "<message to='bob@localhost' type='chat'><body>{text}</body></message>"
    ));
    let m = bob.recv_until(|e| e.name() == "message");
    assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text(), text);
    bob.send("<message to='alice@localhost/phone' type='chat'><body>yes</body></message>");
    let m = alice.recv_until(|e| e.name() == "message");
    assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text(), "yes");
}

/// A field of /proc/PID/status, in kB (`VmRSS`) or as a count (`Threads`).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The first bytes of a TLS 1.2/1.3 ClientHello record, cut off: a handshake never finished.
const HALF_CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\
    \x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00";

/// One hostile connection: what it sends before it vanishes (or lingers, when `linger`).
fn hostile(server: &TestServer, i: usize) -> Option<TcpStream> {
    let (port, bytes): (u16, &[u8]) = match i % 5 {
        0 => (server.c2s_port, b"\x00\xffGET / HTTP/1.1\r\n\r\n<<<>>>&&&"),
        1 => (
            server.c2s_port,
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx",
        ),
        // A stream and <starttls/>, then never a TLS handshake.
        2 => (
            server.c2s_port,
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
              to='localhost' version='1.0'><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        ),
        3 => (server.tls_port, HALF_CLIENT_HELLO),
        _ => (server.tls_port, b"\x16\x03\x01"),
    };
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = tcp.write_all(bytes);
    Some(tcp)
}

#[test]
fn a_thousand_hostile_connections_leave_the_server_responsive_and_memory_returns() {
    // No per-address limit here: every connection comes from 127.0.0.1.
    let server = server_with_users("[limits]\nauth_timeout = \"2s\"\nconnections_per_ip = 0\n");
    let pid = server.pid().expect("pid");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    still_chatting(&mut alice, &mut bob, "warm-up");
    thread::sleep(Duration::from_millis(300));
    let (rss0, fds0) = (proc_status(pid, "VmRSS"), open_fds(pid));

    // Ten waves of 100: 80 vanish at once (half of them with a reset), 20 stay open
    // without a word until the server's auth deadline closes them.
    let mut lingering = Vec::new();
    for wave in 0..10 {
        for i in 0..100 {
            let Some(tcp) = hostile(&server, wave * 100 + i) else {
                continue;
            };
            if i % 5 == 0 {
                lingering.push(tcp);
            } else if i % 2 == 0 {
                // SO_LINGER 0 would send a reset; std cannot set it, so half-close instead.
                let _ = tcp.shutdown(Shutdown::Write);
            }
        }
        still_chatting(&mut alice, &mut bob, &format!("wave {wave}"));
    }
    let peak_rss = proc_status(pid, "VmRSS");
    // The hostile connections reached the server (none was refused by the kernel's backlog).
    let seen = server.log().matches(": connection from 127.0.0.1").count();
    assert!(seen >= 1000, "only {seen} connections reached the server");

    // The server closes each lingering connection by itself at the deadline.
    let deadline = Instant::now() + Duration::from_secs(15);
    for mut tcp in lingering {
        tcp.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))
            .unwrap();
        let mut sink = Vec::new();
        let r = tcp.read_to_end(&mut sink);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "a silent connection was not closed by the auth deadline: {r:?}\n{}",
            server.log_report()
        );
    }
    still_chatting(&mut alice, &mut bob, "after the storm");

    // Every hostile connection's file descriptor and memory are given back.
    let settle = Instant::now() + Duration::from_secs(10);
    let (mut rss, mut fds);
    loop {
        (rss, fds) = (proc_status(pid, "VmRSS"), open_fds(pid));
        // The allocator keeps some freed pages; a leak of even 4 KiB per connection would be
        // 4 MB here.
        if fds <= fds0 && rss <= rss0 + rss0 / 4 + 2048 || Instant::now() > settle {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("RSS {rss0} kB before, {peak_rss} kB at peak, {rss} kB after; fds {fds0} -> {fds}");
    assert!(
        fds <= fds0,
        "file descriptors leaked: {fds0} before, {fds} after"
    );
    assert!(
        rss <= rss0 + rss0 / 4 + 2048,
        "memory did not return: {rss0} kB before, {peak_rss} kB at peak, {rss} kB after"
    );
}

#[test]
fn a_slow_trickle_is_closed_at_the_auth_deadline() {
    let server = server_with_users("[limits]\nauth_timeout = \"2s\"\n");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    let header = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
    let mut slow = Raw::connect(server.c2s_port);
    let started = Instant::now();
    // A byte every 300 ms would take 40 s for the header alone: each byte resets no timer.
    let mut closed_after = None;
    for b in header {
        if !slow.send(&[*b]) {
            closed_after = Some(started.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(300));
        slow.tcp.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let eof = matches!(slow.tcp.read(&mut buf), Ok(0));
        slow.tcp.set_nonblocking(false).unwrap();
        if eof {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.unwrap_or_else(|| {
        panic!(
            "a trickling client was never closed\n{}",
            server.log_report()
        )
    });
    assert!(
        closed_after < Duration::from_secs(5),
        "closed only after {closed_after:?} (auth_timeout is 2s)"
    );
    still_chatting(&mut alice, &mut bob, "not slowed down");
}

#[test]
fn a_flooding_client_gets_policy_violation_and_others_are_unaffected() {
    let server = server_with_users("[limits]\nstanzas_per_second = 20\nstanza_burst = 60\n");
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    // Within the burst: everything arrives.
    for i in 0..50 {
        alice.send(&format!(
            "<message to='bob@localhost' type='chat'><body>burst {i}</body></message>"
        ));
    }
    for i in 0..50 {
        let m = bob.recv_until(|e| e.name() == "message");
        assert_eq!(
            m.get_child("body", NS_CLIENT).unwrap().text(),
            format!("burst {i}")
        );
    }

    let mut mallory = online(&server, "mallory", "bot");
    let mut flood = String::new();
    for i in 0..2000 {
        flood.push_str(&format!(
            "<message to='nobody@localhost' type='chat'><body>spam {i}</body></message>"
        ));
    }
    // The server may close the connection while the flood is still being written.
    let _ = mallory.send_lenient(flood.as_bytes());
    // The bounces of what was accepted come first.
    let e = mallory.recv_until(|e| e.is("error", NS_STREAM));
    assert!(
        e.has_child("policy-violation", NS_STREAM_ERR),
        "expected policy-violation, got {e}"
    );
    let bounced = mallory.transcript().matches("type='error'").count();
    assert!(bounced <= 60, "{bounced} stanzas got through a burst of 60");
    assert!(
        server.wait_for_log("stanzas per second", Duration::from_secs(5)),
        "no log line names the flood\n{}",
        server.log_report()
    );
    // alice's earlier burst was only just under the limit; a second later she is fine.
    thread::sleep(Duration::from_secs(1));
    still_chatting(&mut alice, &mut bob, "no spam here");
    // The flooder may log in again: the limit is per session.
    let mut again = online(&server, "mallory", "bot");
    again.send("<message to='bob@localhost' type='chat'><body>sorry</body></message>");
    let m = bob.recv_until(|e| e.name() == "message");
    assert_eq!(m.get_child("body", NS_CLIENT).unwrap().text(), "sorry");
}

#[test]
fn connections_beyond_the_per_address_limit_are_refused() {
    let server = server_with_users("[limits]\nconnections_per_ip = 3\n");
    let mut alice = online(&server, "alice", "phone");
    let held: Vec<Raw> = (0..2).map(|_| Raw::connect(server.c2s_port)).collect();
    // Counting is asynchronous to connect(): let the server take the three.
    thread::sleep(Duration::from_millis(300));

    let mut fourth = Client::tcp(server.c2s_port, "localhost", &ca_path(&server));
    fourth.send(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
         to='localhost' version='1.0'>",
    );
    let e = fourth.expect_stream_error("policy-violation");
    assert!(e.to_string().contains("too many connections"), "{e}");
    let mut direct = Raw::connect(server.tls_port);
    assert!(
        direct.read_to_close(Duration::from_secs(5)).is_empty(),
        "the direct TLS port closes silently"
    );
    assert!(server.wait_for_log("connections_per_ip", Duration::from_secs(5)));

    // A place that frees up can be taken again, and alice never noticed.
    drop(held);
    thread::sleep(Duration::from_millis(300));
    let mut bob = online(&server, "bob", "pc");
    still_chatting(&mut alice, &mut bob, "room for bob");
}

/// Sends `<r/>` and returns the `h` of the `<a/>` that answers it.
fn ack(c: &mut Client) -> u32 {
    c.send(&format!("<r xmlns='{NS_SM}'/>"));
    let a = c.recv_until(|e| e.is("a", NS_SM));
    a.attr("h").and_then(|h| h.parse().ok()).expect("h")
}

#[test]
fn kill_9_while_messages_flow_loses_no_acknowledged_message() {
    let mut server = server_with_users("");
    let mut alice = online(&server, "alice", "phone");
    alice.send(&format!("<enable xmlns='{NS_SM}'/>"));
    alice.recv_until(|e| e.is("enabled", NS_SM));
    let h0 = ack(&mut alice);

    // bob is offline: every message goes to his offline store (and alice's archive).
    let mut sent = 0;
    let mut acked = 0;
    for _ in 0..15 {
        for _ in 0..10 {
            sent += 1;
            alice.send(&format!(
                "<message to='bob@localhost' type='chat' id='m{sent}'><body>n{sent}</body></message>"
            ));
        }
        acked = ack(&mut alice) - h0;
    }
    assert_eq!(acked, sent);
    // Ten more in flight, never acknowledged, and the server dies under them.
    let mut tail = String::new();
    for k in 1..=10 {
        tail.push_str(&format!(
            "<message to='bob@localhost' type='chat' id='m{n}'><body>n{n}</body></message>",
            n = sent + k
        ));
    }
    let _ = alice.send_lenient(tail.as_bytes());
    server.kill_9();
    drop(alice);

    server.start_again();
    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    bob.presence();
    let got: BTreeSet<u32> = bob
        .drain(Duration::from_millis(1500))
        .into_iter()
        .filter(|e| e.name() == "message")
        .filter_map(|m| {
            m.get_child("body", NS_CLIENT)?
                .text()
                .strip_prefix('n')?
                .parse()
                .ok()
        })
        .collect();
    let missing: Vec<u32> = (1..=acked).filter(|n| !got.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages lost after kill -9: {missing:?} (got {} of {acked})\n{}",
        got.len(),
        server.log_report()
    );
}

/// A tmpfs of `size` mounted on `dir` for the test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server may still hold the data file open.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Fills the file system at `dir` with a file; returns its path.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_gives_clear_errors_and_recovers_without_damage() {
    let mut server = server_with_users("");
    server.stop();
    let saved = common::unique_temp_dir();
    copy_dir(&server.data_dir, &saved);
    let _mount = match Tmpfs::mount(&server.data_dir, "16m") {
        Ok(m) => m,
        // Like the interop tests: a machine without root fails, unless told to skip.
        Err(e) if std::env::var("KITH_SKIP_INTEROP").as_deref() == Ok("1") => {
            eprintln!(
                "\n!!!!! SKIPPED full-disk test (KITH_SKIP_INTEROP=1): cannot mount a tmpfs: {e}\n"
            );
            return;
        }
        Err(e) => panic!(
            "this test mounts a small tmpfs as the data dir and needs root: {e}\n\
             Set KITH_SKIP_INTEROP=1 to skip this test instead."
        ),
    };
    copy_dir(&saved, &server.data_dir);
    server.start_again();

    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='bob@localhost' type='chat' id='before'><body>before</body></message>");
    alice.expect_nothing(Duration::from_millis(300));

    let filler = fill(&server.data_dir);
    // Offline storage must write; with the disk full, alice is told, not silently dropped.
    let mut refused = None;
    for i in 0..50 {
        let id = format!("full{i}");
        alice.send(&format!(
            "<message to='bob@localhost' type='chat' id='{id}'><body>{}</body></message>",
            "x".repeat(2000)
        ));
        if let Some(ev) = alice.drain(Duration::from_millis(200)).into_iter().next() {
            refused = Some(ev);
            break;
        }
    }
    let refused = refused.unwrap_or_else(|| {
        panic!(
            "no error came back while the disk was full\n{}",
            server.log_report()
        )
    });
    assert_eq!(refused.attr("type"), Some("error"), "{refused}");
    let text = refused.to_string();
    assert!(
        text.contains("resource-constraint") || text.contains("internal-server-error"),
        "{text}"
    );
    assert!(text.contains("<text"), "the error says nothing: {text}");
    assert!(
        server.wait_for_log("disk full", Duration::from_secs(5)),
        "no log line says the disk is full\n{}",
        server.log_report()
    );

    // Space comes back. The same running server stores again (it reopens the data file
    // within a second of the next operation), alice's next message gets through, and what was
    // accepted before the disk filled is still there.
    fs::remove_file(&filler).unwrap();
    thread::sleep(Duration::from_millis(1100));
    let mut stored = false;
    for i in 0..20 {
        alice.send(&format!(
            "<message to='bob@localhost' type='chat' id='after{i}'><body>after</body></message>"
        ));
        if alice.drain(Duration::from_millis(300)).is_empty() {
            stored = true;
            break;
        }
    }
    assert!(
        stored,
        "messages still refused after space came back\n{}",
        server.log_report()
    );
    assert!(
        server.wait_for_log("reopened after a failed write", Duration::from_secs(5)),
        "no log line says storage works again\n{}",
        server.log_report()
    );
    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    bob.presence();
    let got = bob.drain(Duration::from_millis(1000));
    let texts = bodies(&got);
    assert!(texts.contains(&"before".to_string()), "{texts:?}");
    assert!(texts.contains(&"after".to_string()), "{texts:?}");
    let refused_id = refused
        .attr("id")
        .expect("the error carries the message's id");
    assert!(
        !got.iter().any(|m| m.attr("id") == Some(refused_id)),
        "the refused message {refused_id} was stored after all"
    );
    drop(bob);
    drop(alice);

    // A restart finds the file sound: bob's queue was emptied, a new message is kept.
    server.restart();
    let mut alice = online(&server, "alice", "phone");
    alice.send("<message to='bob@localhost' type='chat' id='later'><body>later</body></message>");
    alice.expect_nothing(Duration::from_millis(500));
    let mut bob = Client::login_bound(&server, "bob", "bob-secret", "pc");
    bob.presence();
    assert_eq!(
        bodies(&bob.drain(Duration::from_millis(1000))),
        vec!["later"]
    );
    server.stop();
}

/// `kith run` on the server's config, expected to fail: its exit status and output.
fn run_expecting_failure(server: &TestServer) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(common::KITH_BIN)
        .arg("--config")
        .arg(&server.config_path)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kith");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            return (status, out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kith run kept running on a damaged data file");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_damaged_data_file_stops_the_start_with_a_clear_message_and_is_kept() {
    let mut server = server_with_users("");
    server.stop();
    let file = fs::read_dir(&server.data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "redb"))
        .expect("a .redb file in the data dir");
    let good = fs::read(&file).unwrap();

    // Three kinds of damage: a scribbled header, a truncated file, garbage throughout.
    let mut scribbled = good.clone();
    scribbled[..64].fill(0x5a);
    let truncated = good[..good.len() / 3].to_vec();
    let garbage: Vec<u8> = (0..good.len()).map(|i| (i * 7919 % 251) as u8).collect();
    for (what, bytes) in [
        ("scribbled header", scribbled),
        ("truncated", truncated),
        ("garbage", garbage),
    ] {
        fs::write(&file, &bytes).unwrap();
        let (status, out) = run_expecting_failure(&server);
        assert!(!status.success(), "{what}: kith run exited 0\n{out}");
        assert!(
            out.contains(&file.display().to_string()) || out.contains("data file"),
            "{what}: the message does not name the data file:\n{out}"
        );
        assert!(
            out.contains("damaged") || out.contains("backup") || out.contains("corrupt"),
            "{what}: the message does not say what is wrong:\n{out}"
        );
        assert_eq!(
            fs::read(&file).unwrap(),
            bytes,
            "{what}: kith changed the damaged file (it must never recreate it)"
        );
    }

    // With the good file back, everything is there.
    fs::write(&file, &good).unwrap();
    server.start_again();
    let mut alice = online(&server, "alice", "phone");
    let mut bob = online(&server, "bob", "pc");
    still_chatting(&mut alice, &mut bob, "restored");
}
