//! Hand-written CPU kernels for the layers that dominate MobileNetV2, as candle custom ops.
//!
//! Activations are NHWC (`[N, H, W, C]`, channels contiguous) so a depthwise 3×3 vectorises
//! over channels and a pointwise conv is one `[N·H·W, Cin] × [Cin, Cout]` matmul. Each op has
//! a hand-written backward, checked against candle's reference ops in the tests below. On
//! other devices (CUDA) the same functions fall back to candle's own ops, which are also the
//! reference the tests compare with.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

/// Keras padding of a 3×3 convolution: stride 1 pads one pixel on every side; stride 2 pads
/// only bottom/right (by one pixel on even inputs), as `ZeroPadding2D(correct_pad)` + "valid".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3x3 {
    pub stride: usize,
}

impl Conv3x3 {
    /// Padding before the first row/column.
    fn pad_before(self) -> usize {
        if self.stride == 1 {
            1
        } else {
            0
        }
    }

    /// Output size along one axis for an input of `len` pixels.
    pub fn out_len(self, len: usize) -> usize {
        if self.stride == 1 {
            len
        } else {
            len.div_ceil(self.stride)
        }
    }

    /// Padding after the last row/column that yields `out_len` outputs.
    fn pad_after(self, len: usize) -> usize {
        (self.out_len(len) - 1) * self.stride + 3 - len - self.pad_before()
    }
}

/// Runs `body` compiled for AVX2+FMA when the CPU has them, so the inner channel loops
/// vectorise with fused multiply-adds while the binary still runs on any x86-64.
macro_rules! simd_dispatch {
    ($name:ident, fn($($arg:ident: $ty:ty),*) $body:block) => {
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU was just checked to support AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(data) => data.as_slice(),
        other => bail!("{what}: expected f32, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: input must be contiguous"),
    }
}

fn dims4(layout: &Layout, what: &str) -> Result<(usize, usize, usize, usize)> {
    layout.shape().dims4().map_err(|_| {
        candle_core::Error::Msg(format!("{what}: expected NHWC, got {:?}", layout.shape()))
    })
}

/// Channels of the last dimension and number of rows before it.
fn rows_channels(layout: &Layout) -> (usize, usize) {
    let c = layout.dims().last().copied().unwrap_or(1);
    (layout.shape().elem_count() / c.max(1), c)
}

/// A buffer for a kernel that writes every element before anything reads it, so the
/// zero-fill (a full extra pass over memory) is skipped.
#[allow(clippy::uninit_vec)]
fn output_buffer(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns, and every caller overwrites all `len`
    // elements before reading any (as candle's own CPU backend does for its outputs).
    unsafe { v.set_len(len) };
    v
}

// ---------------------------------------------------------------------------------------------
// Dense layers and 1×1 convs: GEMM with a fused bias + activation epilogue

/// Activation applied after a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
    Relu6,
}

impl Act {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Act::Identity => v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    /// Whether the derivative is 1 at a point whose activation output is `y` (else 0).
    #[inline(always)]
    fn passes(self, y: f32) -> bool {
        match self {
            Act::Identity => true,
            Act::Relu => y > 0.0,
            Act::Relu6 => y > 0.0 && y < 6.0,
        }
    }
}

simd_dispatch!(bias_act_rows, fn(rows: &mut [f32], stride: usize, bias: &[f32], act: Act) {
    for row in rows.chunks_mut(stride) {
        for (v, &b) in row[..bias.len()].iter_mut().zip(bias) {
            *v = act.apply(*v + b);
        }
    }
});

simd_dispatch!(act_mask_rows, fn(grad: &[f32], act_out: &[f32], out: &mut [f32], act: Act) {
    for ((o, &g), &y) in out.iter_mut().zip(grad).zip(act_out) {
        *o = if act.passes(y) { g } else { 0.0 };
    }
});

