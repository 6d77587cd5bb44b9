//! A 1×1 conv (no activation) then a depthwise 3×3 (stride 1, zero padding 1), bias and
//! activation, fused per band of rows: each band keeps the three 1×1-conv rows its depthwise
//! row reads in a ring, so the 1×1 conv's output never leaves cache. For inference (no
//! backward); the networks that train use [`super::dense`] and [`super::depthwise3x3`].

use super::dense::{bias_act_rows, gemm_x_wt};
use super::{dims4, inputs, par_output, repeated, Act};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

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
        // SAFETY: `out` is w × cout (row stride cout) and exclusively borrowed, `x_row`
        // w × cin and the weight cout × cin, all checked above or at construction.
        unsafe {
            gemm_x_wt(
                w,
                cout,
                cin,
                out.as_mut_ptr(),
                cout,
                x_row.as_ptr(),
                self.pw_weight.as_ptr(),
            );
        }
        bias_act_rows(out.chunks_exact_mut(cout), &self.pw_bias, Act::Identity);
    }
}

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
    assert_eq!(out.len() % C, 0, "a row of whole pixels");
    let w = out.len() / C;
    let bias: [f32; C] = bias.try_into().expect("C biases");
    for (x, o) in out.chunks_exact_mut(C).enumerate() {
        let mut acc = bias;
        add_taps::<C>(&mut acc, rows, taps, x, w);
        for (o, a) in o.iter_mut().zip(acc) {
            o.write(act.apply(a));
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
                    *v = act.apply(*v);
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
            assert_eq!(piece.len() % (w * cout), 0, "whole rows");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{randn, rel_err};
    use crate::model::ops::{dense, depthwise3x3, Conv3x3};
    use candle_core::Device;

    #[test]
    fn pointwise_depthwise_matches_the_two_ops() {
        let dev = Device::Cpu;
        for (n, h, w, cin, cout, act) in [
            (1, 9, 7, 16, 16, Act::Relu),
            (2, 5, 3, 16, 32, Act::Identity),
            (1, 1, 1, 64, 64, Act::Relu),
            (1, 13, 6, 64, 16, Act::Identity),
            (2, 4, 5, 8, 70, Act::Relu),
            (1, 3, 2, 5, 3, Act::Relu),
        ] {
            let x = randn((n, h, w, cin), 2.0, &dev).unwrap();
            let (pw, pb) = (
                randn((cout, cin), 2.0, &dev).unwrap(),
                randn(cout, 2.0, &dev).unwrap(),
            );
            let (dw, db) = (
                randn((3, 3, cout), 2.0, &dev).unwrap(),
                randn(cout, 2.0, &dev).unwrap(),
            );
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
