//! Dense layers and 1×1 convs on our AVX-512 microkernels, with the weights packed for them:
//! once, when a layer is prepared for inference, or per call in training (`ops::dense`). 8 rows
//! × 32 output channels per call, bias and activation applied as the sums leave the registers.
//! Two number formats:
//! - f32 (inference and training): `vfmadd` on the weights as they are. Against gemm (which
//!   packs both operands on every call, into buffers it allocates, and on stable Rust runs its
//!   AVX2 kernel) this skips most of the packing and uses the 512-bit registers.
//! - bf16 (inference): AVX512-BF16's dot product (`vdpbf16ps`: 32 bf16 products summed
//!   pairwise into 16 f32 lanes per instruction, twice the multiply-adds of an f32 FMA).
//!   Weights are rounded to bf16 when packed; activations are rounded as each tile of rows is
//!   read; sums, bias and activation stay f32, and the output is f32, so the rest of the
//!   network is unchanged.

use super::dense::{dense_shape, rows_channels};
use super::{par_output, Act, SharedMut};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Output channels per microkernel call: two vectors of 16 f32.
const COLS: usize = 32;
/// Rows per microkernel call: 2 × 8 accumulators, two weight vectors and a broadcast fit in
/// the 32 vector registers.
const ROWS: usize = 8;

/// `v` rounded to the nearest bf16 (ties to even), as `vcvtne2ps2bf16` rounds; NaN stays NaN.
pub fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// `v` rounded to bf16 and back (what the kernel multiplies with).
#[cfg(test)]
fn round_to_bf16(v: f32) -> f32 {
    f32::from_bits((bf16_bits(v) as u32) << 16)
}

/// The number format a [`PackedDense`] multiplies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseFormat {
    F32,
    Bf16,
}

impl DenseFormat {
    /// Whether this CPU runs the format's kernel (and the `AFFECTCAM_SIMD` cap allows
    /// AVX-512): AVX-512 F for f32, plus BW and BF16 for bf16.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            super::simd_level() == super::SimdLevel::Avx512
                && match self {
                    DenseFormat::F32 => true,
                    DenseFormat::Bf16 => {
                        std::arch::is_x86_feature_detected!("avx512bf16")
                            && std::arch::is_x86_feature_detected!("avx512bw")
                    }
                }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }
}

/// Whether this CPU runs the bf16 kernel.
pub fn bf16_supported() -> bool {
    DenseFormat::Bf16.supported()
}

/// The packed weights, `n_padded` columns per row, columns beyond n zero.
#[derive(Debug, Clone)]
enum Packed {
    /// `[K][n_padded]`: row p holds every output column's weight for input feature p.
    F32(Vec<f32>),
    /// `[K/2 rounded up][n_padded]`: for each pair of input features, each column's two bf16
    /// weights side by side in one `u32` (low half: the even feature).
    Bf16(Vec<u32>),
}

/// A dense layer (weight `[N, K]`, bias `[N]`) with its weight packed for the kernel of one
/// [`DenseFormat`], columns padded with zeros to a multiple of [`COLS`].
#[derive(Debug, Clone)]
pub struct PackedDense {
    k: usize,
    n: usize,
    packed: Packed,
    n_padded: usize,
    bias: Vec<f32>,
}

