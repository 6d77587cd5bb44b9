//! Training: one optimisation step on the shared model, with a frozen prefix of the trunk.
//!
//! A run (`fit`) reads its settings (`config`) and faces (`data`), trains `epoch` by epoch on
//! images or cached frozen-trunk activations (`cache`) with `adam`, keeps the best weights
//! (`checkpoint`), records `history` and ends with an evaluation on the test splits
//! (`evaluate`).

use crate::model::backbone::Arch;
use crate::model::ops::on_cpu_pool;
use crate::model::{AffectModel, ModelMeta};
use candle_core::{DType, Device, Result, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};

pub mod adam;
pub mod augment;
pub mod cache;
mod checkpoint;
pub mod config;
mod data;
mod epoch;
mod evaluate;
pub mod fit;
pub mod history;
pub mod logit_adjust;
use adam::{Adam, AdamParams};
use std::collections::HashMap;

/// Where fine-tuning starts: the trunk's blocks before it are frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finetune {
    /// Only the head trains; the trunk runs once to cache pooled features.
    HeadOnly,
    /// Blocks `k..` and the last 1×1 conv train with the head; inputs are boundary `k`.
    FromBlock(usize),
    /// Everything trains; inputs are images.
    All,
}

impl Finetune {
    /// The last `n` blocks of `arch` (and, in the inverted-residual nets, the last 1×1 conv), or
    /// everything.
    pub fn last_blocks(n: usize, arch: Arch) -> Self {
        if n == 0 {
            Finetune::HeadOnly
        } else {
            Finetune::FromBlock(arch.num_blocks().saturating_sub(n))
        }
    }

    /// Whether parameter `name` of an `arch` model trains under this setting.
    pub fn trains(self, arch: Arch, name: &str) -> bool {
        let head = ["head_dense.", "emotion.", "valence_arousal."]
            .iter()
            .any(|p| name.starts_with(p));
        match self {
            Finetune::HeadOnly => head,
            Finetune::FromBlock(k) => head || arch.is_in_blocks_from(name, k),
            Finetune::All => true,
        }
    }
}

/// Targets of one batch. A sample without a label for a task has zero weight for it.
pub struct Targets {
    /// `[N, 8]` class distribution (one-hot or crowd-vote soft labels); rows may be zero.
    pub emotion: Tensor,
    /// `[N]` per-sample weight of the emotion loss (class weight, 0 when unlabelled).
    pub emotion_weight: Tensor,
    /// `[N, 2]` valence, arousal.
    pub valence_arousal: Tensor,
    /// `[N]` weight of each sample's valence/arousal loss: 1 where known, the weak-target
    /// weight for class-mean targets, else 0.
    pub va_mask: Tensor,
}

impl Targets {
    /// Moves `share` of each labelled face's emotion target to the teacher's distribution
    /// `teacher_probs` `[N, 8]`; unlabelled faces stay without one.
    pub fn distilled(self, teacher_probs: &Tensor, share: f32) -> Result<Self> {
        let labelled = self.emotion.sum_keepdim(1)?;
        let taught = teacher_probs.broadcast_mul(&labelled)?;
        let emotion =
            (self.emotion.affine(1.0 - share as f64, 0.0)? + taught.affine(share as f64, 0.0)?)?;
        Ok(Self { emotion, ..self })
    }
}

/// Loss terms of a batch.
pub struct Losses {
    pub total: Tensor,
    pub emotion: f32,
    pub valence_arousal: f32,
}

