//! The training run, step by step: data → trainer → epochs → best weights → test reports,
//! everything written into one run directory.

use super::config::TrainConfig;
use super::data::{class_weights, load_sources, Sources};
use super::epoch::Epochs;
use super::evaluate::evaluate_test_splits;
use super::history::EpochRecord;
use super::logit_adjust;
use super::Trainer;
use crate::eval::{self, metrics::EvalReport};
use crate::model::backbone::Arch;
use crate::model::labels::NUM_EMOTIONS;
use crate::model::{import, weights};
use crate::model::{AffectModel, ModelMeta};
use crate::run_error::{io_err, RunError};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The emotion logits' bias, where the logit adjustment is folded in.
const EMOTION_BIAS: &str = "emotion.bias";

/// What a run leaves behind, besides its files.
pub struct FitOutcome {
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    /// Test-split report of each data source.
    pub test_reports: Vec<(PathBuf, EvalReport)>,
    pub weights: PathBuf,
}

/// Runs a whole training as configured, writing everything into `cfg.out`.
pub fn fit(cfg: &TrainConfig, device: &Device) -> Result<FitOutcome, RunError> {
    let started = Instant::now();
    cfg.check()?;
    std::fs::create_dir_all(&cfg.out).map_err(io_err(&cfg.out))?;
    let sources = load_sources(cfg)?;
    write_skipped(&cfg.out, &sources.skipped)?;
    write_no_face(&cfg.out, &sources.no_face)?;
    let class_weights = class_weights(&sources.train.samples, cfg.class_weights);
    let meta = model_meta(cfg)?;
    let mut trainer = new_trainer(cfg, &meta, device)?;
    write_recipe(cfg, &meta.commit, &class_weights)?;
    let epochs = Epochs::new(cfg, &sources, class_weights, &trainer, device)?;
    let weights_path = cfg.out.join("weights.safetensors");
    let (history, best) = epochs.run(&mut trainer, &meta, &weights_path)?;
    // The best epoch's weights were written when it was reached.
    let best = best.ok_or_else(|| RunError::Config("--epochs must be at least 1".into()))?;
    let mut tensors = best.tensors;
    if cfg.logit_adjust {
        adjust_logits(cfg, &sources, &mut tensors, &meta, &weights_path, device)?;
    }
    let model = AffectModel::from_tensors(tensors, meta, device)?;
    let test_reports = evaluate_test_splits(&model, &sources.tests, &cfg.out, device)?;
    log::info!(
        "best epoch {}; weights in {}; {:.1} min",
        best.epoch,
        weights_path.display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(FitOutcome {
        history,
        best_epoch: best.epoch,
        test_reports,
        weights: weights_path,
    })
}

/// Chooses the logit adjustment's τ on validation, folds it into the emotion bias, rewrites
/// the weights and records the sweep in `logit_adjustment.json`.
fn adjust_logits(
    cfg: &TrainConfig,
    sources: &Sources,
    tensors: &mut HashMap<String, Tensor>,
    meta: &ModelMeta,
    weights_path: &Path,
    device: &Device,
) -> Result<(), RunError> {
    let model = AffectModel::from_tensors(tensors.clone(), meta.clone(), device)?;
    let preds = eval::predict(&model, &sources.valid.faces, 64, device, "logit adjustment")?;
    let prior = logit_adjust::class_prior(&sources.train.samples);
    let valid = &sources.valid;
    let (tau, sweep) =
        logit_adjust::choose_tau(&valid.samples, &valid.source, &cfg.data, &preds, &prior);
    for s in &sweep {
        log::info!(
            "logit adjustment τ {:.2}: mean validation macro-F1 {:.4}",
            s.tau,
            s.mean_f1_macro
        );
    }
    log::info!("logit adjustment: τ = {tau}");
    let offsets = logit_adjust::bias_offsets(&prior, tau);
    let bias = tensors
        .get(EMOTION_BIAS)
        .ok_or_else(|| RunError::Config(format!("the model has no `{EMOTION_BIAS}`")))?;
    let adjusted = (bias + Tensor::new(&offsets, device)?)?;
    tensors.insert(EMOTION_BIAS.to_string(), adjusted);
    weights::write_safetensors(weights_path, tensors, meta.to_metadata())?;
    let path = cfg.out.join("logit_adjustment.json");
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "tau": tau, "class_prior": prior, "bias_offsets": offsets, "sweep": sweep,
    }))
    .map_err(|e| RunError::Config(e.to_string()))?;
    std::fs::write(&path, json).map_err(io_err(&path))
}