impl PackedDense {
    pub fn new(weight: &Tensor, bias: &Tensor, format: DenseFormat) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != n {
            bail!("packed dense: bias {} for {n} outputs", bias.len());
        }
        Ok(Self::from_rows(&w, bias, k, format))
    }

    /// The layer of weight `w` (`[N, K]` row-major, N = `bias.len()`) in f32.
    pub(super) fn f32_of(w: &[f32], bias: &[f32]) -> Self {
        let k = w.len() / bias.len().max(1);
        Self::from_rows(w, bias.to_vec(), k, DenseFormat::F32)
    }

    /// The f32 layer `x · w` of a weight `w` given as `[K, N]` row-major (the transpose of the
    /// usual `[N, K]`), no bias: a dense layer's input gradient, `grad · W`.
    pub(super) fn f32_of_transposed(w: &[f32], k: usize) -> Self {
        let n = w.len() / k.max(1);
        let n_padded = n.div_ceil(COLS) * COLS;
        let mut packed = vec![0f32; k * n_padded];
        for (dst, src) in packed
            .chunks_exact_mut(n_padded)
            .zip(w.chunks_exact(n.max(1)))
        {
            dst[..n].copy_from_slice(src);
        }
        Self {
            k,
            n,
            packed: Packed::F32(packed),
            n_padded,
            bias: vec![0.0; n],
        }
    }

    fn from_rows(w: &[f32], bias: Vec<f32>, k: usize, format: DenseFormat) -> Self {
        let n = bias.len();
        let n_padded = n.div_ceil(COLS) * COLS;
        let packed = match format {
            DenseFormat::F32 => {
                let mut packed = vec![0f32; k * n_padded];
                for (j, row) in w.chunks_exact(k.max(1)).enumerate() {
                    for (p, &v) in row.iter().enumerate() {
                        packed[p * n_padded + j] = v;
                    }
                }
                Packed::F32(packed)
            }
            DenseFormat::Bf16 => {
                let pairs = k.div_ceil(2);
                let mut packed = vec![0u32; pairs * n_padded];
                for p in 0..pairs {
                    for j in 0..n {
                        let even = bf16_bits(w[j * k + 2 * p]) as u32;
                        let odd = if 2 * p + 1 < k {
                            bf16_bits(w[j * k + 2 * p + 1]) as u32
                        } else {
                            0
                        };
                        packed[p * n_padded + j] = even | (odd << 16);
                    }
                }
                Packed::Bf16(packed)
            }
        };
        Self {
            k,
            n,
            packed,
            n_padded,
            bias,
        }
    }

    pub fn format(&self) -> DenseFormat {
        match self.packed {
            Packed::F32(_) => DenseFormat::F32,
            Packed::Bf16(_) => DenseFormat::Bf16,
        }
    }

    /// `act(x · Wᵀ + b)` over x's last dimension, x `[…, K]` → `[…, N]`. Call only where the
    /// format is [`supported`](DenseFormat::supported) (otherwise it returns an error).
    pub fn forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        x.contiguous()?
            .apply_op1_no_bwd(&PackedDenseOp { layer: self, act })
    }

    /// `act(x · Wᵀ + b)` of the `m` rows `x`, in parallel tiles; the format must be supported.
    pub(super) fn rows(&self, x: &[f32], m: usize, act: Act) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        if m * n == 0 {
            return vec![0.0; m * n];
        }
        let threads = rayon::current_num_threads().max(1);
        if m < threads * 4 * ROWS {
            return self.column_tasks(x, m, threads, act);
        }
        // A few tiles per thread, whole microkernel row groups.
        let tile_rows = (m.div_ceil(threads * 4))
            .next_multiple_of(ROWS)
            .clamp(ROWS, 256);
        par_output(m * n, tile_rows * n, |i, piece| {
            let r0 = i * tile_rows;
            let rows = piece.len() / n;
            self.rows_into(&x[r0 * k..(r0 + rows) * k], piece, act)
        })
    }

    /// [`rows`](Self::rows) for a few rows (the last layers of one small image: 16 rows of
    /// 960 → 160): each task takes all rows and a share of the output columns, so reads only
    /// its share of the weights, instead of every task reading all of them for its few rows.
    fn column_tasks(&self, x: &[f32], m: usize, threads: usize, act: Act) -> Vec<f32> {
        assert!(
            self.format().supported(),
            "packed dense: unsupported format"
        );
        let n = self.n;
        let per_task = n.div_ceil(COLS).div_ceil(threads * 2) * COLS;
        let mut out = Vec::<f32>::with_capacity(m * n);
        let dst = SharedMut(out.as_mut_ptr());
        (0..n.div_ceil(per_task)).into_par_iter().for_each(|task| {
            let c0 = task * per_task;
            // SAFETY: the format runs on this CPU (asserted); x holds m rows of k values (the
            // callers' `rows` contract), the buffer m × n; each task writes only its own
            // columns c0.., disjoint from the others', starting at a multiple of COLS.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::columns(x, self, m, c0..(c0 + per_task).min(n), dst.ptr(), act)
            }
        });
        // SAFETY: the tasks' column ranges cover 0..n, each written for all m rows.
        unsafe { out.set_len(m * n) };
        out
    }

    /// `act(x · Wᵀ + b)` of the rows `x` (`rows × K`) into `out` (`rows × N`), on this thread.
    /// Panics where the format is not supported: callers pack layers only where it is.
    pub(super) fn rows_into<'a>(
        &self,
        x: &[f32],
        out: &'a mut [MaybeUninit<f32>],
        act: Act,
    ) -> &'a mut [f32] {
        assert!(
            self.format().supported(),
            "the {:?} kernel needs AVX-512 (and AVX512-BF16 for bf16)",
            self.format()
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has the kernel's features (asserted); `tile` checks the sizes.
        unsafe {
            avx512::tile(x, self, out, act)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no packed format is supported off x86-64")
    }
}

