//! Inference-only CPU kernels (no backward) for the face detector, NHWC like `ops`:
//! - [`max_pool2x2`] and [`upsample2_add`] (nearest ×2 upsampling fused with the add of the
//!   top-down path), each with a candle reference;
//! - [`PointwiseDepthwise`]: a 1×1 conv then a depthwise 3×3 (stride 1, zero padding 1), fused
//!   per row band so the 1×1 conv's output stays in cache;
//! - [`RgbStem`]: a dense 3×3 stride-2 conv (zero padding 1 on every side) straight from an
//!   8-bit RGB frame, which also stands for the frame's zero padding to a larger size.
//!
//! Until `ops` is a folder (another branch splits it), this file carries its own copies of the
//! few helpers the split's kernels share (below the last line), and joins that folder then.

use super::ops::Act;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Runs `body` compiled for AVX2+FMA when the CPU has them (as `ops`' `simd_dispatch`).
macro_rules! simd_dispatch {
    ($name:ident, fn $(<$lt:lifetime>)? ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        fn $name $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2 $(<$lt>)? ($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
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

// ---------------------------------------------------------------- max-pool and upsampling

simd_dispatch!(max_pool_row, fn<'a>(x: &[f32], dims: (usize, usize, usize), row: usize, out: &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] {
    let (h, w, c) = dims;
    let (n, oy) = (row / (h / 2), row % (h / 2));
    let top = &x[(n * h + 2 * oy) * w * c..][..w * c];
    let bottom = &x[(n * h + 2 * oy + 1) * w * c..][..w * c];
    let out = filled(out, f32::NEG_INFINITY);
    for (ox, o) in out.chunks_exact_mut(c).enumerate() {
        for source in [top, bottom] {
            for v in source[2 * ox * c..][..2 * c].chunks_exact(c) {
                for (o, &v) in o.iter_mut().zip(v) {
                    *o = o.max(v);
                }
            }
        }
    }
    out
});

/// 2×2 max-pool, stride 2: `[N,H,W,C]` with even H and W → `[N,H/2,W/2,C]`.
struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "max-pool2x2"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = inputs(self.name(), [("x", xs, xl)])?;
        let (n, h, w, c) = dims4(xl, self.name())?;
        if h % 2 != 0 || w % 2 != 0 {
            bail!("max-pool2x2: {h}×{w} is not even");
        }
        let out = par_output(n * h / 2 * w / 2 * c, w / 2 * c, |row, o| {
            max_pool_row(x, (h, w, c), row, o)
        });
        Ok((CpuStorage::F32(out), Shape::from((n, h / 2, w / 2, c))))
    }
}

/// 2×2 max-pool with stride 2 on NHWC (even sides). Inference only (no backward).
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1_no_bwd(&MaxPool2x2)
    } else {
        max_pool2x2_reference(x)
    }
}

/// The same with candle's max_pool2d (NCHW); the GPU path and test oracle.
pub fn max_pool2x2_reference(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 1, 2))?
        .max_pool2d(2)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

simd_dispatch!(upsample_add_row, fn<'a>(coarse: &[f32], fine: &[f32], dims: (usize, usize, usize), row: usize, out: &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] {
    let (h, w, c) = dims;
    // `row` is a row of the fine (output) map, which is 2h × 2w.
    let (n, y) = (row / (2 * h), row % (2 * h));
    let source = &coarse[(n * h + y / 2) * w * c..][..w * c];
    let out = copied(out, &fine[row * 2 * w * c..][..2 * w * c]);
    for (pair, v) in out.chunks_exact_mut(2 * c).zip(source.chunks_exact(c)) {
        for o in pair.chunks_exact_mut(c) {
            for (o, &v) in o.iter_mut().zip(v) {
                *o += v;
            }
        }
    }
    out
});

/// `up2(coarse) + fine`: coarse `[N,H,W,C]`, fine `[N,2H,2W,C]`.
struct Upsample2Add;

