//! Depthwise 3×3 conv with bias and activation, and its input and weight gradients.

use super::dense::{act_mask, parallel_sum};
use super::{dims4, filled, inputs, par_output, Act, Conv3x3, Geometry, SamePadding, Window};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

mod forward;
use forward::dw_forward_row;
pub(super) use forward::dw_forward_row_of;

/// `acc[c] += a[c] * b[c]`
#[inline(always)]
fn fma_row(acc: &mut [f32], a: &[f32], b: &[f32]) {
    for ((acc, &a), &b) in acc.iter_mut().zip(a).zip(b) {
        *acc = a.mul_add(b, *acc);
    }
}

simd_dispatch!(dw_grad_input_row, fn<'a>(grad: &[f32], wt: &[f32], g: &Geometry, row: usize, out: &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] {
    match g.kernel {
        3 => grad_input_row::<3>(grad, wt, g, row, out),
        _ => grad_input_row::<5>(grad, wt, g, row, out),
    }
});

#[inline(always)]
fn grad_input_row<'a, const K: usize>(
    grad: &[f32],
    wt: &[f32],
    g: &Geometry,
    row: usize,
    out: &'a mut [MaybeUninit<f32>],
) -> &'a mut [f32] {
    let (n, ih) = (row / g.h, row % g.h);
    let c = g.c;
    let out = filled(out, 0.0);
    for kh in 0..K {
        let Some(oh) = g.output_at(ih, kh, g.ho) else {
            continue;
        };
        let g_row = &grad[(n * g.ho + oh) * g.wo * c..][..g.wo * c];
        for (iw, o) in out.chunks_exact_mut(c).enumerate() {
            for kw in 0..K {
                if let Some(ow) = g.output_at(iw, kw, g.wo) {
                    fma_row(o, &g_row[ow * c..][..c], &wt[(kh * K + kw) * c..][..c]);
                }
            }
        }
    }
    out
}

simd_dispatch!(dw_grad_weight_row, fn(x: &[f32], grad: &[f32], g: &Geometry, row: usize, acc: &mut [f32]) {
    match g.kernel {
        3 => grad_weight_row::<3>(x, grad, g, row, acc),
        _ => grad_weight_row::<5>(x, grad, g, row, acc),
    }
});

/// Adds output row `row`'s share of the weight and bias gradients to `acc`: K·K tap rows then
/// the bias row, each of C values.
#[inline(always)]
fn grad_weight_row<const K: usize>(
    x: &[f32],
    grad: &[f32],
    g: &Geometry,
    row: usize,
    acc: &mut [f32],
) {
    let (n, oh) = (row / g.ho, row % g.ho);
    let c = g.c;
    let g_row = &grad[(n * g.ho + oh) * g.wo * c..][..g.wo * c];
    let (taps, bias) = acc.split_at_mut(K * K * c);
    for go in g_row.chunks_exact(c) {
        for (b, &v) in bias.iter_mut().zip(go) {
            *b += v;
        }
    }
    for kh in 0..K {
        let Some(ih) = g.input_at(oh, kh, g.h) else {
            continue;
        };
        let x_row = &x[(n * g.h + ih) * g.w * c..][..g.w * c];
        for kw in 0..K {
            let tap = &mut taps[(kh * K + kw) * c..][..c];
            for (ow, go) in g_row.chunks_exact(c).enumerate() {
                if let Some(iw) = g.input_at(ow, kw, g.w) {
                    fma_row(tap, &x_row[iw * c..][..c], go);
                }
            }
        }
    }
}

