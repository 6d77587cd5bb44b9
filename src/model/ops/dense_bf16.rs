//! Dense layers and 1×1 convs in bfloat16 for inference, on AVX512-BF16's dot product
//! (`vdpbf16ps`: 32 bf16 products summed pairwise into 16 f32 lanes per instruction, twice the
//! multiply-adds of an f32 FMA). Weights are rounded to bf16 once, when the layer is packed;
//! activations are rounded as each tile of rows is read; sums, bias and activation stay f32,
//! and the output is f32, so the rest of the network is unchanged.

use super::dense::{dense_shape, rows_channels};
use super::{par_output, Act};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

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

/// Whether this CPU runs the bf16 kernel (and the `AFFECTCAM_SIMD` cap allows AVX-512).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::simd_level() == super::SimdLevel::Avx512
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A dense layer (weight `[N, K]`, bias `[N]`) with its weight packed for the kernel: for each
/// pair of input features, the N output columns' two bf16 weights side by side in one `u32`
/// (low half: the even feature), columns padded with zeros to a multiple of [`COLS`].
#[derive(Debug, Clone)]
pub struct DenseBf16 {
    k: usize,
    n: usize,
    /// `[K/2 rounded up][n_padded]` weight pairs.
    packed: Vec<u32>,
    n_padded: usize,
    bias: Vec<f32>,
}

impl DenseBf16 {
    pub fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != n {
            bail!("dense bf16: bias {} for {n} outputs", bias.len());
        }
        let n_padded = n.div_ceil(COLS) * COLS;
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
        Ok(Self {
            k,
            n,
            packed,
            n_padded,
            bias,
        })
    }

    /// `act(x · Wᵀ + b)` over x's last dimension, x `[…, K]` → `[…, N]`. Call only where
    /// [`bf16_supported`] says so (otherwise it returns an error).
    pub fn forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        x.contiguous()?
            .apply_op1_no_bwd(&DenseBf16Op { layer: self, act })
    }

    /// `act(x · Wᵀ + b)` of the rows `x` (`rows × K`) into `out` (`rows × N`), on this thread.
    /// Panics where [`bf16_supported`] is false: callers pack layers only where it is true.
    pub(super) fn rows_into<'a>(
        &self,
        x: &[f32],
        out: &'a mut [MaybeUninit<f32>],
        act: Act,
    ) -> &'a mut [f32] {
        assert!(bf16_supported(), "the bf16 kernel needs AVX512-BF16");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has the kernel's features (asserted); `tile` checks the sizes.
        unsafe {
            avx512::tile(x, self, out, act)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("bf16_supported is false off x86-64")
    }
}

struct DenseBf16Op<'a> {
    layer: &'a DenseBf16,
    act: Act,
}

