//! Helpers shared by the end-to-end tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod clip;

use std::path::{Path, PathBuf};

/// `../shared` beside the repository, or `None` (with a notice) when a user's clone lacks it.
/// Under CI (`CI=true`) a missing `../shared` fails the test instead of skipping it.
pub fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {} is missing", dir.display());
    }
    eprintln!(
        "skipping: {} not found (tests with real data need it)",
        dir.display()
    );
    None
}

/// A JSON file's value.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The affectcam binary built for this test run.
pub fn affectcam() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_affectcam"))
}

/// Runs affectcam and returns (success, stdout, stderr).
pub fn run_affectcam(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (bool, String, String) {
    let out = affectcam()
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
