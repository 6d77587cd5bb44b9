//! Adam with the whole update fused into one in-place pass per parameter.
//!
//! candle-nn's AdamW spends about a dozen full tensor passes (and allocations) per parameter
//! per step, which dominates a partial fine-tuning step; this does one.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, InplaceOp2, Layout, Result, Var};
use candle_nn::Optimizer;
use rayon::prelude::*;
use std::sync::Mutex;

/// Adam hyper-parameters (Kingma & Ba defaults except the rate).
#[derive(Debug, Clone, Copy)]
pub struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        }
    }
}

pub struct Moments {
    first: Vec<f32>,
    second: Vec<f32>,
}

/// The per-element update, given the bias corrections of this step.
struct AdamUpdate<'a> {
    params: AdamParams,
    step: i32,
    moments: &'a Mutex<Moments>,
}

impl InplaceOp2 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "adam-update"
    }

    fn cpu_fwd(
        &self,
        ts: &mut CpuStorage,
        tl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(grad)) = (ts, gs) else {
            bail!(
                "adam: f32 parameters and gradients only, got {:?}",
                gs.dtype()
            );
        };
        let (Some((t0, t1)), Some((g0, g1))) = (tl.contiguous_offsets(), gl.contiguous_offsets())
        else {
            bail!("adam: parameters and gradients must be contiguous");
        };
        let (theta, grad) = (&mut theta[t0..t1], &grad[g0..g1]);
        let mut moments = self.moments.lock().expect("adam moments poisoned");
        let Moments { first, second } = &mut *moments;
        if theta.len() != grad.len() || first.len() != theta.len() {
            bail!(
                "adam: parameter has {} values, gradient {}",
                theta.len(),
                grad.len()
            );
        }
        let p = self.params;
        let (b1, b2) = (p.beta1 as f32, p.beta2 as f32);
        // 1 - β in f64: from β rounded to f32 it would be off by ~1e-5 relative for β₂ = 0.999.
        let (one_minus_b1, one_minus_b2) = ((1.0 - p.beta1) as f32, (1.0 - p.beta2) as f32);
        let step_size = (p.lr * (1.0 - p.beta2.powi(self.step)).sqrt()
            / (1.0 - p.beta1.powi(self.step))) as f32;
        let eps = (p.eps * (1.0 - p.beta2.powi(self.step)).sqrt()) as f32;
        const CHUNK: usize = 8192;
        theta
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(
                first
                    .par_chunks_mut(CHUNK)
                    .zip(second.par_chunks_mut(CHUNK)),
            )
            .for_each(|((theta, grad), (m, v))| {
                for i in 0..theta.len() {
                    let g = grad[i];
                    m[i] = b1 * m[i] + one_minus_b1 * g;
                    v[i] = b2 * v[i] + one_minus_b2 * g * g;
                    theta[i] -= step_size * m[i] / (v[i].sqrt() + eps);
                }
            });
        Ok(())
    }
}

/// Adam over a set of variables; variables without a gradient in a step are left alone.
pub enum Adam {
    /// The fused in-place update (CPU).
    Fused {
        vars: Vec<(Var, Mutex<Moments>)>,
        params: AdamParams,
        step: i32,
    },
    /// candle-nn's AdamW with no weight decay (other devices).
    Candle(candle_nn::AdamW),
}

