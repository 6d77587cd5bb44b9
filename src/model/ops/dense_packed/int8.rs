//! int8 packing for [`PackedDense`]: weights rounded per output channel, how a row of inputs
//! is put on u8 (its own scale and zero point), and the calibrated smoothing of a layer's
//! input channels. The kernel is `avx512::tile_int8`.

use super::{DenseFormat, Packed, PackedDense, COLS};
use candle_core::{bail, Result, Tensor};

/// Weights rounded to int8, one scale per output column (padded columns: scale and sums 0).
#[derive(Debug, Clone)]
pub(super) struct Int8Weights {
    /// `[K/4 rounded up][n_padded]`: for each four input features, each column's four int8
    /// weights in one `u32` (low byte: the first feature).
    pub(super) quads: Vec<u32>,
    /// Per column: the weight of int8 value 1.
    pub(super) scale: Vec<f32>,
    /// Per column: the sum of its int8 weights, to take each row's zero point out of the sums.
    pub(super) sum: Vec<i32>,
    /// Per input feature, where the layer was calibrated: what it is multiplied by before
    /// rounding (its weights were divided by it).
    pub(super) input_scale: Option<Vec<f32>>,
}

impl Int8Weights {
    /// Row-major `w` (`[N, K]`, already divided by `input_scale` where given) rounded and
    /// packed, `n_padded` columns.
    fn pack(w: &[f32], k: usize, n_padded: usize, input_scale: Option<Vec<f32>>) -> Self {
        let (values, scales) = quantize_weights(w, k);
        let mut quads = vec![0u32; k.div_ceil(4) * n_padded];
        let (mut scale, mut sum) = (vec![0f32; n_padded], vec![0i32; n_padded]);
        for (j, row) in values.chunks_exact(k.max(1)).enumerate() {
            for (p, four) in row.chunks(4).enumerate() {
                let bytes = std::array::from_fn(|i| four.get(i).map_or(0, |&v| v as u8));
                quads[p * n_padded + j] = u32::from_le_bytes(bytes);
            }
            scale[j] = scales[j];
            sum[j] = row.iter().map(|&v| v as i32).sum();
        }
        Self {
            quads,
            scale,
            sum,
            input_scale,
        }
    }

    /// The packing of `from_rows` (uncalibrated).
    pub(super) fn uncalibrated(w: &[f32], k: usize, n_padded: usize) -> Self {
        Self::pack(w, k, n_padded, None)
    }
}

/// SmoothQuant's per-channel factor (α = ½) for an input channel that reached `range` on
/// calibration faces and whose largest weight is `weight_max`: the input is multiplied by it
/// and the weights divided, equalising the two ranges (capped at 64× either way).
fn smoothing(range: f32, weight_max: f32) -> f32 {
    if range > 0.0 && weight_max > 0.0 {
        (weight_max / range).sqrt().clamp(1.0 / 64.0, 64.0)
    } else {
        1.0
    }
}

