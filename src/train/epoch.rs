//! The epochs of a run: each trains over the shuffled training set in batches, validates,
//! extends the history and keeps the best weights; early stopping ends them.

use super::cache::ActivationCache;
use super::checkpoint::{BestWeights, EarlyStopping, Verdict};
use super::config::{ClassWeights, Sampling, TrainConfig};
use super::data::{FaceSet, Sources, TargetRules, WeakVa};
use super::history::{plot_history, write_history, EpochRecord};
use super::{Finetune, Trainer};
use crate::eval::{self, metrics::EvalReport, Predictions};
use crate::model::labels::NUM_EMOTIONS;
use crate::model::preprocess::Preprocess;
use crate::model::{AffectModel, ModelMeta, Precision};
use crate::run_error::RunError;
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// What the trainable part of the model reads.
enum Inputs {
    /// Images, preprocessed per batch: everything trains.
    Images,
    /// Frozen-trunk activations, computed once (training faces with their mirror images
    /// when augmenting).
    Cached {
        train: ActivationCache,
        valid: ActivationCache,
    },
}

/// Training and validation as one run configures them.
pub struct Epochs<'a> {
    cfg: &'a TrainConfig,
    train: &'a FaceSet,
    valid: &'a FaceSet,
    inputs: Inputs,
    rules: TargetRules,
    /// The model whose distributions are mixed into the emotion targets (`--teacher`).
    teacher: Option<AffectModel>,
    device: &'a Device,
}

/// Mean loss and accuracy of one pass over the training set.
struct TrainPass {
    loss: f64,
    accuracy: f64,
}

impl<'a> Epochs<'a> {
    /// Caches the frozen trunk's activations unless the whole network trains.
    pub fn new(
        cfg: &'a TrainConfig,
        sources: &'a Sources,
        class_weights: [f32; NUM_EMOTIONS],
        trainer: &Trainer,
        device: &'a Device,
    ) -> Result<Self, RunError> {
        let (pre, dir) = (&cfg.preprocess, &cfg.cache_dir);
        let inputs = match trainer.finetune {
            Finetune::All => Inputs::Images,
            _ => Inputs::Cached {
                train: ActivationCache::build_or_load(
                    trainer,
                    &sources.train.faces,
                    pre,
                    cfg.mirror,
                    dir,
                    "train",
                )?,
                valid: ActivationCache::build_or_load(
                    trainer,
                    &sources.valid.faces,
                    pre,
                    false,
                    dir,
                    "valid",
                )?,
            },
        };
        if cfg.sampling == Sampling::Balanced && cfg.class_weights != ClassWeights::None {
            log::warn!("balanced sampling and class weights both counter class frequency; --class-weights none is the usual pairing");
        }
        if cfg.augment.is_some() && !matches!(inputs, Inputs::Images) {
            log::warn!("augmentation applies only when the whole network trains; faces are cached as they are");
        }
        let weak_va = (cfg.weak_va > 0.0)
            .then(|| WeakVa::from_samples(&sources.train.samples, cfg.weak_va))
            .flatten();
        if let Some(weak) = &weak_va {
            log::info!(
                "weak valence/arousal targets (weight {}): class means {:?}",
                weak.weight,
                weak.means
            );
        }
        let rules = TargetRules {
            class_weights,
            task: cfg.task,
            label_smoothing: cfg.label_smoothing,
            weak_va,
        };
        let teacher = match &cfg.teacher {
            Some(path) => Some(load_teacher(path, &cfg.preprocess, device)?),
            None => None,
        };
        Ok(Self {
            cfg,
            train: &sources.train,
            valid: &sources.valid,
            inputs,
            rules,
            teacher,
            device,
        })
    }

    /// Runs up to `epochs` epochs, rewriting the history and its curves after each and
    /// writing the weights to `weights_path` whenever validation improves. Returns the
    /// history and the best epoch's weights (none when no epoch ran).
    pub fn run(
        &self,
        trainer: &mut Trainer,
        meta: &ModelMeta,
        weights_path: &Path,
    ) -> Result<(Vec<EpochRecord>, Option<BestWeights>), RunError> {
        let cfg = self.cfg;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut stopping = EarlyStopping::new(cfg.patience);
        let (mut history, mut best) = (Vec::new(), None);
        for epoch in 1..=cfg.epochs {
            let record = self.epoch(epoch, trainer, &mut rng)?;
            let val_loss = record.val_loss;
            history.push(record);
            write_history(&cfg.out, &history)?;
            plot_history(&cfg.out, &history)?;
            match stopping.observe(epoch, val_loss) {
                Verdict::Improved => {
                    best = Some(BestWeights::save(epoch, trainer, meta, weights_path)?);
                }
                Verdict::Wait => {}
                Verdict::Stop => {
                    log::info!(
                        "early stop: no validation improvement for {} epochs",
                        cfg.patience
                    );
                    break;
                }
            }
        }
        Ok((history, best))
    }

