//! `train`, `eval` and `calibrate` arguments: datasets, the training recipe, what to score.

use super::ModelArgs;
use crate::data::{Format, LabelMode, LoadOptions};
use crate::eval::calibrate::CalibrateOptions;
use crate::eval::run::{EvalOptions, Split};
use crate::model::backbone::Arch;
use crate::model::preprocess::{ColorMode, CropMode, Preprocess};
use crate::model::DeviceChoice;
use crate::train::augment::Augment;
use crate::train::config::{ClassWeights, LrSchedule, Sampling, Task, TrainConfig};
use clap::Args;
use std::path::PathBuf;

/// Options for reading datasets, shared by train and eval.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Dataset path (FER+ folder, AffectNet-style CSV or its folder); repeat to combine.
    #[arg(long = "data", required = true)]
    pub data: Vec<PathBuf>,
    /// Dataset layout (default: detected from the path).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// How FER+ crowd votes become labels.
    #[arg(long, value_enum, default_value_t = LabelMode::Majority)]
    pub label_mode: LabelMode,
    /// Skip bad rows and unreadable images (counted and reported) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Seed of the 70/15/15 validation/test splits made for sources without their own
    /// (muxspace, DiffusionFER): keep it to compare runs on the same test faces.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Find each image's face with the live detector (YuNet, box and landmarks) and crop it
    /// as live crops are made (eval does this anyway for weights trained on aligned crops).
    #[arg(long)]
    pub detect: bool,
}

