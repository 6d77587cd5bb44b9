//! Hand-written CPU kernels for the layers that dominate MobileNetV2, as candle custom ops.
//!
//! Activations are NHWC (`[N, H, W, C]`, channels contiguous) so a depthwise 3×3 vectorises
//! over channels and a pointwise conv is one `[N·H·W, Cin] × [Cin, Cout]` matmul:
//! - [`dense`]: dense layers and 1×1 convs, a GEMM with a fused bias + activation epilogue;
//! - [`depthwise3x3`]: the depthwise 3×3 conv and its input/weight gradients ([`depthwise`]
//!   takes any window with TensorFlow padding, the 5×5 ones as [`depthwise_same_reference`]);
//! - [`conv3x3_input`]: the stem's dense 3×3 conv, as im2col patches into [`dense`];
//! - [`dense_reference`], [`depthwise3x3_reference`], [`conv3x3_input_reference`]: the same
//!   with candle's own ops.
//!
//! Each op has a hand-written backward, checked against the reference by [`check`] (in the unit
//! tests, and by `affectcam selftest` on any device).
//! With the `cuda` feature the depthwise conv, the dense epilogue (after cuBLAS' GEMM), the
//! activation masks and column sums, and the fused Adam step also run as CUDA kernels
//! (`cuda`); elsewhere (Metal), and for the stem, the same functions fall back to the
//! reference ops.
//!
//! Inference only (no backward), for the face detector:
//! - [`max_pool2x2`] and [`upsample2_add`] (nearest ×2 upsampling fused with an add), with
//!   [`max_pool2x2_reference`] and [`upsample2_add_reference`];
//! - [`PointwiseDepthwise`]: a 1×1 conv then a depthwise 3×3, fused per band of rows;
//! - [`RgbStem`]: a dense 3×3 stride-2 conv straight from an 8-bit RGB frame (CPU only).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The instruction sets the kernels are compiled for, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Baseline x86-64 (SSE2) or another architecture.
    Scalar,
    /// AVX2 + FMA (256-bit).
    Avx2,
    /// AVX-512 F + AVX2 + FMA (512-bit).
    Avx512,
}

/// Environment variable that caps the kernels' instruction set (`scalar`, `avx2`, `avx512`), so
/// every path can be run and tested on a CPU that has the best one.
pub const SIMD_ENV: &str = "AFFECTCAM_SIMD";

/// The instruction set the kernels use: the best this CPU has, capped by [`SIMD_ENV`]; chosen
/// once, at the first kernel call.
pub fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var(SIMD_ENV).as_deref() {
            Ok("scalar") => SimdLevel::Scalar,
            Ok("avx2") => SimdLevel::Avx2,
            _ => SimdLevel::Avx512,
        };
        detected_simd_level().min(cap)
    })
}

fn detected_simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return if has!("avx512f") {
                SimdLevel::Avx512
            } else {
                SimdLevel::Avx2
            };
        }
    }
    SimdLevel::Scalar
}

/// Runs `body` compiled for the best instruction set [`simd_level`] allows (AVX-512 or
/// AVX2+FMA), so the inner channel loops vectorise with fused multiply-adds while the binary
/// still runs on any x86-64.
macro_rules! simd_dispatch {
    ($vis:vis $name:ident, fn $(<$lt:lifetime>)? ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $vis fn $name $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512 $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2 $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                match $crate::model::ops::simd_level() {
                    // SAFETY: simd_level() returns Avx512 only on a CPU detected to have
                    // AVX-512 F, AVX2 and FMA.
                    $crate::model::ops::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: simd_level() returns Avx2 only on a CPU detected to have AVX2
                    // and FMA.
                    $crate::model::ops::SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::model::ops::SimdLevel::Scalar => {}
                }
            }
            generic($($arg),*)
        }
    };
}

pub mod check;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod dense;
mod dense_packed;
mod depthwise;
mod inverted_residual;
mod pointwise_depthwise;
mod pool;
mod reference;
mod rgb_stem;
mod stem;
#[cfg(test)]
mod testing;

pub use dense::dense;
pub use dense_packed::{DenseFormat, PackedDense};
pub use depthwise::{depthwise, depthwise3x3};
pub use inverted_residual::{BlockTensors, Conv1x1, InvertedResidualBlock};
pub use pointwise_depthwise::PointwiseDepthwise;
pub use pool::{global_avg_pool, max_pool2x2, upsample2_add};
pub use reference::{
    conv3x3_input_reference, dense_reference, depthwise3x3_reference, depthwise_same_reference,
    max_pool2x2_reference, upsample2_add_reference,
};
pub use rgb_stem::{ChannelOrder, RgbStem};
pub use stem::conv3x3_input;

/// Whether the custom ops have kernels for `device` (else they run as the reference ops).
fn has_kernels(device: &candle_core::Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda())
}

