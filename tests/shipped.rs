//! The shipped weights load with no flags and read the sample photos sensibly.

mod common;

#[test]
fn predict_with_shipped_weights_and_no_flags() {
    let Some(shared) = common::shared() else {
        return;
    };
    let out = common::affectcam()
        .args(["predict", "--json"])
        .arg(shared.join("samples/astronaut.png"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Eileen Collins smiles broadly in the NASA portrait.
    assert_eq!(line["label"], "happy", "{line}");
    assert!(line["valence"].as_f64().unwrap() > 0.2, "{line}");
    // The detector's score and landmarks (the C++ reference: 0.932, nose at 220.4, 124.6).
    assert!(
        (line["detector_score"].as_f64().unwrap() - 0.932).abs() < 1e-3,
        "{line}"
    );
    let nose = &line["landmarks"]["nose"];
    assert!((nose[0].as_f64().unwrap() - 220.4).abs() < 1.0, "{line}");
    assert!((nose[1].as_f64().unwrap() - 124.6).abs() < 1.0, "{line}");
}

#[test]
fn predict_with_the_seeta_detector_has_no_landmarks() {
    let Some(shared) = common::shared() else {
        return;
    };
    let out = common::affectcam()
        .args(["predict", "--json", "--detector", "seeta"])
        .arg(shared.join("samples/astronaut.png"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        line["landmarks"].is_null() && line["detector_score"].as_f64().is_some(),
        "{line}"
    );
}

#[test]
fn shipped_metadata_matches_the_model_card() {
    let model = affectcam::model::AffectModel::shipped(&candle_core::Device::Cpu).unwrap();
    let pre = model.meta.preprocess;
    assert_eq!(pre.input_size, 128);
    assert_eq!(pre.color, affectcam::model::preprocess::ColorMode::Gray);
    assert_eq!(pre.crop_margin, 0.0);
    assert_eq!(pre.crop, affectcam::model::preprocess::CropMode::Box);
    // v9: the whole network trained on class-balanced draws (v4, v6 and v8: the head only).
    for setting in ["\"finetune_blocks\":null", "\"sampling\":\"balanced\""] {
        assert!(
            model.meta.recipe.contains(setting),
            "{setting}: {}",
            model.meta.recipe
        );
    }
}

#[test]
fn bf16_and_int8_read_faces_as_f32_does_and_fall_back_where_they_cannot_run() {
    let Some(shared) = common::shared() else {
        return;
    };
    let photo = shared.join("samples/grace_hopper.jpg");
    let predict = |precision: &str, simd: &str| {
        let out = common::affectcam()
            .args([
                "predict",
                "--json",
                "--device",
                "cpu",
                "--precision",
                precision,
            ])
            .arg(&photo)
            .env("AFFECTCAM_SIMD", simd)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (line, stderr)
    };
    let (f32_line, _) = predict("f32", "avx512");
    let probs = |l: &serde_json::Value| -> Vec<f64> {
        let p = l["probs"].as_object().expect("probabilities by class");
        p.values().map(|v| v.as_f64().unwrap()).collect()
    };
    let valence = |l: &serde_json::Value| l["valence"].as_f64().unwrap();
    // int8 is the coarser (calibrated, FER+ accuracy as f32's): this face's valence moves by
    // a few hundredths under it.
    for (precision, bound) in [("bf16", 0.05), ("int8", 0.1)] {
        // Capped below AVX-512, neither can run: said in one line, and the result is f32's on
        // the same kernels (f32 on AVX-512 sums in another order: equal to ~1e-7, not bit for
        // bit).
        let (fallback, stderr) = predict(precision, "avx2");
        assert!(stderr.contains("running in f32"), "{precision}: {stderr}");
        assert_eq!(fallback["probs"], predict("f32", "avx2").0["probs"]);
        let (line, _) = predict(precision, "avx512");
        assert_eq!(line["label"], f32_line["label"], "{precision}");
        for (a, b) in probs(&line).iter().zip(probs(&f32_line)) {
            assert!((a - b).abs() < bound, "{line} against {f32_line}");
        }
        assert!(
            (valence(&line) - valence(&f32_line)).abs() < bound,
            "{precision}"
        );
    }
}

#[test]
fn calibrate_writes_every_projections_input_ranges_and_int8_runs_on_them() {
    let Some(shared) = common::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("calibrated.safetensors");
    let run = common::affectcam()
        .args(["calibrate", "--images", "64", "--data"])
        .arg(shared.join("data/ferplus"))
        .arg("--out")
        .arg(&out)
        .arg("--cache-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let file =
        affectcam::model::weights::read_safetensors(&out, &candle_core::Device::Cpu).unwrap();
    let shipped = affectcam::model::weights::parse_safetensors(
        std::path::Path::new("shipped"),
        affectcam::model::SHIPPED_WEIGHTS,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    // MobileNetV2's 17 blocks, each projection's hidden channels, none negative (ReLU6).
    let ranges: Vec<_> = file
        .tensors
        .iter()
        .filter(|(name, _)| name.ends_with(".input_range"))
        .collect();
    assert_eq!(ranges.len(), 17);
    for (name, range) in ranges {
        let weight = &file.tensors[&name.replace("input_range", "weight")];
        assert_eq!(range.dims1().unwrap(), weight.dims2().unwrap().1, "{name}");
        let values: Vec<f32> = range.to_vec1().unwrap();
        assert!(values.iter().all(|&v| (0.0..=6.0).contains(&v)), "{name}");
        // The shipped weights are calibrated too (on 1,024 faces of three sources).
        assert!(shipped.tensors.contains_key(name), "{name}");
    }
    assert_eq!(file.metadata, shipped.metadata);
    let predict = common::affectcam()
        .args([
            "predict",
            "--json",
            "--device",
            "cpu",
            "--precision",
            "int8",
            "--weights",
        ])
        .arg(&out)
        .arg(shared.join("samples/grace_hopper.jpg"))
        .output()
        .unwrap();
    assert!(
        predict.status.success(),
        "{}",
        String::from_utf8_lossy(&predict.stderr)
    );
}