/// A raw pointer that parallel tasks may share because each writes a disjoint region.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used to hand disjoint output tiles to rayon tasks (see `Dense::cpu_fwd`).
unsafe impl Send for SharedMut {}
// SAFETY: as above; no two tasks touch the same element.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the raw field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `act(x · Wᵀ + b)` over the last dimension: x `[…, K]`, weight `[N, K]`, bias `[N]`.
/// Each task multiplies one tile while the epilogue runs on it hot in cache.
struct Dense(Act);

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "dense-act"
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
        let x = contiguous(xs, xl, "dense x")?;
        let w = contiguous(ws, wl, "dense weight")?;
        let bias = contiguous(bs, bl, "dense bias")?;
        let (m, k) = rows_channels(xl);
        let (n, wk) = wl.shape().dims2()?;
        if wk != k || bias.len() != n {
            bail!(
                "dense: x {:?}, weight {:?}, bias {:?}",
                xl.shape(),
                wl.shape(),
                bl.shape()
            );
        }
        let mut out = output_buffer(m * n);
        // Tiles: row blocks when there are many rows, column blocks for tiny inputs.
        let threads = rayon::current_num_threads().max(1);
        let row_block = (m / (threads * 8)).clamp(64, 512).min(m.max(1));
        let col_block = if m <= row_block {
            n.div_ceil(threads).max(16)
        } else {
            n
        };
        let tiles: Vec<(usize, usize)> = (0..m.div_ceil(row_block))
            .flat_map(|r| (0..n.div_ceil(col_block)).map(move |c| (r * row_block, c * col_block)))
            .collect();
        let dst = SharedMut(out.as_mut_ptr());
        let act = self.0;
        tiles.into_par_iter().for_each(|(r0, c0)| {
            let rows = row_block.min(m - r0);
            let cols = col_block.min(n - c0);
            // SAFETY: the tile [r0, r0+rows) × [c0, c0+cols) lies inside `out` (m × n) and no
            // two tiles overlap; x (m × k) and w (n × k) are read within their bounds.
            unsafe {
                let tile = dst.ptr().add(r0 * n + c0);
                gemm::gemm(
                    rows,
                    cols,
                    k,
                    tile,
                    1,
                    n as isize,
                    false,
                    x.as_ptr().add(r0 * k),
                    1,
                    k as isize,
                    w.as_ptr().add(c0 * k),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                let span = (rows - 1) * n + cols;
                let rows_slice = std::slice::from_raw_parts_mut(tile, span);
                bias_act_rows(rows_slice, n, &bias[c0..c0 + cols], act);
            }
        });
        let mut dims = xl.dims().to_vec();
        *dims.last_mut().expect("rank checked by rows_channels") = n;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = weight.dims2()?;
        let grad = act_mask(grad, res, self.0)?.reshape(((), n))?;
        let x2 = x.reshape(((), k))?;
        let grad_x = grad.matmul(weight)?.reshape(x.shape())?;
        let grad_w = grad.t()?.matmul(&x2)?;
        let grad_b = column_sum(&grad)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

simd_dispatch!(add_rows, fn(rows: &[f32], acc: &mut [f32]) {
    for row in rows.chunks_exact(acc.len()) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
});

/// Splits `rows` into parallel tasks of `per_task` rows; each task adds its rows' contributions
/// into its own zeroed accumulator of `width` values, and the accumulators are summed.
fn parallel_sum(
    rows: usize,
    per_task: usize,
    width: usize,
    accumulate: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let per_task = per_task.max(1);
    let partials: Vec<Vec<f32>> = (0..rows.div_ceil(per_task))
        .into_par_iter()
        .map(|task| {
            let mut acc = vec![0f32; width];
            accumulate(task * per_task..((task + 1) * per_task).min(rows), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0f32; width];
    for part in &partials {
        add_rows(part, &mut total);
    }
    total
}

/// Sum over rows: `[M, N]` → `[N]` (candle's strided reduction is slow for bias gradients).
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "column-sum"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(xs, xl, "column-sum")?;
        let (m, n) = xl.shape().dims2()?;
        let total = parallel_sum(m, rows_per_task(m, n), n, |rows, acc| {
            add_rows(&x[rows.start * n..rows.end * n], acc)
        });
        Ok((CpuStorage::F32(total), Shape::from(n)))
    }
}

/// Rows per parallel task for row-wise reductions.
fn rows_per_task(rows: usize, cols: usize) -> usize {
    (65_536 / cols.max(1)).clamp(1, rows.max(1))
}

fn column_sum(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1_no_bwd(&ColumnSum)
    } else {
        x.sum(0)
    }
}

/// `grad` where the activation's derivative is 1 (read off its output `act_out`), else 0.
struct ActMask(Act);

