//! Pipeline speed on this machine: `annotate` throughput and `live` latency on synthetic
//! 640×480 H.264 clips (300 frames, 30 fps) with 1 and 3 faces: real photos from ../shared
//! pasted onto a background, encoded by affectcam. Prints medians of 3 runs.
//!
//! cargo bench --bench pipeline
//!
//! `PIPELINE_BENCH_ARGS` adds options to every run, e.g. an older configuration to compare:
//! `PIPELINE_BENCH_ARGS="--detector seeta --detect-width 240 --detect-every 4"`.

#[path = "../tests/common/clip.rs"]
#[allow(dead_code)] // the tests' clips; the bench uses two of them
mod clip;

use std::path::Path;
use std::process::Command;

const FRAMES: usize = 300;
const RUNS: usize = 3;

/// Runs affectcam `RUNS` times; returns each run's `--stats-json`.
fn runs(args: &[&str], stats: &Path) -> Vec<serde_json::Value> {
    let added = std::env::var("PIPELINE_BENCH_ARGS").unwrap_or_default();
    (0..RUNS)
        .map(|_| {
            let out = Command::new(env!("CARGO_BIN_EXE_affectcam"))
                .args(args)
                .args(added.split_whitespace())
                .arg("--stats-json")
                .arg(stats)
                .output()
                .expect("run affectcam");
            assert!(
                out.status.success(),
                "affectcam {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&std::fs::read(stats).unwrap()).unwrap()
        })
        .collect()
}

fn median(runs: &[serde_json::Value], pick: impl Fn(&serde_json::Value) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(pick).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if !shared.join("README.md").is_file() {
        eprintln!("skipping: {} not found", shared.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let output = dir.path().join("out.mp4");
    let output = output.to_str().unwrap();
    for (faces, clip) in [
        (1, clip::one_face(&shared, FRAMES)),
        (3, clip::three_faces(&shared, FRAMES)),
    ] {
        let input = dir.path().join(format!("{faces}.mp4"));
        clip::write_mp4(&clip, &input);
        let input = input.to_str().unwrap();
        let annotate = ["annotate", "--input", input, "--output", output];
        for extra in [&[][..], &["--classify-per-frame", "3"][..]] {
            let args: Vec<&str> = annotate.iter().chain(extra).copied().collect();
            let r = runs(&args, &stats);
            println!(
                "annotate {faces} face(s) {extra:?}: {:.1} fps (model {:.1} ms, detection {:.1} ms when run)",
                median(&r, |s| s["fps"].as_f64().unwrap()),
                median(&r, |s| s["model_ms"]["p50"].as_f64().unwrap()),
                median(&r, |s| s["detect_ms"]["p50"].as_f64().unwrap()),
            );
        }
        let r = runs(&["live", "--headless", "--source", input], &stats);
        println!(
            "live {faces} face(s), 30 fps file, headless: {:.1} fps, latency p50 {:.1} ms, p95 {:.1} ms, dropped {:.0} of {FRAMES}",
            median(&r, |s| s["fps"].as_f64().unwrap()),
            median(&r, |s| s["latency_ms"]["p50"].as_f64().unwrap()),
            median(&r, |s| s["latency_ms"]["p95"].as_f64().unwrap()),
            median(&r, |s| s["frames_dropped"].as_f64().unwrap()),
        );
    }
}
