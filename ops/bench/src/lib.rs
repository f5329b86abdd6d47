//! What the load tools share: reading a process's CPU time.

use anyhow::Context;

/// A process's user + system CPU time, microseconds (all its threads,
/// fields 14 and 15 of `/proc/PID/stat`, in clock ticks). `pid` None: this
/// process.
pub fn cpu_us(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) * 1_000_000 / ticks_per_s())
}

/// `getconf CLK_TCK`: 100 on Linux for every architecture in use (asked
/// once).
fn ticks_per_s() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}