impl CustomOp2 for ActMask {
    fn name(&self) -> &'static str {
        "act-mask"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous(gs, gl, "act-mask grad")?;
        let y = contiguous(ys, yl, "act-mask output")?;
        if g.len() != y.len() {
            bail!("act-mask: {:?} vs {:?}", gl.shape(), yl.shape());
        }
        let mut out = output_buffer(g.len());
        const STEP: usize = 16_384;
        out.par_chunks_mut(STEP)
            .zip(g.par_chunks(STEP).zip(y.par_chunks(STEP)))
            .for_each(|(o, (g, y))| act_mask_rows(g, y, o, self.0));
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

fn act_mask(grad: &Tensor, act_out: &Tensor, act: Act) -> Result<Tensor> {
    if act == Act::Identity {
        return grad.contiguous();
    }
    if grad.device().is_cpu() {
        return grad
            .contiguous()?
            .apply_op2_no_bwd(&act_out.contiguous()?, &ActMask(act));
    }
    let inside = match act {
        Act::Relu6 => act_out.gt(0.0)?.mul(&act_out.lt(6.0)?)?,
        _ => act_out.gt(0.0)?,
    };
    grad.mul(&inside.to_dtype(grad.dtype())?)
}

/// `act(x + bias)` with candle's ops: the non-CPU path and the tests' reference.
fn bias_act_reference(x: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    let y = x.broadcast_add(bias)?;
    match act {
        Act::Identity => Ok(y),
        Act::Relu => y.relu(),
        Act::Relu6 => y.clamp(0f32, 6f32),
    }
}

/// `act(x · Wᵀ + b)` over the last dimension of `x`: a dense layer, or a 1×1 conv on NHWC.
pub fn dense(x: &Tensor, weight: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op3(weight, bias, Dense(act))
    } else {
        dense_reference(x, weight, bias, act)
    }
}

/// The same with candle's matmul; the GPU path and test oracle.
pub fn dense_reference(x: &Tensor, weight: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let mut dims = x.dims().to_vec();
    let y = x.reshape(((), k))?.matmul(&weight.t()?)?;
    *dims
        .last_mut()
        .expect("dense input has a feature dimension") = n;
    bias_act_reference(&y, bias, act)?.reshape(dims)
}

// ---------------------------------------------------------------------------------------------
// Depthwise 3×3

#[derive(Debug, Clone, Copy)]
struct DwGeom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    ho: usize,
    wo: usize,
    stride: usize,
    pad: usize,
}

impl DwGeom {
    fn new(conv: Conv3x3, (n, h, w, c): (usize, usize, usize, usize)) -> Self {
        Self {
            n,
            h,
            w,
            c,
            ho: conv.out_len(h),
            wo: conv.out_len(w),
            stride: conv.stride,
            pad: conv.pad_before(),
        }
    }

    /// Input coordinate read by output `o` at tap `k`, if inside the image.
    fn input_at(&self, o: usize, k: usize, len: usize) -> Option<usize> {
        (o * self.stride + k)
            .checked_sub(self.pad)
            .filter(|&i| i < len)
    }

    /// Output coordinate that reads input `i` at tap `k`, if any.
    fn output_at(&self, i: usize, k: usize, len: usize) -> Option<usize> {
        let t = (i + self.pad).checked_sub(k)?;
        (t % self.stride == 0 && t / self.stride < len).then_some(t / self.stride)
    }
}

/// `acc[c] += a[c] * b[c]`
#[inline(always)]
fn fma_row(acc: &mut [f32], a: &[f32], b: &[f32]) {
    for ((acc, &a), &b) in acc.iter_mut().zip(a).zip(b) {
        *acc = a.mul_add(b, *acc);
    }
}

simd_dispatch!(dw_forward_row, fn(x: &[f32], wt: &[f32], bias: &[f32], g: &DwGeom, row: usize, out: &mut [f32], act: Act) {
    let (n, oh) = (row / g.ho, row % g.ho);
    let c = g.c;
    for o in out.chunks_exact_mut(c) {
        o.copy_from_slice(bias);
    }
    for kh in 0..3 {
        let Some(ih) = g.input_at(oh, kh, g.h) else { continue };
        let x_row = &x[(n * g.h + ih) * g.w * c..][..g.w * c];
        for (ow, o) in out.chunks_exact_mut(c).enumerate() {
            for kw in 0..3 {
                if let Some(iw) = g.input_at(ow, kw, g.w) {
                    fma_row(o, &x_row[iw * c..][..c], &wt[(kh * 3 + kw) * c..][..c]);
                }
            }
        }
    }
    for v in out.iter_mut() {
        *v = act.apply(*v);
    }
});