struct PackedDenseOp<'a> {
    layer: &'a PackedDense,
    act: Act,
}

impl CustomOp1 for PackedDenseOp<'_> {
    fn name(&self) -> &'static str {
        "packed-dense"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = super::inputs(self.name(), [("x", xs, xl)])?;
        let layer = self.layer;
        let ((m, k), shape) = (rows_channels(xl), dense_shape(xl, layer.n));
        if k != layer.k {
            bail!("packed dense: {k} input features, expected {}", layer.k);
        }
        if !layer.format().supported() {
            bail!("packed dense: this CPU cannot run {:?}", layer.format());
        }
        Ok((CpuStorage::F32(layer.rows(x, m, self.act)), shape))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Act, Packed, PackedDense, Range, COLS, ROWS};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// `$micro::<R>(args…)` with the const R equal to `$group` (1 ..= [`ROWS`]).
    macro_rules! with_rows {
        ($group:expr, $micro:ident($($arg:expr),*)) => {
            match $group {
                8 => $micro::<8>($($arg),*),
                7 => $micro::<7>($($arg),*),
                6 => $micro::<6>($($arg),*),
                5 => $micro::<5>($($arg),*),
                4 => $micro::<4>($($arg),*),
                3 => $micro::<3>($($arg),*),
                2 => $micro::<2>($($arg),*),
                _ => $micro::<1>($($arg),*),
            }
        };
    }

    /// The microkernel calls covering columns `cols` of a `rows`-row output: (first row, rows
    /// ≤ [`ROWS`], first column, columns ≤ [`COLS`]); column blocks outermost, so one block's
    /// weights stay in cache while every row group passes over them.
    fn micro_tiles(
        rows: usize,
        cols: Range<usize>,
    ) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        let end = cols.end;
        cols.step_by(COLS).flat_map(move |c0| {
            (0..rows)
                .step_by(ROWS)
                .map(move |r0| (r0, (rows - r0).min(ROWS), c0, (end - c0).min(COLS)))
        })
    }

    /// Columns `cols` of the `rows` output rows at `dst` (row stride n) of input rows `x`.
    ///
    /// # Safety
    /// The CPU must have the features of the layer's format; x holds rows × k values, `dst`
    /// rows × n writable ones of which nothing else accesses columns `cols` meanwhile;
    /// cols.start is a multiple of [`COLS`] and cols.end ≤ n.
    pub(super) unsafe fn columns(
        x: &[f32],
        layer: &PackedDense,
        rows: usize,
        cols: Range<usize>,
        dst: *mut f32,
        act: Act,
    ) {
        assert!(
            x.len() == rows * layer.k && cols.start.is_multiple_of(COLS) && cols.end <= layer.n
        );
        // SAFETY: the caller's guarantees.
        unsafe {
            match &layer.packed {
                Packed::F32(w) => tile_f32(x, w, layer, rows, cols, dst, act),
                Packed::Bf16(w) => tile_bf16(x, w, layer, rows, cols, dst, act),
            }
        }
    }

    /// The output rows `out` (`rows × n`) of input rows `x` (`rows × k`).
    ///
    /// # Safety
    /// The CPU must have the features of the layer's format (AVX-512 F; BW and BF16 for
    /// bf16); `x.len() == rows · k` and `out.len() == rows · n` for the layer's k and n.
    pub(super) unsafe fn tile<'a>(
        x: &[f32],
        layer: &PackedDense,
        out: &'a mut [MaybeUninit<f32>],
        act: Act,
    ) -> &'a mut [f32] {
        let (k, n) = (layer.k, layer.n);
        let rows = out.len() / n;
        assert!(x.len() == rows * k && out.len() == rows * n);
        let dst = out.as_mut_ptr().cast::<f32>();
        // SAFETY: the caller's guarantees, sizes asserted.
        unsafe {
            match &layer.packed {
                Packed::F32(w) => tile_f32(x, w, layer, rows, 0..n, dst, act),
                Packed::Bf16(w) => tile_bf16(x, w, layer, rows, 0..n, dst, act),
            }
        }
        // SAFETY: `micro_tiles` covers columns 0..n of rows 0..rows, so every element of `out`
        // was written by a microkernel.
        unsafe { out.assume_init_mut() }
    }

    /// # Safety
    /// AVX-512 F; x `rows × k`, `dst` `rows × n` writable, `w` the layer's f32 packing.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_f32(
        x: &[f32],
        w: &[f32],
        layer: &PackedDense,
        rows: usize,
        columns: Range<usize>,
        dst: *mut f32,
        act: Act,
    ) {
        let (k, n, np) = (layer.k, layer.n, layer.n_padded);
        for (r0, group, c0, cols) in micro_tiles(rows, columns) {
            // SAFETY: rows r0..r0+group of x (row stride k) and of the output (row stride n)
            // exist; w holds k × np values and c0 + 32 ≤ np; the kernel writes only columns
            // c0..c0+cols.
            unsafe {
                let (x, w, out) = (
                    x.as_ptr().add(r0 * k),
                    w.as_ptr().add(c0),
                    dst.add(r0 * n + c0),
                );
                with_rows!(group, micro_f32(x, k, w, np, layer, c0, cols, out, n, act))
            }
        }
    }

    /// # Safety
    /// AVX-512 F/BW and BF16; x `rows × k`, `dst` `rows × n` writable, `w` the layer's bf16
    /// packing.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile_bf16(
        x: &[f32],
        w: &[u32],
        layer: &PackedDense,
        rows: usize,
        columns: Range<usize>,
        dst: *mut f32,
        act: Act,
    ) {
        let (k, n, np) = (layer.k, layer.n, layer.n_padded);
        let pairs = k.div_ceil(2);
        // The tile's activations as bf16 pairs, `pairs` per row.
        let mut a = vec![0u32; rows * pairs];
        for (src, dst) in x.chunks_exact(k).zip(a.chunks_exact_mut(pairs)) {
            // SAFETY: `src` is k values and `dst` k/2 rounded up, as the function requires.
            unsafe { to_bf16_pairs(src, dst) };
        }
        for (r0, group, c0, cols) in micro_tiles(rows, columns) {
            // SAFETY: rows r0..r0+group of `a` (row stride `pairs`) and of the output (row
            // stride n) exist; w holds `pairs` × np values and c0 + 32 ≤ np; the kernel writes
            // only columns c0..c0+cols.
            unsafe {
                let (a, w, out) = (
                    a.as_ptr().add(r0 * pairs),
                    w.as_ptr().add(c0),
                    dst.add(r0 * n + c0),
                );
                with_rows!(
                    group,
                    micro_bf16(a, pairs, w, np, layer, c0, cols, out, n, act)
                )
            }
        }
    }

    /// `src` (k f32) as bf16 pairs into `dst` (k/2 rounded up; an odd k's last pair is padded
    /// with zero).
    ///
    /// # Safety
    /// AVX-512 F/BW and BF16; the lengths as above.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn to_bf16_pairs(src: &[f32], dst: &mut [u32]) {
        assert_eq!(dst.len(), src.len().div_ceil(2));
        let mut i = 0;
        while i < src.len() {
            let left = src.len() - i;
            let lo_mask = mask16(left.min(16));
            let hi_mask = mask16(left.saturating_sub(16).min(16));
            // SAFETY: the masks cover only the `left` values from i on; the store writes the
            // (left + 1) / 2 pairs of dst from i / 2 on, which exist.
            unsafe {
                let lo = _mm512_maskz_loadu_ps(lo_mask, src.as_ptr().add(i));
                let hi = _mm512_maskz_loadu_ps(hi_mask, src.as_ptr().add(i + 16));
                let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_mask_storeu_epi32(
                    dst.as_mut_ptr().add(i / 2).cast(),
                    mask16(left.min(32).div_ceil(2)),
                    pairs,
                );
            }
            i += 32;
        }
    }

    /// The low `len` lanes (≤ 16).
    fn mask16(len: usize) -> __mmask16 {
        ((1u32 << len) - 1) as __mmask16
    }

    /// Output rows `R` × columns c0..c0+cols (≤ 32) in f32: for each input feature p, the two
    /// packed weight vectors times each row's x[p], broadcast.
    ///
    /// # Safety
    /// AVX-512 F; `x` holds R rows of k values (row stride k), `w` k rows of 32 packed
    /// weights (row stride `np`); `out` R rows (stride `stride`) with `cols` writable values
    /// each, c0 + cols ≤ the layer's n.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn micro_f32<const R: usize>(
        x: *const f32,
        k: usize,
        w: *const f32,
        np: usize,
        layer: &PackedDense,
        c0: usize,
        cols: usize,
        out: *mut f32,
        stride: usize,
        act: Act,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..k {
            // SAFETY: row p of the packed weights and feature p of each of the R rows lie
            // inside the buffers the caller vouches for.
            unsafe {
                let w0 = _mm512_loadu_ps(w.add(p * np));
                let w1 = _mm512_loadu_ps(w.add(p * np + 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let v = _mm512_set1_ps(*x.add(r * k + p));
                    acc[0] = _mm512_fmadd_ps(v, w0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(v, w1, acc[1]);
                }
            }
        }
        // SAFETY: the caller's guarantees for `out`, c0 and cols.
        unsafe { store(&acc, layer, c0, cols, out, stride, act) }
    }

    /// Output rows `R` × columns c0..c0+cols (≤ 32) in bf16: `vdpbf16ps` on pairs of input
    /// features.
    ///
    /// # Safety
    /// AVX-512 F/BW and BF16; `a` holds R rows of `pairs` pairs, `w` `pairs` rows of 32 packed
    /// pairs (row stride `np`); `out` R rows (stride `stride`) with `cols` writable values
    /// each, c0 + cols ≤ the layer's n.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn micro_bf16<const R: usize>(
        a: *const u32,
        pairs: usize,
        w: *const u32,
        np: usize,
        layer: &PackedDense,
        c0: usize,
        cols: usize,
        out: *mut f32,
        stride: usize,
        act: Act,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..pairs {
            // SAFETY: pair p of the 32 packed columns and of each of the R rows lies inside
            // the buffers the caller vouches for.
            unsafe {
                let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(p * np).cast()));
                let w1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(w.add(p * np + 16).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let v: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + p) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], v, w0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], v, w1);
                }
            }
        }
        // SAFETY: the caller's guarantees for `out`, c0 and cols.
        unsafe { store(&acc, layer, c0, cols, out, stride, act) }
    }

    /// `act(acc + bias)` into R output rows × columns c0..c0+cols (≤ 32).
    ///
    /// # Safety
    /// AVX-512 F; `out` R rows (stride `stride`) with `cols` writable values each,
    /// c0 + cols ≤ the layer's n.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize>(
        acc: &[[__m512; 2]; R],
        layer: &PackedDense,
        c0: usize,
        cols: usize,
        out: *mut f32,
        stride: usize,
        act: Act,
    ) {
        let masks = [mask16(cols.min(16)), mask16(cols.saturating_sub(16))];
        // SAFETY: the masked loads read only bias[c0..c0+cols], inside the bias, and the
        // masked stores write only the `cols` columns of the R output rows.
        unsafe {
            let bias = [
                _mm512_maskz_loadu_ps(masks[0], layer.bias.as_ptr().add(c0)),
                _mm512_maskz_loadu_ps(masks[1], layer.bias.as_ptr().add(c0 + 16)),
            ];
            let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
            for (r, acc) in acc.iter().enumerate() {
                for h in 0..2 {
                    let v = _mm512_add_ps(acc[h], bias[h]);
                    // max/min return their second operand when either is NaN: NaN passes, as the
                    // f32 path's clamp keeps it.
                    let v = match act {
                        Act::Identity => v,
                        Act::Relu => _mm512_max_ps(v, zero),
                        Act::Relu6 => _mm512_min_ps(six, _mm512_max_ps(zero, v)),
                    };
                    _mm512_mask_storeu_ps(out.add(r * stride + 16 * h), masks[h], v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{randn, rel_err};
    use crate::model::ops::{dense_reference, Act};
    use candle_core::Device;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
        assert!(round_to_bf16(f32::NAN).is_nan());
    }

    const SHAPES: [(usize, usize, usize, Act); 7] = [
        (1, 16, 96, Act::Relu6),
        (9, 33, 24, Act::Identity),
        (70, 96, 24, Act::Identity),
        (300, 144, 32, Act::Relu6),
        (17, 320, 1280, Act::Relu6),
        (5, 7, 3, Act::Relu),
        (0, 8, 16, Act::Relu),
    ];

    #[test]
    fn packed_f32_is_the_f32_dense() {
        if !DenseFormat::F32.supported() {
            eprintln!("skipping: this CPU (or AFFECTCAM_SIMD) has no AVX-512");
            return;
        }
        let dev = Device::Cpu;
        for (m, k, n, act) in SHAPES {
            let x = randn((m, k), 2.0, &dev).unwrap();
            let w = randn((n, k), 0.5, &dev).unwrap();
            let b = randn(n, 1.0, &dev).unwrap();
            let layer = PackedDense::new(&w, &b, DenseFormat::F32).unwrap();
            let ours = layer.forward(&x, act).unwrap();
            assert_eq!(ours.dims(), &[m, n]);
            if m > 0 {
                let e = rel_err(&ours, &dense_reference(&x, &w, &b, act).unwrap());
                assert!(e < 1e-6, "{m}×{k}→{n}: {e}");
            }
        }
    }

    #[test]
    fn dense_bf16_is_the_f32_dense_of_bf16_rounded_inputs() {
        if !bf16_supported() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        let dev = Device::Cpu;
        for (m, k, n, act) in SHAPES {
            let x = randn((m, k), 2.0, &dev).unwrap();
            let w = randn((n, k), 0.5, &dev).unwrap();
            let b = randn(n, 1.0, &dev).unwrap();
            let layer = PackedDense::new(&w, &b, DenseFormat::Bf16).unwrap();
            let ours = layer.forward(&x, act).unwrap();
            assert_eq!(ours.dims(), &[m, n]);
            if m == 0 {
                continue;
            }
            let round = |t: &Tensor| {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                let v: Vec<f32> = v.into_iter().map(round_to_bf16).collect();
                Tensor::from_vec(v, t.shape(), &dev).unwrap()
            };
            let exact = dense_reference(&round(&x), &round(&w), &b, act).unwrap();
            let e = rel_err(&ours, &exact);
            assert!(e < 1e-5, "{m}×{k}→{n}: {e} against bf16-rounded f32");
            let f32_result = dense_reference(&x, &w, &b, act).unwrap();
            let e = rel_err(&ours, &f32_result);
            assert!(e < 5e-2, "{m}×{k}→{n}: {e} against f32");
        }
    }
}
