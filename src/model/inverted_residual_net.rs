//! The inverted-residual networks, MobileNetV2 and EfficientNet-Lite, in NHWC with BatchNorm
//! folded into each conv's bias: a 3×3 stride-2 stem, a table of inverted-residual blocks
//! (expand 1×1 → depthwise k×k → project 1×1, ReLU6), a last 1×1 conv, global average pooling.
//! The two differ only in their tables (EfficientNet-Lite has 5×5 depthwise convs), their
//! depthwise padding and their checkpoints' parameter names, which [`NetSpec`] holds
//! (`mobilenetv2.rs`, `efficientnet_lite.rs`).
//!
//! Layouts: the stem `[Cout, 3·3·3]` (kh, kw, cin), pointwise convs `[Cout, Cin]`, depthwise
//! convs `[k, k, C]`.

use super::ops::{
    self, global_avg_pool, Act, BlockTensors, Conv1x1, Conv3x3, DenseFormat, InvertedResidualBlock,
    PackedDense, SamePadding, Window,
};
use candle_core::{Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use std::sync::Arc;

/// A stage of the block table: `repeats` blocks of expansion `expansion`, a `kernel`×`kernel`
/// depthwise conv and `channels` outputs, the first with stride `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub expansion: usize,
    pub kernel: usize,
    pub channels: usize,
    pub repeats: usize,
    pub stride: usize,
}

/// The layers of a block, as named in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Expand,
    Depthwise,
    Project,
}

/// How a network pads its depthwise convs (the padding its ImageNet weights were trained with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Keras' MobileNetV2 padding ([`Conv3x3`]; 3×3 windows only).
    Keras,
    /// TensorFlow "SAME" ([`SamePadding`]).
    Same,
}

/// An inverted-residual network: its table and its checkpoint's names.
#[derive(Debug)]
pub struct NetSpec {
    pub stages: &'static [Stage],
    pub stem_channels: usize,
    pub feature_channels: usize,
    pub padding: Padding,
    /// The stem's and the last 1×1 conv's names.
    pub stem_name: &'static str,
    pub last_name: &'static str,
    /// The name of a block's layer.
    pub layer_name: fn(block: usize, Layer) -> String,
    /// The block a parameter name belongs to, if it is a block's.
    pub block_of: fn(name: &str) -> Option<usize>,
}

/// One inverted-residual block's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    pub in_channels: usize,
    pub hidden: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl BlockSpec {
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

impl NetSpec {
    /// The blocks of the table, in order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut specs = Vec::new();
        let mut cin = self.stem_channels;
        for stage in self.stages {
            for i in 0..stage.repeats {
                specs.push(BlockSpec {
                    in_channels: cin,
                    hidden: cin * stage.expansion,
                    out_channels: stage.channels,
                    kernel: stage.kernel,
                    stride: if i == 0 { stage.stride } else { 1 },
                });
                cin = stage.channels;
            }
        }
        specs
    }

    pub fn num_blocks(&self) -> usize {
        self.stages.iter().map(|s| s.repeats).sum()
    }

    /// Whether parameter `name` belongs to block `k` or a later layer (the trainable part when
    /// fine-tuning from boundary `k`).
    pub fn is_in_blocks_from(&self, name: &str, k: usize) -> bool {
        let in_layer = |layer: &str| {
            name.strip_prefix(layer)
                .is_some_and(|rest| rest.starts_with('.'))
        };
        if in_layer(self.last_name) {
            return true;
        }
        if in_layer(self.stem_name) {
            return k == 0;
        }
        (self.block_of)(name).is_some_and(|block| block >= k)
    }

    /// Shape `[H, W, C]` of boundary `k` for a square input of `input_size` pixels.
    pub fn boundary_shape(&self, input_size: usize, k: usize) -> [usize; 3] {
        let stem = Conv3x3 { stride: 2 };
        let mut side = stem.out_len(input_size);
        let mut channels = self.stem_channels;
        for spec in &self.blocks()[..k] {
            side = side.div_ceil(spec.stride);
            channels = spec.out_channels;
        }
        [side, side, channels]
    }
}

