//! `train` then `eval` end to end on real data (a small slice of FER+ and DiffusionFER).

mod common;

use std::path::Path;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = common::affectcam().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_partial_finetune_then_eval_with_leakage_check() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (ferplus, diffusion) = (
        shared.join("data/ferplus"),
        shared.join("data/diffusionfer"),
    );
    let init = shared.join("weights/imagenet/mobilenet_v2_1.0_keras_imagenet.safetensors");
    let run_dir = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let train_args = [
        "train",
        "--data",
        s(&ferplus),
        "--data",
        s(&diffusion),
        "--limit",
        "96",
        "--epochs",
        "2",
        "--finetune-blocks",
        "2",
        "--init",
        s(&init),
        "--out",
        s(&run_dir),
        "--cache-dir",
        s(&cache),
        "--device",
        "cpu",
    ];
    let (ok, stdout, stderr) = run(&train_args);
    assert!(ok, "train failed: {stderr}");
    assert!(stdout.contains("accuracy"), "{stdout}");
    for file in [
        "weights.safetensors",
        "recipe.json",
        "history.csv",
        "loss.png",
        "accuracy.png",
        "va_ccc.png",
        "eval_test_ferplus.json",
        "eval_test_diffusionfer.json",
        "confusion_test_ferplus.png",
    ] {
        assert!(run_dir.join(file).is_file(), "missing {file}");
    }
    let history = std::fs::read_to_string(run_dir.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 3, "{history}");
    let recipe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("recipe.json")).unwrap())
            .unwrap();
    assert_eq!(recipe["config"]["finetune_blocks"], 2);

    // The same setting again reuses the cached activations.
    let (ok, _, stderr) = run(&train_args);
    assert!(
        ok && stderr.contains("using cached activations"),
        "{stderr}"
    );

    let eval_dir = tmp.path().join("eval");
    let json = tmp.path().join("report.json");
    let preds = tmp.path().join("predictions.csv");
    let (ok, stdout, stderr) = run(&[
        "eval",
        "--weights",
        s(&run_dir.join("weights.safetensors")),
        "--data",
        s(&diffusion),
        "--split",
        "test",
        "--train-data",
        s(&diffusion),
        "--json",
        s(&json),
        "--predictions",
        s(&preds),
        "--out",
        s(&eval_dir),
        "--device",
        "cpu",
    ]);
    assert!(ok, "eval failed: {stderr}");
    assert!(stdout.contains("valence"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = report["n"].as_u64().unwrap();
    assert_eq!(n, 100);
    for key in [
        "accuracy",
        "f1_weighted",
        "f1_macro",
        "cohen_kappa",
        "auc_ovr",
        "balanced_accuracy",
    ] {
        assert!(
            report["classification"][key].is_number(),
            "classification.{key}"
        );
    }
    assert_eq!(
        report["classification"]["confusion"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    for key in ["rmse", "pearson", "ccc", "sagr"] {
        assert!(
            report["valence"][key].is_number() && report["arousal"][key].is_number(),
            "{key}"
        );
    }
    // Test and train splits of one dataset share no images.
    assert_eq!(report["leakage"]["duplicates"], 0);
    let rows = std::fs::read_to_string(&preds).unwrap();
    assert_eq!(rows.lines().count() as u64, n + 1);
    assert!(rows
        .lines()
        .next()
        .unwrap()
        .starts_with("file,true_label,predicted_label,p_neutral"));
    for file in [
        "confusion.png",
        "examples_correct.png",
        "examples_wrong.png",
    ] {
        assert!(eval_dir.join(file).is_file(), "missing {file}");
    }
}

#[test]
fn bad_rows_fail_with_file_and_line_or_are_skipped_and_counted() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let faces = shared.join("data/diffusionfer/DiffusionEmotion_S_cropped");
    let mut rows = Vec::new();
    for (folder, label) in [("happy", 1), ("sad", 2)] {
        for entry in std::fs::read_dir(faces.join(folder)).unwrap().take(10) {
            rows.push(format!(
                "{},0.1,0.2,{label}",
                entry.unwrap().path().display()
            ));
        }
    }
    rows.insert(1, "missing.png,0,0,0".to_string()); // line 3
    rows.insert(4, rows[0].replace(",0.1,", ",3.0,")); // line 6: valence out of range
    let sheet = tmp.path().join("sheet.csv");
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(
        &sheet,
        format!("subDirectory_filePath,valence,arousal,expression\n{body}"),
    )
    .unwrap();
    let out = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let args = [
        "train",
        "--data",
        s(&sheet),
        "--epochs",
        "1",
        "--init",
        "none",
        "--finetune-blocks",
        "0",
        "--out",
        s(&out),
        "--cache-dir",
        s(&cache),
        "--device",
        "cpu",
    ];
    let (ok, _, stderr) = run(&args);
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("sheet.csv:3:") && stderr.contains("missing.png"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&[&args[..], &["--skip-bad"]].concat());
    assert!(ok, "{stderr}");
    assert!(stderr.contains("2 rows skipped"), "{stderr}");
    let skipped = std::fs::read_to_string(out.join("skipped.txt")).unwrap();
    assert!(
        skipped.contains("sheet.csv:6:") && skipped.contains("outside [-1, 1]"),
        "{skipped}"
    );
}

#[test]
fn eval_says_which_split_it_scored_and_how_many_of_how_many() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("report.json");
    let data = shared.join("data/diffusionfer");
    let (ok, stdout, stderr) = run(&["eval", "--data", s(&data), "--json", s(&json)]);
    assert!(ok, "{stderr}");
    // DiffusionFER has no splits of its own: the default scores the seeded 15 % test split.
    let line = stdout.lines().next().unwrap();
    assert!(
        line.starts_with("scored the test split made here (15 %, seed 0)")
            && line.ends_with("images; --split all scores every image"),
        "{line}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let scored = &report["scored"][0];
    let (images, of) = (
        scored["images"].as_u64().unwrap(),
        scored["of"].as_u64().unwrap(),
    );
    assert_eq!(
        (scored["split"].as_str(), scored["seeded_split"].as_u64()),
        (Some("test"), Some(0))
    );
    assert!(
        images * 100 > of * 13 && images * 100 < of * 17,
        "{images} of {of}"
    );
    assert!(
        line.contains(&format!(": {images} of {of} images")),
        "{line}"
    );
    assert_eq!(report["n"].as_u64(), Some(images));

    let (ok, stdout, stderr) = run(&["eval", "--data", s(&data), "--split", "all"]);
    assert!(ok, "{stderr}");
    let line = stdout.lines().next().unwrap();
    assert!(
        line.starts_with("scored every split") && line.ends_with(&format!("{of} of {of} images")),
        "{line}"
    );
}

/// The `__metadata__` of a safetensors file.
fn safetensors_metadata(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"].clone()
}

#[test]
fn whole_network_on_aligned_augmented_crops_with_logit_adjustment() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let diffusion = shared.join("data/diffusionfer");
    let init = shared.join("weights/imagenet/mobilenet_v2_1.0_keras_imagenet.safetensors");
    let run_dir = tmp.path().join("run");
    let (ok, _, stderr) = run(&[
        "train",
        "--data",
        s(&diffusion),
        "--limit",
        "24",
        "--epochs",
        "1",
        "--va-repeat",
        "1",
        "--crop",
        "aligned",
        "--init",
        s(&init),
        "--out",
        s(&run_dir),
        "--cache-dir",
        s(&tmp.path().join("cache")),
        "--device",
        "cpu",
    ]);
    assert!(ok, "train failed: {stderr}");
    // Every image went through the detector; DiffusionFER's generated faces are all found.
    assert!(
        stderr.contains("diffusionfer train: no face found in 0 of 24 images"),
        "{stderr}"
    );
    let md = safetensors_metadata(&run_dir.join("weights.safetensors"));
    assert_eq!(md["crop_mode"], "aligned");
    assert_eq!(md["crop_eye_y"], "0.38");
    let recipe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("recipe.json")).unwrap())
            .unwrap();
    let config = &recipe["config"];
    assert!(config["augment"]["rotate_deg"].is_number(), "{config}");
    assert_eq!(config["detect"], true);
    assert_eq!(config["lr_schedule"], "cosine");
    let adjustment: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("logit_adjustment.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(adjustment["sweep"].as_array().unwrap().len(), 7);
    assert!(adjustment["tau"].is_number());

    // Eval of aligned weights finds the faces itself, and reports the valence sign.
    let json = tmp.path().join("report.json");
    let (ok, stdout, stderr) = run(&[
        "eval",
        "--weights",
        s(&run_dir.join("weights.safetensors")),
        "--data",
        s(&diffusion),
        "--json",
        s(&json),
        "--cache-dir",
        s(&tmp.path().join("cache")),
        "--device",
        "cpu",
    ]);
    assert!(ok, "eval failed: {stderr}");
    assert!(stderr.contains("no face found in"), "{stderr}");
    assert!(stdout.contains("valence sign agrees"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["valence_sign"]["agreement"].is_number());
}

#[test]
fn eval_detect_lists_photos_without_a_face_and_reuses_its_detections() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        shared.join("samples/grace_hopper.jpg"),
        tmp.path().join("grace.jpg"),
    )
    .unwrap();
    image::RgbImage::from_pixel(200, 200, image::Rgb([128, 128, 128]))
        .save(tmp.path().join("blank.png"))
        .unwrap();
    let sheet = tmp.path().join("labels.csv");
    std::fs::write(&sheet, "file,label\ngrace.jpg,neutral\nblank.png,neutral\n").unwrap();
    let (json, cache) = (tmp.path().join("report.json"), tmp.path().join("cache"));
    let eval = [
        "eval",
        "--data",
        s(&sheet),
        "--split",
        "all",
        "--detect",
        "--cache-dir",
        s(&cache),
        "--json",
        s(&json),
        "--device",
        "cpu",
    ];
    let (ok, stdout, stderr) = run(&eval);
    assert!(ok, "eval failed: {stderr}");
    assert!(stdout.contains("1 with no face found"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let no_face = report["scored"][0]["no_face"].as_array().unwrap();
    assert_eq!(no_face.len(), 1);
    assert!(no_face[0].as_str().unwrap().ends_with("blank.png"));
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(cached.len(), 1, "one detection cache file");
    let cache_file = cached[0].as_ref().unwrap().path();
    let written = std::fs::metadata(&cache_file).unwrap().modified().unwrap();
    // The second run reads the detections back (nothing new to write) and scores the same.
    let first = report["classification"].clone();
    let (ok, _, stderr) = run(&eval);
    assert!(ok, "{stderr}");
    let rewritten = std::fs::metadata(&cache_file).unwrap().modified().unwrap();
    assert_eq!(written, rewritten, "every detection came from the cache");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(again["classification"], first);
}

#[test]
fn vgg16_trains_and_its_weights_load_and_a_missing_init_is_one_line() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let diffusion = shared.join("data/diffusionfer");
    let run_dir = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    // No ImageNet VGG16 here: its default init is a file the user converts; saying so is one line.
    let (ok, _, stderr) = run(&["train", "--arch", "vgg16", "--data", s(&diffusion)]);
    assert!(!ok);
    assert!(
        stderr.contains("vgg16_keras_imagenet.safetensors")
            && stderr.contains("keras_h5_to_safetensors.py"),
        "{stderr}"
    );
    // Frozen from scratch (VGG16 is ~25× MobileNetV2's cost): a few images, to check the path.
    let (ok, _, stderr) = run(&[
        "train",
        "--arch",
        "vgg16",
        "--init",
        "none",
        "--finetune-blocks",
        "1",
        "--data",
        s(&diffusion),
        "--limit",
        "8",
        "--epochs",
        "1",
        "--va-repeat",
        "1",
        "--out",
        s(&run_dir),
        "--cache-dir",
        s(&cache),
        "--device",
        "cpu",
    ]);
    assert!(ok, "train failed: {stderr}");
    let weights = run_dir.join("weights.safetensors");
    assert_eq!(safetensors_metadata(&weights)["arch"], "vgg16");
    // The weights load as VGG16 wherever the model runs (eval and live use the same loader).
    let photo = shared.join("samples/grace_hopper.jpg");
    let (ok, stdout, stderr) = run(&[
        "predict",
        "--weights",
        s(&weights),
        "--device",
        "cpu",
        s(&photo),
    ]);
    assert!(ok, "predict failed: {stderr}");
    assert!(stdout.contains("valence"), "{stdout}");
}

