//! Diagnostics: a global allocator that counts live allocations by exact size, so the heap
//! held per idle session can be broken down (`c2s --serve-counted`). Sizes tell the owners
//! apart well enough: rustls' 4096-byte deframer buffer, the session task, channel blocks.
//!
//! The counters cost two relaxed atomic adds per allocation; the generator carries them too
//! (one binary), which is noise next to TLS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

/// Sizes up to this are counted exactly; larger ones share the last slot (count and bytes).
const EXACT: usize = 1 << 16;

static COUNT: [AtomicI64; EXACT + 1] = [const { AtomicI64::new(0) }; EXACT + 1];
static BIG_BYTES: AtomicI64 = AtomicI64::new(0);

pub struct Counting;

fn add(size: usize, n: i64) {
    COUNT[size.min(EXACT)].fetch_add(n, Relaxed);
    if size >= EXACT {
        BIG_BYTES.fetch_add(n * size as i64, Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            add(l.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            add(l.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        add(l.size(), -1);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            add(l.size(), -1);
            add(new, 1);
        }
        q
    }
}

/// Live allocations: size → count, plus total bytes of those ≥ 64 KiB (under key `EXACT`).
pub type Snapshot = BTreeMap<usize, i64>;

pub fn snapshot() -> Snapshot {
    let mut s = Snapshot::new();
    for (size, c) in COUNT.iter().enumerate().take(EXACT) {
        let c = c.load(Relaxed);
        if c != 0 {
            s.insert(size, c);
        }
    }
    s.insert(EXACT, BIG_BYTES.load(Relaxed));
    s
}

pub fn live_bytes(s: &Snapshot) -> i64 {
    s.iter()
        .map(|(&size, &c)| if size == EXACT { c } else { size as i64 * c })
        .sum()
}

fn write(s: &Snapshot, path: &Path) -> std::io::Result<()> {
    let text: String = s.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

pub fn read(path: &Path) -> Option<Snapshot> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.parse().ok()?, v.parse().ok()?))
        })
        .collect()
}

/// Server side: answers snapshot requests (a file `request` holding a label) with
/// `snap-LABEL.tsv`, forever.
pub fn serve_snapshots(dir: &Path) {
    let req = dir.join("request");
    loop {
        if let Ok(label) = std::fs::read_to_string(&req) {
            let _ = std::fs::remove_file(&req);
            let _ = write(&snapshot(), &dir.join(format!("snap-{}.tsv", label.trim())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Generator side: asks the server for a snapshot and waits for it (up to 5 s).
pub fn request(dir: &Path, label: &str) -> Option<Snapshot> {
    let out = dir.join(format!("snap-{label}.tsv"));
    let _ = std::fs::remove_file(&out);
    let tmp = dir.join("request.tmp");
    std::fs::write(&tmp, label).ok()?;
    std::fs::rename(&tmp, dir.join("request")).ok()?;
    for _ in 0..250 {
        if let Some(s) = read(&out) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The sizes whose live bytes grew most between `a` and `b`, per session.
pub fn print_diff(a: &Snapshot, b: &Snapshot, sessions: usize, top: usize) {
    let n = sessions.max(1) as f64;
    let mut rows: Vec<(usize, i64, i64)> = b
        .keys()
        .chain(a.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|&size| {
            let dc = b.get(&size).copied().unwrap_or(0) - a.get(&size).copied().unwrap_or(0);
            let bytes = if size == EXACT { dc } else { dc * size as i64 };
            (size, dc, bytes)
        })
        .filter(|r| r.2 != 0)
        .collect();
    rows.sort_by_key(|r| -r.2);
    let total: i64 = live_bytes(b) - live_bytes(a);
    println!();
    println!(
        "live heap growth with {sessions} idle sessions: {:.1} KiB per session; by allocation size:",
        total as f64 / 1024.0 / n
    );
    println!();
    println!("| size (bytes) | allocations per session | bytes per session |");
    println!("|---|---|---|");
    let mut shown = 0i64;
    for (size, dc, bytes) in rows.iter().take(top) {
        let size = if *size == EXACT {
            ">= 65536".to_string()
        } else {
            size.to_string()
        };
        println!(
            "| {size} | {:.2} | {:.0} |",
            *dc as f64 / n,
            *bytes as f64 / n
        );
        shown += bytes;
    }
    println!("| (other sizes) | | {:.0} |", (total - shown) as f64 / n);
}
