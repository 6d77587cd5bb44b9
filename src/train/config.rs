//! The settings of a training run: what it reads, how it trains, where it writes. Saved as
//! `recipe.json` and in the weights' metadata.

use super::augment::Augment;
use super::{Finetune, LearningRates};
use crate::data::LoadOptions;
use crate::model::backbone::Arch;
use crate::model::preprocess::Preprocess;
use crate::run_error::RunError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

/// How each epoch draws its training samples.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Every sample once per epoch (valence/arousal-labelled ones `va_repeat` times).
    #[default]
    Uniform,
    /// As many draws, each of a class chosen uniformly, then a sample of that class (with
    /// replacement); valence/arousal-labelled samples are added `va_repeat - 1` more times.
    Balanced,
}

/// How the learning rates change over a run.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The learning rates as given, throughout.
    #[default]
    Constant,
    /// Half a cosine from the given rates down to zero at the last step.
    Cosine,
}

/// Every setting of a run; saved as `recipe.json` and in the weights' metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The trunk (recipes from before `--arch` are MobileNetV2's).
    #[serde(default)]
    pub arch: Arch,
    pub data: Vec<PathBuf>,
    /// How the data sources are read (layout, label mode, bad rows, split seed).
    #[serde(flatten)]
    pub load: LoadOptions,
    /// Seed of the epochs' shuffling, balanced draws, mirroring and augmentation. The head's
    /// first weights and dropout draw from candle's own generator, which is not seeded.
    pub seed: u64,
    pub task: Task,
    pub epochs: usize,
    pub batch_size: usize,
    pub patience: usize,
    pub lr_trunk: f64,
    pub lr_head: f64,
    pub class_weights: ClassWeights,
    /// Trainable trunk blocks from the end: `Some(0)` head only, `None` everything.
    pub finetune_blocks: Option<usize>,
    /// ImageNet weights of the trunk to start from (Keras names, see `model::import`);
    /// `None` trains from scratch.
    pub init: Option<PathBuf>,
    /// How faces become network inputs; stored with the weights.
    #[serde(flatten)]
    pub preprocess: Preprocess,
    pub mirror: bool,
    /// Random changes to each face each time it is drawn (whole-network training only).
    #[serde(default)]
    pub augment: Option<Augment>,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Steps over which the learning rates rise linearly from zero.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Mass moved from the emotion targets to a uniform distribution.
    #[serde(default)]
    pub label_smoothing: f32,
    #[serde(default)]
    pub sampling: Sampling,
    /// Focal-loss exponent γ of the emotion loss: each class term is scaled by (1 - p)^γ
    /// (0: plain cross-entropy).
    #[serde(default)]
    pub focal_gamma: f32,
    /// Loss weight of the weak valence/arousal targets given to faces with only an emotion
    /// label: the class means of the faces that have both (0: none).
    #[serde(default)]
    pub weak_va: f32,
    /// After training, subtract τ·log(class prior) from the emotion logits (in the bias),
    /// with τ chosen on validation macro-F1: rare classes get their share of predictions.
    #[serde(default)]
    pub logit_adjust: bool,
    /// A trained affectcam model whose emotion distribution on each augmented training face
    /// is mixed into that face's target (knowledge distillation; whole-network training only).
    #[serde(default)]
    pub teacher: Option<PathBuf>,
    /// Share of each labelled face's emotion target taken from the teacher (0..=1).
    #[serde(default)]
    pub distill: f32,
    /// Times each valence/arousal-labelled training sample is seen per epoch (they are rare).
    pub va_repeat: usize,
    /// Use at most this many samples per split of each source (quick runs and tests).
    pub limit: Option<usize>,
    pub out: PathBuf,
    /// Where frozen-trunk activations are cached between runs.
    pub cache_dir: PathBuf,
}