impl CustomOp2 for Upsample2Add {
    fn name(&self) -> &'static str {
        "upsample2-add"
    }

    fn cpu_fwd(
        &self,
        cs: &CpuStorage,
        cl: &Layout,
        fs: &CpuStorage,
        fl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [coarse, fine] = inputs(self.name(), [("coarse", cs, cl), ("fine", fs, fl)])?;
        let (n, h, w, c) = dims4(cl, self.name())?;
        if dims4(fl, self.name())? != (n, 2 * h, 2 * w, c) {
            bail!(
                "upsample2-add: fine {:?} is not twice coarse {:?}",
                fl.shape(),
                cl.shape()
            );
        }
        let out = par_output(n * 4 * h * w * c, 2 * w * c, |row, o| {
            upsample_add_row(coarse, fine, (h, w, c), row, o)
        });
        Ok((CpuStorage::F32(out), fl.shape().clone()))
    }
}

/// `up2(coarse) + fine`: nearest-neighbour ×2 upsampling of `coarse` `[N,H,W,C]` (each value
/// copied into a 2×2 block), added to `fine` `[N,2H,2W,C]`. Inference only (no backward).
pub fn upsample2_add(coarse: &Tensor, fine: &Tensor) -> Result<Tensor> {
    if coarse.device().is_cpu() {
        coarse
            .contiguous()?
            .apply_op2_no_bwd(&fine.contiguous()?, &Upsample2Add)
    } else {
        upsample2_add_reference(coarse, fine)
    }
}

/// The same with candle's upsample_nearest2d (NCHW); the GPU path and test oracle.
pub fn upsample2_add_reference(coarse: &Tensor, fine: &Tensor) -> Result<Tensor> {
    let (_, h, w, _) = coarse.dims4()?;
    coarse
        .permute((0, 3, 1, 2))?
        .upsample_nearest2d(2 * h, 2 * w)?
        .permute((0, 2, 3, 1))?
        + fine
}

// ---------------------------------------------------------------- 1×1 then depthwise 3×3

/// `act(depthwise3x3(x · pwᵀ + pw_b) + dw_b)` with the parameters held by the op, in the
/// layouts of `ops::dense` and `ops::depthwise3x3`: 1×1 weight `[Cout, Cin]` and bias
/// `[Cout]`, depthwise `[3, 3, Cout]` and bias `[Cout]`.
#[derive(Debug, Clone)]
pub struct PointwiseDepthwise {
    cin: usize,
    cout: usize,
    pw_weight: Vec<f32>,
    pw_bias: Vec<f32>,
    dw_weight: Vec<f32>,
    dw_bias: Vec<f32>,
    act: Act,
}

impl PointwiseDepthwise {
    pub fn new(
        pw_weight: &Tensor,
        pw_bias: &Tensor,
        dw_weight: &Tensor,
        dw_bias: &Tensor,
        act: Act,
    ) -> Result<Self> {
        let (cout, cin) = pw_weight.dims2()?;
        let flat = |t: &Tensor, len: usize, what: &str| -> Result<Vec<f32>> {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            if v.len() != len {
                bail!(
                    "pointwise-depthwise {what}: {:?} for {cin} → {cout}",
                    t.shape()
                );
            }
            Ok(v)
        };
        Ok(Self {
            cin,
            cout,
            pw_weight: flat(pw_weight, cout * cin, "1×1 weight")?,
            pw_bias: flat(pw_bias, cout, "1×1 bias")?,
            dw_weight: flat(dw_weight, 9 * cout, "depthwise weight")?,
            dw_bias: flat(dw_bias, cout, "depthwise bias")?,
            act,
        })
    }

