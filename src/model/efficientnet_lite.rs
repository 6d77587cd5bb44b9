//! EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variants drop squeeze-and-excitation, use
//! ReLU6 and keep the stem and head widths fixed, for mobile CPUs) as an
//! [`InvertedResidualNet`]: EfficientNet-B0's table, with 5×5 depthwise convs in three stages.
//! Parameter names are the PyTorch checkpoint's (`_conv_stem`, `_blocks.N._expand_conv`,
//! `_blocks.N._depthwise_conv`, `_blocks.N._project_conv`, `_conv_head`), each conv with the
//! BatchNorm that follows it folded in at import (`import::import_efficientnet_lite`).

use super::inverted_residual_net::{Layer, NetSpec, Padding, Stage};

/// EfficientNet-B0's stages (expansion, kernel, channels, repeats, first stride) at width and
/// depth 1.0, which is Lite0.
pub static EFFICIENTNET_LITE0: NetSpec = NetSpec {
    stages: &[
        stage(1, 3, 16, 1, 1),
        stage(6, 3, 24, 2, 2),
        stage(6, 5, 40, 2, 2),
        stage(6, 3, 80, 3, 2),
        stage(6, 5, 112, 3, 1),
        stage(6, 5, 192, 4, 2),
        stage(6, 3, 320, 1, 1),
    ],
    stem_channels: 32,
    feature_channels: FEATURE_CHANNELS,
    padding: Padding::Same,
    stem_name: STEM,
    last_name: HEAD,
    layer_name,
    block_of,
};

const fn stage(
    expansion: usize,
    kernel: usize,
    channels: usize,
    repeats: usize,
    stride: usize,
) -> Stage {
    Stage {
        expansion,
        kernel,
        channels,
        repeats,
        stride,
    }
}

pub const FEATURE_CHANNELS: usize = 1280;
/// Blocks in the table (1 + 2 + 2 + 3 + 3 + 4 + 1).
pub const NUM_BLOCKS: usize = 16;
const STEM: &str = "_conv_stem";
const HEAD: &str = "_conv_head";

fn layer_name(block: usize, layer: Layer) -> String {
    let conv = match layer {
        Layer::Expand => "_expand_conv",
        Layer::Depthwise => "_depthwise_conv",
        Layer::Project => "_project_conv",
    };
    format!("_blocks.{block}.{conv}")
}

/// The checkpoint's BatchNorm after conv `conv` (a stem, head or block conv name).
pub fn batch_norm_of(conv: &str) -> Option<String> {
    match conv {
        STEM => return Some("_bn0".into()),
        HEAD => return Some("_bn1".into()),
        _ => {}
    }
    let (block, layer) = conv.rsplit_once('.')?;
    let bn = match layer {
        "_expand_conv" => "_bn0",
        "_depthwise_conv" => "_bn1",
        "_project_conv" => "_bn2",
        _ => return None,
    };
    Some(format!("{block}.{bn}"))
}

fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("_blocks.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_gives_16_blocks_and_pytorch_names() {
        let specs = EFFICIENTNET_LITE0.blocks();
        assert_eq!(specs.len(), NUM_BLOCKS);
        assert_eq!(EFFICIENTNET_LITE0.num_blocks(), NUM_BLOCKS);
        // The checkpoint's depthwise shapes: block 5 [240,1,3,3], block 15 [1152,1,3,3].
        assert_eq!((specs[5].hidden, specs[5].kernel), (240, 3));
        assert_eq!((specs[15].hidden, specs[15].kernel), (1152, 3));
        assert_eq!(specs.iter().filter(|s| s.kernel == 5).count(), 9);
        assert_eq!(specs.iter().filter(|s| s.residual()).count(), 9);
        assert_eq!(
            layer_name(15, Layer::Project),
            "_blocks.15._project_conv".to_string()
        );
        assert_eq!(EFFICIENTNET_LITE0.boundary_shape(128, 16), [4, 4, 320]);
        assert_eq!(EFFICIENTNET_LITE0.boundary_shape(128, 3), [32, 32, 24]);
        assert_eq!(EFFICIENTNET_LITE0.boundary_shape(128, 5), [16, 16, 40]);
    }

    #[test]
    fn batch_norms_and_freezing() {
        assert_eq!(batch_norm_of("_conv_stem").as_deref(), Some("_bn0"));
        assert_eq!(batch_norm_of("_conv_head").as_deref(), Some("_bn1"));
        assert_eq!(
            batch_norm_of("_blocks.7._depthwise_conv").as_deref(),
            Some("_blocks.7._bn1")
        );
        assert_eq!(batch_norm_of("_fc"), None);
        let is_in_blocks_from = |name, k| EFFICIENTNET_LITE0.is_in_blocks_from(name, k);
        assert!(is_in_blocks_from("_blocks.12._expand_conv.weight", 12));
        assert!(!is_in_blocks_from("_blocks.11._project_conv.bias", 12));
        assert!(is_in_blocks_from("_conv_head.weight", 16));
        assert!(!is_in_blocks_from("_conv_stem.weight", 1));
        assert!(!is_in_blocks_from("head_dense.weight", 0));
    }
}
