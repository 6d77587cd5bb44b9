//! Adam with the whole update fused into one in-place pass per parameter (a CPU loop, or a
//! CUDA kernel with the `cuda` feature).
//!
//! candle-nn's AdamW spends about a dozen full tensor passes (and allocations) per parameter
//! per step, which dominates a partial fine-tuning step; this does one.

use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, Device, InplaceOp2, Layout, Result, Tensor, Var};
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

/// First and second moments of one parameter, on the parameter's device.
pub enum Moments {
    Cpu {
        first: Vec<f32>,
        second: Vec<f32>,
    },
    #[cfg(feature = "cuda")]
    Cuda {
        first: CudaSlice<f32>,
        second: CudaSlice<f32>,
    },
}

impl Moments {
    /// Zeros for `var`, or `None` on a device without the fused update.
    fn zeros(var: &Var) -> Result<Option<Self>> {
        let n = var.elem_count();
        Ok(match var.device() {
            Device::Cpu => Some(Moments::Cpu {
                first: vec![0.0; n],
                second: vec![0.0; n],
            }),
            #[cfg(feature = "cuda")]
            Device::Cuda(dev) => Some(Moments::Cuda {
                first: dev.alloc_zeros::<f32>(n)?,
                second: dev.alloc_zeros::<f32>(n)?,
            }),
            _ => None,
        })
    }
}

/// The scalars of step `step`: β, 1 - β (in f64: from β rounded to f32 it would be off by
/// ~1e-5 relative for β₂ = 0.999), and the bias corrections folded into the step size and ε.
struct StepScalars {
    b1: f32,
    b2: f32,
    one_minus_b1: f32,
    one_minus_b2: f32,
    step_size: f32,
    eps: f32,
}

impl StepScalars {
    fn new(p: AdamParams, step: i32) -> Self {
        let correction2 = (1.0 - p.beta2.powi(step)).sqrt();
        Self {
            b1: p.beta1 as f32,
            b2: p.beta2 as f32,
            one_minus_b1: (1.0 - p.beta1) as f32,
            one_minus_b2: (1.0 - p.beta2) as f32,
            step_size: (p.lr * correction2 / (1.0 - p.beta1.powi(step))) as f32,
            eps: (p.eps * correction2) as f32,
        }
    }
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
        // Without the cuda feature `Moments` has only this variant.
        #[allow(irrefutable_let_patterns)]
        let Moments::Cpu { first, second } = &mut *moments
        else {
            bail!("adam: a CPU parameter with moments on another device");
        };
        if theta.len() != grad.len() || first.len() != theta.len() {
            bail!(
                "adam: parameter has {} values, gradient {}",
                theta.len(),
                grad.len()
            );
        }
        let StepScalars {
            b1,
            b2,
            one_minus_b1,
            one_minus_b2,
            step_size,
            eps,
        } = StepScalars::new(self.params, self.step);
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ts: &mut CudaStorage,
        tl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<()> {
        let mut moments = self.moments.lock().expect("adam moments poisoned");
        let Moments::Cuda { first, second } = &mut *moments else {
            bail!("adam: a CUDA parameter with moments on another device");
        };
        let s = StepScalars::new(self.params, self.step);
        let scalars = [
            s.b1,
            s.b2,
            s.one_minus_b1,
            s.one_minus_b2,
            s.step_size,
            s.eps,
        ];
        crate::model::ops::cuda::adam_update((ts, tl), (gs, gl), first, second, scalars)
    }
}

