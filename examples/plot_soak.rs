//! Plots a soak run from its log of `--report-every` status lines: resident memory, threads
//! and open files, and fps and capture-to-display latency, per interval.
//!
//!     cargo run --release --example plot_soak -- soak/live.log soak/ [annotate]
//!
//! The optional last word names the command in the titles (default: live).

use affectcam::report::plot_curves;
use anyhow::{bail, Context};
use std::path::PathBuf;

/// The words of a status line, e.g. "status: 34 frames shown, 14.8 fps, latency p50 5.7 ms
/// p95 49.3 ms, rss 76.7 MB, 10 threads, 7 open files".
fn words(line: &str) -> Vec<&str> {
    line.split([' ', ',']).filter(|w| !w.is_empty()).collect()
}

/// The number after `key` ("p50" → 5.7) or, with `before`, before it ("threads" → 10).
fn number_near(line: &str, key: &str, before: bool) -> f64 {
    let words = words(line);
    let at = words.iter().position(|w| *w == key);
    let value = match at {
        Some(i) if before && i > 0 => words.get(i - 1),
        Some(i) if !before => words.get(i + 1),
        _ => None,
    };
    value.and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (log, out, command) = match &args[..] {
        [log, out] => (log, out, "live"),
        [log, out, command] => (log, out, command.as_str()),
        _ => bail!("usage: plot_soak LOG OUT_DIR [COMMAND]"),
    };
    let text = std::fs::read_to_string(log).with_context(|| format!("cannot read {log}"))?;
    let status: Vec<&str> = text.lines().filter(|l| l.starts_with("status:")).collect();
    if status.is_empty() {
        bail!("{log} has no status lines (run {command} with --report-every)");
    }
    let column = |key: &str, before: bool| -> Vec<f64> {
        status.iter().map(|l| number_near(l, key, before)).collect()
    };
    let intervals: Vec<usize> = (1..=status.len()).collect();
    let x = ("interval (--report-every)", &intervals[..]);
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    plot_curves(
        &out.join("soak_memory.png"),
        &format!("{command} soak: resident memory"),
        x,
        &[("RSS", &column("rss", false))],
        "MB",
    )?;
    plot_curves(
        &out.join("soak_handles.png"),
        &format!("{command} soak: threads and open files"),
        x,
        &[
            ("threads", &column("threads", true)),
            ("open files", &column("open", true)),
        ],
        "count",
    )?;
    plot_curves(
        &out.join("soak_latency.png"),
        &format!("{command} soak: fps and capture-to-display latency"),
        x,
        &[
            ("latency p50 (ms)", &column("p50", false)),
            ("latency p95 (ms)", &column("p95", false)),
            ("fps", &column("fps", true)),
        ],
        "ms / fps",
    )?;
    println!(
        "wrote soak_memory.png, soak_handles.png and soak_latency.png in {}",
        out.display()
    );
    Ok(())
}
