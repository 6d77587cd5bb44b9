//! The training run: data → decoded faces → epochs with early stopping → weights, history,
//! plots and a final evaluation, all in one run directory.

use super::cache::ActivationCache;
use super::{Finetune, LearningRates, Targets, Trainer};
use crate::data::{self, FacePixels, LoadOptions, Sample};
use crate::eval::{self, metrics::EvalReport};
use crate::model::labels::{EMOTIONS, NUM_EMOTIONS};
use crate::model::preprocess::Preprocess;
use crate::model::weights;
use crate::model::ModelMeta;
use crate::report;
use crate::run_error::{io_err, RunError};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which heads learn.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Emotion,
    Va,
    Both,
}

/// How the emotion loss counters class imbalance.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    /// n / (classes · count), scikit-learn's "balanced" (the study's choice).
    Balanced,
    /// The square root of the balanced weights: gentler on the majority classes.
    Sqrt,
    None,
}

/// Every setting of a run; saved as `recipe.json` and in the weights' metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: Vec<PathBuf>,
    /// How the data sources are read (layout, label mode, bad rows, seed).
    #[serde(flatten)]
    pub load: LoadOptions,
    pub task: Task,
    pub epochs: usize,
    pub batch_size: usize,
    pub patience: usize,
    pub lr_trunk: f64,
    pub lr_head: f64,
    pub class_weights: ClassWeights,
    /// Trainable trunk blocks from the end: `Some(0)` head only, `None` everything.
    pub finetune_blocks: Option<usize>,
    /// ImageNet MobileNetV2 file to start from; `None` trains from scratch.
    pub init: Option<PathBuf>,
    /// How faces become network inputs; stored with the weights.
    #[serde(flatten)]
    pub preprocess: Preprocess,
    pub mirror: bool,
    /// Times each valence/arousal-labelled training sample is seen per epoch (they are rare).
    pub va_repeat: usize,
    /// Use at most this many samples per split of each source (quick runs and tests).
    pub limit: Option<usize>,
    pub out: PathBuf,
    /// Where frozen-trunk activations are cached between runs.
    pub cache_dir: PathBuf,
}

impl TrainConfig {
    fn finetune(&self) -> Finetune {
        match self.finetune_blocks {
            None => Finetune::All,
            Some(n) => Finetune::last_blocks(n),
        }
    }
}

/// One epoch's line of `history.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_f1_macro: f64,
    pub val_valence_ccc: f64,
    pub val_arousal_ccc: f64,
    pub seconds: f64,
}

/// A decoded split: samples with their face pixels.
#[derive(Default)]
pub struct FaceSet {
    pub samples: Vec<Sample>,
    pub faces: Vec<FacePixels>,
}

impl FaceSet {
    fn append(&mut self, other: FaceSet) {
        self.samples.extend(other.samples);
        self.faces.extend(other.faces);
    }
}

/// A data source's short name for messages and file names (its folder or file name).
fn source_name(path: &Path) -> String {
    path.file_name()
        .map_or("data".into(), |n| n.to_string_lossy().to_string())
}

/// What a run leaves behind, besides its files.
pub struct FitOutcome {
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    /// Test-split report of each data source.
    pub test_reports: Vec<(PathBuf, EvalReport)>,
    pub weights: PathBuf,
}