    /// `act(depthwise3x3(x · pwᵀ + pw_b) + dw_b)`, x `[N,H,W,Cin]` → `[N,H,W,Cout]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    /// The 1×1 conv of input row `x_row` (`W × Cin`) into `out` (`W × Cout`), bias added.
    fn pointwise_row(&self, x_row: &[f32], out: &mut [f32]) {
        let (w, cin, cout) = (x_row.len() / self.cin, self.cin, self.cout);
        assert!(x_row.len() == w * cin && out.len() == w * cout);
        // SAFETY: `out` is w × cout (row stride cout), `x_row` w × cin (row stride cin) and the
        // weight cout × cin read as its cin × cout transpose (row stride 1, column stride cin),
        // all checked above or at construction; nothing else aliases `out`.
        unsafe {
            gemm::gemm(
                w,
                cout,
                cin,
                out.as_mut_ptr(),
                1,
                cout as isize,
                false,
                x_row.as_ptr(),
                1,
                cin as isize,
                self.pw_weight.as_ptr(),
                cin as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        add_bias(out, &self.pw_bias);
    }
}

simd_dispatch!(add_bias, fn(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
});

/// Adds to `acc` (`C` values) the nine taps of output pixel `x` of a depthwise 3×3 over the
/// three 1×1-conv rows above, at and below the output row (`None` outside the image: zero
/// padding), each `w × c`. The taps inside the row are one contiguous span of pixels and of
/// weights, so the loop has no per-tap bounds tests.
#[inline(always)]
fn add_taps<const C: usize>(
    acc: &mut [f32],
    rows: [Option<&[f32]>; 3],
    taps: &[f32],
    x: usize,
    w: usize,
) {
    let c = acc.len();
    let (first, last) = (x.saturating_sub(1), (x + 1).min(w - 1));
    let tap0 = first + 1 - x;
    for (ky, row) in rows.iter().enumerate() {
        let Some(row) = row else { continue };
        let v = &row[first * c..(last + 1) * c];
        let t = &taps[(ky * 3 + tap0) * c..][..v.len()];
        for (v, t) in v.chunks_exact(c).zip(t.chunks_exact(c)) {
            fma_rows::<C>(acc, v, t);
        }
    }
}

/// `acc[i] += v[i] * t[i]`; with `C` > 0 the three are `C` long, which lets the compiler keep
/// `acc` in registers.
#[inline(always)]
fn fma_rows<const C: usize>(acc: &mut [f32], v: &[f32], t: &[f32]) {
    if C > 0 {
        let acc: &mut [f32; C] = acc.try_into().expect("C values");
        let v: &[f32; C] = v.try_into().expect("C values");
        let t: &[f32; C] = t.try_into().expect("C values");
        for i in 0..C {
            acc[i] = v[i].mul_add(t[i], acc[i]);
        }
    } else {
        for ((a, &v), &t) in acc.iter_mut().zip(v).zip(t) {
            *a = v.mul_add(t, *a);
        }
    }
}

/// One output row of the depthwise 3×3 into `out` (`W × C`): bias, taps, activation. With `C`
/// known at compile time a pixel's accumulator stays in registers across its nine taps.
#[inline(always)]
fn depthwise_row<'a, const C: usize>(
    rows: [Option<&[f32]>; 3],
    taps: &[f32],
    bias: &[f32],
    out: &'a mut [MaybeUninit<f32>],
    act: Act,
) -> &'a mut [f32] {
    let w = out.len() / C;
    let bias: [f32; C] = bias.try_into().expect("C biases");
    for (x, o) in out.chunks_exact_mut(C).enumerate() {
        let mut acc = bias;
        add_taps::<C>(&mut acc, rows, taps, x, w);
        for (o, a) in o.iter_mut().zip(acc) {
            o.write(activate(act, a));
        }
    }
    // SAFETY: `out.len()` is a multiple of C (w pixels), so the chunks cover all of it and
    // each was written above.
    unsafe { out.assume_init_mut() }
}

simd_dispatch!(depthwise_row_any, fn<'a>(rows: [Option<&[f32]>; 3], taps: &[f32], bias: &[f32], out: &'a mut [MaybeUninit<f32>], act: Act) -> &'a mut [f32] {
    match bias.len() {
        16 => depthwise_row::<16>(rows, taps, bias, out, act),
        32 => depthwise_row::<32>(rows, taps, bias, out, act),
        64 => depthwise_row::<64>(rows, taps, bias, out, act),
        c => {
            let w = out.len() / c;
            let out = repeated(out, bias);
            for (x, o) in out.chunks_exact_mut(c).enumerate() {
                add_taps::<0>(o, rows, taps, x, w);
                for v in o.iter_mut() {
                    *v = activate(act, *v);
                }
            }
            out
        }
    }
});

