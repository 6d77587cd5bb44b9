//! MobileNetV2's inverted-residual block for inference as one op: expand 1×1 (ReLU6) →
//! depthwise 3×3 (ReLU6) → project 1×1 (+ the residual), computed band of output rows by band
//! of output rows. The expanded activations, six times the block's channels, then live in a
//! band-sized buffer in cache instead of going through memory three times (at batch 32 the
//! first expanded layer alone is 50 MB), and the block is one parallel region instead of four.
//! The 1×1 convs run on [`PackedDense`]'s kernels (f32, bf16 or int8), or on gemm in f32 where the
//! CPU has no AVX-512.

use super::dense::dense_rows_into;
use super::depthwise::dw_forward_row_of;
use super::{dims4, inputs, par_output, Act, Conv3x3, Geometry, PackedDense};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Largest expanded band, in bytes, before bands are made shorter: about half a core's L2.
const BAND_BYTES: usize = 512 * 1024;

/// A 1×1 conv's weights, held by the fused block.
#[derive(Debug, Clone)]
enum Pointwise {
    /// `[N, K]` weight and `[N]` bias, multiplied by gemm.
    F32 { weight: Vec<f32>, bias: Vec<f32> },
    /// Packed for one of [`PackedDense`]'s kernels.
    Packed(Arc<PackedDense>),
}

impl Pointwise {
    fn new(conv: &Conv1x1) -> Result<Self> {
        Ok(match conv.packed {
            Some(packed) => Pointwise::Packed(packed.clone()),
            None => Pointwise::F32 {
                weight: conv.weight.flatten_all()?.to_vec1()?,
                bias: conv.bias.flatten_all()?.to_vec1()?,
            },
        })
    }

    /// `act(x · Wᵀ + b)` of the rows `x` (`rows × k`) into `out` (`rows × n`), on this thread.
    fn rows_into<'a>(&self, x: &[f32], out: &'a mut [MaybeUninit<f32>], act: Act) -> &'a mut [f32] {
        match self {
            Pointwise::Packed(layer) => layer.rows_into(x, out, act),
            Pointwise::F32 { weight, bias } => dense_rows_into(x, weight, bias, out, act),
        }
    }
}

/// An inverted-residual block's parameters for inference (copies, packed at construction).
#[derive(Debug, Clone)]
pub struct InvertedResidualBlock {
    cin: usize,
    hidden: usize,
    cout: usize,
    conv: Conv3x3,
    expand: Option<Pointwise>,
    depthwise_weight: Vec<f32>,
    depthwise_bias: Vec<f32>,
    project: Pointwise,
}

/// A 1×1 conv of a block: weight `[N, K]` and bias `[N]` as `ops::dense` takes them, and the
/// same packed for a [`PackedDense`] kernel where the CPU runs one (shared, not packed again).
pub struct Conv1x1<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub packed: Option<&'a Arc<PackedDense>>,
}

/// One block's parameters, in the layouts of `ops::dense` and `ops::depthwise3x3`.
pub struct BlockTensors<'a> {
    /// Expand 1×1 `[hidden, cin]`, absent when the block does not expand.
    pub expand: Option<Conv1x1<'a>>,
    /// Depthwise `[3, 3, hidden]` and bias.
    pub depthwise: (&'a Tensor, &'a Tensor),
    /// Project 1×1 `[cout, hidden]`.
    pub project: Conv1x1<'a>,
    pub stride: usize,
}

impl InvertedResidualBlock {
    /// Copies the block's f32 weights (the packed 1×1 convs are shared instead).
    pub fn new(t: BlockTensors) -> Result<Self> {
        let (cout, hidden) = t.project.weight.dims2()?;
        let cin = match &t.expand {
            Some(expand) => expand.weight.dims2()?.1,
            None => hidden,
        };
        let depthwise_weight = t.depthwise.0.flatten_all()?.to_vec1::<f32>()?;
        let depthwise_bias = t.depthwise.1.flatten_all()?.to_vec1::<f32>()?;
        if depthwise_weight.len() != 9 * hidden || depthwise_bias.len() != hidden {
            bail!(
                "inverted residual: depthwise {:?} for {hidden} channels",
                t.depthwise.0.shape()
            );
        }
        Ok(Self {
            cin,
            hidden,
            cout,
            conv: Conv3x3 { stride: t.stride },
            expand: t.expand.as_ref().map(Pointwise::new).transpose()?,
            depthwise_weight,
            depthwise_bias,
            project: Pointwise::new(&t.project)?,
        })
    }