/// The git commit of the source tree this binary was built from, if known.
pub fn source_commit() -> String {
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

/// Class weights from the emotion labels of the training samples.
pub fn class_weights(samples: &[Sample], mode: ClassWeights) -> [f32; NUM_EMOTIONS] {
    let mut counts = [0usize; NUM_EMOTIONS];
    for l in samples.iter().filter_map(Sample::label) {
        counts[l] += 1;
    }
    let total: usize = counts.iter().sum();
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    std::array::from_fn(|c| {
        let balanced = if counts[c] == 0 {
            0.0
        } else {
            total as f32 / (present as f32 * counts[c] as f32)
        };
        match mode {
            ClassWeights::Balanced => balanced,
            ClassWeights::Sqrt => balanced.sqrt(),
            ClassWeights::None => 1.0,
        }
    })
}

/// A batch's images, each mirrored left–right where `mirrored` says so.
fn batch_images(
    set: &FaceSet,
    indices: &[usize],
    mirrored: &[bool],
    pre: &Preprocess,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let faces = indices
        .iter()
        .zip(mirrored)
        .map(|(&i, &m)| (&set.faces[i][..], m));
    pre.batch_of(faces, device)
}

/// A batch's targets; tasks a sample has no label for (or that do not train) weigh 0.
fn batch_targets(
    set: &FaceSet,
    indices: &[usize],
    weights: &[f32; NUM_EMOTIONS],
    task: Task,
    device: &Device,
) -> candle_core::Result<Targets> {
    let n = indices.len();
    let (mut dist, mut w, mut va, mut mask) = (
        Vec::with_capacity(n * NUM_EMOTIONS),
        Vec::with_capacity(n),
        Vec::with_capacity(n * 2),
        Vec::with_capacity(n),
    );
    for &i in indices {
        let sample = &set.samples[i];
        match sample.emotion.filter(|_| task != Task::Va) {
            Some((label, target)) => {
                dist.extend_from_slice(&target);
                w.push(weights[label]);
            }
            None => {
                dist.extend_from_slice(&[0.0; NUM_EMOTIONS]);
                w.push(0.0);
            }
        }
        match sample.valence_arousal.filter(|_| task != Task::Emotion) {
            Some(t) => {
                va.extend_from_slice(&t);
                mask.push(1f32);
            }
            None => {
                va.extend_from_slice(&[0.0, 0.0]);
                mask.push(0.0);
            }
        }
    }
    Ok(Targets {
        emotion: Tensor::from_vec(dist, (n, NUM_EMOTIONS), device)?,
        emotion_weight: Tensor::from_vec(w, n, device)?,
        valence_arousal: Tensor::from_vec(va, (n, 2), device)?,
        va_mask: Tensor::from_vec(mask, n, device)?,
    })
}

/// Validation predictions: through the cache when the trunk is partly frozen.
fn validate(
    trainer: &Trainer,
    valid: &FaceSet,
    cache: Option<&ActivationCache>,
    device: &Device,
) -> candle_core::Result<eval::Predictions> {
    let Some(cache) = cache else {
        return eval::predict(&trainer.model, &valid.faces, 64, device, "validation");
    };
    let mut preds = eval::Predictions::default();
    let indices: Vec<usize> = (0..valid.samples.len()).collect();
    for chunk in indices.chunks(256) {
        let inputs = cache.batch(chunk, &vec![false; chunk.len()], device)?;
        preds.extend(trainer.forward_t(&inputs, false)?.predictions()?);
    }
    Ok(preds)
}

/// Every source decoded: training and validation pooled, test kept per source.
struct Sources {
    train: FaceSet,
    valid: FaceSet,
    tests: Vec<(PathBuf, FaceSet)>,
    skipped: Vec<String>,
}

/// Reads, limits and decodes every source.
fn load_sources(cfg: &TrainConfig, pre: &Preprocess) -> Result<Sources, RunError> {
    let (mut train, mut valid) = (FaceSet::default(), FaceSet::default());
    let mut tests = Vec::new();
    let mut skipped = Vec::new();
    for path in &cfg.data {
        let splits = data::load(path, &cfg.load)?;
        skipped.extend(splits.skipped);
        let name = source_name(path);
        let mut decode = |mut samples: Vec<Sample>, split: &str| -> Result<FaceSet, RunError> {
            if let Some(n) = cfg.limit {
                samples.truncate(n);
            }
            let what = format!("{name} {split}");
            let (samples, faces, bad) = data::decode(samples, pre, cfg.load.skip_bad, &what)?;
            skipped.extend(bad);
            Ok(FaceSet { samples, faces })
        };
        train.append(decode(splits.train, "train")?);
        valid.append(decode(splits.valid, "valid")?);
        tests.push((path.clone(), decode(splits.test, "test")?));
    }
    if train.samples.is_empty() || valid.samples.is_empty() {
        return Err(RunError::Config(
            "the data has no training or no validation samples".into(),
        ));
    }
    Ok(Sources {
        train,
        valid,
        tests,
        skipped,
    })
}

fn epoch_order(train: &FaceSet, va_repeat: usize, rng: &mut rand::rngs::StdRng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..train.samples.len()).collect();
    for (i, s) in train.samples.iter().enumerate() {
        if s.valence_arousal.is_some() {
            order.extend(std::iter::repeat_n(i, va_repeat.saturating_sub(1)));
        }
    }
    order.shuffle(rng);
    order
}

fn metric(r: &EvalReport, f: impl Fn(&EvalReport) -> Option<f64>) -> f64 {
    f(r).unwrap_or(f64::NAN)
}