/// Keras padding of a 3×3 convolution: stride 1 pads one pixel on every side; stride 2 pads
/// only bottom/right (by one pixel on even inputs), as `ZeroPadding2D(correct_pad)` + "valid".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3x3 {
    pub stride: usize,
}

impl Conv3x3 {
    /// Padding before the first row/column.
    pub fn pad_before(self) -> usize {
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

/// TensorFlow "SAME" padding of a `kernel`×`kernel` window with stride `stride` (EfficientNet's):
/// ⌈len / stride⌉ outputs, the padding split evenly with the odd pixel after. For a 3×3 window
/// it is [`Conv3x3`]'s Keras padding, except on odd inputs at stride 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamePadding {
    pub kernel: usize,
    pub stride: usize,
}

impl SamePadding {
    pub fn out_len(self, len: usize) -> usize {
        len.div_ceil(self.stride)
    }

    /// Padding before the first row/column of an input of `len` pixels.
    pub fn pad_before(self, len: usize) -> usize {
        ((self.out_len(len) - 1) * self.stride + self.kernel).saturating_sub(len) / 2
    }

    /// Whether the CPU kernels take this window on an `h`×`w` input: 3×3 or 5×5, with the
    /// same padding along both axes.
    fn has_cpu_kernel(self, h: usize, w: usize) -> bool {
        matches!(self.kernel, 3 | 5) && self.pad_before(h) == self.pad_before(w)
    }

    /// Whether this is a 3×3 window padded as [`Conv3x3`] pads on an `h`×`w` input, so the
    /// 3×3 kernels (CUDA's) apply.
    pub fn is_keras_3x3(self, h: usize, w: usize) -> bool {
        self.kernel == 3
            && (self.stride == 1
                || (self.stride == 2 && h.is_multiple_of(2) && w.is_multiple_of(2)))
    }
}

/// A depthwise conv's window and padding, as its ops take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Keras' 3×3 padding (MobileNetV2's).
    Keras3x3(Conv3x3),
    /// A 3×3 or 5×5 window (the kernels' sizes) whose padding is the same along both axes.
    Same(SamePadding),
}

impl Window {
    fn kernel(self) -> usize {
        match self {
            Window::Keras3x3(_) => 3,
            Window::Same(same) => same.kernel,
        }
    }

    fn stride(self) -> usize {
        match self {
            Window::Keras3x3(conv) => conv.stride,
            Window::Same(same) => same.stride,
        }
    }

    /// Whether the CPU kernels take this window on an `h`×`w` input.
    fn has_cpu_kernel(self, h: usize, w: usize) -> bool {
        match self {
            Window::Keras3x3(_) => true,
            Window::Same(same) => same.has_cpu_kernel(h, w),
        }
    }
}

/// Sizes of a 3×3 (or, for depthwise convs, 5×5) conv over an NHWC input, and where its taps
/// land.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    kernel: usize,
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    ho: usize,
    wo: usize,
    stride: usize,
    pad: usize,
}