    fn residual(&self) -> bool {
        self.conv.stride == 1 && self.cin == self.cout
    }

    /// x `[N, H, W, cin]` → `[N, Ho, Wo, cout]` (any x: bands of one row if need be; the
    /// model asks [`Self::band_rows`] first).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    /// Output rows per band for input `x` `[N, H, W, cin]`, or `None` when the block is better
    /// run as its three ops: bands are a divisor of `ho` (never straddling two images), keep
    /// the expanded band under [`BAND_BYTES`], give every thread a band, and are whole images
    /// or at least 8 input rows tall (the one or two rows a band shares with the next are
    /// expanded by both: at most 25 % more work). Small layers of a single image fail this,
    /// and run as three ops that each split their own work over the threads.
    pub fn band_rows(&self, dims: &[usize]) -> Option<usize> {
        let &[n, h, w, _] = dims else { return None };
        let g = Geometry::new(self.conv, (n, h, w, self.hidden));
        let threads = rayon::current_num_threads().max(1);
        let band_bytes = |b: usize| ((b - 1) * g.stride + 3) * g.w * self.hidden * 4;
        (1..=g.ho).rev().find(|&b| {
            g.ho.is_multiple_of(b)
                && band_bytes(b) <= BAND_BYTES
                && n * (g.ho / b) >= threads
                && (b == g.ho || b * g.stride >= 8)
        })
    }
}

