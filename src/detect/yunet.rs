//! libfacedetection's CNN face detector (YuNet-style, 53k parameters, BSD-3-Clause; see the
//! README's notices) on the project's NHWC kernels (`model::ops`: each unit's 1×1
//! conv and depthwise 3×3 fused per row band, the stem run straight on the frame's bytes):
//! boxes, a 0–1 score and five landmarks.
//!
//! Every unit is a DP: a 1×1 conv with no activation, then a depthwise 3×3, then ReLU (none in
//! the heads). The backbone halves the resolution five times (a strided stem conv and four
//! 2×2 max-pools); a top-down neck adds each coarser level, upsampled ×2, to the finer
//! backbone feature; heads at strides 8, 16 and 32 predict per cell a class and an objectness
//! logit, a box and 10 landmark coordinates. Parameter names are those of the weights file
//! (`backbone.model0.conv`, `backbone.modelN.dpK.{pw,dw}`, `neck.lateral_convs.L`,
//! `bbox_head.multi_level_{cls,bbox,obj,kps}.L`); layouts are converted from OIHW at load.

use super::decode::{self, HeadMaps, HEAD_CHANNELS};
use super::{DetectError, Detection};
use crate::model::ops::{
    max_pool2x2, upsample2_add, Act, ChannelOrder, PointwiseDepthwise, RgbStem,
};
use crate::model::weights;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use std::path::Path;

/// The weights, embedded at build time (see build.rs); empty when the build had none.
static YUNET_WEIGHTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/yunet.safetensors"));
const YUNET_WEIGHTS_NAME: &str = "<embedded yunet.safetensors>";

/// Input sides are padded to a multiple of this (the coarsest head's stride).
pub const INPUT_ALIGN: usize = 32;

/// The network's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YunetConfig {
    /// Output channels of the stem conv and of the DP unit after it (`backbone.model0`).
    pub stem_channels: usize,
    /// `backbone.model1..=5`: whether a 2×2 max-pool comes first, and the output channels of
    /// the stage's two DP units.
    pub stages: [(bool, usize, usize); 5],
    /// Channels of the neck and of the heads' input.
    pub neck_channels: usize,
}

impl YunetConfig {
    /// libfacedetection's network (commit acf7b254).
    pub const LIBFACEDETECTION: YunetConfig = YunetConfig {
        stem_channels: 16,
        stages: [
            (true, 16, 32),
            (false, 32, 64),
            (true, 64, 64),
            (true, 64, 64),
            (true, 64, 64),
        ],
        neck_channels: 64,
    };
}

/// 1×1 conv (no activation), depthwise 3×3, then `act`, as one fused op.
#[derive(Debug, Clone)]
struct Dp(PointwiseDepthwise);

impl Dp {
    /// The unit's tensors: 1×1 weight and bias, depthwise weight and bias.
    fn params(vb: VarBuilder, cin: usize, cout: usize) -> Result<[Tensor; 4]> {
        let (pw, dw) = (vb.pp("pw"), vb.pp("dw"));
        Ok([
            pw.get((cout, cin), "weight")?,
            pw.get(cout, "bias")?,
            dw.get((3, 3, cout), "weight")?,
            dw.get(cout, "bias")?,
        ])
    }

    fn new(vb: VarBuilder, cin: usize, cout: usize, act: Act) -> Result<Self> {
        let [pw_weight, pw_bias, dw_weight, dw_bias] = Self::params(vb, cin, cout)?;
        let op = PointwiseDepthwise::new(&pw_weight, &pw_bias, &dw_weight, &dw_bias, act)?;
        Ok(Self(op))
    }