simd_dispatch!(dw_grad_input_row, fn(grad: &[f32], wt: &[f32], g: &DwGeom, row: usize, out: &mut [f32]) {
    let (n, ih) = (row / g.h, row % g.h);
    let c = g.c;
    out.fill(0.0);
    for kh in 0..3 {
        let Some(oh) = g.output_at(ih, kh, g.ho) else { continue };
        let g_row = &grad[(n * g.ho + oh) * g.wo * c..][..g.wo * c];
        for (iw, o) in out.chunks_exact_mut(c).enumerate() {
            for kw in 0..3 {
                if let Some(ow) = g.output_at(iw, kw, g.wo) {
                    fma_row(o, &g_row[ow * c..][..c], &wt[(kh * 3 + kw) * c..][..c]);
                }
            }
        }
    }
});

simd_dispatch!(dw_grad_weight_row, fn(x: &[f32], grad: &[f32], g: &DwGeom, row: usize, acc: &mut [f32]) {
    // acc holds 9 tap rows then the bias row, each of C values.
    let (n, oh) = (row / g.ho, row % g.ho);
    let c = g.c;
    let g_row = &grad[(n * g.ho + oh) * g.wo * c..][..g.wo * c];
    let (taps, bias) = acc.split_at_mut(9 * c);
    for go in g_row.chunks_exact(c) {
        for (b, &v) in bias.iter_mut().zip(go) {
            *b += v;
        }
    }
    for kh in 0..3 {
        let Some(ih) = g.input_at(oh, kh, g.h) else { continue };
        let x_row = &x[(n * g.h + ih) * g.w * c..][..g.w * c];
        for kw in 0..3 {
            let tap = &mut taps[(kh * 3 + kw) * c..][..c];
            for (ow, go) in g_row.chunks_exact(c).enumerate() {
                if let Some(iw) = g.input_at(ow, kw, g.w) {
                    fma_row(tap, &x_row[iw * c..][..c], go);
                }
            }
        }
    }
});

/// Depthwise 3×3 conv + bias (+ ReLU6): x `[N,H,W,C]`, weight `[3,3,C]`, bias `[C]`.
struct Depthwise {
    conv: Conv3x3,
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
        let x = contiguous(xs, xl, "depthwise x")?;
        let wt = contiguous(ws, wl, "depthwise weight")?;
        let bias = contiguous(bs, bl, "depthwise bias")?;
        let g = DwGeom::new(self.conv, dims4(xl, "depthwise")?);
        if wt.len() != 9 * g.c || bias.len() != g.c {
            bail!(
                "depthwise: weight {:?} / bias {:?} for {} channels",
                wl.shape(),
                bl.shape(),
                g.c
            );
        }
        let mut out = output_buffer(g.n * g.ho * g.wo * g.c);
        out.par_chunks_mut(g.wo * g.c)
            .enumerate()
            .for_each(|(row, o)| dw_forward_row(x, wt, bias, &g, row, o, self.act));
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.ho, g.wo, g.c))))
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
                conv: self.conv,
                input_hw: (x.dim(1)?, x.dim(2)?),
            },
        )?;
        let grad_wb = x.apply_op2_no_bwd(&grad, &DepthwiseGradWeight { conv: self.conv })?;
        let c = weight.dim(2)?;
        let grad_w = grad_wb.narrow(0, 0, 9)?.reshape((3, 3, c))?;
        let grad_b = grad_wb.get(9)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

/// Gradient of a depthwise conv with respect to its input: grad `[N,Ho,Wo,C]`, weight `[3,3,C]`.
struct DepthwiseGradInput {
    conv: Conv3x3,
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
        let grad = contiguous(gs, gl, "depthwise grad")?;
        let wt = contiguous(ws, wl, "depthwise weight")?;
        let (n, ho, wo, c) = dims4(gl, "depthwise grad")?;
        let (h, w) = self.input_hw;
        let g = DwGeom::new(self.conv, (n, h, w, c));
        if (g.ho, g.wo) != (ho, wo) {
            bail!("depthwise grad: {ho}x{wo} does not come from {h}x{w}");
        }
        let mut out = output_buffer(n * h * w * c);
        out.par_chunks_mut(w * c)
            .enumerate()
            .for_each(|(row, o)| dw_grad_input_row(grad, wt, &g, row, o));
        Ok((CpuStorage::F32(out), Shape::from((n, h, w, c))))
    }
}

