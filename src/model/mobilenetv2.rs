//! MobileNetV2 (width 1.0) in NHWC with BatchNorm folded into each conv's bias.
//!
//! Parameter names follow the Keras Applications checkpoint (`Conv1`, `expanded_conv_*`,
//! `block_N_{expand,depthwise,project}`, `Conv_1`) so the ImageNet import is a rename-free
//! layout change. Layouts: the input conv `[32, 3·3·3]` (kh, kw, cin), pointwise convs
//! `[Cout, Cin]`, depthwise convs `[3, 3, C]`.

use super::ops::{self, Act, BlockTensors, Conv1x1, Conv3x3, DenseBf16, InvertedResidualBlock};
use candle_core::{Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use std::sync::Arc;

/// Expansion t, output channels c, repeats n, first stride s: the MobileNetV2 paper's table.
pub const BLOCK_TABLE: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];
pub const STEM_CHANNELS: usize = 32;
pub const FEATURE_CHANNELS: usize = 1280;
/// Inverted-residual blocks in the table (1 + 2 + 3 + 4 + 3 + 3 + 1).
pub const NUM_BLOCKS: usize = 17;

/// One inverted-residual block's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    pub in_channels: usize,
    pub hidden: usize,
    pub out_channels: usize,
    pub stride: usize,
}

impl BlockSpec {
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// The 17 blocks of the table, in order.
pub fn block_specs() -> Vec<BlockSpec> {
    let mut specs = Vec::with_capacity(NUM_BLOCKS);
    let mut cin = STEM_CHANNELS;
    for &(t, c, n, s) in &BLOCK_TABLE {
        for i in 0..n {
            specs.push(BlockSpec {
                in_channels: cin,
                hidden: cin * t,
                out_channels: c,
                stride: if i == 0 { s } else { 1 },
            });
            cin = c;
        }
    }
    specs
}

/// Keras name prefix of block `index` (0-based).
pub fn block_name(index: usize) -> String {
    if index == 0 {
        "expanded_conv".to_string()
    } else {
        format!("block_{index}")
    }
}

/// A conv's weight and folded-BatchNorm bias.
#[derive(Debug, Clone)]
struct ConvParams {
    weight: Tensor,
    bias: Tensor,
    /// The weights packed for the bf16 kernel, when inference runs the 1×1 convs in bf16.
    bf16: Option<Arc<DenseBf16>>,
}

impl ConvParams {
    fn new(vb: VarBuilder, weight_shape: &[usize], fan_in: usize) -> Result<Self> {
        // He-normal for ReLU6 networks trained from scratch; overwritten by imported weights.
        let init = Init::Randn {
            mean: 0.,
            stdev: (2.0 / fan_in as f64).sqrt(),
        };
        let out = weight_shape[if weight_shape.len() == 3 { 2 } else { 0 }];
        Ok(Self {
            weight: vb.get_with_hints(weight_shape, "weight", init)?,
            bias: vb.get_with_hints(out, "bias", Init::Const(0.))?,
            bf16: None,
        })
    }

    /// This 1×1 conv (weight `[Cout, Cin]`) on x `[…, Cin]`, in bf16 if packed for it.
    fn pointwise(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        match &self.bf16 {
            Some(packed) => packed.forward(x, act),
            None => ops::dense(x, &self.weight, &self.bias, act),
        }
    }

    /// This 1×1 conv as the fused block takes it.
    fn as_conv1x1(&self) -> Conv1x1<'_> {
        Conv1x1 {
            weight: &self.weight,
            bias: &self.bias,
            bf16: self.bf16.as_ref(),
        }
    }

