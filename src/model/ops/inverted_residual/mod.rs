//! The inverted-residual block (MobileNetV2's, EfficientNet-Lite's) for inference as one op:
//! expand 1×1 (ReLU6) → depthwise 3×3 or 5×5 (ReLU6) → project 1×1 (+ the residual), in one
//! parallel region instead of four. Large layers are computed band of output rows by band of
//! output rows: the expanded activations, six times the block's channels, then live in a
//! band-sized buffer in cache instead of going through memory three times (at batch 32 the
//! first expanded layer alone is 50 MB). Layers too small to split by rows (8×8 and 4×4 of one image) are split by hidden
//! channel instead: each thread expands, convolves and projects its share of the channels, and
//! the shares' projections are summed.
//! The 1×1 convs run on [`PackedDense`](super::PackedDense)'s kernels (f32, bf16 or int8), or on gemm in f32 where the
//! CPU has no AVX-512.

mod pointwise;

use super::depthwise::dw_forward_row_of;
use super::{dims4, inputs, output, par_output, Act, Geometry, Window};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

pub use pointwise::Conv1x1;
use pointwise::Pointwise;

/// Largest expanded band, in bytes, before bands are made shorter: about half a core's L2.
const BAND_BYTES: usize = 512 * 1024;

/// Channel shares start at multiples of this: whole column groups of the packed kernels.
const SHARE_ALIGN: usize = 32;

/// One thread's share of a block's hidden channels: the expand's outputs, the depthwise
/// channels and the projection's inputs for those channels.
#[derive(Debug, Clone)]
struct ChannelShare {
    expand: Pointwise,
    depthwise_weight: Vec<f32>,
    depthwise_bias: Vec<f32>,
    project: Pointwise,
}

/// An inverted-residual block's parameters for inference (copies, packed at construction).
#[derive(Debug, Clone)]
pub struct InvertedResidualBlock {
    cin: usize,
    hidden: usize,
    cout: usize,
    window: Window,
    expand: Option<Pointwise>,
    depthwise_weight: Vec<f32>,
    depthwise_bias: Vec<f32>,
    project: Pointwise,
    /// The hidden channels split one share per thread (empty with one thread, or no expand).
    shares: Vec<ChannelShare>,
}

/// One block's parameters, in the layouts of `ops::dense` and `ops::depthwise`.
pub struct BlockTensors<'a> {
    /// Expand 1×1 `[hidden, cin]`, absent when the block does not expand.
    pub expand: Option<Conv1x1<'a>>,
    /// Depthwise `[k, k, hidden]` and bias.
    pub depthwise: (&'a Tensor, &'a Tensor),
    /// Project 1×1 `[cout, hidden]`.
    pub project: Conv1x1<'a>,
    /// The depthwise conv's window (k×k, stride, padding).
    pub window: Window,
}

/// How the fused op splits its work over the threads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Split {
    /// Bands of this many output rows.
    Bands(usize),
    /// Each thread a [`ChannelShare`] of every image.
    Channels,
}

