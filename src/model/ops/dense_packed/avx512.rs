//! The AVX-512 microkernels of [`PackedDense`]: f32 FMAs, bf16 and int8 dot products on the
//! same 8 × 32 tiling and epilogue.

use super::int8::{row_quantization, Int8Weights};
use super::{Act, Packed, PackedDense, COLS, ROWS};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

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
    assert!(x.len() == rows * layer.k && cols.start.is_multiple_of(COLS) && cols.end <= layer.n);
    // SAFETY: the caller's guarantees.
    unsafe {
        match &layer.packed {
            Packed::F32(w) => tile_f32(x, w, layer, rows, cols, dst, act),
            Packed::Bf16(w) => tile_bf16(x, w, layer, rows, cols, dst, act),
            Packed::Int8(w) => tile_int8(x, w, layer, rows, cols, dst, act),
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
    let n = layer.n;
    let rows = out.len() / n;
    assert_eq!(out.len(), rows * n);
    // SAFETY: the caller's guarantees; `out` is rows × n and exclusively borrowed.
    unsafe { columns(x, layer, rows, 0..n, out.as_mut_ptr().cast(), act) };
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

/// # Safety
/// AVX-512 F/BW/VL and VNNI; x `rows × k`, `dst` `rows × n` writable, `w` the layer's int8
/// packing.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_int8(
    x: &[f32],
    w: &Int8Weights,
    layer: &PackedDense,
    rows: usize,
    columns: Range<usize>,
    dst: *mut f32,
    act: Act,
) {
    let (k, n, np) = (layer.k, layer.n, layer.n_padded);
    let quads = k.div_ceil(4);
    // The tile's activations as u8 quads, `quads` per row, with each row's scale and zero point.
    let mut a = vec![0u32; rows * quads];
    let mut scales = Vec::with_capacity(rows);
    for (src, dst) in x.chunks_exact(k).zip(a.chunks_exact_mut(quads)) {
        // SAFETY: `src` and the input scales are k values and `dst` k/4 rounded up, as the
        // function requires.
        scales.push(unsafe {
            match &w.input_scale {
                Some(input_scale) => to_u8_quads::<true>(src, input_scale, dst),
                None => to_u8_quads::<false>(src, &[], dst),
            }
        });
    }
    for (r0, group, c0, cols) in micro_tiles(rows, columns) {
        // SAFETY: rows r0..r0+group of `a` (row stride `quads`), of `scales` and of the output
        // (row stride n) exist; w holds `quads` × np values and c0 + 32 ≤ np; the kernel
        // writes only columns c0..c0+cols.
        unsafe {
            let (a, out) = (a.as_ptr().add(r0 * quads), dst.add(r0 * n + c0));
            let scales = &scales[r0..r0 + group];
            with_rows!(
                group,
                micro_int8(a, quads, scales, w, np, layer, c0, cols, out, n, act)
            )
        }
    }
}

/// `src` (k f32), times `input_scale` (k) where `SCALED` (calibrated layers), on u8 into `dst`
/// (k/4 rounded up quads; bytes past k are left as they are: their weights are 0); returns
/// the row's (scale, zero point).
///
/// # Safety
/// AVX-512 F/BW/VL; the lengths as above.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn to_u8_quads<const SCALED: bool>(
    src: &[f32],
    input_scale: &[f32],
    dst: &mut [u32],
) -> (f32, i32) {
    let k = src.len();
    assert!(dst.len() == k.div_ceil(4) && (!SCALED || input_scale.len() == k));
    // SAFETY (every call): the mask covers only values from i on, inside the slices read.
    let load = |i: usize, mask| unsafe {
        match SCALED {
            true => scaled_load(src, input_scale, i, mask),
            false => _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i)),
        }
    };
    // Masked-off lanes load as 0, which the range holds anyway. Four running minima and
    // maxima, not one: a single pair waits on its own latency every 16 values (perf: a tenth
    // of the int8 tile's time on the 960-wide projections).
    let (mut lo, mut hi) = ([_mm512_setzero_ps(); 4], [_mm512_setzero_ps(); 4]);
    let mut i = 0;
    while i + 64 <= k {
        for (j, (lo, hi)) in lo.iter_mut().zip(&mut hi).enumerate() {
            let v = load(i + 16 * j, mask16(16));
            *lo = _mm512_min_ps(*lo, v);
            *hi = _mm512_max_ps(*hi, v);
        }
        i += 64;
    }
    while i < k {
        let v = load(i, mask16((k - i).min(16)));
        lo[0] = _mm512_min_ps(lo[0], v);
        hi[0] = _mm512_max_ps(hi[0], v);
        i += 16;
    }
    let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
    let hi = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
    let (scale, inv, zero) = row_quantization(_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    let (inv, zero_point) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zero));
    let (floor, ceiling) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
    let bytes = dst.as_mut_ptr().cast::<u8>();
    let mut i = 0;
    while i < k {
        let mask = mask16((k - i).min(16));
        // SAFETY: the mask covers only bytes i.. of dst, which holds at least k bytes.
        // `cvtps` rounds to nearest even (the default mode).
        unsafe {
            let v = load(i, mask);
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), zero_point);
            let q = _mm512_min_epi32(_mm512_max_epi32(q, floor), ceiling);
            _mm_mask_storeu_epi8(bytes.add(i).cast(), mask, _mm512_cvtepi32_epi8(q));
        }
        i += 16;
    }
    (scale, zero)
}

