//! The depthwise conv's forward row kernel: one output row at a time, 16 channels per pass
//! with their sums in registers.

use super::super::{Act, Geometry};
use std::mem::MaybeUninit;

simd_dispatch!(pub(super) dw_forward_row, fn<'a>(x: &[f32], wt: &[f32], bias: &[f32], g: &Geometry, row: usize, out: &'a mut [MaybeUninit<f32>], act: Act) -> &'a mut [f32] {
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

simd_dispatch!(pub(in crate::model::ops) dw_forward_row_of, fn<'a>(rows: &[Option<&[f32]>], wt: &[f32], bias: &[f32], g: &Geometry, out: &'a mut [MaybeUninit<f32>], act: Act) -> &'a mut [f32] {
    match rows.len() {
        3 => forward_row_of::<3>(rows.try_into().expect("3 rows"), wt, bias, g, out, act),
        _ => forward_row_of::<5>(rows.try_into().expect("3 or 5 input rows"), wt, bias, g, out, act),
    }
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
    // Filled by index loops, not `array::from_fn`, which the compiler left out of line with a
    // `memcpy` per tap: 14 % of the f32 forward pass, on the deep layers' short rows.
    let mut inputs: [&[f32]; K] = [fallback; K];
    let mut taps = [[[0.0; L]; K]; K];
    for kh in 0..K {
        if let Some(row) = rows[kh] {
            inputs[kh] = row;
            for kw in 0..K {
                taps[kh][kw] = lanes(&wt[(kh * K + kw) * c + c0..]);
            }
        }
    }
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
        let mut total = sums[0];
        for sum in &sums[1..] {
            for i in 0..L {
                total[i] += sum[i];
            }
        }
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
