//! Locates the SeetaFace frontal model that ships inside the `rustface` crate (in cargo's
//! registry sources, at the version Cargo.lock pins) and copies it into OUT_DIR, so the binary
//! embeds it without a copy in this repository.

use std::path::{Path, PathBuf};

const MODEL: &str = "model/seeta_fd_frontal_v1.0.bin";

fn rustface_version(lock: &str) -> Option<String> {
    let at = lock.find("name = \"rustface\"")?;
    let rest = &lock[at..];
    let line = rest.lines().find(|l| l.starts_with("version = "))?;
    Some(
        line.trim_start_matches("version = ")
            .trim_matches('"')
            .to_string(),
    )
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string(manifest.join("Cargo.lock")).unwrap_or_default();
    let version = rustface_version(&lock).unwrap_or_else(|| "0.1.7".to_string());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let registries = cargo_home.join("registry/src");
    let model = std::fs::read_dir(&registries)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(format!("rustface-{version}")).join(MODEL))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "rustface {version}'s {MODEL} not found under {}",
                registries.display()
            )
        });
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy(&model, out.join("seeta_fd_frontal_v1.0.bin"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", model.display()));
}
