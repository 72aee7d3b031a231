//! Readings from /proc: resident memory and CPU time of the server (by pid) and of ourselves.
//! A server's reading covers its process and every descendant (ejabberd's `erl` runs
//! `beam.smp` and helper processes; kith and Prosody are one process).

/// Clock ticks per second for /proc/PID/stat times. 100 on every Linux we run on
/// (`getconf CLK_TCK`); the script checks it.
const CLK_TCK: f64 = 100.0;

#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
    /// RssAnon, KiB (heap and stacks; excludes the mapped binary).
    pub anon_kib: u64,
    pub threads: u64,
    /// utime + stime, milliseconds.
    pub cpu_ms: f64,
}

pub fn sample(pid: &str) -> Option<Sample> {
    let mut total = sample_one(pid)?;
    if pid != "self" {
        for child in descendants(pid) {
            if let Some(c) = sample_one(&child) {
                total.rss_kib += c.rss_kib;
                total.hwm_kib += c.hwm_kib;
                total.anon_kib += c.anon_kib;
                total.threads += c.threads;
                total.cpu_ms += c.cpu_ms;
            }
        }
    }
    Some(total)
}

/// The pids of every live descendant of `pid` (by the parent pid in /proc/*/stat).
fn descendants(pid: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent_of = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        // Field 4 (ppid) follows the state, after the parenthesized command name.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1).map(str::to_string));
        if let Some(ppid) = ppid {
            parent_of.push((name, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid.to_string()];
    while let Some(p) = frontier.pop() {
        for (child, ppid) in &parent_of {
            if *ppid == p {
                out.push(child.clone());
                frontier.push(child.clone());
            }
        }
    }
    out
}

fn sample_one(pid: &str) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Sample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        anon_kib: field("RssAnon:"),
        threads: field("Threads:"),
        cpu_ms: cpu_ms(pid)?,
    })
}

/// utime + stime of the whole process (threads that exited included), milliseconds.
pub fn cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / CLK_TCK)
}

pub fn self_cpu_ms() -> f64 {
    cpu_ms("self").unwrap_or(0.0)
}
