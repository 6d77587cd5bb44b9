//! MobileNetV2 1.0 (Sandler et al. 2018) as an [`InvertedResidualNet`], with the Keras
//! Applications checkpoint's names (`Conv1`, `expanded_conv_*`,
//! `block_N_{expand,depthwise,project}`, `Conv_1`) so the ImageNet import is a rename-free
//! layout change.

use super::inverted_residual_net::{Layer, NetSpec, Padding, Stage};

/// The MobileNetV2 paper's table (expansion t, channels c, repeats n, first stride s); every
/// depthwise conv is 3×3.
pub static MOBILENET_V2: NetSpec = NetSpec {
    stages: &[
        stage(1, 16, 1, 1),
        stage(6, 24, 2, 2),
        stage(6, 32, 3, 2),
        stage(6, 64, 4, 2),
        stage(6, 96, 3, 1),
        stage(6, 160, 3, 2),
        stage(6, 320, 1, 1),
    ],
    stem_channels: 32,
    feature_channels: FEATURE_CHANNELS,
    padding: Padding::Keras,
    stem_name: "Conv1",
    last_name: "Conv_1",
    layer_name,
    block_of,
};

const fn stage(expansion: usize, channels: usize, repeats: usize, stride: usize) -> Stage {
    Stage {
        expansion,
        kernel: 3,
        channels,
        repeats,
        stride,
    }
}

pub const FEATURE_CHANNELS: usize = 1280;
/// Inverted-residual blocks in the table (1 + 2 + 3 + 4 + 3 + 3 + 1).
pub const NUM_BLOCKS: usize = 17;

/// Keras name prefix of block `index` (0-based).
pub fn block_name(index: usize) -> String {
    if index == 0 {
        "expanded_conv".to_string()
    } else {
        format!("block_{index}")
    }
}

fn layer_name(block: usize, layer: Layer) -> String {
    let suffix = match layer {
        Layer::Expand => "expand",
        Layer::Depthwise => "depthwise",
        Layer::Project => "project",
    };
    format!("{}_{suffix}", block_name(block))
}

fn block_of(name: &str) -> Option<usize> {
    if name.starts_with("expanded_conv_") {
        return Some(0);
    }
    name.strip_prefix("block_")?.split('_').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_gives_17_blocks_and_keras_names() {
        let specs = MOBILENET_V2.blocks();
        assert_eq!(specs.len(), NUM_BLOCKS);
        assert_eq!(MOBILENET_V2.num_blocks(), NUM_BLOCKS);
        assert_eq!(specs[0].hidden, 32);
        assert_eq!(specs[16].out_channels, 320);
        assert_eq!(block_name(0), "expanded_conv");
        assert_eq!(layer_name(13, Layer::Depthwise), "block_13_depthwise");
        assert_eq!(specs.iter().filter(|s| s.residual()).count(), 10);
    }

    #[test]
    fn boundary_shapes_at_128() {
        assert_eq!(MOBILENET_V2.boundary_shape(128, 0), [64, 64, 32]);
        assert_eq!(MOBILENET_V2.boundary_shape(128, 13), [8, 8, 96]);
        assert_eq!(MOBILENET_V2.boundary_shape(128, 17), [4, 4, 320]);
    }

    #[test]
    fn freezing_prefixes() {
        let is_in_blocks_from = |name, k| MOBILENET_V2.is_in_blocks_from(name, k);
        assert!(is_in_blocks_from("block_13_expand.weight", 13));
        assert!(!is_in_blocks_from("block_12_project.bias", 13));
        assert!(is_in_blocks_from("Conv_1.weight", 17));
        assert!(!is_in_blocks_from("Conv1.weight", 1));
        assert!(is_in_blocks_from("expanded_conv_depthwise.weight", 0));
        assert!(!is_in_blocks_from("expanded_conv_project.bias", 1));
    }
}