/// Adam over a set of variables; variables without a gradient in a step are left alone.
pub enum Adam {
    /// The fused in-place update (CPU, CUDA).
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
        let moments: Option<Vec<Moments>> =
            vars.iter().map(Moments::zeros).collect::<Result<_>>()?;
        let Some(moments) = moments else {
            let params = candle_nn::ParamsAdamW {
                lr: params.lr,
                beta1: params.beta1,
                beta2: params.beta2,
                eps: params.eps,
                weight_decay: 0.0,
            };
            return Ok(Adam::Candle(candle_nn::AdamW::new(vars, params)?));
        };
        let vars = vars
            .into_iter()
            .zip(moments)
            .map(|(v, m)| (v, Mutex::new(m)))
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

/// Gradients `grads[i]` for `vars[i]` (`None`: no gradient this step), as the backward pass
/// of `Σ vars[i]·grads[i]` produces them.
fn grad_store(vars: &[Var], grads: &[Option<Tensor>]) -> Result<candle_core::backprop::GradStore> {
    let mut loss: Option<Tensor> = None;
    for (var, grad) in vars.iter().zip(grads) {
        if let Some(grad) = grad {
            let term = (var.as_tensor() * grad.to_device(var.device())?)?.sum_all()?;
            loss = Some(match loss {
                Some(l) => (l + term)?,
                None => term,
            });
        }
    }
    loss.expect("at least one gradient").backward()
}

/// Steps of [`check_against_adamw`].
pub const CHECK_STEPS: usize = 5;

/// The fused update on `device` against candle-nn's AdamW on the CPU with no weight decay,
/// over [`CHECK_STEPS`] steps of random gradients: for each of four tensors (one element, a
/// matrix that skips a step, several parallel chunks, gradients around ε), the largest
/// difference of the displacement θ - θ₀, relative to lr·steps (about the most that many
/// steps move a parameter).
///
/// Both take θ -= lr·m̂/(√v̂ + ε) with m̂ = m/(1-β₁ᵗ), v̂ = v/(1-β₂ᵗ); the fused one folds the
/// corrections into the step size and ε (lr·√(1-β₂ᵗ)/(1-β₁ᵗ) and ε·√(1-β₂ᵗ)), the same formula.
pub fn check_against_adamw(device: &Device) -> Result<Vec<f32>> {
    let cpu = Device::Cpu;
    let params = AdamParams {
        lr: 1e-2,
        ..AdamParams::default()
    };
    let tensors: [(&[usize], f32); 4] = [
        (&[1], 1.0),
        (&[17, 5], 1.0),
        (&[20_000], 1.0),
        (&[64], 1e-7),
    ];
    let start = tensors
        .iter()
        .map(|(shape, _)| Tensor::randn(0f32, 0.01, *shape, &cpu))
        .collect::<Result<Vec<_>>>()?;
    let new_vars = |on: &Device| {
        start
            .iter()
            .map(|t| Var::from_tensor(&t.to_device(on)?))
            .collect::<Result<Vec<_>>>()
    };
    let (fused_vars, adamw_vars) = (new_vars(device)?, new_vars(&cpu)?);
    let mut fused = Adam::new(fused_vars.clone(), params)?;
    if !matches!(fused, Adam::Fused { .. }) {
        bail!("adam: no fused update on {device:?}");
    }
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
    for step in 0..CHECK_STEPS {
        // The matrix gets no gradient in step 2: both leave it alone but count the step.
        let grads = tensors
            .iter()
            .enumerate()
            .map(|(i, (shape, scale))| {
                let skip = step == 2 && i == 1;
                (!skip)
                    .then(|| Tensor::randn(0f32, *scale, *shape, &cpu))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        fused.step(&grad_store(&fused_vars, &grads)?)?;
        adamw.step(&grad_store(&adamw_vars, &grads)?)?;
    }
    start
        .iter()
        .enumerate()
        .map(|(i, theta0)| {
            let moved = (fused_vars[i].as_tensor().to_device(&cpu)? - theta0)?;
            let reference = (adamw_vars[i].as_tensor() - theta0)?;
            let diff = (&moved - &reference)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            Ok(diff / (params.lr as f32 * CHECK_STEPS as f32))
        })
        .collect()
}

/// The largest error [`check_against_adamw`] accepts. Ordering the f32 arithmetic differently
/// leaves a few ulps of θ (up to 5e-7 on this scale seen); 2e-6 allows for that yet fails on
/// a 1e-5 relative error in 1-β₂ (7e-6 here) and on anything coarser, such as a misplaced ε
/// or bias correction (shown by the tensor with gradients near ε).
pub const CHECK_TOLERANCE: f32 = 2e-6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_matches_candle_adamw() -> Result<()> {
        for (i, err) in check_against_adamw(&Device::Cpu)?.into_iter().enumerate() {
            assert!(
                err < CHECK_TOLERANCE,
                "tensor {i}: error {err:e} of lr·steps"
            );
        }
        Ok(())
    }
}
