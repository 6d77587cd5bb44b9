//! Frozen-trunk activations, computed once and kept on disk, so partial fine-tuning runs only
//! the unfrozen layers each step. The file name is a hash of everything that determines the
//! values (frozen weights, faces, boundary, preprocessing), so any change recomputes it.

use super::{Finetune, Trainer};
use crate::data::FacePixels;
use crate::model::preprocess::Preprocess;
use crate::run_error::RunError;
use candle_core::{Device, Result, Tensor};
use half::f16;
use std::path::{Path, PathBuf};

/// Activations of every face (and its mirror image, when augmenting) at the boundary.
pub struct ActivationCache {
    /// Per-sample shape (`[H, W, C]` at a block boundary, `[1280]` for pooled features).
    shape: Vec<usize>,
    /// 1, or 2 when mirrored copies are kept.
    views: usize,
    /// `[sample][view][values]`, half precision to halve memory.
    data: Vec<f16>,
}

impl ActivationCache {
    fn width(&self) -> usize {
        self.shape.iter().product()
    }

    /// Loads the cache for this exact setting from `dir`, or computes and stores it.
    pub fn build_or_load(
        trainer: &Trainer,
        faces: &[FacePixels],
        pre: &Preprocess,
        with_mirror: bool,
        dir: &Path,
        what: &str,
    ) -> std::result::Result<Self, RunError> {
        let device = trainer.device();
        let views = if with_mirror { 2 } else { 1 };
        let shape = boundary_shape(trainer, pre.input_size);
        let path = cache_path(trainer, faces, pre, views, dir);
        let width: usize = shape.iter().product();
        let expected = faces.len() * views * width * 2;
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() == expected {
                log::info!("{what}: using cached activations {}", path.display());
                let data = bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect();
                return Ok(Self { shape, views, data });
            }
        }
        let bar = crate::progress::counting_bar(faces.len(), &format!("caching {what}"), "faces");
        let mut data = Vec::with_capacity(faces.len() * views * width);
        for chunk in faces.chunks(64) {
            let mut per_view = Vec::with_capacity(views);
            for mirror in [false, true].into_iter().take(views) {
                let images = pre.batch_of(chunk.iter().map(|f| (&f[..], mirror)), device)?;
                let act = trainer.frozen_forward(&images)?;
                per_view.push(act.flatten_from(1)?.to_vec2::<f32>()?);
            }
            for i in 0..chunk.len() {
                for view in &per_view {
                    data.extend(view[i].iter().map(|&v| f16::from_f32(v)));
                }
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        // A cache that cannot be written only costs time next run.
        if let Err(e) = std::fs::write(&path, bytes) {
            log::warn!("cannot write activation cache {}: {e}", path.display());
        }
        Ok(Self { shape, views, data })
    }

    /// A batch of cached activations; `mirrored[i]` picks sample i's mirrored view.
    pub fn batch(&self, indices: &[usize], mirrored: &[bool], device: &Device) -> Result<Tensor> {
        let width = self.width();
        let mut values = Vec::with_capacity(indices.len() * width);
        for (&i, &m) in indices.iter().zip(mirrored) {
            let view = usize::from(m && self.views == 2);
            let start = (i * self.views + view) * width;
            values.extend(self.data[start..start + width].iter().map(|v| v.to_f32()));
        }
        let mut dims = vec![indices.len()];
        dims.extend(&self.shape);
        Tensor::from_vec(values, dims, device)
    }
}

/// Shape of one cached activation: the boundary the trainable part starts from, or the
/// pooled features.
fn boundary_shape(trainer: &Trainer, input_size: usize) -> Vec<usize> {
    let arch = trainer.model.meta.arch;
    match trainer.finetune {
        Finetune::FromBlock(k) => arch.boundary_shape(input_size, k).to_vec(),
        Finetune::HeadOnly | Finetune::All => vec![arch.feature_channels()],
    }
}

fn cache_path(
    trainer: &Trainer,
    faces: &[FacePixels],
    pre: &Preprocess,
    views: usize,
    dir: &Path,
) -> PathBuf {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"affectcam activation cache v1");
    hasher.update(format!("{:?} {pre:?} views {views}", trainer.finetune).as_bytes());
    let mut frozen: Vec<(String, Tensor)> = trainer
        .tensors()
        .into_iter()
        .filter(|(name, _)| !trainer.finetune.trains(trainer.model.meta.arch, name))
        .collect();
    frozen.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in frozen {
        hasher.update(name.as_bytes());
        if let Ok(values) = t.flatten_all().and_then(|t| t.to_vec1::<f32>()) {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            hasher.update(&bytes);
        }
    }
    for face in faces {
        hasher.update(face);
    }
    let key = hasher.finalize().to_hex();
    dir.join(format!("{}.f16", &key[..24]))
}