impl InvertedResidualBlock {
    /// Copies the block's f32 weights (the packed 1×1 convs are shared instead), and splits
    /// them into one channel share per thread of the current pool.
    pub fn new(t: BlockTensors) -> Result<Self> {
        let (cout, hidden) = t.project.weight.dims2()?;
        let cin = match &t.expand {
            Some(expand) => expand.weight.dims2()?.1,
            None => hidden,
        };
        let taps = t.window.kernel() * t.window.kernel();
        let depthwise_weight = t.depthwise.0.flatten_all()?.to_vec1::<f32>()?;
        let depthwise_bias = t.depthwise.1.flatten_all()?.to_vec1::<f32>()?;
        if depthwise_weight.len() != taps * hidden || depthwise_bias.len() != hidden {
            bail!(
                "inverted residual: depthwise {:?} for {hidden} channels",
                t.depthwise.0.shape()
            );
        }
        let shares = match &t.expand {
            Some(expand) => share_ranges(hidden, rayon::current_num_threads())
                .into_iter()
                .map(|channels| {
                    Ok(ChannelShare {
                        expand: Pointwise::part(expand, channels.clone(), 0..cin, true)?,
                        depthwise_weight: (0..taps)
                            .flat_map(|tap| &depthwise_weight[tap * hidden..][channels.clone()])
                            .copied()
                            .collect(),
                        depthwise_bias: depthwise_bias[channels.clone()].to_vec(),
                        project: Pointwise::part(
                            &t.project,
                            0..cout,
                            channels.clone(),
                            channels.start == 0,
                        )?,
                    })
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            cin,
            hidden,
            cout,
            window: t.window,
            expand: t.expand.as_ref().map(Pointwise::new).transpose()?,
            depthwise_weight,
            depthwise_bias,
            project: Pointwise::new(&t.project)?,
            shares,
        })
    }

    fn residual(&self) -> bool {
        self.window.stride() == 1 && self.cin == self.cout
    }

    /// x `[N, H, W, cin]` → `[N, Ho, Wo, cout]` (any x the depthwise kernels take: bands of
    /// one row if need be; the model asks [`Self::splits_well`] first).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    /// Whether the op splits input `x` `[N, H, W, cin]` well over the threads; where it does
    /// not, the block is better run as its three ops, which each split their own work.
    pub fn splits_well(&self, dims: &[usize]) -> bool {
        self.split(dims).is_some()
    }

    /// Bands where they are a divisor of `ho` (never straddling two images), keep the
    /// expanded band under [`BAND_BYTES`], give every thread a band, and are whole images or
    /// at least 8 input rows tall (the k − 1 rows or fewer a band shares with the next, for a
    /// k×k window, are expanded by both: at most 25 % more work with a 3×3 window, 50 % with a
    /// 5×5; a 25 % bound for 5×5, which splits Lite0's 16×16 layers by channel instead,
    /// measured slower). Small layers of a single image fail this and are split by channel
    /// where every share's expanded images fit in [`BAND_BYTES`]. `None` also where the
    /// depthwise kernels do not take the window's padding on this input.
    fn split(&self, dims: &[usize]) -> Option<Split> {
        let &[n, h, w, _] = dims else { return None };
        if !self.window.has_cpu_kernel(h, w) {
            return None;
        }
        let g = Geometry::of(self.window, (n, h, w, self.hidden));
        let threads = rayon::current_num_threads().max(1);
        let band_bytes = |b: usize| ((b - 1) * g.stride + g.kernel) * g.w * self.hidden * 4;
        let bands = (1..=g.ho).rev().find(|&b| {
            g.ho.is_multiple_of(b)
                && band_bytes(b) <= BAND_BYTES
                && n * (g.ho / b) >= threads
                && (b == g.ho || b * g.stride >= 8)
        });
        let widest_share = self.shares.iter().map(|s| s.depthwise_bias.len()).max();
        bands.map(Split::Bands).or_else(|| {
            widest_share
                .filter(|&c| self.shares.len() >= 2 && n * h * w * c * 4 <= BAND_BYTES)
                .map(|_| Split::Channels)
        })
    }

    /// The block by channel shares: each share's projection of every image, summed.
    fn forward_by_channel(&self, x: &[f32], (n, h, w): (usize, usize, usize)) -> Vec<f32> {
        let parts: Vec<Vec<f32>> = self
            .shares
            .par_iter()
            .map(|share| {
                let c = share.depthwise_bias.len();
                let g = Geometry::of(self.window, (n, h, w, c));
                let mut expanded = Vec::with_capacity(n * h * w * c);
                let expanded = share.expand.rows_into(
                    x,
                    &mut expanded.spare_capacity_mut()[..n * h * w * c],
                    Act::Relu6,
                );
                let image_out = g.ho * g.wo * c;
                let mut depthwise = Vec::with_capacity(n * image_out);
                let spare = &mut depthwise.spare_capacity_mut()[..n * image_out];
                for (image, out) in spare.chunks_exact_mut(image_out).enumerate() {
                    let input = &expanded[image * h * w * c..][..h * w * c];
                    depthwise_rows(
                        input,
                        0,
                        0,
                        &g,
                        (&share.depthwise_weight, &share.depthwise_bias),
                        out,
                    );
                }
                // SAFETY: every image's output rows were written just above.
                let depthwise = unsafe { spare.assume_init_mut() };
                let len = n * g.ho * g.wo * self.cout;
                output(len, |out| {
                    share.project.rows_into(depthwise, out, Act::Identity)
                })
            })
            .collect();
        let mut parts = parts.into_iter();
        let mut out = parts.next().unwrap_or_default();
        for part in parts {
            for (o, v) in out.iter_mut().zip(part) {
                *o += v;
            }
        }
        if self.residual() {
            for (o, &v) in out.iter_mut().zip(x) {
                *o += v;
            }
        }
        out
    }
}

/// The depthwise conv's (ReLU6) output rows `y0..` of one image into `out` (whole rows of
/// `wo × c`), from `expanded`, the image's input rows `first..` (`w × c` each; as many as the
/// rows' taps read), with weights `[k, k, c]` and bias `[c]`.
fn depthwise_rows(
    expanded: &[f32],
    first: usize,
    y0: usize,
    g: &Geometry,
    (weight, bias): (&[f32], &[f32]),
    out: &mut [MaybeUninit<f32>],
) {
    let row_len = g.w * g.c;
    for (yl, out_row) in out.chunks_exact_mut(g.wo * g.c).enumerate() {
        // 5: the largest window the depthwise kernels take.
        let mut rows = [None; 5];
        for (kh, row) in rows[..g.kernel].iter_mut().enumerate() {
            *row = g
                .input_at(y0 + yl, kh, g.h)
                .map(|ih| &expanded[(ih - first) * row_len..][..row_len]);
        }
        dw_forward_row_of(&rows[..g.kernel], weight, bias, g, out_row, Act::Relu6);
    }
}

/// Boundaries of `threads` shares of `channels`, at multiples of [`SHARE_ALIGN`] (fewer
/// shares where the channels are too few); one share for one thread.
fn share_ranges(channels: usize, threads: usize) -> Vec<Range<usize>> {
    let bound = |i: usize| (channels * i / threads.max(1)) / SHARE_ALIGN * SHARE_ALIGN;
    let mut starts: Vec<usize> = (0..threads.max(1)).map(bound).collect();
    starts.dedup();
    starts.push(channels);
    starts
        .windows(2)
        .map(|s| s[0]..s[1])
        .filter(|r| !r.is_empty())
        .collect()
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
        if !self.window.has_cpu_kernel(h, w) {
            bail!(
                "inverted residual: no CPU kernel for {:?} on {h}×{w}",
                self.window
            );
        }
        let g = Geometry::of(self.window, (n, h, w, hidden));
        let shape = Shape::from((n, g.ho, g.wo, cout));
        if n * g.ho * g.wo * cout == 0 {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        let band = match self.split(xl.dims()) {
            Some(Split::Channels) => {
                return Ok((
                    CpuStorage::F32(self.forward_by_channel(x, (n, h, w))),
                    shape,
                ))
            }
            Some(Split::Bands(rows)) => rows,
            None => 1,
        };
        let out = par_output(n * g.ho * g.wo * cout, band * g.wo * cout, |i, piece| {
            let (image, y0) = ((i * band) / g.ho, (i * band) % g.ho);
            // The input rows the band's taps read, expanded (or the input itself).
            let first = (y0 * g.stride).saturating_sub(g.pad);
            let end = ((y0 + band - 1) * g.stride + g.kernel - g.pad).min(h);
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
            let mut depthwise = Vec::with_capacity(band * g.wo * hidden);
            let spare = &mut depthwise.spare_capacity_mut()[..band * g.wo * hidden];
            let weights = (&self.depthwise_weight[..], &self.depthwise_bias[..]);
            depthwise_rows(expanded, first, y0, &g, weights, spare);
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
    use crate::model::ops::{dense, depthwise3x3, Conv3x3, DenseFormat, PackedDense, SamePadding};
    use candle_core::Device;
    use std::sync::Arc;

    /// The block as three ops (the training path), and the projection's input.
    fn unfused(
        x: &Tensor,
        expand: Option<&(Tensor, Tensor)>,
        depthwise: &(Tensor, Tensor),
        project: &(Tensor, Tensor),
        window: Window,
    ) -> (Tensor, Tensor) {
        let h = match expand {
            Some((w, b)) => dense(x, w, b, Act::Relu6).unwrap(),
            None => x.clone(),
        };
        let (weight, bias) = depthwise;
        let h = match window {
            Window::Keras3x3(conv) => depthwise3x3(&h, weight, bias, conv, Act::Relu6),
            Window::Same(same) => crate::model::ops::depthwise(&h, weight, bias, same, Act::Relu6),
        }
        .unwrap();
        let y = dense(&h, &project.0, &project.1, Act::Identity).unwrap();
        let (cin, cout) = (x.dims4().unwrap().3, y.dims4().unwrap().3);
        let y = if window.stride() == 1 && cin == cout {
            (y + x).unwrap()
        } else {
            y
        };
        (y, h)
    }

    #[test]
    fn shares_are_aligned_and_cover_the_channels() {
        assert_eq!(share_ranges(576, 2), [0..288, 288..576]);
        assert_eq!(share_ranges(384, 3), [0..128, 128..256, 256..384]);
        assert_eq!(share_ranges(48, 2), vec![(0..48)]);
        assert_eq!(share_ranges(21, 2), vec![(0..21)]);
        assert_eq!(share_ranges(96, 1), vec![(0..96)]);
    }

    #[test]
    fn fused_block_matches_the_three_ops() {
        let dev = Device::Cpu;
        let keras = |stride| Window::Keras3x3(Conv3x3 { stride });
        let same = |kernel, stride| Window::Same(SamePadding { kernel, stride });
        // (input, expansion, cout, window, threads, how the op splits it)
        for (n, h, w, cin, t, cout, window, threads, split) in [
            (1, 8, 8, 16, 6, 16, keras(1), 2, Some(Split::Channels)),
            (1, 8, 8, 16, 6, 16, keras(1), 1, Some(Split::Bands(8))),
            (2, 9, 7, 8, 6, 12, keras(2), 2, Some(Split::Bands(5))),
            (1, 16, 16, 32, 1, 16, keras(1), 2, Some(Split::Bands(8))),
            (3, 4, 4, 24, 6, 24, keras(1), 2, Some(Split::Bands(4))),
            (1, 4, 4, 24, 6, 32, keras(1), 3, Some(Split::Channels)),
            (1, 8, 8, 16, 6, 24, keras(2), 2, Some(Split::Channels)),
            (1, 1, 1, 8, 6, 8, keras(1), 2, None),
            (1, 1, 1, 16, 6, 16, keras(1), 2, Some(Split::Channels)),
            (2, 64, 64, 16, 6, 24, keras(2), 2, Some(Split::Bands(8))),
            (1, 5, 6, 7, 3, 7, keras(1), 2, None),
            // EfficientNet-Lite's windows: 5×5 with "SAME" padding (two rows of halo per
            // band edge), and a 3×3 "SAME" one on an odd input, padded unlike Keras.
            (1, 8, 8, 16, 6, 16, same(5, 1), 2, Some(Split::Channels)),
            (2, 9, 7, 8, 6, 12, same(5, 2), 2, Some(Split::Bands(5))),
            (1, 16, 16, 32, 1, 16, same(5, 1), 2, Some(Split::Bands(8))),
            (2, 32, 32, 16, 6, 24, same(5, 2), 2, Some(Split::Bands(16))),
            (1, 4, 4, 24, 6, 24, same(5, 1), 1, Some(Split::Bands(4))),
            (1, 7, 7, 8, 6, 8, same(3, 2), 2, None),
        ] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let hidden = cin * t;
            let expand = (t != 1).then(|| {
                (
                    randn((hidden, cin), 0.5, &dev).unwrap(),
                    randn(hidden, 0.5, &dev).unwrap(),
                )
            });
            let k = window.kernel();
            let depthwise = (
                randn((k, k, hidden), 0.5, &dev).unwrap(),
                randn(hidden, 0.5, &dev).unwrap(),
            );
            let project = (
                randn((cout, hidden), 0.5, &dev).unwrap(),
                randn(cout, 0.5, &dev).unwrap(),
            );
            let x = randn((n, h, w, cin), 1.0, &dev).unwrap();
            let (reference, projected) = unfused(&x, expand.as_ref(), &depthwise, &project, window);
            // The projection calibrated on its inputs here (int8 smooths with the range).
            let range = projected
                .abs()
                .unwrap()
                .flatten_to(2)
                .unwrap()
                .max(0)
                .unwrap();
            // gemm (no packing) and each packed format this CPU runs, against the three ops.
            let formats = [DenseFormat::F32, DenseFormat::Bf16, DenseFormat::Int8]
                .map(|f| Some(f).filter(|f| f.supported()));
            for format in [None]
                .into_iter()
                .chain(formats.into_iter().flatten().map(Some))
            {
                let pack = |(w, b): &(Tensor, Tensor), range: Option<&Tensor>| {
                    let f = format?;
                    Some(Arc::new(match f {
                        DenseFormat::Int8 => PackedDense::int8(w, b, range).unwrap(),
                        _ => PackedDense::new(w, b, f).unwrap(),
                    }))
                };
                let packed = (
                    expand.as_ref().and_then(|e| pack(e, None)),
                    pack(&project, Some(&range)),
                );
                let tensors = BlockTensors {
                    expand: expand.as_ref().map(|(weight, bias)| Conv1x1 {
                        weight,
                        bias,
                        packed: packed.0.as_ref(),
                        input_range: None,
                    }),
                    depthwise: (&depthwise.0, &depthwise.1),
                    project: Conv1x1 {
                        weight: &project.0,
                        bias: &project.1,
                        packed: packed.1.as_ref(),
                        input_range: Some(&range),
                    },
                    window,
                };
                let (ours, chosen) = pool.install(|| {
                    let block = InvertedResidualBlock::new(tensors).unwrap();
                    (block.forward(&x).unwrap(), block.split(x.dims()))
                });
                let case = format!(
                    "{format:?} {n}×{h}×{w}×{cin} t{t} → {cout} {window:?}, {threads} threads"
                );
                assert_eq!(chosen, split, "{case}");
                assert_eq!(ours.dims(), reference.dims());
                let e = rel_err(&ours, &reference);
                let bound = match format {
                    Some(DenseFormat::Bf16 | DenseFormat::Int8) => 5e-2,
                    _ => 1e-5,
                };
                assert!(e < bound, "{case}: {e}");
            }
        }
    }
}