    /// Packs the weights for the bf16 kernel (`bf16`), or drops the packing.
    fn set_bf16(&mut self, bf16: bool) -> Result<()> {
        self.bf16 = if bf16 {
            Some(Arc::new(DenseBf16::new(&self.weight, &self.bias)?))
        } else {
            None
        };
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct InvertedResidual {
    spec: BlockSpec,
    expand: Option<ConvParams>,
    depthwise: ConvParams,
    project: ConvParams,
    /// The block as one op, for inference (see [`MobileNetV2::prepare_inference`]).
    fused: Option<Arc<InvertedResidualBlock>>,
}

impl InvertedResidual {
    /// `name` is the Keras prefix: parameters are `{name}_expand`, `{name}_depthwise`, ….
    fn new(vb: &VarBuilder, name: &str, spec: BlockSpec) -> Result<Self> {
        let expand = if spec.hidden != spec.in_channels {
            Some(ConvParams::new(
                vb.pp(format!("{name}_expand")),
                &[spec.hidden, spec.in_channels],
                spec.in_channels,
            )?)
        } else {
            None
        };
        Ok(Self {
            spec,
            expand,
            depthwise: ConvParams::new(
                vb.pp(format!("{name}_depthwise")),
                &[3, 3, spec.hidden],
                9,
            )?,
            project: ConvParams::new(
                vb.pp(format!("{name}_project")),
                &[spec.out_channels, spec.hidden],
                spec.hidden,
            )?,
            fused: None,
        })
    }

    /// The block as one op (`Some`) for inference, its 1×1 convs in bf16 or f32; `None`: the
    /// three trainable ops.
    fn set_fused(&mut self, fused: Option<bool>) -> Result<()> {
        // The three ops still run the layers the fused op does not split well; the fused op
        // shares their bf16 packing.
        let bf16 = fused == Some(true);
        if let Some(expand) = &mut self.expand {
            expand.set_bf16(bf16)?;
        }
        self.project.set_bf16(bf16)?;
        self.fused = match fused {
            Some(_) => Some(Arc::new(InvertedResidualBlock::new(BlockTensors {
                expand: self.expand.as_ref().map(ConvParams::as_conv1x1),
                depthwise: (&self.depthwise.weight, &self.depthwise.bias),
                project: self.project.as_conv1x1(),
                stride: self.spec.stride,
            })?)),
            None => None,
        };
        Ok(())
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(fused) = &self.fused {
            if fused.band_rows(x.dims()).is_some() {
                return fused.forward(x);
            }
        }
        let h = match &self.expand {
            Some(e) => e.pointwise(x, Act::Relu6)?,
            None => x.clone(),
        };
        let conv = Conv3x3 {
            stride: self.spec.stride,
        };
        let h = ops::depthwise3x3(
            &h,
            &self.depthwise.weight,
            &self.depthwise.bias,
            conv,
            Act::Relu6,
        )?;
        let h = self.project.pointwise(&h, Act::Identity)?;
        if self.spec.residual() {
            h + x
        } else {
            Ok(h)
        }
    }
}

/// The MobileNetV2 trunk: image `[N,H,W,3]` in [-1, 1] → pooled features `[N, 1280]`.
///
/// "Boundary k" is the activation entering block k (boundary 0 is the stem's output,
/// boundary 17 the last block's), so training can cache a boundary and run only the rest.
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    stem: ConvParams,
    blocks: Vec<InvertedResidual>,
    last: ConvParams,
}

impl MobileNetV2 {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let stem = ConvParams::new(vb.pp("Conv1"), &[STEM_CHANNELS, 27], 27)?;
        let blocks = block_specs()
            .into_iter()
            .enumerate()
            .map(|(i, spec)| InvertedResidual::new(&vb, &block_name(i), spec))
            .collect::<Result<Vec<_>>>()?;
        let cin = BLOCK_TABLE[BLOCK_TABLE.len() - 1].1;
        let last = ConvParams::new(vb.pp("Conv_1"), &[FEATURE_CHANNELS, cin], cin)?;
        Ok(Self { stem, blocks, last })
    }

    /// Stem and blocks `0..k`: image → boundary `k`.
    pub fn forward_to(&self, image: &Tensor, k: usize) -> Result<Tensor> {
        let conv = Conv3x3 { stride: 2 };
        let mut x =
            ops::conv3x3_input(image, &self.stem.weight, &self.stem.bias, conv, Act::Relu6)?;
        for block in &self.blocks[..k] {
            x = block.forward(&x)?;
        }
        Ok(x)
    }