#[test]
fn efficientnet_lite0_fine_tunes_from_imagenet_and_evaluates() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let diffusion = shared.join("data/diffusionfer");
    let run_dir = tmp.path().join("run");
    // The whole network (its 5×5 depthwise convs' backward included) from its ImageNet file.
    let (ok, _, stderr) = run(&[
        "train",
        "--arch",
        "efficientnet-lite0",
        "--data",
        s(&diffusion),
        "--limit",
        "16",
        "--epochs",
        "1",
        "--va-repeat",
        "1",
        "--out",
        s(&run_dir),
        "--cache-dir",
        s(&tmp.path().join("cache")),
        "--device",
        "cpu",
    ]);
    assert!(ok, "train failed: {stderr}");
    let weights = run_dir.join("weights.safetensors");
    assert_eq!(safetensors_metadata(&weights)["arch"], "efficientnet_lite0");
    let json = tmp.path().join("eval.json");
    let (ok, _, stderr) = run(&[
        "eval",
        "--weights",
        s(&weights),
        "--data",
        s(&diffusion),
        "--json",
        s(&json),
        "--device",
        "cpu",
    ]);
    assert!(ok, "eval failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["classification"].is_object(), "{report}");
}

#[test]
fn training_continues_from_affectcam_weights_head_included() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ferplus = shared.join("data/ferplus");
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/affectcam-mobilenetv2.safetensors");
    let run_dir = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let args = |color: &'static str| {
        vec![
            "train".to_string(),
            "--init".into(),
            s(&shipped).into(),
            "--data".into(),
            s(&ferplus).into(),
            "--color".into(),
            color.into(),
            "--finetune-blocks".into(),
            "0".into(),
            "--lr-head".into(),
            "1e-7".into(),
            "--epochs".into(),
            "1".into(),
            "--limit".into(),
            "200".into(),
            "--no-logit-adjust".into(),
            "--out".into(),
            s(&run_dir).into(),
            "--cache-dir".into(),
            s(&cache).into(),
            "--device".into(),
            "cpu".into(),
        ]
    };
    // Another input colour than the weights were trained on: one line, no panic.
    let out = common::affectcam().args(args("rgb")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("weights of mobilenetv2 on gray input") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // With a learning rate near zero the run keeps the shipped model's skill: a fresh head
    // would be near chance on 8 classes.
    let out = common::affectcam().args(args("gray")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = common::read_json(&run_dir.join("eval_test_ferplus.json"));
    let accuracy = report["classification"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.7, "accuracy {accuracy}");
}