impl CustomOp1 for PointwiseDepthwise {
    fn name(&self) -> &'static str {
        "pointwise-depthwise3x3"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = inputs(self.name(), [("x", xs, xl)])?;
        let (n, h, w, cin) = dims4(xl, self.name())?;
        if cin != self.cin {
            bail!(
                "pointwise-depthwise: {cin} input channels, expected {}",
                self.cin
            );
        }
        let cout = self.cout;
        if n * h * w * cout == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((n, h, w, cout))));
        }
        // Bands of output rows, a few per thread; each keeps the three 1×1-conv rows its
        // depthwise row reads in a ring, so they are computed once per band and stay in cache.
        let rows = n * h;
        let band = rows
            .div_ceil(rayon::current_num_threads().max(1) * 2)
            .max(4);
        let out = par_output(rows * w * cout, band * w * cout, |i, piece| {
            let mut ring = vec![0f32; 3 * w * cout];
            let mut held = [usize::MAX; 3];
            for (r, out_row) in piece.chunks_exact_mut(w * cout).enumerate() {
                let row = i * band + r;
                let (image, y) = (row / h, row % h);
                for source in y.saturating_sub(1)..(y + 2).min(h) {
                    let global = image * h + source;
                    let slot = global % 3;
                    if held[slot] != global {
                        let x_row = &x[global * w * cin..][..w * cin];
                        self.pointwise_row(x_row, &mut ring[slot * w * cout..][..w * cout]);
                        held[slot] = global;
                    }
                }
                let at = |dy: usize| {
                    let source = (y + dy).checked_sub(1).filter(|&s| s < h)?;
                    let slot = (image * h + source) % 3;
                    Some(&ring[slot * w * cout..][..w * cout])
                };
                depthwise_row_any(
                    [at(0), at(1), at(2)],
                    &self.dw_weight,
                    &self.dw_bias,
                    out_row,
                    self.act,
                );
            }
            // SAFETY: the piece is a whole number of output rows (pieces are `band` rows, the
            // last one fewer), and `depthwise_row_any` wrote every element of each.
            unsafe { piece.assume_init_mut() }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, h, w, cout))))
    }
}

// ---------------------------------------------------------------- the stem on 8-bit RGB

/// Output channel counts [`RgbStem`] has kernels for.
const STEM_CHANNELS: [usize; 2] = [16, 32];

/// The order of a stem weight's three input channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    /// Blue, green, red (OpenCV's, and libfacedetection's).
    Bgr,
}

/// A dense 3×3 conv, stride 2, zero padding 1 on every side, straight from 8-bit RGB pixels:
/// weight `[Cout, 3·3·3]` in (kh, kw, channel) order, bias `[Cout]`, then `act`. Inference
/// only.
#[derive(Debug, Clone)]
pub struct RgbStem {
    /// `[27, Cout]`: per (kh, kw, channel) the weights of every output channel.
    weight: Vec<f32>,
    bias: Vec<f32>,
    act: Act,
}

impl RgbStem {
    /// `order`: the weight's input channel order; the frame is always RGB.
    pub fn new(weight: &Tensor, bias: &Tensor, order: ChannelOrder, act: Act) -> Result<Self> {
        let (cout, k) = weight.dims2()?;
        if k != 27 || !STEM_CHANNELS.contains(&cout) {
            bail!(
                "rgb stem: weight {:?} is not [Cout, 27] with Cout in {STEM_CHANNELS:?}",
                weight.shape()
            );
        }
        let w = weight.to_vec2::<f32>()?;
        let mut t = vec![0f32; 27 * cout];
        for (o, row) in w.iter().enumerate() {
            for tap in 0..9 {
                for ch in 0..3 {
                    let from = match order {
                        ChannelOrder::Rgb => ch,
                        ChannelOrder::Bgr => 2 - ch,
                    };
                    t[(tap * 3 + ch) * cout + o] = row[tap * 3 + from];
                }
            }
        }
        let bias = bias.to_vec1::<f32>()?;
        if bias.len() != cout {
            bail!("rgb stem: bias {} for {cout} channels", bias.len());
        }
        Ok(Self {
            weight: t,
            bias,
            act,
        })
    }

    /// `pixels` (`h × w` RGB) seen as zero-extended to `2·out_h × 2·out_w` → `[1, out_h,
    /// out_w, Cout]`.
    pub fn forward(
        &self,
        pixels: &[u8],
        (h, w): (usize, usize),
        (out_h, out_w): (usize, usize),
    ) -> Result<Tensor> {
        if pixels.len() != h * w * 3 {
            bail!("rgb stem: {} bytes for {w}×{h} RGB", pixels.len());
        }
        let cout = self.bias.len();
        let out = par_output(out_h * out_w * cout, out_w * cout, |oy, row| {
            stem_row(pixels, (h, w), oy, &self.weight, &self.bias, row, self.act)
        });
        Tensor::from_vec(out, (1, out_h, out_w, cout), &candle_core::Device::Cpu)
    }
}

