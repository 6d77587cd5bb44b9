//! Command-line arguments: one struct per subcommand, and their conversion into the library's
//! configurations (defaults are the library's constants).

use crate::bench::BenchOptions;
use crate::capture::{FrameSize, Source, DEFAULT_FPS, DEFAULT_FRAME_SIZE};
use crate::data::{Format, LabelMode, LoadOptions};
use crate::detect::{DetectorConfig, DetectorKind};
use crate::eval::run::{EvalOptions, Split};
use crate::model::backbone::Arch;
use crate::model::preprocess::{ColorMode, CropMode, Preprocess};
use crate::model::DeviceChoice;
use crate::pipeline::{
    default_detect_width, Mode, PipelineConfig, DEFAULT_CLASSIFY_PER_FRAME, DEFAULT_DETECTOR,
    DEFAULT_DETECT_EVERY,
};
use crate::record::DEFAULT_QP;
use crate::selftest::SelftestOptions;
use crate::train::augment::Augment;
use crate::train::config::{ClassWeights, LrSchedule, Sampling, Task, TrainConfig};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Real-time facial-affect recognition: 8 emotions plus valence/arousal.
#[derive(Debug, Parser)]
#[command(name = "affectcam", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the annotated camera (or video/image) view live in a window, optionally recording.
    Live(LiveArgs),
    /// Annotate a video file offline into an annotated MP4.
    Annotate(AnnotateArgs),
    /// Train the model (transfer learning from ImageNet) on FER+, AffectNet-style or folder data.
    Train(TrainArgs),
    /// Evaluate weights on a dataset: accuracy, F1, κ, AUC, V/A RMSE/Pearson/CCC/SAGR.
    Eval(EvalArgs),
    /// Find the faces in photos and predict each one's emotion and valence/arousal.
    Predict(PredictArgs),
    /// Measure model latency, throughput, memory and training-step time.
    Bench(BenchArgs),
    /// Check every custom op on a device (the GPU) against the CPU reference, then time the
    /// model there: the check a machine without a Rust toolchain can run.
    Selftest(SelftestArgs),
}

/// Options shared by every subcommand that runs the model.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Weights file (safetensors with affectcam metadata); default: the shipped weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Device to run on.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

/// Options shared by `live` and `annotate`: detection cadence and per-run outputs.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Run the face detector on every N-th frame; tracking carries faces in between.
    #[arg(long, default_value_t = DEFAULT_DETECT_EVERY, value_parser = clap::value_parser!(u32).range(1..))]
    pub detect_every: u32,
    /// Faces classified per frame at most, longest-waiting first (new faces always); the
    /// others show their smoothed result until their turn. Raise it on faster machines.
    #[arg(long, default_value_t = DEFAULT_CLASSIFY_PER_FRAME as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub classify_per_frame: u32,
    /// Face detector.
    #[arg(long, value_enum, default_value_t = DEFAULT_DETECTOR)]
    pub detector: DetectorKind,
    /// Width frames are downscaled to for face detection (smaller: faster, misses small
    /// faces); default: 320 for yunet, 240 for seeta.
    #[arg(long, value_parser = clap::value_parser!(u32).range(80..))]
    pub detect_width: Option<u32>,
    /// Write one record per face per frame: JSON Lines, or CSV if the name ends in .csv.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// Write the exit statistics (frames, fps, latency percentiles) as JSON.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Stop after this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Frame rate for image sources (a folder of images or one image).
    #[arg(long, default_value_t = DEFAULT_FPS)]
    pub fps: f64,
    /// Log a status line (fps, latency, memory, threads, open files) every N seconds.
    #[arg(long, value_name = "SECONDS")]
    pub report_every: Option<f64>,
    /// H.264 quantiser of recordings, 10–51: lower is better quality and larger files.
    #[arg(long, default_value_t = DEFAULT_QP, value_parser = clap::value_parser!(u8).range(10..=51))]
    pub qp: u8,
}

#[derive(Debug, Args)]
pub struct LiveArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// camera:N, an H.264 MP4 file, an image, or a folder of images (played in real time).
    #[arg(long, default_value = "camera:0")]
    pub source: Source,
    /// Camera frame size to request, WIDTHxHEIGHT.
    #[arg(long, default_value_t = DEFAULT_FRAME_SIZE)]
    pub size: FrameSize,
    /// Run without a window (for machines with no display).
    #[arg(long)]
    pub headless: bool,
    /// Record the annotated view to this MP4 from the start (in the window, r toggles recording).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Folder for snapshots (s) and for recordings started with r (other than --record's).
    #[arg(long, default_value = ".")]
    pub snapshot_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct AnnotateArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Video (H.264 MP4), image, or folder of images to annotate.
    #[arg(long)]
    pub input: PathBuf,
    /// Annotated H.264 MP4 to write.
    #[arg(long)]
    pub output: PathBuf,
}

