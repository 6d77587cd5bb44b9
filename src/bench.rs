//! `affectcam bench`: model latency, throughput, memory and training-step time on this machine;
//! with `--detector`, the face detectors' time per frame instead. Each thread count is measured
//! in a fresh child process (the thread pools are fixed at start, and peak memory is per
//! process), which prints its report as JSON.

use crate::detect::{DetectError, DetectorConfig, DetectorKind, FaceDetector};
use crate::model::backbone::Arch;
use crate::model::weights::WeightsError;
use crate::model::{labels::NUM_EMOTIONS, AffectModel, ModelMeta, Precision};
use crate::train::{Finetune, LearningRates, Targets, Trainer};
use candle_core::{DType, Device, Result, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Thread counts must be positive.
    #[error("--threads needs positive thread counts, e.g. --threads 1,2")]
    BadThreads,
    /// The weights to time could not be read.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A tensor operation failed.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// A face detector could not be created or failed.
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// The photo the detectors are timed on could not be read.
    #[error("cannot read {}: {reason} (pass --detector-image PHOTO)", path.display())]
    Image { path: PathBuf, reason: String },
    /// The child process could not be started.
    #[error("cannot run the benchmark process: {0}")]
    Spawn(std::io::Error),
    /// The child process failed or printed no report.
    #[error("benchmark with {threads} thread(s) failed: {reason}")]
    Child { threads: usize, reason: String },
}

/// What to measure.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Weights to time; `None`: randomly initialised (speed does not depend on the values).
    pub weights: Option<PathBuf>,
    /// The trunk of randomly initialised weights.
    pub arch: Arch,
    /// Timed repetitions at batch 32 (batch 1 runs 4× as many).
    pub reps: usize,
    /// Number format of inference (training steps are f32).
    pub precision: Precision,
    /// Also time training steps.
    pub train: bool,
    /// Time the face detectors on this photo (resized to each frame size) instead of the model.
    pub detector_image: Option<PathBuf>,
}

/// Median and spread of repeated timings, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub reps: usize,
}

impl Timing {
    fn from_samples(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Timing {
            median_ms: median,
            min_ms: ms[0],
            max_ms: ms[n - 1],
            reps: n,
        }
    }
}

/// Times `f` `reps` times after `warmup` untimed runs.
pub fn time<T>(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timing::from_samples(samples))
}

/// Results of one benchmark run at a fixed thread count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub threads: usize,
    pub input_size: usize,
    /// The number format inference ran in (`f32`, `bf16` or `int8`).
    pub precision: String,
    /// Inference, batch 1.
    pub batch1: Timing,
    /// Inference, batch 32 (whole batch).
    pub batch32: Timing,
    pub batch32_per_image_ms: f64,
    /// Peak resident memory after the batch-32 runs, MB.
    pub peak_rss_mb: f64,
    /// One training step at batch 32 (forward + backward + Adam), whole network.
    pub train_step_full: Option<Timing>,
    /// One training step at batch 32 from a cached boundary: last 4 blocks + last conv + head.
    pub train_step_last4: Option<Timing>,
}