/// Gradient of a depthwise conv with respect to weight and bias, as `[10, C]`: the 9 taps in
/// row-major order, then the bias.
struct DepthwiseGradWeight {
    conv: Conv3x3,
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
        let x = contiguous(xs, xl, "depthwise x")?;
        let grad = contiguous(gs, gl, "depthwise grad")?;
        let g = DwGeom::new(self.conv, dims4(xl, "depthwise x")?);
        if gl.shape().dims() != [g.n, g.ho, g.wo, g.c] {
            bail!(
                "depthwise grad {:?} does not match input {:?}",
                gl.shape(),
                xl.shape()
            );
        }
        let rows = g.n * g.ho;
        let per_task = rows.div_ceil(rayon::current_num_threads().max(1) * 4);
        let total = parallel_sum(rows, per_task, 10 * g.c, |rows, acc| {
            for row in rows {
                dw_grad_weight_row(x, grad, &g, row, acc);
            }
        });
        Ok((CpuStorage::F32(total), Shape::from((10, g.c))))
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
    if x.device().is_cpu() {
        x.contiguous()?
            .apply_op3(&weight.contiguous()?, bias, Depthwise { conv, act })
    } else {
        depthwise3x3_reference(x, weight, bias, conv, act)
    }
}

/// NHWC → NCHW with the Keras padding of `conv`, for candle's conv2d.
fn keras_padded_nchw(x: &Tensor, conv: Conv3x3) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    x.permute((0, 3, 1, 2))?
        .pad_with_zeros(2, conv.pad_before(), conv.pad_after(h))?
        .pad_with_zeros(3, conv.pad_before(), conv.pad_after(w))
}

/// The same depthwise conv with candle's grouped conv2d (NCHW); the GPU path and test oracle.
pub fn depthwise3x3_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    conv: Conv3x3,
    act: Act,
) -> Result<Tensor> {
    let c = x.dim(3)?;
    let kernel = weight.permute((2, 0, 1))?.reshape((c, 1, 3, 3))?;
    let y = keras_padded_nchw(x, conv)?.conv2d(&kernel, 0, conv.stride, 1, c)?;
    bias_act_reference(&y.permute((0, 2, 3, 1))?, bias, act)
}

// ---------------------------------------------------------------------------------------------
// Stem: 3×3 patches for a dense 3×3 conv as one matmul

simd_dispatch!(patches_row, fn(x: &[f32], g: &DwGeom, row: usize, out: &mut [f32]) {
    let (n, oh) = (row / g.ho, row % g.ho);
    let c = g.c;
    out.fill(0.0);
    for (ow, patch) in out.chunks_exact_mut(9 * c).enumerate() {
        for kh in 0..3 {
            let Some(ih) = g.input_at(oh, kh, g.h) else { continue };
            for kw in 0..3 {
                if let Some(iw) = g.input_at(ow, kw, g.w) {
                    patch[(kh * 3 + kw) * c..][..c]
                        .copy_from_slice(&x[((n * g.h + ih) * g.w + iw) * c..][..c]);
                }
            }
        }
    }
});

/// im2col: `[N,H,W,C]` → `[N,Ho,Wo,9·C]` patches in (kh, kw, c) order.
struct Patches3x3(Conv3x3);

impl CustomOp1 for Patches3x3 {
    fn name(&self) -> &'static str {
        "patches3x3"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(xs, xl, "patches x")?;
        let g = DwGeom::new(self.0, dims4(xl, "patches")?);
        let mut out = output_buffer(g.n * g.ho * g.wo * 9 * g.c);
        out.par_chunks_mut(g.wo * 9 * g.c)
            .enumerate()
            .for_each(|(row, o)| patches_row(x, &g, row, o));
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.n, g.ho, g.wo, 9 * g.c)),
        ))
    }
}

/// Dense 3×3 conv with Keras padding for the network's input (no input gradient: the input is
/// data). x `[N,H,W,Cin]`, weight `[Cout, 3·3·Cin]` in (kh, kw, cin) order, bias `[Cout]`.
pub fn conv3x3_input(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    conv: Conv3x3,
    act: Act,
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return conv3x3_input_reference(x, weight, bias, conv, act);
    }
    let patches = x.contiguous()?.apply_op1_no_bwd(&Patches3x3(conv))?;
    dense(&patches, weight, bias, act)
}