impl PipelineArgs {
    fn config(&self, source: Source, mode: Mode) -> PipelineConfig {
        let mut config = PipelineConfig::new(source, mode);
        config.detect_every = self.detect_every;
        config.classify_per_frame = self.classify_per_frame as usize;
        config.detector = DetectorConfig {
            max_width: self
                .detect_width
                .unwrap_or_else(|| default_detect_width(self.detector)),
            ..DetectorConfig::for_photos(self.detector)
        };
        config.face_log = self.jsonl.clone();
        config.max_frames = self.max_frames;
        config.capture.fps = self.fps;
        config.recorder.qp = self.qp;
        config.recorder.fps = self.fps as f32;
        config.report_every = self
            .report_every
            .map(|s| std::time::Duration::from_secs_f64(s.max(0.1)));
        config
    }
}

impl From<&LiveArgs> for PipelineConfig {
    fn from(args: &LiveArgs) -> Self {
        let mode = Mode::Live {
            window: !args.headless,
        };
        let mut config = args.pipeline.config(args.source.clone(), mode);
        (config.capture.width, config.capture.height) = (args.size.width, args.size.height);
        config.record = args.record.clone();
        config.snapshot_dir = args.snapshot_dir.clone();
        config
    }
}

impl From<&AnnotateArgs> for PipelineConfig {
    fn from(args: &AnnotateArgs) -> Self {
        let source = Source::Path(args.input.clone());
        let mut config = args.pipeline.config(source, Mode::Offline);
        config.record = Some(args.output.clone());
        config.progress = true;
        config
    }
}

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
    /// Seed for splits, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
            seed: args.seed,
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
    /// Trunk architecture: MobileNetV2 (the live model) or VGG16 (the study's other baseline).
    #[arg(long, value_enum, default_value_t = Arch::MobileNetV2)]
    pub arch: Arch,
    /// Initial weights: a Keras ImageNet safetensors file of the trunk, or `none` (scratch);
    /// default: the arch's file under ../shared/weights/imagenet/ (for VGG16, convert
    /// Keras' .h5 with scripts/keras_h5_to_safetensors.py).
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
pub struct PredictArgs {
    /// Photos (PNG or JPEG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Treat each image as one face crop instead of detecting faces in it.
    #[arg(long)]
    pub no_detect: bool,
    /// Face detector.
    #[arg(long, value_enum, default_value_t = DetectorKind::Yunet)]
    pub detector: DetectorKind,
    /// Print one JSON object per face instead of a line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Weights to time (default: randomly initialised; speed does not depend on the values).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Trunk of the randomly initialised model (with --weights: the file's).
    #[arg(long, value_enum, default_value_t = Arch::MobileNetV2)]
    pub arch: Arch,
    /// Thread counts to measure, each in a fresh process.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub threads: Vec<usize>,
    /// Timed repetitions at batch 32 (batch 1 runs 4× as many).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Skip the training-step timings.
    #[arg(long)]
    pub no_train: bool,
    /// Time the face detectors (YuNet and SeetaFace at 320×240 and 640×480) instead of the model.
    #[arg(long)]
    pub detector: bool,
    /// Photo the detectors are timed on, resized to each frame size.
    #[arg(long, default_value = "../shared/samples/grace_hopper.jpg")]
    pub detector_image: PathBuf,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Internal: run one measurement in this process and print JSON.
    #[arg(long, hide = true)]
    pub child: bool,
}

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Device to check: cuda for the GPU; auto picks it when present.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Timed repetitions per batch size.
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Inference batch sizes to time.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 32, 256])]
    pub batches: Vec<usize>,
    /// Training-step batch sizes to time (whole network); 0 for none.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 256])]
    pub train_batches: Vec<usize>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl From<&SelftestArgs> for SelftestOptions {
    fn from(args: &SelftestArgs) -> Self {
        let positive = |v: &[usize]| v.iter().copied().filter(|&b| b > 0).collect();
        SelftestOptions {
            reps: args.reps.max(1),
            batches: positive(&args.batches),
            train_batches: positive(&args.train_batches),
        }
    }
}

impl From<&BenchArgs> for BenchOptions {
    fn from(args: &BenchArgs) -> Self {
        BenchOptions {
            weights: args.weights.clone(),
            arch: args.arch,
            reps: args.reps,
            train: !args.no_train,
            detector_image: args.detector.then(|| args.detector_image.clone()),
        }
    }
}