impl Adam {
    pub fn new(vars: Vec<Var>, params: AdamParams) -> Result<Self> {
        if vars.iter().any(|v| !v.device().is_cpu()) {
            let params = candle_nn::ParamsAdamW {
                lr: params.lr,
                beta1: params.beta1,
                beta2: params.beta2,
                eps: params.eps,
                weight_decay: 0.0,
            };
            return Ok(Adam::Candle(candle_nn::AdamW::new(vars, params)?));
        }
        let vars = vars
            .into_iter()
            .map(|v| {
                let n = v.elem_count();
                let moments = Moments {
                    first: vec![0.0; n],
                    second: vec![0.0; n],
                };
                (v, Mutex::new(moments))
            })
            .collect();
        Ok(Adam::Fused {
            vars,
            params,
            step: 0,
        })
    }

    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Adam::Fused { params, .. } => params.lr = lr,
            Adam::Candle(adam) => adam.set_learning_rate(lr),
        }
    }

    /// One update from `grads`.
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        let (vars, params, step) = match self {
            Adam::Candle(adam) => return adam.step(grads),
            Adam::Fused { vars, params, step } => (vars, params, step),
        };
        *step += 1;
        for (var, moments) in vars.iter() {
            let Some(grad) = grads.get(var) else { continue };
            let update = AdamUpdate {
                params: *params,
                step: *step,
                moments,
            };
            var.as_tensor().inplace_op2(&grad.contiguous()?, &update)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Gradients `grads[i]` for `vars[i]` (`None`: no gradient this step), as the backward pass
    /// of `Σ vars[i]·grads[i]` produces them.
    fn grad_store(
        vars: &[Var],
        grads: &[Option<Tensor>],
    ) -> Result<candle_core::backprop::GradStore> {
        let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?;
        for (var, grad) in vars.iter().zip(grads) {
            if let Some(grad) = grad {
                loss = (loss + (var.as_tensor() * grad)?.sum_all()?)?;
            }
        }
        loss.backward()
    }

    /// The fused update against candle-nn's AdamW (the non-CPU path) with no weight decay.
    /// Both take θ -= lr·m̂/(√v̂ + ε) with m̂ = m/(1-β₁ᵗ), v̂ = v/(1-β₂ᵗ); the fused one folds the
    /// corrections into the step size and ε (lr·√(1-β₂ᵗ)/(1-β₁ᵗ) and ε·√(1-β₂ᵗ)), the same formula.
    #[test]
    fn fused_matches_candle_adamw() -> Result<()> {
        // Compared on the displacement θ - θ₀, relative to lr·STEPS (about the most STEPS Adam
        // steps move a parameter). Ordering the f32 arithmetic differently leaves a few ulps of
        // θ (up to 5e-7 on this scale seen); 2e-6 allows for that yet fails on a 1e-5 relative
        // error in 1-β₂ (7e-6 here) and on anything coarser, such as a misplaced ε or bias
        // correction (shown by the tensor with gradients near ε).
        const TOL: f32 = 2e-6;
        const STEPS: usize = 5;
        let dev = Device::Cpu;
        let params = AdamParams {
            lr: 1e-2,
            ..AdamParams::default()
        };
        // One element, a matrix, several parallel chunks, and gradients around ε.
        let tensors: [(&[usize], f32); 4] = [
            (&[1], 1.0),
            (&[17, 5], 1.0),
            (&[20_000], 1.0),
            (&[64], 1e-7),
        ];
        let start = tensors
            .iter()
            .map(|(shape, _)| Tensor::randn(0f32, 0.01, *shape, &dev))
            .collect::<Result<Vec<_>>>()?;
        let new_vars = || {
            start
                .iter()
                .map(Var::from_tensor)
                .collect::<Result<Vec<_>>>()
        };
        let (fused_vars, adamw_vars) = (new_vars()?, new_vars()?);
        let mut fused = Adam::new(fused_vars.clone(), params)?;
        assert!(matches!(fused, Adam::Fused { .. }));
        let mut adamw = candle_nn::AdamW::new(
            adamw_vars.clone(),
            candle_nn::ParamsAdamW {
                lr: params.lr,
                beta1: params.beta1,
                beta2: params.beta2,
                eps: params.eps,
                weight_decay: 0.0,
            },
        )?;
        for step in 0..STEPS {
            // The matrix gets no gradient in step 2: both leave it alone but count the step.
            let grads = tensors
                .iter()
                .enumerate()
                .map(|(i, (shape, scale))| {
                    let skip = step == 2 && i == 1;
                    (!skip)
                        .then(|| Tensor::randn(0f32, *scale, *shape, &dev))
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            fused.step(&grad_store(&fused_vars, &grads)?)?;
            adamw.step(&grad_store(&adamw_vars, &grads)?)?;
        }
        for (i, theta0) in start.iter().enumerate() {
            let moved = (fused_vars[i].as_tensor() - theta0)?;
            let reference = (adamw_vars[i].as_tensor() - theta0)?;
            let diff = (&moved - &reference)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            let err = diff / (params.lr as f32 * STEPS as f32);
            assert!(err < TOL, "tensor {i}: error {err:e} of lr·steps");
        }
        Ok(())
    }
}
