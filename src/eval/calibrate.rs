//! `affectcam calibrate`: the largest value each input channel of a model's projections (the
//! 1×1 convs after the depthwise convs) reaches on training faces, which int8 inference scales
//! by (`PackedDense::int8`). Without it int8 loses 1.3 points of FER+ accuracy, nearly all in
//! those layers: a few channels near ReLU6's 6 set each pixel's scale for all the others.

use crate::data::{self, LoadOptions};
use crate::model::preprocess::CropMode;
use crate::model::{AffectModel, Precision};
use crate::run_error::RunError;
use candle_core::{Device, Tensor};
use std::path::PathBuf;

/// Settings of a calibration.
pub struct CalibrateOptions {
    pub data: Vec<PathBuf>,
    pub load: LoadOptions,
    /// Training faces to measure, spread evenly over all the sources' training splits.
    pub images: usize,
    /// Where `--detect` keeps its detections between runs.
    pub cache_dir: PathBuf,
}

/// A calibration's result.
pub struct Calibration {
    /// Per projection: its checkpoint name for the ranges and the ranges `[C]`.
    pub ranges: Vec<(String, Tensor)>,
    /// Training faces measured.
    pub images: usize,
    /// Samples of the training splits dropped as unreadable (with `skip_bad`).
    pub skipped: usize,
}

/// Measures `model` (run in f32: it is left prepared so) on the training splits of
/// `opts.data`. `None` for VGG16, which has no projections.
pub fn calibrate(
    model: &mut AffectModel,
    device: &Device,
    opts: &CalibrateOptions,
) -> Result<Option<Calibration>, RunError> {
    model.set_precision(Precision::F32)?;
    let pre = model.meta.preprocess;
    let load = LoadOptions {
        detect: opts.load.detect || pre.crop != CropMode::Box,
        ..opts.load
    };
    let (mut faces, mut skipped) = (Vec::new(), 0);
    for path in &opts.data {
        let splits = data::load(path, &opts.load)?;
        skipped += splits.skipped.len();
        let decoded = data::decode(splits.train, &pre, &load, &opts.cache_dir, "decoding")?;
        skipped += decoded.skipped.len();
        faces.extend(decoded.faces);
    }
    if faces.is_empty() {
        return Err(RunError::Empty);
    }
    let step = (faces.len() / opts.images.max(1)).max(1);
    let chosen: Vec<_> = faces
        .iter()
        .step_by(step)
        .take(opts.images.max(1))
        .collect();
    let bar = crate::progress::counting_bar(chosen.len(), "calibrating", "faces");
    let mut ranges: Option<Vec<(String, Tensor)>> = None;
    for batch in chosen.chunks(32) {
        let x = pre.batch_of(batch.iter().map(|f| (&f[..], false)), device)?;
        let Some(maxima) = model.projection_input_maxima(&x)? else {
            return Ok(None);
        };
        ranges = Some(match ranges {
            None => maxima,
            Some(so_far) => so_far
                .into_iter()
                .zip(maxima)
                .map(|((name, a), (_, b))| Ok((name, a.maximum(&b)?)))
                .collect::<candle_core::Result<_>>()?,
        });
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(ranges.map(|ranges| Calibration {
        ranges,
        images: chosen.len(),
        skipped,
    }))
}
