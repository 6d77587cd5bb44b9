//! Depthwise 3×3 conv with bias and activation, and its input and weight gradients.

use super::dense::{act_mask, parallel_sum};
use super::{dims4, filled, inputs, par_output, Act, Conv3x3, Geometry, SamePadding, Window};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

/// `acc[c] += a[c] * b[c]`
#[inline(always)]
fn fma_row(acc: &mut [f32], a: &[f32], b: &[f32]) {
    for ((acc, &a), &b) in acc.iter_mut().zip(a).zip(b) {
        *acc = a.mul_add(b, *acc);
    }
}

simd_dispatch!(dw_forward_row, fn<'a>(x: &[f32], wt: &[f32], bias: &[f32], g: &Geometry, row: usize, out: &'a mut [MaybeUninit<f32>], act: Act) -> &'a mut [f32] {
    match g.kernel {
        3 => forward_row::<3>(x, wt, bias, g, row, out, act),
        _ => forward_row::<5>(x, wt, bias, g, row, out, act),
    }
});

/// Output row `row` (over all images) of a K×K depthwise conv.
#[inline(always)]
fn forward_row<'a, const K: usize>(
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    g: &Geometry,
    row: usize,
    out: &'a mut [MaybeUninit<f32>],
    act: Act,
) -> &'a mut [f32] {
    let (n, oh) = (row / g.ho, row % g.ho);
    let rows = std::array::from_fn(|kh| {
        let ih = g.input_at(oh, kh, g.h)?;
        Some(&x[(n * g.h + ih) * g.w * g.c..][..g.w * g.c])
    });
    forward_row_of::<K>(rows, wt, bias, g, out, act)
}

simd_dispatch!(pub(super) dw_forward_row_of, fn<'a>(rows: [Option<&[f32]>; 3], wt: &[f32], bias: &[f32], g: &Geometry, out: &'a mut [MaybeUninit<f32>], act: Act) -> &'a mut [f32] {
    forward_row_of::<3>(rows, wt, bias, g, out, act)
});

/// Channels one accumulator holds: a 512-bit register (two 256-bit ones on AVX2), and one
/// 64-byte cache line of an input pixel.
const LANES: usize = 16;

/// One output row (`wo × c`) from the K input rows its taps read (`None`: padding).
#[inline(always)]
fn forward_row_of<'a, const K: usize>(
    rows: [Option<&[f32]>; K],
    wt: &[f32],
    bias: &[f32],
    g: &Geometry,
    out: &'a mut [MaybeUninit<f32>],
    act: Act,
) -> &'a mut [f32] {
    assert_eq!(out.len(), g.wo * g.c);
    let whole = g.c / LANES * LANES;
    for c0 in (0..whole).step_by(LANES) {
        channels_of_row::<K, LANES>(&rows, wt, bias, g, c0, out, act);
    }
    // Channel counts off the vector width (none in MobileNetV2) finish one channel at a time.
    for c0 in whole..g.c {
        channels_of_row::<K, 1>(&rows, wt, bias, g, c0, out, act);
    }
    // SAFETY: the calls above wrote channels 0..c of every output pixel.
    unsafe { out.assume_init_mut() }
}

/// Channels `c0..c0 + L` of every pixel of one output row: the chunk's K·K tap weights and
/// its sums stay in registers across the row, so each tap costs one load and one FMA (a
/// row-at-a-time sum would load and store the output at every tap), with one sum per kernel
/// row: K short dependency chains instead of one of K·K FMAs.
// Index loops over the const K unroll whole, which keeps `sums` in registers (a version with
// zipped iterators kept them on the stack).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn channels_of_row<const K: usize, const L: usize>(
    rows: &[Option<&[f32]>; K],
    wt: &[f32],
    bias: &[f32],
    g: &Geometry,
    c0: usize,
    out: &mut [MaybeUninit<f32>],
    act: Act,
) {
    let c = g.c;
    let lanes = |v: &[f32]| -> [f32; L] { v[..L].try_into().expect("L values") };
    let start = lanes(&bias[c0..]);
    let activated = |v: [f32; L]| match act {
        Act::Identity => v,
        Act::Relu => v.map(|v| v.max(0.0)),
        Act::Relu6 => v.map(|v| v.clamp(0.0, 6.0)),
    };
    // A kernel row in the padding reads a real input row with zero weights, so that every
    // pixel runs the same branch-free taps (the values read are finite activations). Some
    // row is real: the padding is narrower than the window.
    let fallback = rows
        .iter()
        .flatten()
        .next()
        .expect("an output row reads at least one input row");
    let inputs: [&[f32]; K] = std::array::from_fn(|kh| rows[kh].unwrap_or(fallback));
    let taps: [[[f32; L]; K]; K] = std::array::from_fn(|kh| {
        std::array::from_fn(|kw| match rows[kh] {
            Some(_) => lanes(&wt[(kh * K + kw) * c + c0..]),
            None => [0.0; L],
        })
    });
    for ow in 0..g.wo {
        let mut sums = [[0.0; L]; K];
        sums[0] = start;
        // The first input column of the pixel's taps, where all K lie inside the row.
        match (ow * g.stride)
            .checked_sub(g.pad)
            .filter(|&first| first + K <= g.w)
        {
            Some(first) => {
                for kh in 0..K {
                    let window = &inputs[kh][first * c..][..(K - 1) * c + c0 + L];
                    for kw in 0..K {
                        // SAFETY: kw ≤ K − 1, so the L values at kw·c + c0 end within
                        // `window`, whose length was checked once above.
                        let x = unsafe {
                            window
                                .as_ptr()
                                .add(kw * c + c0)
                                .cast::<[f32; L]>()
                                .read_unaligned()
                        };
                        fma_lanes(&mut sums[kh], x, &taps[kh][kw]);
                    }
                }
            }
            // Border pixels: the taps in the padding are skipped.
            None => {
                for kh in 0..K {
                    for kw in 0..K {
                        if let Some(iw) = g.input_at(ow, kw, g.w) {
                            let x = lanes(&inputs[kh][iw * c + c0..]);
                            fma_lanes(&mut sums[kh], x, &taps[kh][kw]);
                        }
                    }
                }
            }
        }
        let total = sums[1..]
            .iter()
            .fold(sums[0], |a, b| std::array::from_fn(|i| a[i] + b[i]));
        out[ow * c + c0..][..L].write_copy_of_slice(&activated(total));
    }
}

/// `acc[i] += x[i] * w[i]`
#[inline(always)]
fn fma_lanes<const L: usize>(acc: &mut [f32; L], x: [f32; L], w: &[f32; L]) {
    for i in 0..L {
        acc[i] = x[i].mul_add(w[i], acc[i]);
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