    /// The four heads of one level as one DP: their 1×1 convs read the same input and their
    /// depthwise convs are per channel, so stacking the channels gives the same numbers with
    /// one pass instead of four. Channels as in [`decode::HeadMaps`].
    fn heads(vb: &VarBuilder, level: usize, cin: usize) -> Result<Self> {
        let parts = HEAD_CHANNELS
            .iter()
            .map(|&(name, channels)| {
                Self::params(
                    vb.pp(format!("multi_level_{name}")).pp(level),
                    cin,
                    channels,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let cat = |i: usize, dim: usize| {
            Tensor::cat(&parts.iter().map(|p| &p[i]).collect::<Vec<_>>(), dim)
        };
        let op = PointwiseDepthwise::new(
            &cat(0, 0)?,
            &cat(1, 0)?,
            &cat(2, 2)?,
            &cat(3, 0)?,
            Act::Identity,
        )?;
        Ok(Self(op))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

/// `backbone.model1..=5`: an optional 2×2 max-pool, then two DP units.
#[derive(Debug, Clone)]
struct Stage {
    pool_first: bool,
    dp1: Dp,
    dp2: Dp,
}

impl Stage {
    fn new(
        vb: VarBuilder,
        cin: usize,
        (pool_first, mid, cout): (bool, usize, usize),
    ) -> Result<Self> {
        Ok(Self {
            pool_first,
            dp1: Dp::new(vb.pp("dp1"), cin, mid, Act::Relu)?,
            dp2: Dp::new(vb.pp("dp2"), mid, cout, Act::Relu)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.pool_first {
            max_pool2x2(x)?
        } else {
            x.clone()
        };
        self.dp2.forward(&self.dp1.forward(&x)?)
    }
}

/// The network: an RGB frame, seen as zero-padded at the bottom and right to multiples of 32
/// → the raw head maps of strides 8, 16 and 32.
#[derive(Debug, Clone)]
pub struct Yunet {
    /// `backbone.model0.conv`, run straight on the frame's bytes.
    stem: RgbStem,
    stem_dp: Dp,
    stages: Vec<Stage>,
    /// `neck.lateral_convs.0..=2`, for strides 8, 16, 32.
    lateral: Vec<Dp>,
    /// One fused DP per level (see [`Dp::heads`]).
    heads: Vec<Dp>,
}

impl Yunet {
    pub fn new(vb: VarBuilder, config: &YunetConfig) -> Result<Self> {
        let backbone = vb.pp("backbone");
        let stem = backbone.pp("model0");
        let c = config.stem_channels;
        let mut cin = c;
        let mut stages = Vec::with_capacity(config.stages.len());
        for (i, &spec) in config.stages.iter().enumerate() {
            stages.push(Stage::new(
                backbone.pp(format!("model{}", i + 1)),
                cin,
                spec,
            )?);
            cin = spec.2;
        }
        let neck = config.neck_channels;
        let lateral = (0..decode::STRIDES.len())
            .map(|l| Dp::new(vb.pp("neck.lateral_convs").pp(l), neck, neck, Act::Relu))
            .collect::<Result<Vec<_>>>()?;
        let heads = (0..decode::STRIDES.len())
            .map(|l| Dp::heads(&vb.pp("bbox_head"), l, neck))
            .collect::<Result<Vec<_>>>()?;
        let (stem_weight, stem_bias) = (
            stem.pp("conv").get((c, 27), "weight")?,
            stem.pp("conv").get(c, "bias")?,
        );
        Ok(Self {
            // The weights' input channels are B, G, R.
            stem: RgbStem::new(&stem_weight, &stem_bias, ChannelOrder::Bgr, Act::Relu)?,
            stem_dp: Dp::new(stem.pp("dp"), c, c, Act::Relu)?,
            stages,
            lateral,
            heads,
        })
    }

    /// Frame → head maps `[1, H32/s, W32/s, 16]` for s = 8, 16, 32.
    pub fn forward(&self, frame: &RgbImage) -> Result<[Tensor; 3]> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let (w32, h32) = (
            w.next_multiple_of(INPUT_ALIGN),
            h.next_multiple_of(INPUT_ALIGN),
        );
        let x = self
            .stem
            .forward(frame.as_raw(), (h, w), (h32 / 2, w32 / 2))?;
        let mut x = self.stem_dp.forward(&x)?;
        let mut features = Vec::with_capacity(3);
        for (i, stage) in self.stages.iter().enumerate() {
            x = stage.forward(&x)?;
            // The last three stages give the backbone features of strides 8, 16, 32.
            if i + 3 >= self.stages.len() {
                features.push(x.clone());
            }
        }
        let p32 = self.lateral[2].forward(&features[2])?;
        let p16 = self.lateral[1].forward(&upsample2_add(&p32, &features[1])?)?;
        let p8 = self.lateral[0].forward(&upsample2_add(&p16, &features[0])?)?;
        Ok([
            self.heads[0].forward(&p8)?,
            self.heads[1].forward(&p16)?,
            self.heads[2].forward(&p32)?,
        ])
    }
}

/// Settings of the detector around the network (libfacedetection's fixed defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YunetSettings {
    /// Anchors scoring below this (√(cls·obj), 0–1) are dropped.
    pub min_score: f32,
    /// Candidates kept, best first, before NMS.
    pub top_k: usize,
    /// A box is suppressed when its IoU with a kept box exceeds this.
    pub nms_iou: f32,
    /// Detections kept after NMS.
    pub keep_top_k: usize,
}

impl Default for YunetSettings {
    fn default() -> Self {
        Self {
            min_score: 0.2,
            top_k: 1000,
            nms_iou: 0.45,
            keep_top_k: 512,
        }
    }
}

/// The network with its input preparation and post-processing.
#[derive(Debug, Clone)]
pub struct YunetDetector {
    net: Yunet,
    settings: YunetSettings,
}

impl YunetDetector {
    /// The weights embedded in this build.
    pub fn embedded(settings: YunetSettings) -> std::result::Result<Self, DetectError> {
        if YUNET_WEIGHTS.is_empty() {
            return Err(DetectError::NoYunetWeights);
        }
        Self::from_bytes(Path::new(YUNET_WEIGHTS_NAME), YUNET_WEIGHTS, settings)
    }

    /// Weights in libfacedetection's layout (OIHW, as `../shared/weights/facedetect`), held in
    /// memory; `name` appears in errors.
    pub fn from_bytes(
        name: &Path,
        bytes: &[u8],
        settings: YunetSettings,
    ) -> std::result::Result<Self, DetectError> {
        let device = Device::Cpu;
        let file = weights::parse_safetensors(name, bytes, &device)?;
        let tensors =
            crate::model::import::oihw_to_nhwc_layouts(name, file.tensors, |n| n.contains(".dw."))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let net = Yunet::new(vb, &YunetConfig::LIBFACEDETECTION).map_err(|source| {
            weights::WeightsError::Tensor {
                path: name.to_path_buf(),
                source,
            }
        })?;
        Ok(Self { net, settings })
    }

    /// The faces in `frame`, best first, in its pixels.
    pub fn detect(&self, frame: &RgbImage) -> Result<Vec<Detection>> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let maps = self.net.forward(frame)?;
        let mut levels = Vec::with_capacity(maps.len());
        for (map, stride) in maps.iter().zip(decode::STRIDES) {
            let (_, rows, cols, _) = map.dims4()?;
            levels.push(HeadMaps {
                stride,
                rows,
                cols,
                values: map.flatten_all()?.to_vec1::<f32>()?,
            });
        }
        let s = &self.settings;
        let candidates = decode::candidates(&levels, s.min_score);
        Ok(decode::nms(candidates, s.top_k, s.nms_iou, s.keep_top_k)
            .into_iter()
            .map(|c| c.detection())
            .collect())
    }
}
