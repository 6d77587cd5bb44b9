//! Pipeline speed on this machine: `annotate` throughput and `live` latency on a synthetic
//! 640×480 H.264 clip with 3 faces (real photos from ../shared pasted onto a background).
//!
//! cargo bench --bench pipeline            (needs ../shared; prints medians of 3 runs)

#[path = "../tests/common/clip.rs"]
mod clip;

use std::path::Path;
use std::process::Command;

fn run(args: &[&str], stats: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_affectcam"))
        .args(args)
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
}

fn median(mut v: Vec<f64>) -> f64 {
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
    let frames = 300;
    let three = clip::three_faces(&shared, frames);
    let input = dir.path().join("three.mp4");
    clip::write_mp4(&three, &input);
    let output = dir.path().join("out.mp4");
    let stats = dir.path().join("stats.json");
    let input_s = input.to_str().unwrap();
    let output_s = output.to_str().unwrap();

    let mut fps = Vec::new();
    for _ in 0..3 {
        let s = run(
            &["annotate", "--input", input_s, "--output", output_s],
            &stats,
        );
        fps.push(s["fps"].as_f64().unwrap());
    }
    println!(
        "annotate, 640x480, 3 faces, {frames} frames: median {:.1} fps (runs {fps:.1?})",
        median(fps.clone())
    );

    let mut p50 = Vec::new();
    let mut p95 = Vec::new();
    let mut dropped = Vec::new();
    for _ in 0..3 {
        let s = run(&["live", "--headless", "--source", input_s], &stats);
        p50.push(s["latency_ms"]["p50"].as_f64().unwrap());
        p95.push(s["latency_ms"]["p95"].as_f64().unwrap());
        dropped.push(s["frames_dropped"].as_f64().unwrap());
    }
    println!(
        "live (30 fps file, headless), 3 faces: latency p50 {:.1} ms, p95 {:.1} ms, dropped {:.0} of {frames} (medians of 3)",
        median(p50),
        median(p95),
        median(dropped)
    );
}