/// The same with candle's conv2d (NCHW); the GPU path and test oracle.
pub fn conv3x3_input_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    conv: Conv3x3,
    act: Act,
) -> Result<Tensor> {
    let (cout, cin) = (weight.dim(0)?, x.dim(3)?);
    let kernel = weight.reshape((cout, 3, 3, cin))?.permute((0, 3, 1, 2))?;
    let y = keras_padded_nchw(x, conv)?.conv2d(&kernel.contiguous()?, 0, conv.stride, 1, 1)?;
    bias_act_reference(&y.permute((0, 2, 3, 1))?, bias, act)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: impl Into<Shape>, std: f32, device: &Device) -> Result<Tensor> {
        Tensor::randn(0f32, std, shape, device)
    }

    /// Largest absolute difference, relative to the reference's largest magnitude.
    fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let scale = b.abs().unwrap().max_all().unwrap();
        let (d, s) = (
            diff.to_scalar::<f32>().unwrap(),
            scale.to_scalar::<f32>().unwrap(),
        );
        d / s.max(1e-6)
    }

    /// Forward and every gradient of `ours` against `reference`, through a random projection
    /// of the output so each gradient element matters.
    fn check_grads(
        shapes: &[&[usize]],
        ours: impl Fn(&[Tensor]) -> Result<Tensor>,
        reference: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) {
        const TOL: f32 = 1e-4;
        let dev = Device::Cpu;
        let vars: Vec<Var> = shapes
            .iter()
            .map(|s| Var::from_tensor(&randn(*s, 2.0, &dev).unwrap()).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y_ours = ours(&ts).unwrap();
        let y_ref = reference(&ts).unwrap();
        assert_eq!(y_ours.dims(), y_ref.dims());
        assert!(rel_err(&y_ours, &y_ref) < TOL, "forward differs");
        let proj = randn(y_ref.shape(), 1.0, &dev).unwrap();
        let g_ours = (y_ours * &proj)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_ref = (y_ref * &proj)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (a, b) = (g_ours.get(v), g_ref.get(v));
            let (Some(a), Some(b)) = (a, b) else {
                panic!("argument {i}: missing gradient")
            };
            let e = rel_err(a, b);
            assert!(e < TOL, "argument {i}: gradient relative error {e}");
        }
    }

    #[test]
    fn depthwise_matches_grouped_conv_forward_and_gradients() {
        for (stride, h, w, act) in [
            (1, 7, 6, Act::Relu6),
            (2, 8, 8, Act::Relu6),
            (2, 7, 9, Act::Identity),
            (1, 1, 1, Act::Identity),
        ] {
            let conv = Conv3x3 { stride };
            check_grads(
                &[&[2, h, w, 5], &[3, 3, 5], &[5]],
                |t| depthwise3x3(&t[0], &t[1], &t[2], conv, act),
                |t| depthwise3x3_reference(&t[0], &t[1], &t[2], conv, act),
            );
        }
    }

    #[test]
    fn keras_padding_for_stride_2() {
        let conv = Conv3x3 { stride: 2 };
        assert_eq!(
            (conv.out_len(128), conv.pad_before(), conv.pad_after(128)),
            (64, 0, 1)
        );
        assert_eq!((conv.out_len(7), conv.pad_after(7)), (4, 2));
        let conv = Conv3x3 { stride: 1 };
        assert_eq!(
            (conv.out_len(5), conv.pad_before(), conv.pad_after(5)),
            (5, 1, 1)
        );
    }

    #[test]
    fn dense_matches_matmul_for_every_activation_and_tiling() {
        // 3 rows → column tiles; 700 rows → row tiles with a ragged last tile.
        for (rows, act) in [
            (3, Act::Relu6),
            (700, Act::Relu),
            (700, Act::Identity),
            (70, Act::Relu6),
        ] {
            check_grads(
                &[&[rows, 19], &[37, 19], &[37]],
                |t| dense(&t[0], &t[1], &t[2], act),
                |t| dense_reference(&t[0], &t[1], &t[2], act),
            );
        }
        check_grads(
            &[&[2, 5, 3, 8], &[4, 8], &[4]],
            |t| dense(&t[0], &t[1], &t[2], Act::Relu6),
            |t| dense_reference(&t[0], &t[1], &t[2], Act::Relu6),
        );
    }

    #[test]
    fn input_conv_matches_candle_conv2d() {
        let dev = Device::Cpu;
        let conv = Conv3x3 { stride: 2 };
        let x = randn((2, 9, 8, 3), 1.0, &dev).unwrap();
        let w = randn((4, 27), 1.0, &dev).unwrap();
        let b = randn(4, 1.0, &dev).unwrap();
        let ours = conv3x3_input(&x, &w, &b, conv, Act::Relu6).unwrap();
        let reference = conv3x3_input_reference(&x, &w, &b, conv, Act::Relu6).unwrap();
        assert_eq!(ours.dims(), [2, 5, 4, 4]);
        assert!(rel_err(&ours, &reference) < 1e-5);
    }
}