    /// Trains one epoch and validates: the epoch's line of the history.
    fn epoch(
        &self,
        epoch: usize,
        trainer: &mut Trainer,
        rng: &mut StdRng,
    ) -> Result<EpochRecord, RunError> {
        let started = Instant::now();
        let pass = self.train_pass(epoch, started, trainer, rng)?;
        let preds = self.validate(trainer)?;
        let val_loss = eval::loss(&self.valid.samples, &preds);
        let report = eval::score(&self.valid.samples, &preds);
        let record = EpochRecord {
            epoch,
            train_loss: pass.loss,
            train_accuracy: pass.accuracy,
            val_loss,
            val_accuracy: metric(&report, |r| r.classification.as_ref().map(|c| c.accuracy)),
            val_f1_macro: metric(&report, |r| r.classification.as_ref().map(|c| c.f1_macro)),
            val_valence_ccc: metric(&report, |r| r.valence.as_ref().and_then(|v| v.ccc)),
            val_arousal_ccc: metric(&report, |r| r.arousal.as_ref().and_then(|v| v.ccc)),
            seconds: started.elapsed().as_secs_f64(),
        };
        log::info!(
            "epoch {epoch}: loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} F1 {:.3} CCC v {:.3} a {:.3} ({:.0} s)",
            record.train_loss, record.train_accuracy, record.val_loss, record.val_accuracy,
            record.val_f1_macro, record.val_valence_ccc, record.val_arousal_ccc, record.seconds
        );
        Ok(record)
    }

    /// One optimisation step per batch over the epoch's order, with a progress bar (or, in
    /// logs, a line every tenth of the epoch).
    fn train_pass(
        &self,
        epoch: usize,
        started: Instant,
        trainer: &mut Trainer,
        rng: &mut StdRng,
    ) -> Result<TrainPass, RunError> {
        let (cfg, train, device) = (self.cfg, self.train, self.device);
        let order = train.epoch_order(cfg.sampling, cfg.va_repeat, rng);
        let bar = ProgressBar::new(order.len() as u64).with_style(
            ProgressStyle::with_template(
                "epoch {prefix:>2} {bar:40} {pos}/{len} [{elapsed} < {eta}] {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(epoch.to_string());
        let steps = order.len().div_ceil(cfg.batch_size);
        let total_steps = steps * cfg.epochs;
        let (mut loss_sum, mut batches, mut correct, mut labelled) = (0.0, 0usize, 0usize, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let mirrored: Vec<bool> = chunk
                .iter()
                .map(|_| cfg.mirror && rng.random_bool(0.5))
                .collect();
            let seeds: Vec<u64> = chunk.iter().map(|_| rng.random()).collect();
            let inputs = self.train_inputs(chunk, &mirrored, &seeds)?;
            let mut targets = train.targets(chunk, &self.rules, device)?;
            if let Some(teacher) = &self.teacher {
                let probs = candle_nn::ops::softmax(&teacher.forward(&inputs)?.logits, 1)?;
                targets = targets.distilled(&probs, cfg.distill)?;
            }
            trainer.scale_learning_rates(cfg.lr_factor((epoch - 1) * steps + batches, total_steps));
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
                    started.elapsed().as_secs_f64()
                );
            }
        }
        bar.finish_and_clear();
        Ok(TrainPass {
            loss: loss_sum / batches.max(1) as f64,
            accuracy: correct as f64 / labelled.max(1) as f64,
        })
    }

    /// The trainable part's inputs for training samples `indices`, mirrored where asked and
    /// (images only) augmented with one seed per sample.
    fn train_inputs(
        &self,
        indices: &[usize],
        mirrored: &[bool],
        seeds: &[u64],
    ) -> candle_core::Result<Tensor> {
        match &self.inputs {
            Inputs::Cached { train, .. } => train.batch(indices, mirrored, self.device),
            Inputs::Images => {
                let augment = self.cfg.augment.as_ref().map(|a| (a, seeds));
                let pre = &self.cfg.preprocess;
                self.train
                    .images(indices, mirrored, augment, pre, self.device)
            }
        }
    }

    /// Validation predictions: through the cache when the trunk is partly frozen.
    fn validate(&self, trainer: &Trainer) -> candle_core::Result<Predictions> {
        let (valid, device) = (self.valid, self.device);
        let Inputs::Cached { valid: cache, .. } = &self.inputs else {
            return eval::predict(&trainer.model, &valid.faces, 64, device, "validation");
        };
        let mut preds = Predictions::default();
        let indices: Vec<usize> = (0..valid.samples.len()).collect();
        for chunk in indices.chunks(256) {
            let inputs = cache.batch(chunk, &vec![false; chunk.len()], device)?;
            preds.extend(trainer.forward_t(&inputs, false)?.predictions()?);
        }
        Ok(preds)
    }
}

/// The `--teacher` model, in f32, after checking that it reads the inputs this run makes.
fn load_teacher(path: &Path, ours: &Preprocess, device: &Device) -> Result<AffectModel, RunError> {
    let mut teacher = AffectModel::load(path, device)?;
    let theirs = teacher.meta.preprocess;
    if theirs.color != ours.color || theirs.input_size != ours.input_size {
        return Err(RunError::Config(format!(
            "--teacher {}: it reads {} {}-pixel faces, this run makes {} {}-pixel ones",
            path.display(),
            theirs.color,
            theirs.input_size,
            ours.color,
            ours.input_size
        )));
    }
    teacher.set_precision(Precision::F32)?;
    log::info!("teacher {} ({})", path.display(), teacher.meta.arch);
    Ok(teacher)
}

/// A validation metric, NaN where the data has no labels for it.
fn metric(r: &EvalReport, f: impl Fn(&EvalReport) -> Option<f64>) -> f64 {
    f(r).unwrap_or(f64::NAN)
}