impl From<&DataArgs> for LoadOptions {
    fn from(args: &DataArgs) -> Self {
        LoadOptions {
            format: args.format,
            label_mode: args.label_mode,
            skip_bad: args.skip_bad,
            split_seed: args.split_seed,
            detect: args.detect,
        }
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Which heads learn.
    #[arg(long, value_enum, default_value_t = Task::Both)]
    pub task: Task,
    /// Seed of the shuffling, balanced draws, mirroring and augmentation (the splits have
    /// --split-seed): a second seed with the same test faces sizes run-to-run noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum epochs.
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Early stopping: epochs without a better validation loss before stopping.
    #[arg(long, default_value_t = 4)]
    pub patience: usize,
    /// Adam learning rate of the trainable trunk layers.
    #[arg(long, default_value_t = 1e-4)]
    pub lr_trunk: f64,
    /// Adam learning rate of the head.
    #[arg(long, default_value_t = 1e-3)]
    pub lr_head: f64,
    /// Class weighting of the emotion loss.
    #[arg(long, value_enum, default_value_t = ClassWeights::Balanced)]
    pub class_weights: ClassWeights,
    /// Same as --class-weights none.
    #[arg(long)]
    pub no_class_weights: bool,
    /// Trunk blocks to fine-tune, counted from the end (0: frozen trunk, as the study), or `all`.
    #[arg(long, default_value = "all", value_parser = parse_finetune)]
    pub finetune_blocks: FinetuneBlocks,
    /// Trunk architecture: MobileNetV2 (the live model), EfficientNet-Lite0 (a stronger
    /// ImageNet backbone) or VGG16 (the study's other baseline).
    #[arg(long, value_enum, default_value_t = Arch::MobileNetV2)]
    pub arch: Arch,
    /// Initial weights: an ImageNet safetensors file of the trunk, affectcam weights to
    /// continue training (head included), or `none` (scratch); default: the arch's file
    /// under ../shared/weights/imagenet/ (for VGG16, convert Keras' .h5 with
    /// scripts/keras_h5_to_safetensors.py).
    #[arg(long)]
    pub init: Option<String>,
    /// Colour mode of the network input.
    #[arg(long, default_value = "gray")]
    pub color: ColorMode,
    /// Margin around detected faces, as a fraction of the box side.
    #[arg(long, default_value_t = 0.0)]
    pub crop_margin: f32,
    /// How faces are cut out: the detector's box with the margin, or aligned on the
    /// landmarks (eyes level, fixed eye and mouth height; implies --detect).
    #[arg(long, value_enum, default_value_t = CropChoice::Box)]
    pub crop: CropChoice,
    /// Input side in pixels.
    #[arg(long, default_value_t = 128)]
    pub input_size: usize,
    /// Turn off random left–right mirroring.
    #[arg(long)]
    pub no_mirror: bool,
    /// Times each valence/arousal-labelled sample is seen per epoch.
    #[arg(long, default_value_t = 8)]
    pub va_repeat: usize,
    /// Turn off the random scale/shift/tilt, lighting, blur, resampling and erasing of
    /// training faces (applied when the whole network trains).
    #[arg(long)]
    pub no_augment: bool,
    /// How the learning rates change over the run.
    #[arg(long, value_enum, default_value_t = LrSchedule::Cosine)]
    pub lr_schedule: LrSchedule,
    /// Steps over which the learning rates rise from zero.
    #[arg(long, default_value_t = 300)]
    pub warmup_steps: usize,
    /// How each epoch draws training samples (balanced: classes equally often).
    #[arg(long, value_enum, default_value_t = Sampling::Uniform)]
    pub sampling: Sampling,
    /// Focal-loss exponent γ for the emotion loss (0: cross-entropy; 2 is usual).
    #[arg(long, default_value_t = 0.0)]
    pub focal_gamma: f32,
    /// Mass of each emotion target spread evenly over the classes.
    #[arg(long, default_value_t = 0.05)]
    pub label_smoothing: f32,
    /// Loss weight of class-mean valence/arousal targets for faces with only an emotion
    /// label (0: off).
    #[arg(long, default_value_t = 0.05)]
    pub weak_va: f32,
    /// Affectcam weights of a teacher model (any --arch, same input colour and size): each
    /// augmented training face's emotion target becomes a mix of its label and the teacher's
    /// distribution (whole-network training only).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Share of each emotion target the teacher gives (with --teacher).
    #[arg(long, default_value_t = 0.5)]
    pub distill: f32,
    /// Keep the emotion logits as trained, instead of subtracting τ·log(class prior) with τ
    /// chosen on validation macro-F1.
    #[arg(long)]
    pub no_logit_adjust: bool,
    /// Use at most N samples of each split of each source (quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Run directory for weights, recipe, history, plots and reports.
    #[arg(long, default_value = "runs/latest")]
    pub out: PathBuf,
    /// Folder for cached frozen-trunk activations (reused while data and weights match).
    #[arg(long, default_value = "runs/cache")]
    pub cache_dir: PathBuf,
    /// Device to train on.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

impl From<&TrainArgs> for TrainConfig {
    fn from(args: &TrainArgs) -> Self {
        TrainConfig {
            arch: args.arch,
            data: args.data.data.clone(),
            load: LoadOptions {
                detect: args.data.detect || args.crop == CropChoice::Aligned,
                ..(&args.data).into()
            },
            seed: args.seed,
            task: args.task,
            epochs: args.epochs,
            batch_size: args.batch_size.max(1),
            patience: args.patience,
            lr_trunk: args.lr_trunk,
            lr_head: args.lr_head,
            class_weights: if args.no_class_weights {
                ClassWeights::None
            } else {
                args.class_weights
            },
            finetune_blocks: args.finetune_blocks.0,
            init: match args.init.as_deref() {
                Some("none") => None,
                Some(path) => Some(PathBuf::from(path)),
                None => Some(PathBuf::from(args.arch.default_init())),
            },
            preprocess: Preprocess {
                input_size: args.input_size,
                color: args.color,
                crop_margin: args.crop_margin,
                crop: match args.crop {
                    CropChoice::Box => CropMode::Box,
                    CropChoice::Aligned => CropMode::ALIGNED,
                },
            },
            mirror: !args.no_mirror,
            augment: (!args.no_augment).then(Augment::default),
            lr_schedule: args.lr_schedule,
            warmup_steps: args.warmup_steps,
            label_smoothing: args.label_smoothing.clamp(0.0, 1.0),
            sampling: args.sampling,
            focal_gamma: args.focal_gamma.max(0.0),
            weak_va: args.weak_va.max(0.0),
            logit_adjust: !args.no_logit_adjust,
            teacher: args.teacher.clone(),
            distill: if args.teacher.is_some() {
                args.distill.clamp(0.0, 1.0)
            } else {
                0.0
            },
            va_repeat: args.va_repeat.max(1),
            limit: args.limit,
            out: args.out.clone(),
            cache_dir: args.cache_dir.clone(),
        }
    }
}

/// `--crop`: how training faces are cut out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CropChoice {
    /// The detector's box widened by the crop margin.
    Box,
    /// Aligned on the landmarks.
    Aligned,
}

/// `--finetune-blocks`: a count from the end, or every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinetuneBlocks(pub Option<usize>);

fn parse_finetune(s: &str) -> Result<FinetuneBlocks, String> {
    if s == "all" {
        return Ok(FinetuneBlocks(None));
    }
    // The upper bound depends on --arch; `train` checks it before reading data.
    match s.parse::<usize>() {
        Ok(n) => Ok(FinetuneBlocks(Some(n))),
        _ => Err("expected a number of blocks or `all`".to_string()),
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Training data to check for leakage: report evaluation images pixel-identical to its
    /// training split, and the metrics without them.
    #[arg(long)]
    pub train_data: Option<PathBuf>,
    /// Write every metric as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write one CSV row per image: truth, prediction, probabilities, valence/arousal.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Folder for the confusion-matrix PNG and example sheets.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder where `--detect` keeps its detections between runs.
    #[arg(long, default_value = "runs/cache")]
    pub cache_dir: PathBuf,
}

impl From<&EvalArgs> for EvalOptions {
    fn from(args: &EvalArgs) -> Self {
        EvalOptions {
            data: args.data.data.clone(),
            load: (&args.data).into(),
            split: args.split,
            train_data: args.train_data.clone(),
            json: args.json.clone(),
            predictions: args.predictions.clone(),
            out: args.out.clone(),
            cache_dir: args.cache_dir.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Weights file to calibrate (default: the shipped weights).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training faces to measure, spread evenly over the sources' training splits.
    #[arg(long, default_value_t = 1024)]
    pub images: usize,
    /// The weights file to write: the input's tensors and metadata plus the ranges.
    #[arg(long)]
    pub out: PathBuf,
    /// Folder where `--detect` keeps its detections between runs.
    #[arg(long, default_value = "runs/cache")]
    pub cache_dir: PathBuf,
}

impl From<&CalibrateArgs> for CalibrateOptions {
    fn from(args: &CalibrateArgs) -> Self {
        CalibrateOptions {
            data: args.data.data.clone(),
            load: (&args.data).into(),
            images: args.images,
            cache_dir: args.cache_dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use crate::train::config::TrainConfig;
    use clap::Parser;

    fn train_config(args: &[&str]) -> TrainConfig {
        let cli =
            Cli::try_parse_from([&["affectcam", "train", "--data", "d"], args].concat()).unwrap();
        match cli.command {
            Command::Train(args) => TrainConfig::from(&args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn training_seed_leaves_the_splits_alone() {
        let cfg = train_config(&["--seed", "7"]);
        assert_eq!((cfg.seed, cfg.load.split_seed), (7, 0));
        let cfg = train_config(&["--split-seed", "3"]);
        assert_eq!((cfg.seed, cfg.load.split_seed), (0, 3));
    }
}
