//! Puts the two face detectors' models into OUT_DIR, so the binary embeds them without a copy
//! in this repository:
//! - the SeetaFace frontal model that ships inside the `rustface` crate (in cargo's registry
//!   sources, at the version Cargo.lock pins);
//! - libfacedetection's YuNet weights from `$AFFECTCAM_YUNET_WEIGHTS`, else from
//!   `../shared/weights/facedetect/` (which may not be copied into the repository). Without
//!   either the build still succeeds with an empty file in their place, and the YuNet detector
//!   reports at run time that this build lacks it.
//!
//! With the `cuda` feature it also compiles `src/model/ops/cuda/kernels.cu` to PTX with nvcc.

use std::path::{Path, PathBuf};

const MODEL: &str = "model/seeta_fd_frontal_v1.0.bin";
const YUNET_ENV: &str = "AFFECTCAM_YUNET_WEIGHTS";
const YUNET_SHARED: &str = "../shared/weights/facedetect/yunet.safetensors";

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

/// Copies the YuNet weights into `out`, or leaves an empty file there when there are none.
fn embed_yunet(manifest: &Path, out: &Path) {
    println!("cargo:rerun-if-env-changed={YUNET_ENV}");
    let source = std::env::var_os(YUNET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join(YUNET_SHARED));
    println!("cargo:rerun-if-changed={}", source.display());
    let target = out.join("yunet.safetensors");
    if source.is_file() {
        std::fs::copy(&source, &target)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", source.display()));
    } else {
        println!(
            "cargo:warning=YuNet face-detector weights not found at {}: this build can only \
             use --detector seeta (set {YUNET_ENV} to the file)",
            source.display()
        );
        std::fs::write(&target, b"").expect("OUT_DIR is writable");
    }
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
    embed_yunet(&manifest, &out);
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernels(&manifest, &out);
    }
}

/// The custom ops' CUDA kernels as PTX for compute capability 7.5: the driver compiles PTX
/// for the GPU it finds, so one file serves every GPU from Turing on (nvcc 13's oldest
/// target), and the kernels use nothing newer than float atomicAdd.
fn compile_kernels(manifest: &Path, out: &Path) {
    const KERNELS: &str = "src/model/ops/cuda/kernels.cu";
    println!("cargo:rerun-if-changed={KERNELS}");
    println!("cargo:rerun-if-env-changed=NVCC");
    let nvcc = std::env::var_os("NVCC").unwrap_or_else(|| "nvcc".into());
    let ptx = out.join("affectcam_kernels.ptx");
    let status = std::process::Command::new(&nvcc)
        .args(["-ptx", "-O3", "-arch=compute_75", "-o"])
        .arg(&ptx)
        .arg(manifest.join(KERNELS))
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (the cuda feature needs nvcc): {e}",
                nvcc.to_string_lossy()
            )
        });
    assert!(status.success(), "nvcc failed on {KERNELS}");
}