/// Weighted soft-target cross-entropy (focal with `focal_gamma` > 0: each class term scaled
/// by (1 - p)^γ) plus weighted valence/arousal MSE; each term averaged over the samples that
/// have that label.
pub fn losses(logits: &Tensor, va: &Tensor, t: &Targets, focal_gamma: f32) -> Result<Losses> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let per_class = if focal_gamma > 0.0 {
        // Floored above 0: the gradient of x^γ is infinite at x = 0 for γ < 1.
        let focus = (1.0 - log_p.exp()?)?
            .clamp(1e-6f32, 1f32)?
            .powf(focal_gamma as f64)?;
        (&log_p * focus)?
    } else {
        log_p
    };
    let ce = (per_class * &t.emotion)?.sum(1)?.neg()?;
    let labelled = t.emotion.sum(1)?.sum_all()?.to_scalar::<f32>()?.max(1.0);
    let emotion = ((ce * &t.emotion_weight)?.sum_all()? / labelled as f64)?;
    let se = (va - &t.valence_arousal)?.sqr()?.sum(1)?;
    let with_va = t.va_mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
    let valence_arousal = ((se * &t.va_mask)?.sum_all()? / (2.0 * with_va) as f64)?;
    Ok(Losses {
        emotion: emotion.to_scalar()?,
        valence_arousal: valence_arousal.to_scalar()?,
        total: (emotion + valence_arousal)?,
    })
}

/// Learning rates of the trunk and the head (the head starts from scratch, so it moves faster).
#[derive(Debug, Clone, Copy)]
pub struct LearningRates {
    pub trunk: f64,
    pub head: f64,
}

/// A model whose parameters are variables, with an Adam optimiser per parameter group.
pub struct Trainer {
    pub varmap: VarMap,
    pub model: AffectModel,
    pub finetune: Finetune,
    trunk_opt: Option<Adam>,
    head_opt: Adam,
    /// The rates the schedule scales.
    lr: LearningRates,
    /// Focal-loss exponent of the emotion loss (0: cross-entropy).
    pub focal_gamma: f32,
    device: Device,
}