impl CustomOp1 for DenseBf16Op<'_> {
    fn name(&self) -> &'static str {
        "dense-bf16"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = super::inputs(self.name(), [("x", xs, xl)])?;
        let layer = self.layer;
        let ((m, k), shape) = (rows_channels(xl), dense_shape(xl, layer.n));
        if k != layer.k {
            bail!("dense bf16: {k} input features, expected {}", layer.k);
        }
        if !bf16_supported() {
            bail!("dense bf16: this CPU has no AVX512-BF16");
        }
        let n = layer.n;
        if m * n == 0 {
            return Ok((CpuStorage::F32(vec![0.0; m * n]), shape));
        }
        // A few tiles per thread, whole microkernel row groups where there are enough rows.
        let threads = rayon::current_num_threads().max(1);
        let tile_rows = (m.div_ceil(threads * 4))
            .next_multiple_of(ROWS)
            .clamp(ROWS, 256);
        let act = self.act;
        let out = par_output(m * n, tile_rows * n, |i, piece| {
            let r0 = i * tile_rows;
            let rows = piece.len() / n;
            layer.rows_into(&x[r0 * k..(r0 + rows) * k], piece, act)
        });
        Ok((CpuStorage::F32(out), shape))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Act, DenseBf16, COLS, ROWS};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// The output rows `out` (`rows × n`) of input rows `x` (`rows × k`).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW and BF16; `x.len() == rows · k` and
    /// `out.len() == rows · n` for the layer's k and n.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn tile<'a>(
        x: &[f32],
        layer: &DenseBf16,
        out: &'a mut [MaybeUninit<f32>],
        act: Act,
    ) -> &'a mut [f32] {
        let (k, n) = (layer.k, layer.n);
        let rows = out.len() / n;
        assert!(x.len() == rows * k && out.len() == rows * n);
        let pairs = k.div_ceil(2);
        // The tile's activations as bf16 pairs, `pairs` per row.
        let mut a = vec![0u32; rows * pairs];
        for (src, dst) in x.chunks_exact(k).zip(a.chunks_exact_mut(pairs)) {
            // SAFETY: `src` is k values and `dst` k/2 rounded up, as the function requires.
            unsafe { to_bf16_pairs(src, dst) };
        }
        let dst = out.as_mut_ptr().cast::<f32>();
        for c0 in (0..n).step_by(COLS) {
            let cols = (n - c0).min(COLS);
            let mut r0 = 0;
            while r0 < rows {
                let group = (rows - r0).min(ROWS);
                // SAFETY: rows r0..r0+group of `a` (row stride `pairs`) and of the output (row
                // stride n) exist; the packed weights hold `pairs` × n_padded values, and
                // c0 + 32 ≤ n_padded; the kernel writes only columns c0..c0+cols.
                unsafe {
                    let (a, out) = (a.as_ptr().add(r0 * pairs), dst.add(r0 * n + c0));
                    match group {
                        8 => micro::<8>(a, pairs, layer, c0, cols, out, n, act),
                        7 => micro::<7>(a, pairs, layer, c0, cols, out, n, act),
                        6 => micro::<6>(a, pairs, layer, c0, cols, out, n, act),
                        5 => micro::<5>(a, pairs, layer, c0, cols, out, n, act),
                        4 => micro::<4>(a, pairs, layer, c0, cols, out, n, act),
                        3 => micro::<3>(a, pairs, layer, c0, cols, out, n, act),
                        2 => micro::<2>(a, pairs, layer, c0, cols, out, n, act),
                        _ => micro::<1>(a, pairs, layer, c0, cols, out, n, act),
                    }
                }
                r0 += group;
            }
        }
        // SAFETY: the column blocks cover 0..n and the row groups 0..rows, so every element
        // of `out` was written by `micro`.
        unsafe { out.assume_init_mut() }
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

    /// Output rows `R` × columns c0..c0+cols (≤ 32) of one tile.
    ///
    /// # Safety
    /// AVX-512 F/BW and BF16; `a` holds R rows of `pairs` pairs, `out` R rows (stride
    /// `stride`) with `cols` writable values each; c0 + 32 ≤ the layer's padded width.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn micro<const R: usize>(
        a: *const u32,
        pairs: usize,
        layer: &DenseBf16,
        c0: usize,
        cols: usize,
        out: *mut f32,
        stride: usize,
        act: Act,
    ) {
        // SAFETY: pair p of the 32 packed columns from c0 lies inside `packed` (pairs × np,
        // c0 + 32 ≤ np), pair p of each of the R rows inside `a`, and the masked stores touch
        // only the `cols` columns of the R output rows; the caller guarantees all three.
        unsafe {
            let b = layer.packed.as_ptr().add(c0);
            let np = layer.n_padded;
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for p in 0..pairs {
                let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * np).cast()));
                let w1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(p * np + 16).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let v: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + p) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], v, w0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], v, w1);
                }
            }
            let masks = [mask16(cols.min(16)), mask16(cols.saturating_sub(16))];
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

    #[test]
    fn dense_bf16_is_the_f32_dense_of_bf16_rounded_inputs() {
        if !bf16_supported() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        let dev = Device::Cpu;
        for (m, k, n, act) in [
            (1, 16, 96, Act::Relu6),
            (9, 33, 24, Act::Identity),
            (70, 96, 24, Act::Identity),
            (300, 144, 32, Act::Relu6),
            (17, 320, 1280, Act::Relu6),
            (5, 7, 3, Act::Relu),
            (0, 8, 16, Act::Relu),
        ] {
            let x = randn((m, k), 2.0, &dev).unwrap();
            let w = randn((n, k), 0.5, &dev).unwrap();
            let b = randn(n, 1.0, &dev).unwrap();
            let ours = DenseBf16::new(&w, &b).unwrap().forward(&x, act).unwrap();
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
