//! Dense layers and 1×1 convs: GEMM with a fused bias + activation epilogue, and the
//! reductions their backward needs.

use super::{inputs, par_output, written, Act, DenseFormat, PackedDense, SharedMut};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;
use std::mem::MaybeUninit;

// `act(v + bias)` on every row; also the bias of `PointwiseDepthwise`'s 1×1 rows.
simd_dispatch!(pub(super) bias_act_rows, fn<'a>(rows: impl Iterator<Item = &'a mut [f32]>, bias: &[f32], act: Act) {
    for row in rows {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v = act.apply(*v + b);
        }
    }
});

simd_dispatch!(act_mask_rows, fn<'a>(grad: &[f32], act_out: &[f32], out: &'a mut [MaybeUninit<f32>], act: Act) -> &'a mut [f32] {
    written(out, grad.iter().zip(act_out).map(|(&g, &y)| if act.passes(y) { g } else { 0.0 }))
});

/// `out = x · wᵀ` on this thread: x `rows × k` and w `cols × k` (both row stride k), out
/// `rows × cols` at row stride `out_stride`. Every element of out is written (zeros when k = 0)
/// and none is read.
///
/// # Safety
/// `out` must be valid for writes at those positions, with nothing else accessing them
/// meanwhile; x must hold `rows × k` values and w `cols × k`.
pub(super) unsafe fn gemm_x_wt(
    rows: usize,
    cols: usize,
    k: usize,
    out: *mut f32,
    out_stride: usize,
    x: *const f32,
    w: *const f32,
) {
    // SAFETY: the caller's guarantees; w is read as its k × cols transpose (row stride 1,
    // column stride k), and read_dst = false keeps gemm from reading out.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            k,
            out,
            1,
            out_stride as isize,
            false,
            x,
            1,
            k as isize,
            w,
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `act(x · Wᵀ + b)` of the rows `x` (`rows × k`) into `out` (`rows × n`), weight `[n, k]`,
/// on this thread.
pub(super) fn dense_rows_into<'a>(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    out: &'a mut [MaybeUninit<f32>],
    act: Act,
) -> &'a mut [f32] {
    let n = bias.len();
    let k = weight.len() / n.max(1);
    let rows = out.len() / n.max(1);
    assert!(weight.len() == n * k && x.len() == rows * k && out.len() == rows * n);
    // SAFETY: out is rows × n (row stride n) and exclusively borrowed, x rows × k and the
    // weight n × k, all checked above.
    unsafe {
        gemm_x_wt(
            rows,
            n,
            k,
            out.as_mut_ptr().cast(),
            n,
            x.as_ptr(),
            weight.as_ptr(),
        )
    };
    // SAFETY: gemm_x_wt wrote every element of out.
    let out = unsafe { out.assume_init_mut() };
    bias_act_rows(out.chunks_exact_mut(n.max(1)), bias, act);
    out
}

/// Rows, input and output features of a dense op, checked: x `[…, K]`, weight `[N, K]`,
/// bias `[N]`.
fn dense_sizes(xl: &Layout, wl: &Layout, bl: &Layout) -> Result<(usize, usize, usize)> {
    let (m, k) = rows_channels(xl);
    let (n, wk) = wl.shape().dims2()?;
    if wk != k || bl.shape().elem_count() != n || !wl.is_contiguous() {
        bail!(
            "dense: x {:?}, weight {:?}, bias {:?}",
            xl.shape(),
            wl.shape(),
            bl.shape()
        );
    }
    Ok((m, k, n))
}

/// x's shape with `n` features in place of its last dimension.
pub(super) fn dense_shape(xl: &Layout, n: usize) -> Shape {
    let mut dims = xl.dims().to_vec();
    *dims.last_mut().expect("rank checked by rows_channels") = n;
    Shape::from(dims)
}

