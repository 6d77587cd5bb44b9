//! `affectcam selftest`: what a machine without a Rust toolchain (a lent GPU machine) runs to
//! check the binary it was given: every custom op on the chosen device against candle's
//! reference ops on the CPU, the fused Adam step against candle-nn's AdamW on the CPU, then
//! the model's inference and full training-step times there and the memory in use.

use crate::bench::{peak_rss_mb, time_inference, time_train_step, Timing};
use crate::model::ops::check::{self, OpCheck};
use crate::model::{device_label, AffectModel, ModelMeta};
use crate::train::{adam, Finetune};
use candle_core::{DType, Device, Result};
use serde::{Deserialize, Serialize};

/// What to measure after the op checks.
#[derive(Debug, Clone)]
pub struct SelftestOptions {
    /// Timed repetitions per batch size.
    pub reps: usize,
    /// Inference batch sizes.
    pub batches: Vec<usize>,
    /// Training-step batch sizes (whole network; empty: no training timings).
    pub train_batches: Vec<usize>,
}

impl Default for SelftestOptions {
    fn default() -> Self {
        Self {
            reps: 10,
            batches: vec![1, 32, 256],
            train_batches: vec![32, 256],
        }
    }
}

/// Time per call at one batch size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchTiming {
    pub batch: usize,
    pub timing: Timing,
    pub images_per_s: f64,
}

impl BatchTiming {
    fn new(batch: usize, timing: Timing) -> Self {
        let images_per_s = batch as f64 / (timing.median_ms / 1e3);
        Self {
            batch,
            timing,
            images_per_s,
        }
    }
}

/// Everything the self-check found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelftestReport {
    /// "cpu" or "cuda:0 (NAME)".
    pub device: String,
    /// The instruction set of the CPU kernels (`AFFECTCAM_SIMD` caps it).
    pub cpu_simd: String,
    pub ops: Vec<OpCheck>,
    /// Largest displacement error of each tensor of the Adam check, relative to lr·steps.
    pub adam_errors: Vec<f32>,
    /// Every op within [`check::TOLERANCE`] and Adam within [`adam::CHECK_TOLERANCE`].
    pub passed: bool,
    pub inference: Vec<BatchTiming>,
    pub train_step_full: Vec<BatchTiming>,
    /// Peak memory: the GPU's memory in use (all processes) at its highest sample, or this
    /// process's peak resident memory on the CPU, MB.
    pub peak_memory_mb: f64,
}

/// Memory in use on `device` now, MB (the GPU's whole memory in use; the CPU: peak RSS).
fn memory_mb(device: &Device) -> f64 {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => dev
            .cuda_stream()
            .context()
            .mem_get_info()
            .map_or(f64::NAN, |(free, total)| (total - free) as f64 / 1e6),
        _ => peak_rss_mb(),
    }
}

/// Runs the checks, then the timings; `progress` hears what starts.
pub fn run(
    device: &Device,
    options: &SelftestOptions,
    mut progress: impl FnMut(&str),
) -> Result<SelftestReport> {
    progress("checking the custom ops against the reference");
    let ops = check::custom_ops(device)?;
    let adam_errors = adam::check_against_adamw(device)?;
    let passed =
        ops.iter().all(OpCheck::passed) && adam_errors.iter().all(|&e| e <= adam::CHECK_TOLERANCE);
    let mut peak = memory_mb(device);

    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = AffectModel::new(vb, ModelMeta::default())?;
    let mut inference = Vec::new();
    for &batch in &options.batches {
        progress(&format!("timing inference at batch {batch}"));
        let timing = time_inference(&model, device, batch, 3, options.reps)?;
        inference.push(BatchTiming::new(batch, timing));
        peak = peak.max(memory_mb(device));
    }
    let mut train_step_full = Vec::new();
    for &batch in &options.train_batches {
        progress(&format!("timing a full training step at batch {batch}"));
        let reps = options.reps.div_ceil(2);
        let timing = time_train_step(&model.meta, device, Finetune::All, batch, 1, reps)?;
        train_step_full.push(BatchTiming::new(batch, timing));
        peak = peak.max(memory_mb(device));
    }
    Ok(SelftestReport {
        device: device_label(device),
        cpu_simd: format!("{:?}", crate::model::ops::simd_level()),
        ops,
        adam_errors,
        passed,
        inference,
        train_step_full,
        peak_memory_mb: peak,
    })
}

impl SelftestReport {
    /// The report as lines of text.
    pub fn summary(&self) -> String {
        let mut lines = vec![format!(
            "device {}  (CPU kernels: {})",
            self.device, self.cpu_simd
        )];
        for op in &self.ops {
            lines.push(format!(
                "  {} {:32} {:40} max rel. error {:.1e}",
                if op.passed() { "ok  " } else { "FAIL" },
                op.op,
                op.shapes,
                op.max_error()
            ));
        }
        let adam = self.adam_errors.iter().copied().fold(0f32, f32::max);
        lines.push(format!(
            "  {} {:32} {:40} max error {adam:.1e} of lr·steps",
            if adam <= adam::CHECK_TOLERANCE {
                "ok  "
            } else {
                "FAIL"
            },
            "adam (fused) vs AdamW",
            "4 tensors, 5 steps"
        ));
        for t in &self.inference {
            lines.push(format!(
                "  inference batch {:4}       {:9.3} ms  [{:.3}–{:.3}]  {:9.0} images/s",
                t.batch, t.timing.median_ms, t.timing.min_ms, t.timing.max_ms, t.images_per_s
            ));
        }
        for t in &self.train_step_full {
            lines.push(format!(
                "  train step batch {:4}      {:9.3} ms  [{:.3}–{:.3}]  {:9.0} images/s",
                t.batch, t.timing.median_ms, t.timing.min_ms, t.timing.max_ms, t.images_per_s
            ));
        }
        lines.push(format!(
            "  peak memory               {:9.0} MB",
            self.peak_memory_mb
        ));
        lines.join("\n")
    }
}
