//! Every input in `fuzz/regressions/<target>/` (minimised crashers found by `cargo fuzz`, and
//! hand-made hostile files) goes through its fuzz target's harness: none may panic, hang or
//! exhaust memory again.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

/// Longer than any input takes: a hang shows as a failure, not a stuck CI.
const MAX_PER_INPUT: Duration = Duration::from_secs(10);

fn run_all(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    for input in inputs {
        let data = std::fs::read(&input).unwrap();
        let started = Instant::now();
        harness(&data);
        assert!(
            started.elapsed() < MAX_PER_INPUT,
            "{} took {:?}",
            input.display(),
            started.elapsed()
        );
    }
}

#[test]
fn mp4_inputs() {
    run_all("mp4", harness::mp4);
}

#[test]
fn weights_inputs() {
    run_all("weights", harness::weights);
}

#[test]
fn dataset_csv_inputs() {
    run_all("dataset_csv", harness::dataset_csv);
}

#[test]
fn image_file_inputs() {
    run_all("image_file", harness::image_file);
}

#[test]
fn camera_frame_inputs() {
    run_all("camera_frame", harness::camera_frame);
}
