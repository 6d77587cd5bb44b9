//! Command-line arguments: one struct per subcommand.

use crate::model::DeviceChoice;
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
    /// Predict emotion and valence/arousal for face images (each image is one face crop).
    Predict(PredictArgs),
    /// Measure model latency, throughput, memory and training-step time.
    Bench(BenchArgs),
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

#[derive(Debug, Args)]
pub struct LiveArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct AnnotateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct TrainArgs {}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Face images (already cropped to the face).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object per image instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Weights to time (default: randomly initialised; speed does not depend on the values).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Thread counts to measure, each in a fresh process.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub threads: Vec<usize>,
    /// Timed repetitions at batch 32 (batch 1 runs 4× as many).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Skip the training-step timings.
    #[arg(long)]
    pub no_train: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Internal: run one measurement in this process and print JSON.
    #[arg(long, hide = true)]
    pub child: bool,
}