/// Adds to `acc` the 27 taps of output pixel `ox` over the three input rows of its output row
/// (`None` outside the image: zero padding), each `w × 3` bytes. Inside the image the three
/// pixels of a row are 9 contiguous bytes matching 9 contiguous weight rows.
#[inline(always)]
fn stem_pixel<const C: usize>(
    rows: [Option<&[u8]>; 3],
    w: usize,
    ox: usize,
    weight: &[f32],
    acc: &mut [f32; C],
) {
    let first = (2 * ox).saturating_sub(1);
    let last = (2 * ox + 1).min(w.saturating_sub(1));
    if first > last || first >= w {
        return;
    }
    let tap0 = first + 1 - 2 * ox;
    for (ky, row) in rows.iter().enumerate() {
        let Some(row) = row else { continue };
        let px = &row[first * 3..(last + 1) * 3];
        let t = &weight[(ky * 9 + tap0 * 3) * C..][..px.len() * C];
        for (&v, t) in px.iter().zip(t.chunks_exact(C)) {
            let (v, t): (f32, &[f32; C]) = (f32::from(v), t.try_into().expect("C weights"));
            for i in 0..C {
                acc[i] = v.mul_add(t[i], acc[i]);
            }
        }
    }
}

#[inline(always)]
fn stem_row_c<'a, const C: usize>(
    pixels: &[u8],
    (h, w): (usize, usize),
    oy: usize,
    weight: &[f32],
    bias: &[f32],
    out: &'a mut [MaybeUninit<f32>],
    act: Act,
) -> &'a mut [f32] {
    let bias: [f32; C] = bias.try_into().expect("C biases");
    let row = |ky: usize| {
        let iy = (2 * oy + ky).checked_sub(1).filter(|&y| y < h)?;
        Some(&pixels[iy * w * 3..][..w * 3])
    };
    let rows = [row(0), row(1), row(2)];
    for (ox, o) in out.chunks_exact_mut(C).enumerate() {
        let mut acc = bias;
        stem_pixel(rows, w, ox, weight, &mut acc);
        for (o, a) in o.iter_mut().zip(acc) {
            o.write(activate(act, a));
        }
    }
    // SAFETY: `out.len()` is a multiple of C, so the chunks cover all of it, each written.
    unsafe { out.assume_init_mut() }
}

simd_dispatch!(stem_row, fn<'a>(pixels: &[u8], hw: (usize, usize), oy: usize, weight: &[f32], bias: &[f32], out: &'a mut [MaybeUninit<f32>], act: Act) -> &'a mut [f32] {
    match bias.len() {
        16 => stem_row_c::<16>(pixels, hw, oy, weight, bias, out, act),
        32 => stem_row_c::<32>(pixels, hw, oy, weight, bias, out, act),
        c => unreachable!("RgbStem::new accepts only {STEM_CHANNELS:?} channels, not {c}"),
    }
});

// ---------------------------------------------------------------- local copies of helpers

/// `act` applied to `v` (what `Act::apply`, private to `ops`, does).
#[inline(always)]
fn activate(act: Act, v: f32) -> f32 {
    match act {
        Act::Identity => v,
        Act::Relu => v.max(0.0),
        Act::Relu6 => v.clamp(0.0, 6.0),
    }
}

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

fn par_output(
    len: usize,
    row: usize,
    init: impl for<'r> Fn(usize, &'r mut [MaybeUninit<f32>]) -> &'r mut [f32] + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(row.max(1))
        .enumerate()
        .for_each(|(i, piece)| {
            let (start, piece_len) = (piece.as_ptr().cast::<f32>(), piece.len());
            let done = init(i, piece);
            assert!(std::ptr::eq(done.as_ptr(), start) && done.len() == piece_len);
        });
    // SAFETY: as in the split.
    unsafe { out.set_len(len) };
    out
}

#[inline(always)]
fn filled(out: &mut [MaybeUninit<f32>], value: f32) -> &mut [f32] {
    out.fill(MaybeUninit::new(value));
    // SAFETY: `fill` just initialised every element.
    unsafe { out.assume_init_mut() }
}

#[inline(always)]
fn repeated<'a>(out: &'a mut [MaybeUninit<f32>], pattern: &[f32]) -> &'a mut [f32] {
    for chunk in out.chunks_mut(pattern.len()) {
        chunk.write_copy_of_slice(pattern);
    }
    // SAFETY: every chunk was written whole.
    unsafe { out.assume_init_mut() }
}