impl TrainConfig {
    /// Fails on a missing `init` file or a block count the trunk lacks, before any data is
    /// read.
    pub fn check(&self) -> Result<(), RunError> {
        if let Some(n) = self.finetune_blocks.filter(|&n| n > self.arch.num_blocks()) {
            return Err(RunError::Config(format!(
                "--finetune-blocks {n}: {} has {} blocks (0..={} or all)",
                self.arch,
                self.arch.num_blocks(),
                self.arch.num_blocks()
            )));
        }
        if let Some(path) = &self.teacher {
            if self.finetune() != Finetune::All {
                return Err(RunError::Config(
                    "--teacher needs the whole network to train (--finetune-blocks all): the \
                     teacher reads each augmented face, and partial runs train on cached activations"
                        .into(),
                ));
            }
            if !path.is_file() {
                return Err(RunError::Config(format!(
                    "--teacher {}: no such file",
                    path.display()
                )));
            }
        }
        match &self.init {
            Some(path) if !path.is_file() => Err(RunError::InitNotFound(path.clone())),
            _ => Ok(()),
        }
    }

    pub(super) fn finetune(&self) -> Finetune {
        match self.finetune_blocks {
            None => Finetune::All,
            Some(n) => Finetune::last_blocks(n, self.arch),
        }
    }

    /// The learning-rate factor at optimisation step `step` (from 0) of `total`: a linear
    /// warm-up over `warmup_steps`, then the schedule.
    pub fn lr_factor(&self, step: usize, total: usize) -> f64 {
        let warmup = ((step + 1) as f64 / self.warmup_steps.max(1) as f64).min(1.0);
        let decay = match self.lr_schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let progress = step as f64 / total.max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        };
        warmup * decay
    }

    pub(super) fn learning_rates(&self) -> LearningRates {
        LearningRates {
            trunk: self.lr_trunk,
            head: self.lr_head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::LabelMode;

    #[test]
    fn recipe_keys_stay_flat() {
        let cfg = TrainConfig {
            arch: Arch::MobileNetV2,
            data: vec!["data".into()],
            load: LoadOptions {
                format: None,
                detect: false,
                label_mode: LabelMode::Majority,
                skip_bad: false,
                split_seed: 0,
            },
            seed: 0,
            task: Task::Both,
            epochs: 1,
            batch_size: 32,
            patience: 4,
            lr_trunk: 1e-4,
            lr_head: 1e-3,
            class_weights: ClassWeights::Balanced,
            finetune_blocks: None,
            init: None,
            preprocess: Preprocess::default(),
            mirror: true,
            augment: Some(Augment::default()),
            lr_schedule: LrSchedule::Cosine,
            warmup_steps: 100,
            label_smoothing: 0.1,
            sampling: Sampling::Uniform,
            focal_gamma: 0.0,
            weak_va: 0.05,
            logit_adjust: true,
            teacher: None,
            distill: 0.0,
            va_repeat: 8,
            limit: None,
            out: "out".into(),
            cache_dir: "cache".into(),
        };
        let json = serde_json::to_value(&cfg).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(|k| &k[..]).collect();
        // serde_json's map is sorted, so this is also the order recipe.json lists them in.
        assert_eq!(
            keys,
            [
                "arch",
                "augment",
                "batch_size",
                "cache_dir",
                "class_weights",
                "color",
                "crop",
                "crop_margin",
                "data",
                "detect",
                "distill",
                "epochs",
                "finetune_blocks",
                "focal_gamma",
                "format",
                "init",
                "input_size",
                "label_mode",
                "label_smoothing",
                "limit",
                "logit_adjust",
                "lr_head",
                "lr_schedule",
                "lr_trunk",
                "mirror",
                "out",
                "patience",
                "sampling",
                "seed",
                "skip_bad",
                "split_seed",
                "task",
                "teacher",
                "va_repeat",
                "warmup_steps",
                "weak_va",
            ]
        );
        let back: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back.preprocess, cfg.preprocess);
    }
}