/// Channels of the last dimension and number of rows before it.
pub(super) fn rows_channels(layout: &Layout) -> (usize, usize) {
    let c = layout.dims().last().copied().unwrap_or(1);
    (layout.shape().elem_count() / c.max(1), c)
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
        let [x, w, bias] = inputs(
            self.name(),
            [("x", xs, xl), ("weight", ws, wl), ("bias", bs, bl)],
        )?;
        let (m, k, n) = dense_sizes(xl, wl, bl)?;
        if packs_per_call(m) {
            let out = PackedDense::f32_of(w, bias).rows(x, m, self.0);
            return Ok((CpuStorage::F32(out), dense_shape(xl, n)));
        }
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
        // Left uninitialised (no zero-fill pass): gemm writes each tile before anything reads it.
        let mut out = Vec::<f32>::with_capacity(m * n);
        let dst = SharedMut(out.as_mut_ptr());
        let act = self.0;
        tiles.into_par_iter().for_each(|(r0, c0)| {
            let rows = row_block.min(m - r0);
            let cols = col_block.min(n - c0);
            // SAFETY: the tile [r0, r0+rows) × [c0, c0+cols) lies inside the m × n buffer and
            // overlaps no other task's, and no reference to its elements exists, so gemm may
            // write it through the raw pointer; with read_dst = false it writes every element
            // of the tile (zeros when k = 0) without reading any. x (m × k) and w (n × k) are
            // read within their bounds.
            let tile = unsafe {
                let tile = dst.ptr().add(r0 * n + c0);
                gemm_x_wt(
                    rows,
                    cols,
                    k,
                    tile,
                    n,
                    x.as_ptr().add(r0 * k),
                    w.as_ptr().add(c0 * k),
                );
                tile
            };
            // One slice per tile row: a slice spanning several rows would also cover other
            // tasks' columns in between, aliasing their `&mut` access.
            let tile_rows = (0..rows).map(|r| {
                // SAFETY: row r of the tile is `cols` elements inside the buffer, just written by
                // gemm, that only this task accesses; each row is yielded once, so the slices
                // are disjoint.
                unsafe { std::slice::from_raw_parts_mut(tile.add(r * n), cols) }
            });
            bias_act_rows(tile_rows, &bias[c0..c0 + cols], act);
        });
        // SAFETY: the tiles cover all m × n elements, and every task has written its tile.
        unsafe { out.set_len(m * n) };
        Ok((CpuStorage::F32(out), dense_shape(xl, n)))
    }

    /// cuBLAS' GEMM through candle, then the bias + activation epilogue in place.
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
        use candle_core::backend::BackendStorage;
        let (m, k, n) = dense_sizes(xl, wl, bl)?;
        let Some((start, _)) = xl.contiguous_offsets() else {
            bail!("dense: x must be contiguous");
        };
        let x_rows = Layout::contiguous_with_offset((m, k), start);
        let mut out = xs.matmul(ws, (1, m, n, k), &x_rows, &wl.transpose(0, 1)?)?;
        super::cuda::bias_act(&mut out, (bs, bl), n, self.0)?;
        Ok((out, dense_shape(xl, n)))
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
        let grad_x = if grad.device().is_cpu() && packs_per_call(grad.dim(0)?) {
            grad.apply_op2_no_bwd(&weight.contiguous()?, &InputGrad)?
        } else {
            grad.matmul(weight)?
        };
        let grad_x = grad_x.reshape(x.shape())?;
        let grad_w = grad.t()?.matmul(&x2)?;
        let grad_b = column_sum(&grad)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

/// Whether a dense op of `rows` rows runs on the packed f32 kernel, packing its weight for the
/// call: the packing (k × n values) costs little against an m × k × n product of many rows,
/// but more than it saves on a few (the head at batch 1, 1280 × 256 weights for one row).
fn packs_per_call(rows: usize) -> bool {
    rows >= 64 && DenseFormat::F32.supported()
}

/// A dense layer's input gradient `grad · W` (grad `[M, N]`, weight `[N, K]`) on the packed
/// f32 kernel; only where [`DenseFormat::F32`] is supported.
struct InputGrad;

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "dense-input-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [g, w] = inputs(self.name(), [("grad", gs, gl), ("weight", ws, wl)])?;
        let ((m, n), (wn, k)) = (gl.shape().dims2()?, wl.shape().dims2()?);
        if wn != n {
            bail!(
                "dense input grad: grad {:?}, weight {:?}",
                gl.shape(),
                wl.shape()
            );
        }
        let out = PackedDense::f32_of_transposed(w, n).rows(g, m, Act::Identity);
        Ok((CpuStorage::F32(out), Shape::from((m, k))))
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
pub(super) fn parallel_sum(
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
        let [x] = inputs(self.name(), [("x", xs, xl)])?;
        let (m, n) = xl.shape().dims2()?;
        let total = parallel_sum(m, rows_per_task(m, n), n, |rows, acc| {
            add_rows(&x[rows.start * n..rows.end * n], acc)
        });
        Ok((CpuStorage::F32(total), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (m, n) = xl.shape().dims2()?;
        Ok((super::cuda::column_sum((xs, xl), m, n)?, Shape::from(n)))
    }
}

/// Rows per parallel task for row-wise reductions.
fn rows_per_task(rows: usize, cols: usize) -> usize {
    (65_536 / cols.max(1)).clamp(1, rows.max(1))
}

fn column_sum(x: &Tensor) -> Result<Tensor> {
    if super::has_kernels(x.device()) {
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
        let [g, y] = inputs(self.name(), [("grad", gs, gl), ("output", ys, yl)])?;
        if g.len() != y.len() {
            bail!("act-mask: {:?} vs {:?}", gl.shape(), yl.shape());
        }
        const STEP: usize = 16_384;
        let out = par_output(g.len(), STEP, |i, o| {
            let span = i * STEP..i * STEP + o.len();
            act_mask_rows(&g[span.clone()], &y[span], o, self.0)
        });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        ys: &CudaStorage,
        yl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        if gl.shape() != yl.shape() {
            bail!("act-mask: {:?} vs {:?}", gl.shape(), yl.shape());
        }
        let out = super::cuda::act_mask((gs, gl), (ys, yl), self.0)?;
        Ok((out, gl.shape().clone()))
    }
}

pub(super) fn act_mask(grad: &Tensor, act_out: &Tensor, act: Act) -> Result<Tensor> {
    if act == Act::Identity {
        return grad.contiguous();
    }
    if super::has_kernels(grad.device()) {
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

/// `act(x · Wᵀ + b)` over the last dimension of `x`: a dense layer, or a 1×1 conv on NHWC.
pub fn dense(x: &Tensor, weight: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    if super::has_kernels(x.device()) {
        x.contiguous()?
            .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Dense(act))
    } else {
        super::dense_reference(x, weight, bias, act)
    }
}
