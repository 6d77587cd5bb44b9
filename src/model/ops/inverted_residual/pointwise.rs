//! A block's 1×1 convs: the tensors a block is built from, and the weights the fused op holds
//! (whole, or one thread's channel share), on [`PackedDense`]'s kernels or on gemm.

use super::super::dense::dense_rows_into;
use super::super::{Act, DenseFormat, PackedDense};
use candle_core::{Result, Tensor};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Arc;

/// A 1×1 conv of a block: weight `[N, K]` and bias `[N]` as `ops::dense` takes them, the
/// same packed for a [`PackedDense`] kernel where the CPU runs one (shared, not packed again),
/// and the calibrated input range the int8 packing smooths with, where there is one.
pub struct Conv1x1<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub packed: Option<&'a Arc<PackedDense>>,
    pub input_range: Option<&'a Tensor>,
}

/// A 1×1 conv's weights, held by the fused block.
#[derive(Debug, Clone)]
pub(super) enum Pointwise {
    /// `[N, K]` weight and `[N]` bias, multiplied by gemm.
    F32 { weight: Vec<f32>, bias: Vec<f32> },
    /// Packed for one of [`PackedDense`]'s kernels.
    Packed(Arc<PackedDense>),
}

impl Pointwise {
    pub(super) fn new(conv: &Conv1x1) -> Result<Self> {
        Ok(match conv.packed {
            Some(packed) => Pointwise::Packed(packed.clone()),
            None => Pointwise::F32 {
                weight: conv.weight.flatten_all()?.to_vec1()?,
                bias: conv.bias.flatten_all()?.to_vec1()?,
            },
        })
    }

    /// The part of `conv` from its `inputs` to its `outputs`, in `conv`'s format; its bias is
    /// zero unless `with_bias` (a projection's channel shares are summed: one carries the bias).
    pub(super) fn part(
        conv: &Conv1x1,
        outputs: Range<usize>,
        inputs: Range<usize>,
        with_bias: bool,
    ) -> Result<Self> {
        let weight = conv
            .weight
            .narrow(0, outputs.start, outputs.len())?
            .narrow(1, inputs.start, inputs.len())?
            .contiguous()?;
        let bias = conv.bias.narrow(0, outputs.start, outputs.len())?;
        let bias = if with_bias { bias } else { bias.zeros_like()? };
        let range = conv
            .input_range
            .map(|r| r.narrow(0, inputs.start, inputs.len()))
            .transpose()?;
        Ok(match conv.packed.map(|p| p.format()) {
            Some(DenseFormat::Int8) => {
                Pointwise::Packed(Arc::new(PackedDense::int8(&weight, &bias, range.as_ref())?))
            }
            Some(format) => Pointwise::Packed(Arc::new(PackedDense::new(&weight, &bias, format)?)),
            None => Pointwise::F32 {
                weight: weight.flatten_all()?.to_vec1()?,
                bias: bias.to_vec1()?,
            },
        })
    }

    /// `act(x · Wᵀ + b)` of the rows `x` (`rows × k`) into `out` (`rows × n`), on this thread.
    pub(super) fn rows_into<'a>(
        &self,
        x: &[f32],
        out: &'a mut [MaybeUninit<f32>],
        act: Act,
    ) -> &'a mut [f32] {
        match self {
            Pointwise::Packed(layer) => layer.rows_into(x, out, act),
            Pointwise::F32 { weight, bias } => dense_rows_into(x, weight, bias, out, act),
        }
    }
}