/// Peak resident set size of this process (Linux), MB.
pub fn peak_rss_mb() -> f64 {
    crate::pipeline::stats::proc_status_field("VmHWM:").map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

fn random_targets(n: usize, device: &Device) -> Result<Targets> {
    let labels: Vec<u32> = (0..n as u32).map(|i| i % NUM_EMOTIONS as u32).collect();
    let labels = Tensor::new(labels, device)?;
    Ok(Targets {
        emotion: candle_nn::encoding::one_hot(labels, NUM_EMOTIONS, 1f32, 0f32)?,
        emotion_weight: Tensor::ones(n, candle_core::DType::F32, device)?,
        valence_arousal: Tensor::zeros((n, 2), candle_core::DType::F32, device)?,
        va_mask: Tensor::ones(n, candle_core::DType::F32, device)?,
    })
}

/// Times `model` on random images of `batch` (waiting for the device each time).
pub fn time_inference(
    model: &AffectModel,
    device: &Device,
    batch: usize,
    warmup: usize,
    reps: usize,
) -> Result<Timing> {
    let size = model.meta.preprocess.input_size;
    let x = Tensor::rand(-1f32, 1f32, (batch, size, size, 3), device)?;
    time(warmup, reps, || {
        let out = model.forward(&x)?;
        device.synchronize()?;
        Ok(out)
    })
}

/// Times training steps (forward, backward, Adam) of a fresh `meta` model trained as
/// `finetune`, on random inputs of `batch` of the kind it takes (images, the activation at its
/// boundary, or pooled features) and random targets.
pub fn time_train_step(
    meta: &ModelMeta,
    device: &Device,
    finetune: Finetune,
    batch: usize,
    warmup: usize,
    reps: usize,
) -> Result<Timing> {
    let lr = LearningRates {
        trunk: 1e-4,
        head: 1e-3,
    };
    let mut trainer = Trainer::new(HashMap::new(), meta.clone(), finetune, lr, device)?;
    let size = meta.preprocess.input_size;
    let inputs = match finetune {
        Finetune::All => Tensor::rand(-1f32, 1f32, (batch, size, size, 3), device)?,
        Finetune::FromBlock(k) => {
            let [h, w, c] = meta.arch.boundary_shape(size, k);
            Tensor::rand(0f32, 1f32, (batch, h, w, c), device)?
        }
        Finetune::HeadOnly => {
            Tensor::rand(0f32, 1f32, (batch, meta.arch.feature_channels()), device)?
        }
    };
    let targets = random_targets(batch, device)?;
    time(warmup, reps, || {
        trainer.step(&inputs, &targets)?;
        device.synchronize()
    })
}

/// Measures in this process (the child's side): loads the model and runs [`run`].
/// Call it on the thread that should take part in the model's work: `affectcam bench` runs it
/// as one of the kernels' rayon workers, as the pipeline runs its model.
pub fn run_here(options: &BenchOptions) -> std::result::Result<BenchReport, BenchError> {
    let device = Device::Cpu;
    let mut model = match &options.weights {
        Some(path) => AffectModel::load(path, &device)?,
        None => {
            let varmap = candle_nn::VarMap::new();
            let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &device);
            let meta = ModelMeta {
                arch: options.arch,
                ..ModelMeta::default()
            };
            AffectModel::new(vb, meta)?
        }
    };
    let precision = model.set_precision(options.precision)?;
    Ok(run(
        &model,
        precision,
        &device,
        options.reps,
        options.train,
    )?)
}

/// Measures at each thread count in a child process of `exe` (this program, which must
/// answer `bench --child` with [`run_here`]'s report, or [`run_detectors_here`]'s with
/// `--detector-image`, as JSON); `on_report` sees each report as it arrives.
pub fn run_per_thread_count<R: DeserializeOwned>(
    exe: &Path,
    threads: &[usize],
    options: &BenchOptions,
    mut on_report: impl FnMut(&R),
) -> std::result::Result<Vec<R>, BenchError> {
    if threads.is_empty() || threads.contains(&0) {
        return Err(BenchError::BadThreads);
    }
    let mut reports = Vec::new();
    for &n in threads {
        log::info!("benchmarking with {n} thread(s)…");
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["bench", "--child", "--reps", &options.reps.to_string()])
            .args(["--arch", &options.arch.to_string()])
            .args(["--precision", &options.precision.to_string()])
            .env("RAYON_NUM_THREADS", n.to_string());
        if let Some(w) = &options.weights {
            cmd.arg("--weights").arg(w);
        }
        if !options.train {
            cmd.arg("--no-train");
        }
        if let Some(photo) = &options.detector_image {
            cmd.arg("--detector").arg("--detector-image").arg(photo);
        }
        let out = cmd.output().map_err(BenchError::Spawn)?;
        let failed = |reason: String| BenchError::Child { threads: n, reason };
        if !out.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let report: R = serde_json::from_slice(&out.stdout)
            .map_err(|e| failed(format!("it printed no report ({e})")))?;
        on_report(&report);
        reports.push(report);
    }
    Ok(reports)
}

impl BenchReport {
    /// The report as an aligned block of text.
    pub fn summary(&self) -> String {
        let t = |t: &Timing| format!("{:8.2} ms  [{:.2}–{:.2}]", t.median_ms, t.min_ms, t.max_ms);
        let mut lines = vec![
            format!(
                "threads {}  input {}×{}  {}",
                self.threads, self.input_size, self.input_size, self.precision
            ),
            format!("  batch 1                 {}", t(&self.batch1)),
            format!(
                "  batch 32                {}  = {:.2} ms/image",
                t(&self.batch32),
                self.batch32_per_image_ms
            ),
            format!("  peak RSS                {:8.0} MB", self.peak_rss_mb),
        ];
        if let Some(full) = &self.train_step_full {
            lines.push(format!("  train step, all         {}", t(full)));
        }
        if let Some(last4) = &self.train_step_last4 {
            lines.push(format!("  train step, last 4      {}", t(last4)));
        }
        lines.join("\n")
    }
}