/// Name, beside a 1×1 conv's weight and bias, of the largest value each of its input channels
/// reached on calibration faces (`affectcam calibrate`); int8 scales by it where present.
pub const INPUT_RANGE: &str = "input_range";

/// A conv's weight and folded-BatchNorm bias.
#[derive(Debug, Clone)]
struct ConvParams {
    weight: Tensor,
    bias: Tensor,
    /// A 1×1 conv's calibrated input range (see [`INPUT_RANGE`]), where the file has one.
    input_range: Option<Tensor>,
    /// A 1×1 conv's weights packed for a [`PackedDense`] kernel, for inference.
    packed: Option<Arc<PackedDense>>,
}

impl ConvParams {
    fn new(vb: VarBuilder, weight_shape: &[usize], fan_in: usize) -> Result<Self> {
        // He-normal for ReLU6 networks trained from scratch; overwritten by imported weights.
        let init = Init::Randn {
            mean: 0.,
            stdev: (2.0 / fan_in as f64).sqrt(),
        };
        let out = weight_shape[if weight_shape.len() == 3 { 2 } else { 0 }];
        let input_range = if weight_shape.len() == 2 && vb.contains_tensor(INPUT_RANGE) {
            Some(vb.get(weight_shape[1], INPUT_RANGE)?)
        } else {
            None
        };
        Ok(Self {
            weight: vb.get_with_hints(weight_shape, "weight", init)?,
            bias: vb.get_with_hints(out, "bias", Init::Const(0.))?,
            input_range,
            packed: None,
        })
    }

    /// This 1×1 conv (weight `[Cout, Cin]`) on x `[…, Cin]`, on the packed kernel if packed.
    fn pointwise(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        match &self.packed {
            Some(packed) => packed.forward(x, act),
            None => ops::dense(x, &self.weight, &self.bias, act),
        }
    }