impl Trainer {
    /// A model initialised from `init` (missing tensors get their random initialisers).
    pub fn new(
        init: HashMap<String, Tensor>,
        meta: ModelMeta,
        finetune: Finetune,
        lr: LearningRates,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let arch = meta.arch;
        let model = AffectModel::new(VarBuilder::from_varmap(&varmap, DType::F32, device), meta)?;
        {
            let data = varmap.data().lock().unwrap();
            for (name, var) in data.iter() {
                if let Some(t) = init.get(name) {
                    var.set(&t.to_device(device)?)?;
                }
            }
        }
        let (mut trunk, mut head): (Vec<Var>, Vec<Var>) = (Vec::new(), Vec::new());
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if !finetune.trains(arch, name) {
                continue;
            }
            if Finetune::HeadOnly.trains(arch, name) {
                head.push(var.clone());
            } else {
                trunk.push(var.clone());
            }
        }
        let adam = |vars, lr| {
            Adam::new(
                vars,
                AdamParams {
                    lr,
                    ..Default::default()
                },
            )
        };
        let trunk_opt = if trunk.is_empty() {
            None
        } else {
            Some(adam(trunk, lr.trunk)?)
        };
        Ok(Self {
            model,
            finetune,
            trunk_opt,
            head_opt: adam(head, lr.head)?,
            lr,
            focal_gamma: 0.0,
            varmap,
            device: device.clone(),
        })
    }

    /// Sets both learning rates to `factor` times their configured values.
    pub fn scale_learning_rates(&mut self, factor: f64) {
        if let Some(opt) = &mut self.trunk_opt {
            opt.set_lr(self.lr.trunk * factor);
        }
        self.head_opt.set_lr(self.lr.head * factor);
    }

    /// Runs the trainable part on `inputs`: pooled features for [`Finetune::HeadOnly`], the
    /// activation at the boundary for [`Finetune::FromBlock`], images for [`Finetune::All`].
    pub fn forward_t(
        &self,
        inputs: &Tensor,
        train: bool,
    ) -> Result<crate::model::head::HeadOutput> {
        on_cpu_pool(&self.device, || {
            let features = match self.finetune {
                Finetune::HeadOnly => inputs.clone(),
                Finetune::FromBlock(k) => self.model.trunk.forward_from(inputs, k)?,
                Finetune::All => self.model.trunk.forward(inputs)?,
            };
            self.model.head.forward_t(&features, train)
        })
    }

    /// One forward + backward + Adam update; returns the loss terms.
    pub fn step(&mut self, inputs: &Tensor, targets: &Targets) -> Result<Losses> {
        self.step_with_logits(inputs, targets)
            .map(|(losses, _)| losses)
    }

    /// [`Trainer::step`], also returning the batch's logits (for training accuracy).
    pub fn step_with_logits(
        &mut self,
        inputs: &Tensor,
        targets: &Targets,
    ) -> Result<(Losses, Tensor)> {
        let device = self.device.clone();
        on_cpu_pool(&device, || {
            let out = self.forward_t(inputs, true)?;
            let losses = losses(&out.logits, &out.valence_arousal, targets, self.focal_gamma)?;
            let grads = losses.total.backward()?;
            if let Some(opt) = &mut self.trunk_opt {
                opt.step(&grads)?;
            }
            self.head_opt.step(&grads)?;
            Ok((losses, out.logits.detach()))
        })
    }

    /// The frozen part of the trunk: images → the inputs [`Trainer::forward_t`] expects.
    pub fn frozen_forward(&self, images: &Tensor) -> Result<Tensor> {
        on_cpu_pool(&self.device, || match self.finetune {
            Finetune::All => Ok(images.clone()),
            Finetune::FromBlock(k) => Ok(self.model.trunk.forward_to(images, k)?.detach()),
            Finetune::HeadOnly => Ok(self.model.trunk.forward(images)?.detach()),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Current values of every parameter.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn focal_loss_spares_confident_right_answers() {
        let dev = Device::Cpu;
        let logits = Tensor::new(
            &[
                [4f32, 0., 0., 0., 0., 0., 0., 0.],
                [0.5, 0., 0., 0., 0., 0., 0., 0.],
            ],
            &dev,
        )
        .unwrap();
        let mut target = vec![0f32; 16];
        (target[0], target[8]) = (1.0, 1.0);
        let t = Targets {
            emotion: Tensor::from_vec(target, (2, 8), &dev).unwrap(),
            emotion_weight: Tensor::new(&[1f32, 1.], &dev).unwrap(),
            valence_arousal: Tensor::zeros((2, 2), DType::F32, &dev).unwrap(),
            va_mask: Tensor::zeros(2, DType::F32, &dev).unwrap(),
        };
        let va = Tensor::zeros((2, 2), DType::F32, &dev).unwrap();
        let ce = losses(&logits, &va, &t, 0.0).unwrap().emotion;
        let focal = losses(&logits, &va, &t, 2.0).unwrap().emotion;
        // Cross-entropy by hand: -ln softmax for each row, averaged.
        let row = |l: f32| -(l.exp() / (l.exp() + 7.0)).ln();
        assert!((ce - (row(4.0) + row(0.5)) / 2.0).abs() < 1e-5);
        assert!(focal < ce && focal > 0.0);
    }

    #[test]
    fn distillation_mixes_labelled_targets_only() {
        let dev = Device::Cpu;
        let mut emotion = vec![0f32; 16];
        emotion[1] = 1.0; // row 0 is happy, row 1 has no emotion label
        let t = Targets {
            emotion: Tensor::from_vec(emotion, (2, 8), &dev).unwrap(),
            emotion_weight: Tensor::new(&[1f32, 0.], &dev).unwrap(),
            valence_arousal: Tensor::zeros((2, 2), DType::F32, &dev).unwrap(),
            va_mask: Tensor::zeros(2, DType::F32, &dev).unwrap(),
        };
        let teacher = Tensor::full(0.125f32, (2, 8), &dev).unwrap();
        let mixed = t.distilled(&teacher, 0.4).unwrap().emotion;
        let rows = mixed.to_vec2::<f32>().unwrap();
        assert!((rows[0][1] - (0.6 + 0.4 * 0.125)).abs() < 1e-6);
        assert!((rows[0][0] - 0.4 * 0.125).abs() < 1e-6);
        assert!((rows[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(rows[1].iter().all(|&p| p == 0.0));
    }
}
