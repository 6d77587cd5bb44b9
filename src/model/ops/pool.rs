//! 2×2 max-pool and nearest-neighbour ×2 upsampling fused with an add (a feature pyramid's
//! top-down path), for inference: no backward; and the trunks' global average pool, with one.

use super::{dims4, filled, inputs, par_output, repeated};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

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
        super::max_pool2x2_reference(x)
    }
}

simd_dispatch!(upsample_add_row, fn<'a>(coarse: &[f32], fine: &[f32], dims: (usize, usize, usize), row: usize, out: &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] {
    let (h, w, c) = dims;
    // `row` is a row of the fine (output) map, which is 2h × 2w.
    let (n, y) = (row / (2 * h), row % (2 * h));
    let source = &coarse[(n * h + y / 2) * w * c..][..w * c];
    let out = repeated(out, &fine[row * 2 * w * c..][..2 * w * c]);
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
        super::upsample2_add_reference(coarse, fine)
    }
}

simd_dispatch!(spatial_mean_row, fn<'a>(x: &[f32], dims: (usize, usize), row: usize, out: &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] {
    let (positions, c) = dims;
    let out = filled(out, 0.0);
    // Position by position, as candle's mean sums, so the result is the same to the bit.
    for v in x[row * positions * c..][..positions * c].chunks_exact(c) {
        for (o, &v) in out.iter_mut().zip(v) {
            *o += v;
        }
    }
    let scale = (1.0 / positions as f64) as f32; // candle's mean: the sum times 1/count
    for o in out.iter_mut() {
        *o *= scale;
    }
    out
});

/// Mean over the middle axis: `[N,P,C]` → `[N,C]`. candle's `mean(1)` reads that axis with a
/// stride of C, one element at a time: 3 % of an int8 forward pass at batch 32 (perf).
struct SpatialMean;

impl CustomOp1 for SpatialMean {
    fn name(&self) -> &'static str {
        "spatial-mean"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = inputs(self.name(), [("x", xs, xl)])?;
        let (n, positions, c) = xl.shape().dims3()?;
        let out = par_output(n * c, c, |row, o| {
            spatial_mean_row(x, (positions, c), row, o)
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let positions = arg.dim(1)? as f64;
        let spread = grad_res.unsqueeze(1)?.broadcast_as(arg.shape())?;
        Ok(Some((spread / positions)?))
    }
}

/// Mean over the spatial positions of an NHWC tensor: `[N,H,W,C]` → `[N,C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c) = (x.dim(0)?, x.dim(candle_core::D::Minus1)?);
    // reshape copies a strided input, so `x` is contiguous here, as the op needs.
    let x = x.reshape((n, (), c))?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.apply_op1(SpatialMean)
    } else {
        x.mean(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{randn, rel_err};
    use crate::model::ops::{max_pool2x2_reference, upsample2_add_reference};
    use candle_core::Device;

    #[test]
    fn max_pool_matches_candle() {
        let dev = Device::Cpu;
        for shape in [(2, 6, 8, 5), (1, 2, 2, 16), (1, 10, 4, 64)] {
            let x = randn(shape, 2.0, &dev).unwrap();
            let ours = max_pool2x2(&x).unwrap();
            let reference = max_pool2x2_reference(&x).unwrap();
            assert_eq!(ours.dims(), reference.dims());
            assert!(rel_err(&ours, &reference) < 1e-6);
        }
    }

    #[test]
    fn global_avg_pool_is_candles_mean_and_passes_its_gradient() {
        let dev = Device::Cpu;
        for (n, h, w, c) in [(2, 4, 4, 1280), (1, 1, 1, 8), (3, 5, 2, 17)] {
            let x =
                candle_core::Var::from_tensor(&randn((n, h, w, c), 2.0, &dev).unwrap()).unwrap();
            let reference = x.reshape((n, h * w, c)).unwrap().mean(1).unwrap();
            let ours = global_avg_pool(&x).unwrap();
            assert_eq!(ours.dims(), [n, c]);
            assert_eq!(
                ours.to_vec2::<f32>().unwrap(),
                reference.to_vec2::<f32>().unwrap()
            );
            // The same upstream gradient through both: the same input gradient.
            let g = randn((n, c), 1.0, &dev).unwrap();
            let grads = [&ours, &reference].map(|y| {
                let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                grads.get(&x).unwrap().clone()
            });
            assert!(rel_err(&grads[0], &grads[1]) < 1e-6);
        }
    }

    #[test]
    fn upsample_add_matches_candle() {
        let dev = Device::Cpu;
        for (n, h, w, c) in [(2, 3, 4, 5), (1, 1, 1, 64), (1, 5, 2, 16)] {
            let coarse = randn((n, h, w, c), 2.0, &dev).unwrap();
            let fine = randn((n, 2 * h, 2 * w, c), 2.0, &dev).unwrap();
            let ours = upsample2_add(&coarse, &fine).unwrap();
            let reference = upsample2_add_reference(&coarse, &fine).unwrap();
            assert!(rel_err(&ours, &reference) < 1e-6);
        }
    }
}
