//! `affectcam bench`: model latency, throughput, memory and training-step time on this machine.

use crate::model::mobilenetv2::{MobileNetV2, NUM_BLOCKS};
use crate::model::{labels::NUM_EMOTIONS, AffectModel};
use crate::train::{Finetune, LearningRates, Targets, Trainer};
use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

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
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
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

/// Runs every measurement on `model` with the current thread pool.
pub fn run(
    model: &AffectModel,
    device: &Device,
    reps: usize,
    with_training: bool,
) -> Result<BenchReport> {
    let size = model.meta.preprocess.input_size;
    let image = |n: usize| Tensor::rand(-1f32, 1f32, (n, size, size, 3), device);
    let x1 = image(1)?;
    let batch1 = time(5, reps * 4, || {
        let out = model.forward(&x1)?;
        device.synchronize()?;
        Ok(out)
    })?;
    let x32 = image(32)?;
    let batch32 = time(2, reps, || {
        let out = model.forward(&x32)?;
        device.synchronize()?;
        Ok(out)
    })?;
    let peak_rss_mb = peak_rss_mb();
    let (mut full, mut last4) = (None, None);
    if with_training {
        let lr = LearningRates {
            trunk: 1e-4,
            head: 1e-3,
        };
        let init: HashMap<String, Tensor> = HashMap::new();
        let targets = random_targets(32, device)?;
        let mut trainer =
            Trainer::new(init.clone(), model.meta.clone(), Finetune::All, lr, device)?;
        full = Some(time(1, reps.div_ceil(2), || trainer.step(&x32, &targets))?);
        let k = NUM_BLOCKS - 4;
        let mut trainer =
            Trainer::new(init, model.meta.clone(), Finetune::FromBlock(k), lr, device)?;
        let [h, w, c] = MobileNetV2::boundary_shape(size, k);
        let boundary = Tensor::rand(0f32, 1f32, (32, h, w, c), device)?;
        last4 = Some(time(2, reps, || trainer.step(&boundary, &targets))?);
    }
    Ok(BenchReport {
        threads: candle_core::utils::get_num_threads(),
        input_size: size,
        batch1,
        batch32_per_image_ms: batch32.median_ms / 32.0,
        batch32,
        peak_rss_mb,
        train_step_full: full,
        train_step_last4: last4,
    })
}
