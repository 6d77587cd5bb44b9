//! Run statistics: frame counts, throughput, and capture-to-display latency percentiles from a
//! fixed-size histogram (memory does not grow with the length of a run).

use serde::Serialize;

/// Bin width of [`Histogram`], in milliseconds.
const BIN_MS: f64 = 0.1;
/// Values at or above this land in the last bin.
const RANGE_MS: f64 = 2000.0;

/// Millisecond timings in 0.1 ms bins up to 2 s.
#[derive(Debug, Clone)]
pub struct Histogram {
    bins: Vec<u32>,
    count: u64,
    sum_ms: f64,
    max_ms: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            bins: vec![0; (RANGE_MS / BIN_MS) as usize + 1],
            count: 0,
            sum_ms: 0.0,
            max_ms: 0.0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ms: f64) {
        let ms = ms.max(0.0);
        let bin = ((ms / BIN_MS) as usize).min(self.bins.len() - 1);
        self.bins[bin] += 1;
        self.count += 1;
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
    }

    /// The value below which `q` (0..=1) of the records fall, to the bin's upper edge.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.bins.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                let overflow = i + 1 == self.bins.len();
                return if overflow {
                    self.max_ms
                } else {
                    ((i + 1) as f64 * BIN_MS).min(self.max_ms)
                };
            }
        }
        self.max_ms
    }

    pub fn summary(&self) -> TimingSummary {
        TimingSummary {
            count: self.count,
            mean: if self.count == 0 {
                0.0
            } else {
                self.sum_ms / self.count as f64
            },
            p50: self.quantile(0.5),
            p95: self.quantile(0.95),
            max: self.max_ms,
        }
    }
}

/// Percentiles of one timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimingSummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

/// What a run did, printed at exit and written by `--stats-json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStats {
    pub source: String,
    /// Frames read from the source.
    pub frames_in: u64,
    /// Frames that went through detection/tracking and the model.
    pub frames_analysed: u64,
    /// Frames rendered (shown in the window, or written in headless/offline runs).
    pub frames_shown: u64,
    /// Frames replaced before analysis or before rendering because the stage was busy.
    pub frames_dropped: u64,
    pub frames_recorded: u64,
    pub wall_s: f64,
    /// Frames shown per second of wall time.
    pub fps: f64,
    /// From the frame leaving the source to it being shown (or handed to the recorder).
    pub latency_ms: TimingSummary,
    /// Per-stage compute time per frame.
    pub detect_ms: TimingSummary,
    pub model_ms: TimingSummary,
    pub render_ms: TimingSummary,
    /// Face records produced (one per face per frame).
    pub faces: u64,
    /// Distinct track ids created.
    pub tracks: u64,
    pub notices: Vec<String>,
}

impl RunStats {
    /// Human-readable summary lines.
    pub fn report(&self) -> String {
        let l = &self.latency_ms;
        let mut lines = vec![
            format!("source: {}", self.source),
            format!(
                "frames: {} in, {} analysed, {} shown, {} dropped, {} recorded",
                self.frames_in,
                self.frames_analysed,
                self.frames_shown,
                self.frames_dropped,
                self.frames_recorded
            ),
            format!(
                "speed: {:.1} fps over {:.1} s; capture-to-display latency p50 {:.1} ms, p95 {:.1} ms",
                self.fps, self.wall_s, l.p50, l.p95
            ),
            format!(
                "per frame (p50): detection {:.1} ms (when run), model {:.1} ms, render {:.1} ms; {} faces in {} tracks",
                self.detect_ms.p50, self.model_ms.p50, self.render_ms.p50, self.faces, self.tracks
            ),
        ];
        lines.extend(self.notices.iter().map(|n| format!("note: {n}")));
        lines.join("\n")
    }
}

/// What this process holds right now (Linux `/proc`; `None` elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcessUsage {
    pub rss_mb: f64,
    pub threads: u64,
    pub open_files: u64,
}

impl ProcessUsage {
    pub fn now() -> Option<Self> {
        Some(Self {
            rss_mb: proc_status_field("VmRSS:")? as f64 / 1024.0,
            threads: proc_status_field("Threads:")?,
            open_files: std::fs::read_dir("/proc/self/fd").ok()?.count() as u64,
        })
    }
}

/// A number from this process's `/proc/self/status` line `name` (kB for memory fields).
pub fn proc_status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_known_values() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(ms as f64);
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50 - 50.0).abs() <= 0.11, "{s:?}");
        assert!((s.p95 - 95.0).abs() <= 0.11, "{s:?}");
        assert_eq!(s.max, 100.0);
        assert!((s.mean - 50.5).abs() < 1e-9);
        let mut slow = Histogram::default();
        slow.record(5000.0);
        assert_eq!(
            slow.quantile(0.5),
            5000.0,
            "beyond the range reports the max"
        );
        assert_eq!(Histogram::default().quantile(0.5), 0.0);
    }

    #[test]
    fn process_usage_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let usage = ProcessUsage::now().unwrap();
            assert!(usage.rss_mb > 1.0 && usage.threads >= 1 && usage.open_files >= 3);
        }
    }
}