/// Lanes `mask` of `src[i..]` times those of `scale[i..]` (0 where masked off).
///
/// # Safety
/// AVX-512 F; the masked lanes from i on lie inside both slices.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scaled_load(src: &[f32], scale: &[f32], i: usize, mask: __mmask16) -> __m512 {
    // SAFETY: the caller's guarantee.
    unsafe {
        _mm512_mul_ps(
            _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i)),
            _mm512_maskz_loadu_ps(mask, scale.as_ptr().add(i)),
        )
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
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(p * np + 16).cast()));
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

/// Output rows `R` × columns c0..c0+cols (≤ 32) in int8: `vpdpbusd` on quads of input
/// features, the i32 sums less each row's zero point times the column's weight sum, scaled by
/// the row's and the column's scales.
///
/// # Safety
/// AVX-512 F/BW and VNNI; `a` holds R rows of `quads` quads, `scales` R rows' (scale, zero
/// point), `w`'s quads `quads` rows of np ≥ c0 + 32 packed columns; `out` R rows (stride
/// `stride`) with `cols` writable values each, c0 + cols ≤ the layer's n.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn micro_int8<const R: usize>(
    a: *const u32,
    quads: usize,
    scales: &[(f32, i32)],
    w: &Int8Weights,
    np: usize,
    layer: &PackedDense,
    c0: usize,
    cols: usize,
    out: *mut f32,
    stride: usize,
    act: Act,
) {
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    // SAFETY: c0 + 32 ≤ np, inside the first row of quads.
    let wq = unsafe { w.quads.as_ptr().add(c0) };
    for p in 0..quads {
        // SAFETY: quad p of the 32 packed columns and of each of the R rows lies inside the
        // buffers the caller vouches for.
        unsafe {
            let w0 = _mm512_loadu_si512(wq.add(p * np).cast());
            let w1 = _mm512_loadu_si512(wq.add(p * np + 16).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_epi32(*a.add(r * quads + p) as i32);
                acc[0] = _mm512_dpbusd_epi32(acc[0], v, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], v, w1);
            }
        }
    }
    // SAFETY: the padded scale and sum rows hold np ≥ c0 + 32 values.
    let (sum, scale) = unsafe {
        (
            [0, 16].map(|h| _mm512_loadu_si512(w.sum.as_ptr().add(c0 + h).cast())),
            [0, 16].map(|h| _mm512_loadu_ps(w.scale.as_ptr().add(c0 + h))),
        )
    };
    let mut sums = [[_mm512_setzero_ps(); 2]; R];
    for ((sums, acc), &(row_scale, zero)) in sums.iter_mut().zip(&acc).zip(scales) {
        let (row_scale, zero) = (_mm512_set1_ps(row_scale), _mm512_set1_epi32(zero));
        for h in 0..2 {
            let exact = _mm512_sub_epi32(acc[h], _mm512_mullo_epi32(zero, sum[h]));
            sums[h] = _mm512_mul_ps(
                _mm512_cvtepi32_ps(exact),
                _mm512_mul_ps(scale[h], row_scale),
            );
        }
    }
    // SAFETY: the caller's guarantees for `out`, c0 and cols.
    unsafe { store(&sums, layer, c0, cols, out, stride, act) }
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