/// Runs every measurement on `model` (prepared for inference in `precision`) with the current
/// thread pool.
pub fn run(
    model: &AffectModel,
    precision: Precision,
    device: &Device,
    reps: usize,
    with_training: bool,
) -> Result<BenchReport> {
    let size = model.meta.preprocess.input_size;
    let batch1 = time_inference(model, device, 1, 5, reps * 4)?;
    let batch32 = time_inference(model, device, 32, 2, reps)?;
    let peak_rss_mb = peak_rss_mb();
    let (mut full, mut last4) = (None, None);
    if with_training {
        let meta = &model.meta;
        full = Some(time_train_step(
            meta,
            device,
            Finetune::All,
            32,
            1,
            reps.div_ceil(2),
        )?);
        let last4_blocks = Finetune::FromBlock(meta.arch.num_blocks() - 4);
        last4 = Some(time_train_step(meta, device, last4_blocks, 32, 2, reps)?);
    }
    Ok(BenchReport {
        threads: candle_core::utils::get_num_threads(),
        input_size: size,
        precision: precision.to_string(),
        batch1,
        batch32_per_image_ms: batch32.median_ms / 32.0,
        batch32,
        peak_rss_mb,
        train_step_full: full,
        train_step_last4: last4,
    })
}

/// Frame sizes the detectors are timed at.
pub const DETECTOR_SIZES: [(u32, u32); 2] = [(320, 240), (640, 480)];

/// One detector's time per frame at one frame size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorTiming {
    pub detector: String,
    pub width: u32,
    pub height: u32,
    /// Faces it found in the timed frame.
    pub faces: usize,
    pub timing: Timing,
}

/// The detectors' timings at one thread count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorBenchReport {
    pub threads: usize,
    pub timings: Vec<DetectorTiming>,
}

impl DetectorBenchReport {
    /// The report as an aligned block of text.
    pub fn summary(&self) -> String {
        let mut lines = vec![format!("threads {}  face detectors", self.threads)];
        for d in &self.timings {
            let t = &d.timing;
            lines.push(format!(
                "  {:6} {:>4}×{:<4} {:8.2} ms  [{:.2}–{:.2}]  {} face(s)",
                d.detector, d.width, d.height, t.median_ms, t.min_ms, t.max_ms, d.faces
            ));
        }
        lines.join("\n")
    }
}

/// Times YuNet and SeetaFace, each run on the whole frame (no downscaling), on `photo`
/// resized to each of [`DETECTOR_SIZES`], with the current thread pool (the child's side).
pub fn run_detectors_here(
    photo: &Path,
    reps: usize,
) -> std::result::Result<DetectorBenchReport, BenchError> {
    let image = image::open(photo)
        .map_err(|e| BenchError::Image {
            path: photo.to_path_buf(),
            reason: e.to_string(),
        })?
        .to_rgb8();
    let mut timings = Vec::new();
    for kind in [DetectorKind::Yunet, DetectorKind::Seeta] {
        let mut detector = FaceDetector::new(DetectorConfig {
            max_width: u32::MAX,
            ..DetectorConfig::for_photos(kind)
        })?;
        for (width, height) in DETECTOR_SIZES {
            let frame = image::imageops::resize(
                &image,
                width,
                height,
                image::imageops::FilterType::Triangle,
            );
            let mut faces = 0;
            let mut failure = None;
            let timing = time(3, reps.max(1) * 4, || {
                match detector.detect(&frame) {
                    Ok(found) => faces = found.len(),
                    Err(e) => failure = Some(e),
                }
                Ok(())
            })?;
            if let Some(e) = failure {
                return Err(e.into());
            }
            timings.push(DetectorTiming {
                detector: format!("{kind:?}").to_lowercase(),
                width,
                height,
                faces,
                timing,
            });
        }
    }
    Ok(DetectorBenchReport {
        threads: rayon::current_num_threads(),
        timings,
    })
}
