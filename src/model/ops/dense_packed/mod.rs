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
//! - int8 (inference): AVX512-VNNI's `vpdpbusd` (64 u8 × i8 products summed in fours into 16
//!   i32 lanes, twice bf16's multiply-adds and half its bytes). Weights are rounded to int8
//!   with one scale per output channel when packed; each row of activations (one pixel's
//!   channels) gets its own scale and zero point as it is read, so a row's 256 levels span
//!   just its own range; the integer sums are rescaled to f32 before bias and activation.
//!   Where a layer's input ranges were calibrated, each input channel is first multiplied by
//!   a factor its weights are divided by (SmoothQuant's migration, α = ½), so that a few
//!   channels with large values no longer take a row's levels from all the others.

use super::dense::{dense_shape, rows_channels};
use super::{par_output, Act, SharedMut};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
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

/// The number format a [`PackedDense`] multiplies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseFormat {
    F32,
    Bf16,
    Int8,
}

impl DenseFormat {
    /// Whether this CPU runs the format's kernel (and the `AFFECTCAM_SIMD` cap allows
    /// AVX-512): AVX-512 F for f32, plus BW and BF16 for bf16, BW, VL and VNNI for int8.
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
                    DenseFormat::Int8 => {
                        std::arch::is_x86_feature_detected!("avx512vnni")
                            && std::arch::is_x86_feature_detected!("avx512bw")
                            && std::arch::is_x86_feature_detected!("avx512vl")
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

/// The packed weights, `n_padded` columns per row, columns beyond n zero.
#[derive(Debug, Clone)]
enum Packed {
    /// `[K][n_padded]`: row p holds every output column's weight for input feature p.
    F32(Vec<f32>),
    /// `[K/2 rounded up][n_padded]`: for each pair of input features, each column's two bf16
    /// weights side by side in one `u32` (low half: the even feature).
    Bf16(Vec<u32>),
    Int8(Int8Weights),
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
            DenseFormat::Int8 => Packed::Int8(Int8Weights::uncalibrated(w, k, n_padded)),
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
            Packed::Int8(_) => DenseFormat::Int8,
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
            "the {:?} kernel needs AVX-512 (and AVX512-BF16 for bf16, AVX512-VNNI for int8)",
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
mod avx512;
mod int8;

use int8::Int8Weights;

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

    pub(super) const SHAPES: [(usize, usize, usize, Act); 7] = [
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
        if !DenseFormat::Bf16.supported() {
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