impl Geometry {
    fn new(conv: Conv3x3, (n, h, w, c): (usize, usize, usize, usize)) -> Self {
        Self {
            kernel: 3,
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

    fn of(window: Window, dims @ (n, h, w, c): (usize, usize, usize, usize)) -> Self {
        match window {
            Window::Keras3x3(conv) => Self::new(conv, dims),
            Window::Same(same) => Self {
                kernel: same.kernel,
                n,
                h,
                w,
                c,
                ho: same.out_len(h),
                wo: same.out_len(w),
                stride: same.stride,
                pad: same.pad_before(h),
            },
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

/// The values of a custom op's inputs, which must be contiguous f32; `op` and the input's name
/// say in an error which one was not.
fn inputs<'a, const N: usize>(
    op: &str,
    inputs: [(&str, &'a CpuStorage, &Layout); N],
) -> Result<[&'a [f32]; N]> {
    let mut values = [&[][..]; N];
    for (value, (what, storage, layout)) in values.iter_mut().zip(inputs) {
        let data = match storage {
            CpuStorage::F32(data) => data.as_slice(),
            other => bail!("{op} {what}: expected f32, got {:?}", other.dtype()),
        };
        *value = match layout.contiguous_offsets() {
            Some((start, end)) => &data[start..end],
            None => bail!("{op} {what}: input must be contiguous"),
        };
    }
    Ok(values)
}

fn dims4(layout: &Layout, what: &str) -> Result<(usize, usize, usize, usize)> {
    layout.shape().dims4().map_err(|_| {
        candle_core::Error::Msg(format!("{what}: expected NHWC, got {:?}", layout.shape()))
    })
}

/// The output buffer's address, shared by the tasks that write its disjoint tiles.
#[derive(Clone, Copy)]
pub(super) struct SharedMut(pub(super) *mut f32);
// SAFETY: it is only handed to tasks that each access their own tile of the buffer (the dense
// ops' callers), disjoint from every other task's, while the buffer outlives them.
unsafe impl Send for SharedMut {}
// SAFETY: as above: no element is accessed by two tasks.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the raw field).
    pub(super) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f` on a thread of rayon's pool (in place if this is one) when `device` is the CPU.
/// Each op forks its parallel loop from the thread that calls it; from a thread outside the
/// pool the loop is handed over and the caller sleeps until a worker wakes it, once per op,
/// about twenty times a forward pass. From a worker the loop starts at once and the other
/// workers steal its pieces (batch 1, 2 threads, Zen 5: 0.815 → 0.732 ms, medians of 3 × 200).
pub fn on_cpu_pool<R: Send>(device: &candle_core::Device, f: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

/// A new output of `len` values, built in parallel `row` values at a time: `init(i, piece)`
/// gets the `i`-th piece uninitialised and hands it back written, as the `&mut [f32]` that
/// [`filled`], [`repeated`] or [`written`] return. Skips the zero-fill of `vec![0.0; len]`,
/// a full extra pass over memory, without any `f32` slice covering uninitialised memory.
fn par_output(
    len: usize,
    row: usize,
    init: impl for<'r> Fn(usize, &'r mut [MaybeUninit<f32>]) -> &'r mut [f32] + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(row.max(1))
        .enumerate()
        .for_each(|(i, piece)| write_piece(piece, |piece| init(i, piece)));
    // SAFETY: every piece of the first `len` elements came back as a `&mut [f32]` over exactly
    // its own memory (asserted), and such a reference cannot exist before its memory is
    // initialised: safe code only gets one by writing the `MaybeUninit` values.
    unsafe { out.set_len(len) };
    out
}

/// [`par_output`] on this thread, in one piece.
fn output(
    len: usize,
    init: impl for<'r> FnOnce(&'r mut [MaybeUninit<f32>]) -> &'r mut [f32],
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    write_piece(&mut out.spare_capacity_mut()[..len], init);
    // SAFETY: as in `par_output`: the piece came back written, over exactly its own memory.
    unsafe { out.set_len(len) };
    out
}

/// Runs `init` on `piece`, asserting that it hands back the whole piece written.
fn write_piece(
    piece: &mut [MaybeUninit<f32>],
    init: impl for<'r> FnOnce(&'r mut [MaybeUninit<f32>]) -> &'r mut [f32],
) {
    let (start, piece_len) = (piece.as_ptr().cast::<f32>(), piece.len());
    let done = init(piece);
    assert!(
        std::ptr::eq(done.as_ptr(), start) && done.len() == piece_len,
        "output piece not handed back written"
    );
}

/// `out` with every element set to `value`.
#[inline(always)]
fn filled(out: &mut [MaybeUninit<f32>], value: f32) -> &mut [f32] {
    out.fill(MaybeUninit::new(value));
    // SAFETY: `fill` just initialised every element.
    unsafe { out.assume_init_mut() }
}

/// `out` filled with copies of `pattern`, whose length must divide `out`'s.
#[inline(always)]
fn repeated<'a>(out: &'a mut [MaybeUninit<f32>], pattern: &[f32]) -> &'a mut [f32] {
    for chunk in out.chunks_mut(pattern.len()) {
        chunk.write_copy_of_slice(pattern);
    }
    // SAFETY: every chunk was written whole: `write_copy_of_slice` panics on a length mismatch,
    // so a ragged last chunk never gets here.
    unsafe { out.assume_init_mut() }
}

/// `out` with its elements set from `values`, which must yield at least `out.len()` of them.
#[inline(always)]
fn written(out: &mut [MaybeUninit<f32>], values: impl Iterator<Item = f32>) -> &mut [f32] {
    let mut count = 0;
    for (o, v) in out.iter_mut().zip(values) {
        o.write(v);
        count += 1;
    }
    assert_eq!(count, out.len(), "too few values for the output");
    // SAFETY: the first `count` elements, which is all of them, were just written.
    unsafe { out.assume_init_mut() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_keras_on_even_inputs() {
        for (kernel, stride, len, out, before) in [
            (3, 1, 7, 7, 1),
            (3, 2, 128, 64, 0),
            (3, 2, 7, 4, 1),
            (5, 1, 8, 8, 2),
            (5, 2, 32, 16, 1),
            (5, 2, 9, 5, 2),
        ] {
            let same = SamePadding { kernel, stride };
            assert_eq!((same.out_len(len), same.pad_before(len)), (out, before));
        }
        let conv = Conv3x3 { stride: 2 };
        let same = SamePadding {
            kernel: 3,
            stride: 2,
        };
        assert_eq!(same.pad_before(128), conv.pad_before());
        assert!(same.is_keras_3x3(128, 64) && !same.is_keras_3x3(7, 8));
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
}