/// Runs a whole training as configured, writing everything into `cfg.out`.
pub fn fit(cfg: &TrainConfig, device: &Device) -> Result<FitOutcome, RunError> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.out).map_err(io_err(&cfg.out))?;
    let pre = cfg.preprocess;
    let Sources {
        train,
        valid,
        tests,
        skipped,
    } = load_sources(cfg, &pre)?;
    log::info!(
        "data: {} train, {} valid, {} test faces; {} rows skipped",
        train.samples.len(),
        valid.samples.len(),
        tests.iter().map(|(_, t)| t.samples.len()).sum::<usize>(),
        skipped.len()
    );
    if !skipped.is_empty() {
        let path = cfg.out.join("skipped.txt");
        std::fs::write(&path, skipped.join("\n")).map_err(io_err(&path))?;
    }
    let weights_by_class = class_weights(&train.samples, cfg.class_weights);
    let init = match &cfg.init {
        Some(path) => {
            weights::import_keras_imagenet(path, weights::read_safetensors(path, device)?.tensors)?
        }
        None => HashMap::new(),
    };
    let recipe = serde_json::to_string(cfg).map_err(|e| RunError::Config(e.to_string()))?;
    let meta = ModelMeta {
        preprocess: pre,
        recipe: recipe.clone(),
        commit: source_commit(),
    };
    let finetune = cfg.finetune();
    let lr = LearningRates {
        trunk: cfg.lr_trunk,
        head: cfg.lr_head,
    };
    let mut trainer = Trainer::new(init, meta.clone(), finetune, lr, device)?;
    let recipe_path = cfg.out.join("recipe.json");
    let pretty = serde_json::to_string_pretty(&serde_json::json!({
        "config": cfg, "commit": meta.commit, "class_weights": weights_by_class,
    }))
    .map_err(|e| RunError::Config(e.to_string()))?;
    std::fs::write(&recipe_path, pretty).map_err(io_err(&recipe_path))?;

    let caches = match finetune {
        Finetune::All => None,
        _ => Some((
            ActivationCache::build_or_load(
                &trainer,
                &train.faces,
                &pre,
                cfg.mirror,
                &cfg.cache_dir,
                "train",
            )?,
            ActivationCache::build_or_load(
                &trainer,
                &valid.faces,
                &pre,
                false,
                &cfg.cache_dir,
                "valid",
            )?,
        )),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.load.seed);
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut best: Option<(f64, usize, HashMap<String, Tensor>)> = None;
    for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        let order = epoch_order(&train, cfg.va_repeat, &mut rng);
        let bar = ProgressBar::new(order.len() as u64).with_style(
            ProgressStyle::with_template(
                "epoch {prefix:>2} {bar:40} {pos}/{len} [{elapsed} < {eta}] {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(epoch.to_string());
        let steps = order.len().div_ceil(cfg.batch_size);
        let (mut loss_sum, mut batches, mut correct, mut labelled) = (0.0, 0usize, 0usize, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let mirrored: Vec<bool> = chunk
                .iter()
                .map(|_| cfg.mirror && rng.random_bool(0.5))
                .collect();
            let inputs = match &caches {
                Some((train_cache, _)) => train_cache.batch(chunk, &mirrored, device)?,
                None => batch_images(&train, chunk, &mirrored, &pre, device)?,
            };
            let targets = batch_targets(&train, chunk, &weights_by_class, cfg.task, device)?;
            let (losses, logits) = trainer.step_with_logits(&inputs, &targets)?;
            loss_sum += losses.total.to_scalar::<f32>()? as f64;
            batches += 1;
            let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
            for (&i, p) in chunk.iter().zip(predicted) {
                if let Some(l) = train.samples[i].label() {
                    labelled += 1;
                    correct += usize::from(l == p as usize);
                }
            }
            bar.inc(chunk.len() as u64);
            bar.set_message(format!("loss {:.4}", loss_sum / batches as f64));
            // Logs (no terminal) get a line every tenth of an epoch instead of a bar.
            if bar.is_hidden() && batches % steps.div_ceil(10).max(1) == 0 {
                log::info!(
                    "epoch {epoch}: {batches}/{steps} steps, loss {:.4}, {:.0} s",
                    loss_sum / batches as f64,
                    epoch_start.elapsed().as_secs_f64()
                );
            }
        }
        bar.finish_and_clear();
        let preds = validate(&trainer, &valid, caches.as_ref().map(|(_, v)| v), device)?;
        let val_loss = eval::loss(&valid.samples, &preds);
        let report = eval::score(&valid.samples, &preds);
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / batches.max(1) as f64,
            train_accuracy: correct as f64 / labelled.max(1) as f64,
            val_loss,
            val_accuracy: metric(&report, |r| r.classification.as_ref().map(|c| c.accuracy)),
            val_f1_macro: metric(&report, |r| r.classification.as_ref().map(|c| c.f1_macro)),
            val_valence_ccc: metric(&report, |r| r.valence.as_ref().and_then(|v| v.ccc)),
            val_arousal_ccc: metric(&report, |r| r.arousal.as_ref().and_then(|v| v.ccc)),
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        log::info!(
            "epoch {epoch}: loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} F1 {:.3} CCC v {:.3} a {:.3} ({:.0} s)",
            record.train_loss, record.train_accuracy, record.val_loss, record.val_accuracy,
            record.val_f1_macro, record.val_valence_ccc, record.val_arousal_ccc, record.seconds
        );
        history.push(record);
        write_history(&cfg.out, &history)?;
        plot_history(&cfg.out, &history)?;
        let improved = best.as_ref().is_none_or(|(l, _, _)| val_loss < *l);
        if improved {
            let snapshot = trainer
                .tensors()
                .into_iter()
                .map(|(k, t)| t.copy().map(|t| (k, t)))
                .collect::<candle_core::Result<_>>()?;
            // Checkpoint now, so an interrupted run still leaves its best weights.
            weights::write_safetensors(
                &cfg.out.join("weights.safetensors"),
                &snapshot,
                meta.to_metadata(),
            )?;
            best = Some((val_loss, epoch, snapshot));
        } else if best
            .as_ref()
            .is_some_and(|(_, e, _)| epoch - e >= cfg.patience)
        {
            log::info!(
                "early stop: no validation improvement for {} epochs",
                cfg.patience
            );
            break;
        }
    }
    // The best epoch's weights were written when it was reached.
    let (_, best_epoch, tensors) =
        best.ok_or_else(|| RunError::Config("--epochs must be at least 1".into()))?;
    let weights_path = cfg.out.join("weights.safetensors");
    let model = crate::model::AffectModel::from_tensors(tensors, meta, device)?;
    let mut test_reports = Vec::new();
    for (path, set) in &tests {
        if set.samples.is_empty() {
            continue;
        }
        let name = source_name(path);
        let preds = eval::predict(&model, &set.faces, 64, device, &format!("{name} test"))?;
        let report = eval::score(&set.samples, &preds);
        let json_path = cfg.out.join(format!("eval_test_{name}.json"));
        let json =
            serde_json::to_string_pretty(&report).map_err(|e| RunError::Config(e.to_string()))?;
        std::fs::write(&json_path, json).map_err(io_err(&json_path))?;
        if let Some(c) = &report.classification {
            report::plot_confusion_matrix(
                &cfg.out.join(format!("confusion_test_{name}.png")),
                &format!("{name} test (n {})", set.samples.len()),
                &EMOTIONS,
                &c.confusion,
            )?;
        }
        test_reports.push((path.clone(), report));
    }
    log::info!(
        "best epoch {best_epoch}; weights in {}; {:.1} min",
        weights_path.display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(FitOutcome {
        history,
        best_epoch,
        test_reports,
        weights: weights_path,
    })
}

fn write_history(out: &Path, history: &[EpochRecord]) -> Result<(), RunError> {
    let path = out.join("history.csv");
    let mut w = csv::Writer::from_path(&path).map_err(io_err(&path))?;
    for r in history {
        w.serialize(r).map_err(io_err(&path))?;
    }
    w.flush().map_err(io_err(&path))
}

/// Reads a run's `history.csv`.
pub fn read_history(out: &Path) -> Result<Vec<EpochRecord>, RunError> {
    let path = out.join("history.csv");
    csv::Reader::from_path(&path)
        .map_err(io_err(&path))?
        .deserialize()
        .collect::<Result<_, _>>()
        .map_err(io_err(&path))
}

/// Draws a run's training curves (`loss.png`, `accuracy.png`, `va_ccc.png`) into `out`.
pub fn plot_history(out: &Path, history: &[EpochRecord]) -> Result<(), RunError> {
    let epochs: Vec<usize> = history.iter().map(|r| r.epoch).collect();
    let col = |f: fn(&EpochRecord) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    let (tl, vl) = (col(|r| r.train_loss), col(|r| r.val_loss));
    report::plot_training_curves(
        &out.join("loss.png"),
        "loss",
        &epochs,
        &[("train", &tl), ("validation", &vl)],
        "loss",
    )?;
    let (ta, va, f1) = (
        col(|r| r.train_accuracy),
        col(|r| r.val_accuracy),
        col(|r| r.val_f1_macro),
    );
    report::plot_training_curves(
        &out.join("accuracy.png"),
        "emotion",
        &epochs,
        &[
            ("train accuracy", &ta),
            ("val accuracy", &va),
            ("val macro-F1", &f1),
        ],
        "score",
    )?;
    let (cv, ca) = (col(|r| r.val_valence_ccc), col(|r| r.val_arousal_ccc));
    report::plot_training_curves(
        &out.join("va_ccc.png"),
        "valence / arousal",
        &epochs,
        &[("val valence CCC", &cv), ("val arousal CCC", &ca)],
        "CCC",
    )?;
    Ok(())
}