/// The int8 weights of row-major `w` (`[N, K]`), each row symmetric in [-127, 127] on its own
/// scale: (values `[N, K]`, scales `[N]`).
fn quantize_weights(w: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut values = Vec::with_capacity(w.len());
    let scales = w
        .chunks_exact(k.max(1))
        .map(|row| {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            values.extend(
                row.iter()
                    .map(|v| (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8),
            );
            scale
        })
        .collect();
    (values, scales)
}

/// How a row of activations spanning `min ..= max` is put on u8: (scale, 1 / scale, zero
/// point), value = scale · (u8 − zero point). The range always holds 0, so 0 (padding, ReLU's
/// floor) is exact; a row of zeros gets scale 1.
pub(super) fn row_quantization(min: f32, max: f32) -> (f32, f32, i32) {
    let range = max.max(0.0) - min.min(0.0);
    if !(range > 0.0 && range.is_finite()) {
        return (1.0, 1.0, 0);
    }
    let inv = 255.0 / range;
    let zero = (-min.min(0.0) * inv).round_ties_even().clamp(0.0, 255.0) as i32;
    (range / 255.0, inv, zero)
}

impl PackedDense {
    /// The layer in int8; with `input_range` (`[K]`, each input's calibrated largest value),
    /// smoothed as [`smoothing`] says.
    pub fn int8(weight: &Tensor, bias: &Tensor, input_range: Option<&Tensor>) -> Result<Self> {
        let Some(range) = input_range else {
            return Self::new(weight, bias, DenseFormat::Int8);
        };
        let (n, k) = weight.dims2()?;
        let range = range.flatten_all()?.to_vec1::<f32>()?;
        if range.len() != k {
            bail!("packed dense: {} input ranges for {k} inputs", range.len());
        }
        let mut w = weight.flatten_all()?.to_vec1::<f32>()?;
        let scale: Vec<f32> = (0..k)
            .map(|p| {
                let weight_max = (0..n).fold(0f32, |m, j| m.max(w[j * k + p].abs()));
                smoothing(range[p], weight_max)
            })
            .collect();
        for row in w.chunks_exact_mut(k.max(1)) {
            for (v, s) in row.iter_mut().zip(&scale) {
                *v /= s;
            }
        }
        let bias = bias.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != n {
            bail!("packed dense: bias {} for {n} outputs", bias.len());
        }
        let n_padded = n.div_ceil(COLS) * COLS;
        Ok(Self {
            k,
            n,
            packed: Packed::Int8(Int8Weights::pack(&w, k, n_padded, Some(scale))),
            n_padded,
            bias,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::dense_packed::tests::SHAPES;
    use crate::model::ops::testing::{randn, rel_err};
    use crate::model::ops::{dense_reference, Act};
    use candle_core::Device;

    /// Each row of `x` (`[M, K]`), times the per-feature `input_scale`, put on u8 and back, as
    /// the int8 kernel reads it.
    fn dequantized_rows(x: &Tensor, input_scale: &[f32]) -> Tensor {
        let k = x.dims2().unwrap().1;
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let mut out = Vec::with_capacity(v.len());
        for row in v.chunks_exact(k) {
            let row: Vec<f32> = row.iter().zip(input_scale).map(|(v, s)| v * s).collect();
            let (min, max) = row
                .iter()
                .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let (scale, inv, zero) = row_quantization(min, max);
            out.extend(row.iter().map(|&v| {
                let q = ((v * inv).round_ties_even() as i32 + zero).clamp(0, 255);
                scale * (q - zero) as f32
            }));
        }
        Tensor::from_vec(out, x.shape(), x.device()).unwrap()
    }

    #[test]
    fn dense_int8_is_the_f32_dense_of_its_quantized_inputs() {
        if !DenseFormat::Int8.supported() {
            eprintln!("skipping: this CPU has no AVX512-VNNI");
            return;
        }
        let dev = Device::Cpu;
        for (m, k, n, act) in SHAPES {
            // Rows of ReLU6 outputs (no negatives) as the projections read, and signed ones.
            let x = randn((m, k), 2.0, &dev).unwrap();
            let x = if act == Act::Relu6 {
                x.relu().unwrap()
            } else {
                x
            };
            let w = randn((n, k), 0.5, &dev).unwrap();
            let b = randn(n, 1.0, &dev).unwrap();
            // Uncalibrated, and calibrated on these rows' own ranges.
            let range = match m {
                0 => Tensor::ones(k, candle_core::DType::F32, &dev).unwrap(),
                _ => x.abs().unwrap().max(0).unwrap(),
            };
            for input_range in [None, Some(&range)] {
                let layer = PackedDense::int8(&w, &b, input_range).unwrap();
                let ours = layer.forward(&x, act).unwrap();
                assert_eq!(ours.dims(), &[m, n]);
                if m == 0 {
                    continue;
                }
                let Packed::Int8(weights) = &layer.packed else {
                    unreachable!()
                };
                let ones = vec![1.0; k];
                let s = weights.input_scale.as_deref().unwrap_or(&ones);
                let scaled: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
                let scaled: Vec<f32> = scaled
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v / s[i % k])
                    .collect();
                let (values, scales) = quantize_weights(&scaled, k);
                let w_int8: Vec<f32> = values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v as f32 * scales[i / k])
                    .collect();
                let w_int8 = Tensor::from_vec(w_int8, (n, k), &dev).unwrap();
                let exact = dense_reference(&dequantized_rows(&x, s), &w_int8, &b, act).unwrap();
                let e = rel_err(&ours, &exact);
                assert!(e < 1e-5, "{m}×{k}→{n}: {e} against the quantized f32 dense");
                // 8 bits is ~1 % per value on these Gaussian rows, more after ReLU6 cuts the
                // large outputs away; what it costs the model is measured by `eval`.
                let e = rel_err(&ours, &dense_reference(&x, &w, &b, act).unwrap());
                assert!(e < 0.1, "{m}×{k}→{n}: {e} against f32");
            }
        }
    }

    #[test]
    fn calibration_keeps_a_large_channel_from_costing_the_others_their_precision() {
        if !DenseFormat::Int8.supported() {
            eprintln!("skipping: this CPU has no AVX512-VNNI");
            return;
        }
        let dev = Device::Cpu;
        let (m, k, n) = (64, 96, 24);
        // ReLU outputs where channel 0 runs 50 times larger than the rest, as a few
        // depthwise channels saturating at 6 do beside many small ones.
        let mut x: Vec<f32> = randn((m, k), 0.1, &dev)
            .unwrap()
            .relu()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for row in x.chunks_exact_mut(k) {
            row[0] += 5.0;
        }
        let range: Vec<f32> = (0..k)
            .map(|p| x.iter().skip(p).step_by(k).fold(0f32, |a, &v| a.max(v)))
            .collect();
        let x = Tensor::from_vec(x, (m, k), &dev).unwrap();
        let range = Tensor::from_vec(range, k, &dev).unwrap();
        let w = randn((n, k), 0.5, &dev).unwrap();
        let b = Tensor::zeros(n, candle_core::DType::F32, &dev).unwrap();
        let exact = dense_reference(&x, &w, &b, Act::Identity).unwrap();
        let err = |range| {
            let layer = PackedDense::int8(&w, &b, range).unwrap();
            rel_err(&layer.forward(&x, Act::Identity).unwrap(), &exact)
        };
        let (plain, calibrated) = (err(None), err(Some(&range)));
        assert!(
            calibrated < plain / 2.0,
            "calibrated {calibrated}, plain {plain}"
        );
    }

    #[test]
    fn row_quantization_keeps_zero_exact() {
        assert_eq!(row_quantization(0.0, 0.0), (1.0, 1.0, 0));
        let (scale, _, zero) = row_quantization(-1.0, 3.0);
        assert_eq!(zero, 64);
        assert!((scale - 4.0 / 255.0).abs() < 1e-7);
        // A row of one sign still spans 0: ReLU outputs use all 256 levels from 0 up.
        assert_eq!(row_quantization(2.0, 6.0).2, 0);
        assert_eq!(row_quantization(-6.0, -2.0).2, 255);
    }
}
