//! Command-line arguments: one struct per subcommand, and their conversion into the library's
//! configurations (defaults are the library's constants). Training and evaluation arguments
//! are in `learn`, the measuring ones (bench, selftest) in `measure`.

mod learn;
mod measure;

pub use learn::{CalibrateArgs, CropChoice, DataArgs, EvalArgs, FinetuneBlocks, TrainArgs};
pub use measure::{BenchArgs, SelftestArgs};

use crate::capture::{FrameSize, Source, DEFAULT_FPS, DEFAULT_FRAME_SIZE};
use crate::detect::{DetectorConfig, DetectorKind};
use crate::model::{DeviceChoice, Precision};
use crate::pipeline::{
    default_detect_width, Mode, PipelineConfig, DEFAULT_DETECTOR, DEFAULT_DETECT_EVERY,
};
use crate::record::DEFAULT_QP;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// Measure the int8 input ranges of the model's projections on training faces and write
    /// them into a copy of its weights file (what `--precision int8` scales by).
    Calibrate(CalibrateArgs),
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
    /// Number format of the model's 1×1 convs (the bulk of its work) on the CPU.
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    pub precision: Precision,
    /// Classify each face as given only, not also its mirror image (the default averages the
    /// two: +1.1 points of accuracy on FER+ Test and Valid, at twice the model's work).
    #[arg(long = "no-mirror-average", action = clap::ArgAction::SetFalse)]
    pub mirror_average: bool,
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
    /// others show their smoothed result until their turn.
    /// Default: 3 where the 1×1 convs run on the AVX-512 kernels (bf16 or f32), else 1 (what
    /// keeps 3 faces above 60 fps).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub classify_per_frame: Option<u32>,
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
