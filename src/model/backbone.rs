//! The trunk architectures the head can sit on: MobileNetV2 (the default, the live model),
//! EfficientNet-Lite0 (a stronger ImageNet backbone of the same kind) and VGG16 (the course
//! study's other baseline). Each is split into blocks so training can freeze a prefix and
//! cache the activation at a block boundary.

use super::efficientnet_lite::EFFICIENTNET_LITE0;
use super::inverted_residual_net::{InvertedResidualNet, NetSpec};
use super::mobilenetv2::MOBILENET_V2;
use super::vgg16::{self, Vgg16, Vgg16Config};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// A trunk architecture.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// MobileNetV2 1.0 (Keras names), with the hand-written CPU and CUDA kernels.
    #[default]
    #[cfg_attr(feature = "cli", value(name = "mobilenetv2"))]
    #[serde(rename = "mobilenetv2")]
    MobileNetV2,
    /// EfficientNet-Lite0 (PyTorch names, BatchNorm folded at import), on MobileNetV2's
    /// kernels (its 5×5 depthwise convs as candle ops on a GPU).
    #[cfg_attr(feature = "cli", value(name = "efficientnet-lite0"))]
    #[serde(rename = "efficientnet-lite0")]
    EfficientNetLite0,
    /// VGG16 (Keras names `block1_conv1` … `block5_conv3`), on candle's reference ops.
    Vgg16,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::MobileNetV2, Arch::EfficientNetLite0, Arch::Vgg16];

    /// The table of an inverted-residual trunk (`None`: VGG16).
    pub fn net_spec(self) -> Option<&'static NetSpec> {
        match self {
            Arch::MobileNetV2 => Some(&MOBILENET_V2),
            Arch::EfficientNetLite0 => Some(&EFFICIENTNET_LITE0),
            Arch::Vgg16 => None,
        }
    }

    /// The weights-file metadata value.
    pub fn metadata_name(self) -> &'static str {
        match self {
            Arch::MobileNetV2 => "mobilenet_v2_1.0",
            Arch::EfficientNetLite0 => "efficientnet_lite0",
            Arch::Vgg16 => "vgg16",
        }
    }

    pub fn from_metadata_name(name: &str) -> Option<Self> {
        Arch::ALL.into_iter().find(|a| a.metadata_name() == name)
    }

    /// Where `train` looks for the arch's ImageNet weights without `--init` (VGG16's must be
    /// converted there by the user: see scripts/keras_h5_to_safetensors.py).
    pub fn default_init(self) -> &'static str {
        match self {
            Arch::MobileNetV2 => {
                "../shared/weights/imagenet/mobilenet_v2_1.0_keras_imagenet.safetensors"
            }
            Arch::EfficientNetLite0 => {
                "../shared/weights/imagenet/efficientnet_lite0_imagenet.safetensors"
            }
            Arch::Vgg16 => "../shared/weights/imagenet/vgg16_keras_imagenet.safetensors",
        }
    }

    /// Blocks a fine-tune can start from.
    pub fn num_blocks(self) -> usize {
        match self.net_spec() {
            Some(net) => net.num_blocks(),
            None => vgg16::NUM_BLOCKS,
        }
    }

    /// Width of the pooled features the head reads.
    pub fn feature_channels(self) -> usize {
        match self.net_spec() {
            Some(net) => net.feature_channels,
            None => Vgg16Config::default().feature_channels(),
        }
    }

    /// Shape `[H, W, C]` of the activation entering block `k` for a square input.
    pub fn boundary_shape(self, input_size: usize, k: usize) -> [usize; 3] {
        match self.net_spec() {
            Some(net) => net.boundary_shape(input_size, k),
            None => Vgg16::boundary_shape(&Vgg16Config::default(), input_size, k),
        }
    }

    /// Whether trunk parameter `name` is in block `k` or after it (what trains when
    /// fine-tuning from boundary `k`).
    pub fn is_in_blocks_from(self, name: &str, k: usize) -> bool {
        match self.net_spec() {
            Some(net) => net.is_in_blocks_from(name, k),
            None => vgg16::is_in_blocks_from(name, k),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::MobileNetV2 => "mobilenetv2",
            Arch::EfficientNetLite0 => "efficientnet-lite0",
            Arch::Vgg16 => "vgg16",
        })
    }
}

/// A trunk: image `[N,H,W,3]` in [-1, 1] → pooled features `[N, feature_channels]`.
#[derive(Debug, Clone)]
pub enum Trunk {
    /// MobileNetV2 or EfficientNet-Lite0.
    InvertedResidual(InvertedResidualNet),
    Vgg16(Vgg16),
}

impl Trunk {
    pub fn new(arch: Arch, vb: VarBuilder) -> Result<Self> {
        Ok(match arch.net_spec() {
            Some(net) => Trunk::InvertedResidual(InvertedResidualNet::new(vb, net)?),
            None => Trunk::Vgg16(Vgg16::new(vb, Vgg16Config::default())?),
        })
    }

    /// Blocks `0..k`: image → boundary `k`.
    pub fn forward_to(&self, image: &Tensor, k: usize) -> Result<Tensor> {
        match self {
            Trunk::InvertedResidual(t) => t.forward_to(image, k),
            Trunk::Vgg16(t) => t.forward_to(image, k),
        }
    }

    /// Blocks `k..` and pooling: boundary `k` → pooled features.
    pub fn forward_from(&self, boundary: &Tensor, k: usize) -> Result<Tensor> {
        match self {
            Trunk::InvertedResidual(t) => t.forward_from(boundary, k),
            Trunk::Vgg16(t) => t.forward_from(boundary, k),
        }
    }

    /// Image → pooled features.
    pub fn forward(&self, image: &Tensor) -> Result<Tensor> {
        self.forward_from(&self.forward_to(image, 0)?, 0)
    }
}