impl CustomOp1 for InvertedResidualBlock {
    fn name(&self) -> &'static str {
        "inverted-residual"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [x] = inputs(self.name(), [("x", xs, xl)])?;
        let (n, h, w, cin) = dims4(xl, self.name())?;
        if cin != self.cin {
            bail!(
                "inverted residual: {cin} input channels, expected {}",
                self.cin
            );
        }
        let (hidden, cout) = (self.hidden, self.cout);
        let g = Geometry::new(self.conv, (n, h, w, hidden));
        let shape = Shape::from((n, g.ho, g.wo, cout));
        if n * g.ho * g.wo * cout == 0 {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        let band = self.band_rows(xl.dims()).unwrap_or(1);
        let out = par_output(n * g.ho * g.wo * cout, band * g.wo * cout, |i, piece| {
            let (image, y0) = ((i * band) / g.ho, (i * band) % g.ho);
            // The input rows the band's taps read, expanded (or the input itself).
            let first = (y0 * g.stride).saturating_sub(g.pad);
            let end = ((y0 + band - 1) * g.stride + 3 - g.pad).min(h);
            let x_rows = &x[(image * h + first) * w * cin..(image * h + end) * w * cin];
            let mut expanded = Vec::new();
            let expanded: &[f32] = match &self.expand {
                Some(expand) => {
                    expanded.reserve_exact(x_rows.len() / cin * hidden);
                    let spare = &mut expanded.spare_capacity_mut()[..x_rows.len() / cin * hidden];
                    expand.rows_into(x_rows, spare, Act::Relu6)
                }
                None => x_rows,
            };
            let row_len = w * hidden;
            let mut depthwise = Vec::with_capacity(band * g.wo * hidden);
            let spare = &mut depthwise.spare_capacity_mut()[..band * g.wo * hidden];
            for (yl, out_row) in spare.chunks_exact_mut(g.wo * hidden).enumerate() {
                let rows = std::array::from_fn(|kh| {
                    let ih = g.input_at(y0 + yl, kh, h)?;
                    Some(&expanded[(ih - first) * row_len..][..row_len])
                });
                dw_forward_row_of(
                    rows,
                    &self.depthwise_weight,
                    &self.depthwise_bias,
                    &g,
                    out_row,
                    Act::Relu6,
                );
            }
            // SAFETY: every output row of the band was written just above.
            let depthwise = unsafe { spare.assume_init_mut() };
            let out = self.project.rows_into(depthwise, piece, Act::Identity);
            if self.residual() {
                let input = &x[(image * h + y0) * w * cin..][..band * w * cin];
                for (o, &v) in out.iter_mut().zip(input) {
                    *o += v;
                }
            }
            out
        });
        Ok((CpuStorage::F32(out), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{randn, rel_err};
    use crate::model::ops::{dense, depthwise3x3, DenseFormat};
    use candle_core::Device;

    /// The block as three ops (the training path).
    fn unfused(x: &Tensor, t: &BlockTensors) -> Tensor {
        let h = match &t.expand {
            Some(e) => dense(x, e.weight, e.bias, Act::Relu6).unwrap(),
            None => x.clone(),
        };
        let conv = Conv3x3 { stride: t.stride };
        let h = depthwise3x3(&h, t.depthwise.0, t.depthwise.1, conv, Act::Relu6).unwrap();
        let y = dense(&h, t.project.weight, t.project.bias, Act::Identity).unwrap();
        let (cin, cout) = (x.dims4().unwrap().3, y.dims4().unwrap().3);
        if t.stride == 1 && cin == cout {
            (y + x).unwrap()
        } else {
            y
        }
    }

    #[test]
    fn fused_block_matches_the_three_ops() {
        let dev = Device::Cpu;
        for (n, h, w, cin, t, cout, stride) in [
            (1, 8, 8, 16, 6, 16, 1),
            (2, 9, 7, 8, 6, 12, 2),
            (1, 16, 16, 32, 1, 16, 1),
            (3, 4, 4, 24, 6, 24, 1),
            (1, 1, 1, 8, 6, 8, 1),
            (2, 64, 64, 16, 6, 24, 2),
            (1, 5, 6, 7, 3, 7, 1),
        ] {
            let hidden = cin * t;
            let expand = (t != 1).then(|| {
                (
                    randn((hidden, cin), 0.5, &dev).unwrap(),
                    randn(hidden, 0.5, &dev).unwrap(),
                )
            });
            let depthwise = (
                randn((3, 3, hidden), 0.5, &dev).unwrap(),
                randn(hidden, 0.5, &dev).unwrap(),
            );
            let project = (
                randn((cout, hidden), 0.5, &dev).unwrap(),
                randn(cout, 0.5, &dev).unwrap(),
            );
            let pack = |(w, b): &(Tensor, Tensor), format| {
                Arc::new(PackedDense::new(w, b, format).unwrap())
            };
            let x = randn((n, h, w, cin), 1.0, &dev).unwrap();
            // gemm (no packing) and each packed format this CPU runs, against the three ops.
            let formats = [DenseFormat::F32, DenseFormat::Bf16, DenseFormat::Int8]
                .map(|f| Some(f).filter(|f| f.supported()));
            let mut reference = None;
            for format in [None]
                .into_iter()
                .chain(formats.into_iter().flatten().map(Some))
            {
                let packed =
                    format.map(|f| (expand.as_ref().map(|e| pack(e, f)), pack(&project, f)));
                let tensors = BlockTensors {
                    expand: expand.as_ref().map(|(weight, bias)| Conv1x1 {
                        weight,
                        bias,
                        packed: packed.as_ref().and_then(|p| p.0.as_ref()),
                    }),
                    depthwise: (&depthwise.0, &depthwise.1),
                    project: Conv1x1 {
                        weight: &project.0,
                        bias: &project.1,
                        packed: packed.as_ref().map(|p| &p.1),
                    },
                    stride,
                };
                let reference = reference.get_or_insert_with(|| unfused(&x, &tensors));
                let ours = InvertedResidualBlock::new(tensors)
                    .unwrap()
                    .forward(&x)
                    .unwrap();
                assert_eq!(ours.dims(), reference.dims());
                let e = rel_err(&ours, reference);
                let bound = match format {
                    Some(DenseFormat::Bf16 | DenseFormat::Int8) => 5e-2,
                    _ => 1e-5,
                };
                assert!(
                    e < bound,
                    "{format:?} {n}×{h}×{w}×{cin} t{t} → {cout} s{stride}: {e}"
                );
            }
        }
    }
}