#[inline(always)]
fn copied<'a>(out: &'a mut [MaybeUninit<f32>], values: &[f32]) -> &'a mut [f32] {
    out.write_copy_of_slice(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::{dense, depthwise3x3, Conv3x3};
    use candle_core::Device;

    fn randn(shape: impl Into<Shape>) -> Tensor {
        Tensor::randn(0f32, 2.0, shape, &Device::Cpu).unwrap()
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let s = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        d / s.max(1e-6)
    }

    #[test]
    fn max_pool_matches_candle() {
        for shape in [(2, 6, 8, 5), (1, 2, 2, 16), (1, 10, 4, 64)] {
            let x = randn(shape);
            let ours = max_pool2x2(&x).unwrap();
            let reference = max_pool2x2_reference(&x).unwrap();
            assert_eq!(ours.dims(), reference.dims());
            assert!(rel_err(&ours, &reference) < 1e-6);
        }
    }

    #[test]
    fn upsample_add_matches_candle() {
        for (n, h, w, c) in [(2, 3, 4, 5), (1, 1, 1, 64), (1, 5, 2, 16)] {
            let coarse = randn((n, h, w, c));
            let fine = randn((n, 2 * h, 2 * w, c));
            let ours = upsample2_add(&coarse, &fine).unwrap();
            let reference = upsample2_add_reference(&coarse, &fine).unwrap();
            assert!(rel_err(&ours, &reference) < 1e-6);
        }
    }

    #[test]
    fn rgb_stem_matches_candle_conv2d_on_the_zero_extended_frame() {
        let dev = Device::Cpu;
        for ((h, w), (out_h, out_w), order, cout) in [
            ((9, 7), (5, 4), ChannelOrder::Bgr, 16),
            ((4, 6), (4, 5), ChannelOrder::Rgb, 32),
            ((1, 1), (1, 1), ChannelOrder::Bgr, 16),
        ] {
            let pixels: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 256) as u8).collect();
            let (weight, bias) = (randn((cout, 27)), randn(cout));
            let stem = RgbStem::new(&weight, &bias, order, Act::Relu).unwrap();
            let ours = stem.forward(&pixels, (h, w), (out_h, out_w)).unwrap();
            // The reference: the frame in the weight's channel order, zero-extended, NCHW.
            let (ph, pw) = (2 * out_h, 2 * out_w);
            let mut planes = vec![0f32; 3 * ph * pw];
            for (i, p) in pixels.chunks_exact(3).enumerate() {
                let (y, x) = (i / w, i % w);
                for ch in 0..3 {
                    let from = if order == ChannelOrder::Bgr {
                        2 - ch
                    } else {
                        ch
                    };
                    planes[(ch * ph + y) * pw + x] = f32::from(p[from]);
                }
            }
            let x = Tensor::from_vec(planes, (1, 3, ph, pw), &dev).unwrap();
            let kernel = weight
                .reshape((cout, 3, 3, 3))
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap();
            let reference = x
                .conv2d(&kernel.contiguous().unwrap(), 1, 2, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let e = rel_err(&ours, &reference);
            assert!(e < 1e-4, "{h}×{w} → {out_h}×{out_w}: {e}");
        }
        assert!(RgbStem::new(&randn((8, 27)), &randn(8), ChannelOrder::Rgb, Act::Relu).is_err());
    }

    #[test]
    fn pointwise_depthwise_matches_the_two_ops() {
        for (n, h, w, cin, cout, act) in [
            (1, 9, 7, 16, 16, Act::Relu),
            (2, 5, 3, 16, 32, Act::Identity),
            (1, 1, 1, 64, 64, Act::Relu),
            (1, 13, 6, 64, 16, Act::Identity),
            (2, 4, 5, 8, 70, Act::Relu),
            (1, 3, 2, 5, 3, Act::Relu),
        ] {
            let x = randn((n, h, w, cin));
            let (pw, pb) = (randn((cout, cin)), randn(cout));
            let (dw, db) = (randn((3, 3, cout)), randn(cout));
            let fused = PointwiseDepthwise::new(&pw, &pb, &dw, &db, act).unwrap();
            let ours = fused.forward(&x).unwrap();
            let y = dense(&x, &pw, &pb, Act::Identity).unwrap();
            let reference = depthwise3x3(&y, &dw, &db, Conv3x3 { stride: 1 }, act).unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let e = rel_err(&ours, &reference);
            assert!(e < 1e-4, "{n} {h} {w} {cin} {cout}: {e}");
        }
    }
}