/// Lists the images `--detect` found no face in, in `no_face.txt`, when there are any.
fn write_no_face(out: &Path, images: &[PathBuf]) -> Result<(), RunError> {
    if images.is_empty() {
        return Ok(());
    }
    let path = out.join("no_face.txt");
    let lines: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    std::fs::write(&path, lines.join("\n")).map_err(io_err(&path))
}

/// Lists why rows were skipped in `skipped.txt`, when any were.
fn write_skipped(out: &Path, skipped: &[String]) -> Result<(), RunError> {
    if skipped.is_empty() {
        return Ok(());
    }
    let path = out.join("skipped.txt");
    std::fs::write(&path, skipped.join("\n")).map_err(io_err(&path))
}

/// The metadata the weights are saved with: preprocessing, the recipe and the commit.
fn model_meta(cfg: &TrainConfig) -> Result<ModelMeta, RunError> {
    Ok(ModelMeta {
        arch: cfg.arch,
        preprocess: cfg.preprocess,
        recipe: serde_json::to_string(cfg).map_err(|e| RunError::Config(e.to_string()))?,
        commit: source_commit(),
    })
}

/// The model to train, starting from `init`: Keras ImageNet weights of the trunk, or an
/// affectcam weights file (told apart by its `arch` metadata), continued head and all.
fn new_trainer(cfg: &TrainConfig, meta: &ModelMeta, device: &Device) -> Result<Trainer, RunError> {
    let init = match &cfg.init {
        Some(path) => {
            let file = weights::read_safetensors(path, device)?;
            if file.metadata.contains_key("arch") {
                let from = ModelMeta::from_metadata(path, &file.metadata)?;
                continued_weights(cfg, path, &from)?;
                file.tensors
            } else {
                match cfg.arch {
                    Arch::MobileNetV2 => import::import_keras_imagenet(path, file.tensors)?,
                    Arch::EfficientNetLite0 => {
                        import::import_efficientnet_lite(path, file.tensors)?
                    }
                    Arch::Vgg16 => import::import_keras_vgg16(path, file.tensors)?,
                }
            }
        }
        None => HashMap::new(),
    };
    let (finetune, lr) = (cfg.finetune(), cfg.learning_rates());
    let mut trainer = Trainer::new(init, meta.clone(), finetune, lr, device)?;
    trainer.focal_gamma = cfg.focal_gamma;
    Ok(trainer)
}

/// Checks that affectcam weights being continued fit the run: the same trunk and input
/// colour (the tensors' shapes depend on them). Their emotion bias still holds the earlier
/// run's logit adjustment; training relearns it, and this run chooses its own.
fn continued_weights(cfg: &TrainConfig, path: &Path, from: &ModelMeta) -> Result<(), RunError> {
    let ours = &cfg.preprocess;
    if from.arch != cfg.arch || from.preprocess.color != ours.color {
        return Err(RunError::Config(format!(
            "--init {}: weights of {} on {} input, but this run trains {} on {} input",
            path.display(),
            from.arch,
            from.preprocess.color,
            cfg.arch,
            ours.color
        )));
    }
    Ok(())
}

/// Writes `recipe.json`: every setting, the commit and the class weights used.
fn write_recipe(
    cfg: &TrainConfig,
    commit: &str,
    class_weights: &[f32; NUM_EMOTIONS],
) -> Result<(), RunError> {
    let path = cfg.out.join("recipe.json");
    let pretty = serde_json::to_string_pretty(&serde_json::json!({
        "config": cfg, "commit": commit, "class_weights": class_weights,
    }))
    .map_err(|e| RunError::Config(e.to_string()))?;
    std::fs::write(&path, pretty).map_err(io_err(&path))
}

/// The git commit of the source tree this binary was built from, if known.
fn source_commit() -> String {
    std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}