/// Depthwise k×k conv + bias (+ ReLU6): x `[N,H,W,C]`, weight `[k,k,C]`, bias `[C]`.
struct Depthwise {
    window: Window,
    act: Act,
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [x, wt, bias] = inputs(
            self.name(),
            [("x", xs, xl), ("weight", ws, wl), ("bias", bs, bl)],
        )?;
        let g = Geometry::of(self.window, dims4(xl, self.name())?);
        if wt.len() != g.kernel * g.kernel * g.c || bias.len() != g.c {
            bail!(
                "depthwise: weight {:?} / bias {:?} for {} channels",
                wl.shape(),
                bl.shape(),
                g.c
            );
        }
        let out = par_output(g.n * g.ho * g.wo * g.c, g.wo * g.c, |row, o| {
            dw_forward_row(x, wt, bias, &g, row, o, self.act)
        });
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.ho, g.wo, g.c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = Geometry::of(self.window, dims4(xl, self.name())?);
        let out = super::cuda::depthwise_forward((xs, xl), (ws, wl), (bs, bl), &g, self.act)?;
        Ok((out, Shape::from((g.n, g.ho, g.wo, g.c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = act_mask(grad, res, self.act)?;
        let grad_x = grad.apply_op2_no_bwd(
            weight,
            &DepthwiseGradInput {
                window: self.window,
                input_hw: (x.dim(1)?, x.dim(2)?),
            },
        )?;
        let grad_wb = x.apply_op2_no_bwd(
            &grad,
            &DepthwiseGradWeight {
                window: self.window,
            },
        )?;
        let (k, c) = (self.window.kernel(), weight.dim(2)?);
        let grad_w = grad_wb.narrow(0, 0, k * k)?.reshape((k, k, c))?;
        let grad_b = grad_wb.get(k * k)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

/// Gradient of a depthwise conv with respect to its input: grad `[N,Ho,Wo,C]`, weight `[k,k,C]`.
struct DepthwiseGradInput {
    window: Window,
    input_hw: (usize, usize),
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "depthwise3x3-grad-input"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [grad, wt] = inputs(self.name(), [("grad", gs, gl), ("weight", ws, wl)])?;
        let g = self.geometry(gl)?;
        let out = par_output(g.n * g.h * g.w * g.c, g.w * g.c, |row, o| {
            dw_grad_input_row(grad, wt, &g, row, o)
        });
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.h, g.w, g.c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.geometry(gl)?;
        let out = super::cuda::depthwise_grad_input((gs, gl), (ws, wl), &g)?;
        Ok((out, Shape::from((g.n, g.h, g.w, g.c))))
    }
}

impl DepthwiseGradInput {
    /// The conv's geometry, checked against the gradient's shape `[N,Ho,Wo,C]`.
    fn geometry(&self, grad: &Layout) -> Result<Geometry> {
        let (n, ho, wo, c) = dims4(grad, "depthwise3x3-grad-input")?;
        let (h, w) = self.input_hw;
        let g = Geometry::of(self.window, (n, h, w, c));
        if (g.ho, g.wo) != (ho, wo) {
            bail!("depthwise grad: {ho}x{wo} does not come from {h}x{w}");
        }
        Ok(g)
    }
}

/// Gradient of a depthwise conv with respect to weight and bias, as `[k·k + 1, C]`: the taps
/// in row-major order, then the bias.
struct DepthwiseGradWeight {
    window: Window,
}

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "depthwise3x3-grad-weight"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [x, grad] = inputs(self.name(), [("x", xs, xl), ("grad", gs, gl)])?;
        let g = self.geometry(xl, gl)?;
        let rows = g.n * g.ho;
        let per_task = rows.div_ceil(rayon::current_num_threads().max(1) * 4);
        let taps = g.kernel * g.kernel;
        let total = parallel_sum(rows, per_task, (taps + 1) * g.c, |rows, acc| {
            for row in rows {
                dw_grad_weight_row(x, grad, &g, row, acc);
            }
        });
        Ok((CpuStorage::F32(total), Shape::from((taps + 1, g.c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.geometry(xl, gl)?;
        let out = super::cuda::depthwise_grad_weight((xs, xl), (gs, gl), &g)?;
        Ok((out, Shape::from((10, g.c))))
    }
}

impl DepthwiseGradWeight {
    /// The conv's geometry, checked to give the gradient's shape.
    fn geometry(&self, x: &Layout, grad: &Layout) -> Result<Geometry> {
        let g = Geometry::of(self.window, dims4(x, "depthwise3x3-grad-weight")?);
        if grad.shape().dims() != [g.n, g.ho, g.wo, g.c] {
            bail!(
                "depthwise grad {:?} does not match input {:?}",
                grad.shape(),
                x.shape()
            );
        }
        Ok(g)
    }
}

/// Depthwise 3×3 conv with Keras padding, bias and activation.
/// x `[N,H,W,C]`, weight `[3,3,C]`, bias `[C]`.
pub fn depthwise3x3(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    conv: Conv3x3,
    act: Act,
) -> Result<Tensor> {
    if super::has_kernels(x.device()) {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            Depthwise {
                window: Window::Keras3x3(conv),
                act,
            },
        )
    } else {
        super::depthwise3x3_reference(x, weight, bias, conv, act)
    }
}

/// Depthwise conv with TensorFlow "SAME" padding, bias and activation, for any window: on the
/// CPU kernels for 3×3 and 5×5 windows (on CUDA's for 3×3 ones whose padding is Keras'), else
/// as [`super::depthwise_same_reference`]. x `[N,H,W,C]`, weight `[k,k,C]`, bias `[C]`.
pub fn depthwise(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    window: SamePadding,
    act: Act,
) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    let device = x.device();
    if device.is_cpu() && window.has_cpu_kernel(h, w) {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            Depthwise {
                window: Window::Same(window),
                act,
            },
        )
    } else if window.is_keras_3x3(h, w) {
        let conv = Conv3x3 {
            stride: window.stride,
        };
        depthwise3x3(x, weight, bias, conv, act)
    } else {
        super::depthwise_same_reference(x, weight, bias, window, act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Depthwise conv as candle's grouped conv2d with explicit TensorFlow padding (NCHW).
    fn grouped_conv(x: &Tensor, weight: &Tensor, bias: &Tensor, window: SamePadding) -> Tensor {
        let (_, h, w, c) = x.dims4().unwrap();
        let k = window.kernel;
        let pad = |len: usize| {
            let before = window.pad_before(len);
            let total = (window.out_len(len) - 1) * window.stride + k - len;
            (before, total - before)
        };
        let ((bh, ah), (bw, aw)) = (pad(h), pad(w));
        let kernel = weight
            .permute((2, 0, 1))
            .unwrap()
            .reshape((c, 1, k, k))
            .unwrap();
        let y = x
            .permute((0, 3, 1, 2))
            .unwrap()
            .pad_with_zeros(2, bh, ah)
            .unwrap()
            .pad_with_zeros(3, bw, aw)
            .unwrap()
            .conv2d(&kernel.contiguous().unwrap(), 0, window.stride, 1, c)
            .unwrap();
        y.permute((0, 2, 3, 1))
            .unwrap()
            .broadcast_add(bias)
            .unwrap()
    }

    #[test]
    fn any_window_matches_a_grouped_conv_and_has_gradients() {
        let dev = Device::Cpu;
        for (k, s, h, w, c) in [
            (5, 1, 7, 6, 3),
            (5, 2, 8, 8, 4),
            (5, 2, 9, 7, 2),
            (3, 2, 7, 5, 3),
            (3, 1, 6, 6, 2),
        ] {
            let window = SamePadding {
                kernel: k,
                stride: s,
            };
            let x =
                Var::from_tensor(&Tensor::randn(0f32, 1., (2, h, w, c), &dev).unwrap()).unwrap();
            let wt = Tensor::randn(0f32, 1., (k, k, c), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., c, &dev).unwrap();
            let ours = depthwise(&x, &wt, &b, window, Act::Identity).unwrap();
            let want = grouped_conv(&x, &wt, &b, window);
            assert_eq!(ours.dims(), want.dims(), "k {k} s {s} {h}x{w}");
            let err = (&ours - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                err.to_scalar::<f32>().unwrap() < 1e-4,
                "k {k} s {s} {h}x{w}"
            );
            let grads = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(grads.get(&x).unwrap().dims(), x.dims());
        }
    }
}
