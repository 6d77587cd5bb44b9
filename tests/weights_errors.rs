//! A wrong, truncated or foreign weights file ends in one clear error line naming the file.

mod common;

use affectcam::model::weights::write_safetensors;
use affectcam::model::{AffectModel, ModelMeta};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::Path;

/// A complete, valid weights file with random values.
fn random_weights(path: &Path) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    AffectModel::new(vb, ModelMeta::default()).unwrap();
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let meta = ModelMeta::default().to_metadata();
    write_safetensors(path, &tensors, meta.clone()).unwrap();
    (tensors, meta)
}

/// Runs `predict` on a generated image with `weights`; returns (exit code, stderr).
fn predict_with(weights: &Path) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("face.png");
    image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    })
    .save(&image)
    .unwrap();
    let out = common::affectcam()
        .args(["predict", "--device", "cpu", "--weights"])
        .arg(weights)
        .arg(image)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn assert_one_line_error(weights: &Path, needle: &str) {
    let (code, stderr) = predict_with(weights);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(&weights.display().to_string()),
        "file not named: {stderr}"
    );
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}

#[test]
fn valid_file_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.safetensors");
    random_weights(&path);
    let model = AffectModel::load(&path, &Device::Cpu).unwrap();
    assert_eq!(model.meta, ModelMeta::default());
    let (code, stderr) = predict_with(&path);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn not_a_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.safetensors");
    std::fs::write(&path, "just some text, not weights").unwrap();
    assert_one_line_error(&path, "not a valid safetensors file");
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.safetensors");
    random_weights(&path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&path, "not a valid safetensors file");
}

#[test]
fn other_architecture_and_missing_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet.safetensors");
    let (tensors, mut meta) = random_weights(&path);
    meta.insert("arch".into(), "resnet18".into());
    write_safetensors(&path, &tensors, meta).unwrap();
    assert_one_line_error(
        &path,
        "metadata `arch` is `resnet18`, expected `mobilenet_v2_1.0`",
    );
    write_safetensors(&path, &tensors, HashMap::new()).unwrap();
    assert_one_line_error(&path, "metadata `arch` is missing");
}

#[test]
fn wrong_or_missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shapes.safetensors");
    let (mut tensors, meta) = random_weights(&path);
    tensors.insert(
        "block_3_expand.weight".into(),
        Tensor::zeros((7, 7), DType::F32, &Device::Cpu).unwrap(),
    );
    write_safetensors(&path, &tensors, meta.clone()).unwrap();
    assert_one_line_error(&path, "block_3_expand.weight");
    tensors.remove("emotion.bias");
    tensors.insert(
        "block_3_expand.weight".into(),
        Tensor::zeros((144, 24), DType::F32, &Device::Cpu).unwrap(),
    );
    write_safetensors(&path, &tensors, meta).unwrap();
    assert_one_line_error(&path, "emotion.bias");
}

#[test]
fn missing_file() {
    assert_one_line_error(
        Path::new("/nonexistent/weights.safetensors"),
        "No such file",
    );
}