    /// Blocks `k..`, the last 1×1 conv and global average pooling: boundary `k` → `[N, 1280]`.
    pub fn forward_from(&self, boundary: &Tensor, k: usize) -> Result<Tensor> {
        let mut x = boundary.clone();
        for block in &self.blocks[k..] {
            x = block.forward(&x)?;
        }
        let x = self.last.pointwise(&x, Act::Relu6)?;
        global_avg_pool(&x)
    }

    /// Makes each block one op for inference (`Some`), with the 1×1 convs (89 % of the
    /// multiply-adds at 128×128) in bf16 (`Some(true)`) or f32; `None` goes back to the
    /// trainable ops. The fused ops have no backward pass and hold copies of the weights,
    /// frozen at the time of the call.
    pub fn prepare_inference(&mut self, inference: Option<bool>) -> Result<()> {
        for block in &mut self.blocks {
            block.set_fused(inference)?;
        }
        self.last.set_bf16(inference == Some(true))
    }

    /// Image → pooled features `[N, 1280]`.
    pub fn forward(&self, image: &Tensor) -> Result<Tensor> {
        self.forward_from(&self.forward_to(image, 0)?, 0)
    }

    /// Shape `[H, W, C]` of boundary `k` for a square input of `input_size` pixels.
    pub fn boundary_shape(input_size: usize, k: usize) -> [usize; 3] {
        let stem = Conv3x3 { stride: 2 };
        let mut side = stem.out_len(input_size);
        let mut channels = STEM_CHANNELS;
        for spec in &block_specs()[..k] {
            side = Conv3x3 {
                stride: spec.stride,
            }
            .out_len(side);
            channels = spec.out_channels;
        }
        [side, side, channels]
    }
}

/// Whether parameter `name` belongs to block `k` or a later layer (the trainable part when
/// fine-tuning from boundary `k`).
pub fn is_in_blocks_from(name: &str, k: usize) -> bool {
    if name.starts_with("Conv_1.") {
        return true;
    }
    if name.starts_with("Conv1.") {
        return k == 0;
    }
    let index = if name.starts_with("expanded_conv_") {
        Some(0)
    } else {
        name.strip_prefix("block_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|n| n.parse::<usize>().ok())
    };
    index.is_some_and(|i| i >= k)
}

/// Mean over the spatial positions of an NHWC tensor.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    let n = x.dim(0)?;
    x.reshape((n, (), c))?.mean(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_gives_17_blocks_and_keras_names() {
        let specs = block_specs();
        assert_eq!(specs.len(), NUM_BLOCKS);
        assert_eq!(specs[0].hidden, 32);
        assert_eq!(specs[16].out_channels, 320);
        assert_eq!(block_name(0), "expanded_conv");
        assert_eq!(block_name(13), "block_13");
        assert_eq!(specs.iter().filter(|s| s.residual()).count(), 10);
    }

    #[test]
    fn boundary_shapes_at_128() {
        assert_eq!(MobileNetV2::boundary_shape(128, 0), [64, 64, 32]);
        assert_eq!(MobileNetV2::boundary_shape(128, 13), [8, 8, 96]);
        assert_eq!(MobileNetV2::boundary_shape(128, 17), [4, 4, 320]);
    }

    #[test]
    fn freezing_prefixes() {
        assert!(is_in_blocks_from("block_13_expand.weight", 13));
        assert!(!is_in_blocks_from("block_12_project.bias", 13));
        assert!(is_in_blocks_from("Conv_1.weight", 17));
        assert!(!is_in_blocks_from("Conv1.weight", 1));
        assert!(is_in_blocks_from("expanded_conv_depthwise.weight", 0));
        assert!(!is_in_blocks_from("expanded_conv_project.bias", 1));
    }
}
