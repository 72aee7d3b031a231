//! Message archive benchmark: fills one account's archive with N messages directly through
//! the store (fast: one transaction per 10 000), then measures real XEP-0313 queries over c2s
//! (STARTTLS, SCRAM, the server's full path): the last page, a page from the middle, the first
//! page, and a `with`-filtered last page, each `--repeat` times; prints min/median/max.
//!
//! Normally run by `scripts/bench-mam`. By hand:
//!
//! ```text
//! cargo bench --bench mam -- --fill DATA_DIR --messages 100000      # server stopped
//! cargo bench --bench mam -- --port 5222 --ca DATA_DIR/tls/localhost.selfsigned.crt \
//!     --messages 100000
//! ```

#[path = "../c2s/xmpp.rs"]
#[allow(dead_code)]
mod xmpp;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kith::stanza::mam::encode_id;
use kith::store::{ArchiveEntry, Store, TombstoneRule};
use xmpp::{Login, Tls, Xmpp};

const PASSWORD: &str = "bench-password";
const OWNER: &str = "owner@localhost";
/// Spacing of the synthetic archive ids: one message per millisecond, ending now.
const STEP_MICROS: u64 = 1000;

struct Args {
    fill: Option<PathBuf>,
    messages: u64,
    port: u16,
    ca: Option<PathBuf>,
    repeat: usize,
    page: usize,
    /// Any server (`scripts/bench-compare.sh`): log in as `--user` with `--scram`, time the
    /// last and the first page only (no kith-specific metadata or ids), write `--results`.
    simple: bool,
    user: String,
    hash: kith::sasl::Hash,
    results: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        fill: None,
        messages: 100_000,
        port: 0,
        ca: None,
        repeat: 20,
        page: 50,
        simple: false,
        user: "owner".into(),
        hash: kith::sasl::Hash::Sha256,
        results: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--fill" => a.fill = Some(val()?.into()),
            "--messages" => a.messages = val()?.parse().map_err(|e| format!("{e}"))?,
            "--port" => a.port = val()?.parse().map_err(|e| format!("{e}"))?,
            "--ca" => a.ca = Some(val()?.into()),
            "--repeat" => a.repeat = val()?.parse().map_err(|e| format!("{e}"))?,
            "--page" => a.page = val()?.parse().map_err(|e| format!("{e}"))?,
            "--simple" => a.simple = true,
            "--user" => a.user = val()?,
            "--scram-sha1" => a.hash = kith::sasl::Hash::Sha1,
            "--results" => a.results = Some(val()?.into()),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() {
    // `cargo test --all-targets` runs bench targets with no arguments; there is nothing to
    // measure without a server, so say so and succeed (`scripts/bench-mam` passes arguments).
    if std::env::args().len() == 1 {
        println!("bench-mam: no arguments, nothing measured; run scripts/bench-mam");
        return;
    }
    let result = parse_args().and_then(|a| match &a.fill {
        Some(dir) => fill(&a, dir),
        None if a.simple => smol::block_on(measure_simple(&a)),
        None => smol::block_on(measure(&a)),
    });
    if let Err(e) = result {
        eprintln!("bench-mam: {e}");
        std::process::exit(1);
    }
}

/// The first archive id, derived the same way by both modes.
fn base_id(messages: u64, now: u64) -> u64 {
    now - messages * STEP_MICROS
}

fn fill(a: &Args, dir: &std::path::Path) -> Result<(), String> {
    use kith::sasl::{derive_creds, encode_creds, Hash, DEFAULT_ITERATIONS};
    let t = Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let store = Store::open(&dir.join("kith.redb")).map_err(|e| e.to_string())?;
    let creds = [Hash::Sha1, Hash::Sha256, Hash::Sha512]
        .into_iter()
        .map(|h| derive_creds(PASSWORD, h, DEFAULT_ITERATIONS))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{e:?}"))?;
    let blob = encode_creds(&creds);
    smol::block_on(async {
        store
            .import_accounts(vec![(OWNER.to_string(), blob)], TombstoneRule::Override)
            .await
            .map_err(|e| e.to_string())?;
        let base = base_id(a.messages, kith::store::now_micros());
        // The measuring run finds the ids from the archive's metadata, so it doesn't need
        // `base`; half the messages are with peer0, half with peer1.
        let mut i = 0;
        while i < a.messages {
            let end = (i + 10_000).min(a.messages);
            let batch = (i..end)
                .map(|n| {
                    let with = format!("peer{}@localhost/res", n % 2);
                    let stanza = format!(
                        "<message xmlns='jabber:client' from='{with}' to='{OWNER}' type='chat' \
                         id='msg-{n}'><body>Message number {n}: the quick brown fox jumps over \
                         the lazy dog.</body><active xmlns='http://jabber.org/protocol/chatstates'/>\
                         </message>"
                    );
                    ArchiveEntry {
                        id: base + n * STEP_MICROS,
                        with,
                        stanza: stanza.into_bytes(),
                    }
                })
                .collect();
            store
                .mam_insert_batch(OWNER, batch)
                .await
                .map_err(|e| e.to_string())?;
            i = end;
        }
        Ok::<(), String>(())
    })?;
    let size = std::fs::metadata(dir.join("kith.redb")).map_or(0, |m| m.len());
    eprintln!(
        "filled {} messages in {:.2} s; kith.redb is {:.1} MiB",
        a.messages,
        t.elapsed().as_secs_f64(),
        size as f64 / 1048576.0
    );
    Ok(())
}

async fn measure(a: &Args) -> Result<(), String> {
    let ca = a.ca.clone().ok_or("--ca is required")?;
    let login = Login {
        addr: SocketAddr::from(([127, 0, 0, 1], a.port)),
        domain: "localhost".into(),
        tls: xmpp::client_config(&ca, false)?,
        password: PASSWORD.into(),
        plus: false,
        hash: kith::sasl::Hash::Sha256,
        salted: RefCell::new(Default::default()),
        pbkdf2_runs: RefCell::new(0),
    };
    let mut xs = xmpp::login(&login, "owner", "bench").await?;

    // Ids of the oldest and newest message (XEP-0313 #extended metadata); the synthetic ids
    // are evenly spaced, so the middle one is computable.
    xs.send(b"<iq type='get' id='md'><metadata xmlns='urn:xmpp:mam:2'/></iq>")
        .await?;
    let md = until_iq(&mut xs, "md").await?;
    let md = md
        .get_child("metadata", "urn:xmpp:mam:2")
        .ok_or("no metadata")?;
    let id_of = |n: &str| {
        md.get_child(n, "urn:xmpp:mam:2")
            .and_then(|e| e.attr("id"))
            .and_then(kith::stanza::mam::decode_id)
            .ok_or(format!("no {n} in metadata"))
    };
    let (first, last) = (id_of("start")?, id_of("end")?);
    let count = (last - first) / STEP_MICROS + 1;
    let middle = encode_id(first + (count / 2) * STEP_MICROS);
    println!(
        "archive: {count} messages; page size {}; {} runs each",
        a.page, a.repeat
    );
    let page = a.page;
    let cases: Vec<(&str, String, String)> = vec![
        (
            "last page (<before/>)",
            String::new(),
            format!("<max>{page}</max><before/>"),
        ),
        (
            "middle page (after=middle id)",
            String::new(),
            format!("<max>{page}</max><after>{middle}</after>"),
        ),
        (
            "middle page backwards (before=middle id)",
            String::new(),
            format!("<max>{page}</max><before>{middle}</before>"),
        ),
        ("first page", String::new(), format!("<max>{page}</max>")),
        (
            "last page with=peer1 (bare)",
            "<field var='with'><value>peer1@localhost</value></field>".into(),
            format!("<max>{page}</max><before/>"),
        ),
        (
            "count only (<max>0</max>, full scan)",
            String::new(),
            "<max>0</max>".into(),
        ),
    ];
    println!(
        "{:<42} {:>9} {:>9} {:>9}",
        "query", "min ms", "median", "max"
    );
    for (name, fields, rsm) in cases {
        let mut times = Vec::new();
        for r in 0..a.repeat {
            let t = Instant::now();
            let n = query(&mut xs, &format!("q{r}"), &fields, &rsm).await?;
            times.push(t.elapsed());
            let want = if rsm == "<max>0</max>" { 0 } else { page };
            if n != want {
                return Err(format!("{name}: got {n} results, wanted {want}"));
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<42} {:>9.2} {:>9.2} {:>9.2}",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    Ok(())
}

/// The last page (`<before/>`, what a client opening a chat asks for) and the first page of
/// `--user`'s archive on any server; prints and writes `last_page_ms` / `first_page_ms`
/// medians.
async fn measure_simple(a: &Args) -> Result<(), String> {
    let ca = a.ca.clone().ok_or("--ca is required")?;
    let login = Login {
        addr: SocketAddr::from(([127, 0, 0, 1], a.port)),
        domain: "localhost".into(),
        tls: xmpp::client_config(&ca, false)?,
        password: PASSWORD.into(),
        plus: false,
        hash: a.hash,
        salted: RefCell::new(Default::default()),
        pbkdf2_runs: RefCell::new(0),
    };
    let mut xs = xmpp::login(&login, &a.user, "mam").await?;
    let page = a.page;
    let mut out = String::new();
    for (key, rsm) in [
        ("last_page_ms", format!("<max>{page}</max><before/>")),
        ("first_page_ms", format!("<max>{page}</max>")),
    ] {
        let mut times = Vec::new();
        for r in 0..a.repeat {
            let t = Instant::now();
            let n = query(&mut xs, &format!("q{r}"), "", &rsm).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if n != page {
                return Err(format!("{key}: got {n} results, wanted {page}"));
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!("{key}: median {median:.2} ms over {} queries", a.repeat);
        out.push_str(&format!("{key}\t{median:.3}\n"));
    }
    if let Some(path) = &a.results {
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Sends one query and reads its results and the iq result; returns the number of results.
async fn query(xs: &mut Xmpp<Tls>, id: &str, fields: &str, rsm: &str) -> Result<usize, String> {
    let q = format!(
        "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'>\
         <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>urn:xmpp:mam:2</value></field>{fields}</x>\
         <set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query></iq>"
    );
    xs.send(q.as_bytes()).await?;
    let mut n = 0;
    loop {
        let el = xs.element().await?;
        if el.name() == "message" && el.get_child("result", "urn:xmpp:mam:2").is_some() {
            n += 1;
        } else if el.name() == "iq" && el.attr("id") == Some(id) {
            if el.attr("type") != Some("result") {
                return Err(format!("query failed: {el}"));
            }
            return Ok(n);
        }
    }
}

async fn until_iq(xs: &mut Xmpp<Tls>, id: &str) -> Result<kith::xml::Element, String> {
    loop {
        let el = xs.element().await?;
        if el.name() == "iq" && el.attr("id") == Some(id) {
            return Ok(el);
        }
    }
}