    /// This 1×1 conv as the fused block takes it.
    fn as_conv1x1(&self) -> Conv1x1<'_> {
        Conv1x1 {
            weight: &self.weight,
            bias: &self.bias,
            packed: self.packed.as_ref(),
            input_range: self.input_range.as_ref(),
        }
    }

    /// Packs the weights for the kernel of `format` where this CPU runs it, or drops the
    /// packing (`None`, or an unsupported format: gemm then multiplies in f32).
    fn set_packing(&mut self, format: Option<DenseFormat>) -> Result<()> {
        self.packed = match format.filter(|f| f.supported()) {
            Some(DenseFormat::Int8) => Some(Arc::new(PackedDense::int8(
                &self.weight,
                &self.bias,
                self.input_range.as_ref(),
            )?)),
            Some(format) => Some(Arc::new(PackedDense::new(
                &self.weight,
                &self.bias,
                format,
            )?)),
            None => None,
        };
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct InvertedResidual {
    spec: BlockSpec,
    padding: Padding,
    expand: Option<ConvParams>,
    depthwise: ConvParams,
    project: ConvParams,
    /// The block as one op, for inference (see [`InvertedResidualNet::prepare_inference`]).
    fused: Option<Arc<InvertedResidualBlock>>,
}

impl InvertedResidual {
    /// Block `index` of `net`, its parameters named as `net`'s checkpoint names them.
    fn new(vb: &VarBuilder, net: &NetSpec, index: usize, spec: BlockSpec) -> Result<Self> {
        let layer = |layer| vb.pp((net.layer_name)(index, layer));
        let expand = if spec.hidden != spec.in_channels {
            Some(ConvParams::new(
                layer(Layer::Expand),
                &[spec.hidden, spec.in_channels],
                spec.in_channels,
            )?)
        } else {
            None
        };
        let k = spec.kernel;
        Ok(Self {
            spec,
            padding: net.padding,
            expand,
            depthwise: ConvParams::new(layer(Layer::Depthwise), &[k, k, spec.hidden], k * k)?,
            project: ConvParams::new(
                layer(Layer::Project),
                &[spec.out_channels, spec.hidden],
                spec.hidden,
            )?,
            fused: None,
        })
    }

    /// The block as one op (`Some`) for inference, its 1×1 convs in that format; `None`: the
    /// three trainable ops.
    fn set_fused(&mut self, fused: Option<DenseFormat>) -> Result<()> {
        // The three ops still run the layers the fused op does not split well; the fused op
        // shares their packing.
        if let Some(expand) = &mut self.expand {
            expand.set_packing(fused)?;
        }
        self.project.set_packing(fused)?;
        self.fused = match fused {
            Some(_) => Some(Arc::new(InvertedResidualBlock::new(BlockTensors {
                expand: self.expand.as_ref().map(ConvParams::as_conv1x1),
                depthwise: (&self.depthwise.weight, &self.depthwise.bias),
                project: self.project.as_conv1x1(),
                window: self.window(),
            })?)),
            None => None,
        };
        Ok(())
    }

    /// The depthwise conv's window, padded as the network's ImageNet weights were trained.
    fn window(&self) -> Window {
        let stride = self.spec.stride;
        match self.padding {
            Padding::Keras => Window::Keras3x3(Conv3x3 { stride }),
            Padding::Same => Window::Same(SamePadding {
                kernel: self.spec.kernel,
                stride,
            }),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(fused) = &self.fused {
            if fused.splits_well(x.dims()) {
                return fused.forward(x);
            }
        }
        self.project_from(&self.hidden(x)?, x)
    }

    /// Expand and depthwise conv, unfused: the projection's input.
    fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = match &self.expand {
            Some(e) => e.pointwise(x, Act::Relu6)?,
            None => x.clone(),
        };
        let (weight, bias) = (&self.depthwise.weight, &self.depthwise.bias);
        match self.window() {
            Window::Keras3x3(conv) => ops::depthwise3x3(&hidden, weight, bias, conv, Act::Relu6),
            Window::Same(window) => ops::depthwise(&hidden, weight, bias, window, Act::Relu6),
        }
    }

    /// The projection of `hidden`, plus the block's input `x` where the block is residual.
    fn project_from(&self, hidden: &Tensor, x: &Tensor) -> Result<Tensor> {
        let h = self.project.pointwise(hidden, Act::Identity)?;
        if self.spec.residual() {
            h + x
        } else {
            Ok(h)
        }
    }
}

/// An inverted-residual trunk: image `[N,H,W,3]` in [-1, 1] → pooled features
/// `[N, feature_channels]`.
///
/// "Boundary k" is the activation entering block k (boundary 0 is the stem's output, the
/// last boundary the last block's), so training can cache a boundary and run only the rest.
#[derive(Debug, Clone)]
pub struct InvertedResidualNet {
    spec: &'static NetSpec,
    stem: ConvParams,
    blocks: Vec<InvertedResidual>,
    last: ConvParams,
}

impl InvertedResidualNet {
    pub fn new(vb: VarBuilder, spec: &'static NetSpec) -> Result<Self> {
        let stem_channels = spec.stem_channels;
        let stem = ConvParams::new(vb.pp(spec.stem_name), &[stem_channels, 27], 27)?;
        let blocks = spec
            .blocks()
            .into_iter()
            .enumerate()
            .map(|(i, block)| InvertedResidual::new(&vb, spec, i, block))
            .collect::<Result<Vec<_>>>()?;
        let cin = spec.stages[spec.stages.len() - 1].channels;
        let last = ConvParams::new(vb.pp(spec.last_name), &[spec.feature_channels, cin], cin)?;
        Ok(Self {
            spec,
            stem,
            blocks,
            last,
        })
    }

    fn stem(&self, image: &Tensor) -> Result<Tensor> {
        let conv = Conv3x3 { stride: 2 };
        ops::conv3x3_input(image, &self.stem.weight, &self.stem.bias, conv, Act::Relu6)
    }

    /// Stem and blocks `0..k`: image → boundary `k`.
    pub fn forward_to(&self, image: &Tensor, k: usize) -> Result<Tensor> {
        let mut x = self.stem(image)?;
        for block in &self.blocks[..k] {
            x = block.forward(&x)?;
        }
        Ok(x)
    }

    /// Blocks `k..`, the last 1×1 conv and global average pooling: boundary `k` → pooled.
    pub fn forward_from(&self, boundary: &Tensor, k: usize) -> Result<Tensor> {
        let mut x = boundary.clone();
        for block in &self.blocks[k..] {
            x = block.forward(&x)?;
        }
        let x = self.last.pointwise(&x, Act::Relu6)?;
        global_avg_pool(&x)
    }

    /// Makes each block one op for inference (`Some`), with the 1×1 convs (89 % of
    /// MobileNetV2's multiply-adds at 128×128) on the packed kernels of that format (f32 on
    /// gemm where the CPU has none); `None` goes back to the trainable ops. The fused ops have
    /// no backward pass and hold copies of the weights, frozen at the time of the call.
    pub fn prepare_inference(&mut self, inference: Option<DenseFormat>) -> Result<()> {
        for block in &mut self.blocks {
            block.set_fused(inference)?;
        }
        self.last.set_packing(inference)
    }

    /// Whether every projection has a calibrated input range (see [`INPUT_RANGE`]): what int8
    /// needs to keep f32's accuracy.
    pub fn is_calibrated(&self) -> bool {
        self.blocks.iter().all(|b| b.project.input_range.is_some())
    }

    /// Per block, the checkpoint name of its projection's input range and the largest value
    /// each input channel (the depthwise conv's ReLU6 outputs) reaches on `image` `[C]`, for
    /// int8 calibration. Runs the blocks unfused, in whatever format their 1×1 convs are in.
    pub fn projection_input_maxima(&self, image: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let mut x = self.stem(image)?;
        let mut maxima = Vec::with_capacity(self.blocks.len());
        for (index, block) in self.blocks.iter().enumerate() {
            let hidden = block.hidden(&x)?;
            let channels = hidden.dim(D::Minus1)?;
            let name = format!(
                "{}.{INPUT_RANGE}",
                (self.spec.layer_name)(index, Layer::Project)
            );
            maxima.push((name, hidden.reshape(((), channels))?.max(0)?));
            x = block.project_from(&hidden, &x)?;
        }
        Ok(maxima)
    }

    /// Image → pooled features.
    pub fn forward(&self, image: &Tensor) -> Result<Tensor> {
        self.forward_from(&self.forward_to(image, 0)?, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::efficientnet_lite::EFFICIENTNET_LITE0;
    use crate::model::mobilenetv2::MOBILENET_V2;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn fused_inference_pads_as_training_does_on_odd_sizes_too() {
        let dev = Device::Cpu;
        // 100 px gives odd inputs (25, 13, 7) to stride-2 blocks, where the two paddings differ.
        for spec in [&MOBILENET_V2, &EFFICIENTNET_LITE0] {
            let vars = VarMap::new();
            let mut net =
                InvertedResidualNet::new(VarBuilder::from_varmap(&vars, DType::F32, &dev), spec)
                    .unwrap();
            for size in [100, 128] {
                let x = Tensor::rand(-1f32, 1f32, (8, size, size, 3), &dev).unwrap();
                net.prepare_inference(None).unwrap();
                let trained = net.forward(&x).unwrap();
                net.prepare_inference(Some(DenseFormat::F32)).unwrap();
                let fused = net.forward(&x).unwrap();
                let err = ops::check::rel_err(&fused, &trained).unwrap();
                assert!(err < 1e-4, "{} at {size}: {err}", spec.stem_name);
            }
        }
    }
}
