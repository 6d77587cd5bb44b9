//! VGG16 (Simonyan & Zisserman 2015), the course study's other baseline, in NHWC: the 13
//! 3×3 convs of Keras Applications' `VGG16(include_top=False)` with its layer names
//! (`block1_conv1` … `block5_conv3`), each followed by ReLU, a 2×2 max pool closing each of
//! the 5 blocks, then global average pooling → `[N, 512]`.
//!
//! Conv weights are `[Cout, 3·3·Cin]` in (kh, kw, cin) order, as the MobileNetV2 stem's.
//! The layers run as candle's own conv2d and max-pool (the reference ops, which have a
//! backward): VGG16 is here to be compared with, and at ~5 GFLOP per 128×128 image (25× a
//! MobileNetV2) it is not a live model, so it gets no custom kernels.

use super::ops::global_avg_pool;
use super::ops::{self, Act, Conv3x3};
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// Conv layers in each of the 5 blocks.
pub const CONVS_PER_BLOCK: [usize; 5] = [2, 2, 3, 3, 3];
pub const NUM_BLOCKS: usize = 5;

/// Channel widths of the 5 blocks; [`Vgg16Config::default`] is VGG16's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vgg16Config {
    pub widths: [usize; NUM_BLOCKS],
}

impl Default for Vgg16Config {
    fn default() -> Self {
        Self {
            widths: [64, 128, 256, 512, 512],
        }
    }
}

impl Vgg16Config {
    pub fn feature_channels(&self) -> usize {
        self.widths[NUM_BLOCKS - 1]
    }
}

/// Keras name of conv `conv` (0-based) of block `block` (0-based): `block1_conv1` is (0, 0).
pub fn conv_name(block: usize, conv: usize) -> String {
    format!("block{}_conv{}", block + 1, conv + 1)
}

#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
}

impl Conv {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        // He-normal, for ReLU networks trained from scratch; overwritten by imported weights.
        let init = Init::Randn {
            mean: 0.,
            stdev: (2.0 / (9 * cin) as f64).sqrt(),
        };
        Ok(Self {
            weight: vb.get_with_hints((cout, 9 * cin), "weight", init)?,
            bias: vb.get_with_hints(cout, "bias", Init::Const(0.))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let same = Conv3x3 { stride: 1 };
        ops::conv3x3_input_reference(x, &self.weight, &self.bias, same, Act::Relu)
    }
}

/// The VGG16 trunk: image `[N,H,W,3]` in [-1, 1] → pooled features `[N, widths[4]]`.
/// Boundary k is the activation entering block k (boundary 0 is the image).
#[derive(Debug, Clone)]
pub struct Vgg16 {
    config: Vgg16Config,
    blocks: Vec<Vec<Conv>>,
}

impl Vgg16 {
    pub fn new(vb: VarBuilder, config: Vgg16Config) -> Result<Self> {
        let mut cin = 3;
        let mut blocks = Vec::with_capacity(NUM_BLOCKS);
        for (b, (&convs, &width)) in CONVS_PER_BLOCK.iter().zip(&config.widths).enumerate() {
            let mut block = Vec::with_capacity(convs);
            for c in 0..convs {
                block.push(Conv::new(vb.pp(conv_name(b, c)), cin, width)?);
                cin = width;
            }
            blocks.push(block);
        }
        Ok(Self { config, blocks })
    }

    pub fn config(&self) -> Vgg16Config {
        self.config
    }

    fn block(&self, index: usize, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for conv in &self.blocks[index] {
            x = conv.forward(&x)?;
        }
        ops::max_pool2x2_reference(&x)
    }

    /// Blocks `0..k`: image → boundary `k`.
    pub fn forward_to(&self, image: &Tensor, k: usize) -> Result<Tensor> {
        (0..k).try_fold(image.clone(), |x, b| self.block(b, &x))
    }

    /// Blocks `k..` and global average pooling: boundary `k` → `[N, widths[4]]`.
    pub fn forward_from(&self, boundary: &Tensor, k: usize) -> Result<Tensor> {
        let x = (k..NUM_BLOCKS).try_fold(boundary.clone(), |x, b| self.block(b, &x))?;
        global_avg_pool(&x)
    }

    /// Shape `[H, W, C]` of boundary `k` for a square input of `input_size` pixels (each
    /// pool halves the side, rounding down).
    pub fn boundary_shape(config: &Vgg16Config, input_size: usize, k: usize) -> [usize; 3] {
        let channels = if k == 0 { 3 } else { config.widths[k - 1] };
        let side = input_size >> k;
        [side, side, channels]
    }
}

/// Whether parameter `name` belongs to block `k` (0-based) or a later one.
pub fn is_in_blocks_from(name: &str, k: usize) -> bool {
    name.strip_prefix("block")
        .and_then(|rest| rest.split('_').next())
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|block| block > k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_names_and_shapes() {
        assert_eq!(conv_name(0, 0), "block1_conv1");
        assert_eq!(conv_name(4, 2), "block5_conv3");
        assert_eq!(CONVS_PER_BLOCK.iter().sum::<usize>(), 13);
        let config = Vgg16Config::default();
        assert_eq!(Vgg16::boundary_shape(&config, 128, 0), [128, 128, 3]);
        assert_eq!(Vgg16::boundary_shape(&config, 128, 3), [16, 16, 256]);
        assert_eq!(Vgg16::boundary_shape(&config, 128, 5), [4, 4, 512]);
        assert!(is_in_blocks_from("block5_conv3.weight", 4));
        assert!(!is_in_blocks_from("block4_conv3.weight", 4));
        assert!(is_in_blocks_from("block1_conv1.bias", 0));
        assert!(!is_in_blocks_from("head_dense.weight", 0));
    }
}
