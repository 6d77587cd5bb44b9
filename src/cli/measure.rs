//! `bench` and `selftest` arguments.

use crate::bench::BenchOptions;
use crate::model::backbone::Arch;
use crate::model::{DeviceChoice, Precision};
use crate::selftest::SelftestOptions;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Weights to time (default: randomly initialised; speed does not depend on the values).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Trunk of the randomly initialised model (with --weights: the file's).
    #[arg(long, value_enum, default_value_t = Arch::MobileNetV2)]
    pub arch: Arch,
    /// Number format of inference (the training steps are f32).
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    pub precision: Precision,
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
            precision: args.precision,
            train: !args.no_train,
            detector_image: args.detector.then(|| args.detector_image.clone()),
        }
    }
}
