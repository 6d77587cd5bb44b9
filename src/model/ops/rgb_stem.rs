//! A dense 3×3 conv, stride 2, zero padding 1 on every side, straight from an 8-bit RGB frame,
//! which also stands for the frame's zero padding to a larger size: no float copy of the
//! frame, no padded copy, no im2col patches. For inference (no backward).

use super::{par_output, Act};
use candle_core::{bail, Result, Tensor};
use std::mem::MaybeUninit;

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
    assert_eq!(out.len() % C, 0, "a row of whole pixels");
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
            o.write(act.apply(a));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{randn, rel_err};
    use candle_core::Device;

    #[test]
    fn rgb_stem_matches_candle_conv2d_on_the_zero_extended_frame() {
        let dev = Device::Cpu;
        for ((h, w), (out_h, out_w), order, cout) in [
            ((9, 7), (5, 4), ChannelOrder::Bgr, 16),
            ((4, 6), (4, 5), ChannelOrder::Rgb, 32),
            ((1, 1), (1, 1), ChannelOrder::Bgr, 16),
        ] {
            let pixels: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 256) as u8).collect();
            let (weight, bias) = (
                randn((cout, 27), 2.0, &dev).unwrap(),
                randn(cout, 2.0, &dev).unwrap(),
            );
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
        assert!(RgbStem::new(
            &randn((8, 27), 2.0, &dev).unwrap(),
            &randn(8, 2.0, &dev).unwrap(),
            ChannelOrder::Rgb,
            Act::Relu
        )
        .is_err());
    }
}
