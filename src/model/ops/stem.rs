//! The stem: a dense 3×3 conv on the input image, as im2col patches into one matmul.

use super::{dense, dims4, filled, inputs, par_output, Act, Conv3x3, Geometry};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

simd_dispatch!(patches_row, fn<'a>(x: &[f32], g: &Geometry, row: usize, out: &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] {
    let out = filled(out, 0.0);
    // Inputs have 1 or 3 channels: a copy of a length known here stays in registers, where
    // copy_from_slice of g.c values was a memmove call per tap (3 % of an int8 forward pass).
    match g.c {
        1 => taps(g, row, |to, from| out[to] = x[from]),
        3 => taps(g, row, |to, from| out[to..to + 3].copy_from_slice(&x[from..from + 3])),
        c => taps(g, row, |to, from| out[to..to + c].copy_from_slice(&x[from..from + c])),
    }
    out
});

/// Calls `copy(to, from)` for each tap of output row `row` that falls inside the image: where
/// its g.c values go in the row's patches, (kh, kw, c) order, and where they start in x.
#[inline(always)]
fn taps(g: &Geometry, row: usize, mut copy: impl FnMut(usize, usize)) {
    let (n, oh) = (row / g.ho, row % g.ho);
    for ow in 0..g.wo {
        for kh in 0..3 {
            let Some(ih) = g.input_at(oh, kh, g.h) else {
                continue;
            };
            for kw in 0..3 {
                if let Some(iw) = g.input_at(ow, kw, g.w) {
                    copy(
                        (ow * 9 + kh * 3 + kw) * g.c,
                        ((n * g.h + ih) * g.w + iw) * g.c,
                    );
                }
            }
        }
    }
}

/// im2col: `[N,H,W,C]` → `[N,Ho,Wo,9·C]` patches in (kh, kw, c) order.
struct Patches3x3(Conv3x3);

impl CustomOp1 for Patches3x3 {
    fn name(&self) -> &'static str {
        "patches3x3"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = inputs(self.name(), [("x", xs, xl)])?;
        let g = Geometry::new(self.0, dims4(xl, self.name())?);
        let out = par_output(g.n * g.ho * g.wo * 9 * g.c, g.wo * 9 * g.c, |row, o| {
            patches_row(x, &g, row, o)
        });
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
        return super::conv3x3_input_reference(x, weight, bias, conv, act);
    }
    let patches = x.contiguous()?.apply_op1_no_bwd(&Patches3x3(conv))?;
    dense(&patches, weight, bias, act)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::{conv3x3_input_reference, testing::randn, testing::rel_err};
    use candle_core::Device;

    #[test]
    fn input_conv_matches_candle_conv2d() {
        let dev = Device::Cpu;
        // Grey and colour inputs have their own copies; 2 channels take the general one.
        for (c, stride, out_side) in [
            (3, 2, (5, 4)),
            (1, 2, (5, 4)),
            (1, 1, (9, 8)),
            (2, 1, (9, 8)),
        ] {
            let conv = Conv3x3 { stride };
            let x = randn((2, 9, 8, c), 1.0, &dev).unwrap();
            let w = randn((4, 9 * c), 1.0, &dev).unwrap();
            let b = randn(4, 1.0, &dev).unwrap();
            let ours = conv3x3_input(&x, &w, &b, conv, Act::Relu6).unwrap();
            let reference = conv3x3_input_reference(&x, &w, &b, conv, Act::Relu6).unwrap();
            assert_eq!(ours.dims(), [2, out_side.0, out_side.1, 4]);
            assert!(
                rel_err(&ours, &reference) < 1e-5,
                "{c} channels, stride {stride}"
            );
        }
    }
}
