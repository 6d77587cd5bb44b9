//! Imports of ImageNet weights trained elsewhere into the model's layouts: Keras' MobileNetV2
//! and VGG16, PyTorch's EfficientNet-Lite0, and the PyTorch-layout convs of the face detector.

use super::weights::WeightsError;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// Converts Keras-layout ImageNet MobileNetV2 tensors (OIHW convs, `[C,1,3,3]` depthwise,
/// folded BatchNorm) to the model's layouts. Names are kept; `predictions` (the 1000-way
/// ImageNet classifier) passes through unchanged.
pub fn import_keras_imagenet(
    path: &Path,
    keras: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    oihw_to_nhwc_layouts(path, keras, |name| name.contains("depthwise"))
}

/// Keras' VGG16 input preprocessing ("caffe"): BGR channels minus these means, 0..255 scale.
pub const VGG16_CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

/// Converts Keras Applications VGG16 tensors, named `{layer}.kernel` (`[3, 3, Cin, Cout]`,
/// Keras' HWIO) and `{layer}.bias` as `scripts/keras_h5_to_safetensors.py` writes them, to
/// the model's `{layer}.weight` `[Cout, 3·3·Cin]` and `{layer}.bias`. Keras feeds VGG16
/// BGR pixels (0..255) minus the ImageNet means; the model feeds RGB in [-1, 1]. That affine
/// map and the channel swap are folded into `block1_conv1`, so the rest of the pipeline is
/// the same for every trunk. (Only the zero padding of the first conv's border differs: it
/// pads mid-grey where Keras pads the mean colour.) Other tensors (`fc1`, `predictions`)
/// are dropped: the trunk is the convolutional part.
pub fn import_keras_vgg16(
    path: &Path,
    keras: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    let tensor_error = |source| WeightsError::Tensor {
        path: path.to_path_buf(),
        source,
    };
    let mut out = HashMap::new();
    for (b, &convs) in crate::model::vgg16::CONVS_PER_BLOCK.iter().enumerate() {
        for c in 0..convs {
            let layer = crate::model::vgg16::conv_name(b, c);
            let get = |suffix: &str| {
                keras.get(&format!("{layer}.{suffix}")).ok_or_else(|| {
                    tensor_error(candle_core::Error::Msg(format!(
                        "no `{layer}.{suffix}`: not a Keras VGG16 file"
                    )))
                })
            };
            let (kernel, bias) = (get("kernel")?, get("bias")?);
            let (weight, bias) = if (b, c) == (0, 0) {
                fold_caffe_input(kernel, bias)
            } else {
                Ok((kernel.clone(), bias.clone()))
            }
            .and_then(|(kernel, bias)| {
                let (kh, kw, cin, cout) = kernel.dims4()?;
                if (kh, kw) != (3, 3) {
                    candle_core::bail!("{layer}.kernel: {:?} is not 3×3", kernel.dims());
                }
                let weight = kernel.permute((3, 0, 1, 2))?.reshape((cout, 9 * cin))?;
                Ok((weight.contiguous()?, bias.contiguous()?))
            })
            .map_err(tensor_error)?;
            out.insert(format!("{layer}.weight"), weight);
            out.insert(format!("{layer}.bias"), bias);
        }
    }
    Ok(out)
}

/// `block1_conv1`'s HWIO kernel and bias for RGB input in [-1, 1] instead of Keras' BGR
/// 0..255 minus [`VGG16_CAFFE_MEAN_BGR`]: pixel = 127.5·(x + 1), so each weight scales by
/// 127.5, the input channels reverse, and Σ weight·(127.5 - mean) moves into the bias.
fn fold_caffe_input(kernel: &Tensor, bias: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let device = kernel.device();
    let offset: Vec<f32> = VGG16_CAFFE_MEAN_BGR.iter().map(|m| 127.5 - m).collect();
    let offset = Tensor::new(offset, device)?.reshape((1, 1, 3, 1))?;
    let shift = kernel.broadcast_mul(&offset)?.sum((0, 1, 2))?;
    let rgb = Tensor::new(&[2u32, 1, 0], device)?;
    let kernel = (kernel.index_select(&rgb, 2)? * 127.5)?;
    Ok((kernel, (bias + shift)?))
}

/// BatchNorm epsilon of the EfficientNet-Lite checkpoints.
const EFFICIENTNET_BN_EPS: f64 = 1e-3;

/// Converts a PyTorch EfficientNet-Lite checkpoint (OIHW convs without bias, each followed by
/// a BatchNorm with running statistics) to the model's layouts, each BatchNorm folded into
/// its conv: weight·γ/√(var + ε), bias β − mean·γ/√(var + ε). The checkpoint's input,
/// (pixel − 127) / 128, is folded into the stem, so the model's [-1, 1] input (pixel / 127.5
/// − 1) gives the same activations (but for the stem's zero padding, grey here, 127 there).
/// `_fc` (the 1000-way ImageNet classifier) passes through; BatchNorm tensors are consumed.
pub fn import_efficientnet_lite(
    path: &Path,
    torch: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    use crate::model::efficientnet_lite::batch_norm_of;
    let tensor_error = |source| WeightsError::Tensor {
        path: path.to_path_buf(),
        source,
    };
    let mut folded: HashMap<String, Tensor> = ["_fc.weight", "_fc.bias"]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), torch.get(name)?.clone())))
        .collect();
    for (name, weight) in &torch {
        let Some((conv, bn)) = name
            .strip_suffix(".weight")
            .and_then(|conv| Some((conv, batch_norm_of(conv)?)))
        else {
            continue;
        };
        let stat = |s: &str| torch_get(&torch, &format!("{bn}.{s}"), path);
        let (gamma, beta) = (stat("weight")?, stat("bias")?);
        let (mean, var) = (stat("running_mean")?, stat("running_var")?);
        let (w, b) = (|| {
            let scale = (gamma / (var + EFFICIENTNET_BN_EPS)?.sqrt()?)?;
            let bias = (beta - (mean * &scale)?)?;
            let w = weight.broadcast_mul(&scale.reshape((scale.dim(0)?, 1, 1, 1))?)?;
            if conv == "_conv_stem" {
                // x_torch = x · 127.5/128 + 0.5/128 for x = pixel / 127.5 − 1.
                let shift = (w.sum((1, 2, 3))? * (0.5 / 128.0))?;
                Ok::<_, candle_core::Error>(((w * (127.5 / 128.0))?, (bias + shift)?))
            } else {
                Ok((w, bias))
            }
        })()
        .map_err(tensor_error)?;
        folded.insert(name.clone(), w);
        folded.insert(format!("{conv}.bias"), b);
    }
    if !folded.contains_key("_conv_stem.weight") {
        return Err(tensor_error(candle_core::Error::Msg(
            "no `_conv_stem.weight`: not an EfficientNet-Lite checkpoint".into(),
        )));
    }
    oihw_to_nhwc_layouts(path, folded, |name| name.contains("_depthwise_conv"))
}

/// Tensor `name` of a checkpoint, or an error naming it.
fn torch_get(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    path: &Path,
) -> Result<Tensor, WeightsError> {
    tensors
        .get(name)
        .cloned()
        .ok_or_else(|| WeightsError::Tensor {
            path: path.to_path_buf(),
            source: candle_core::Error::Msg(format!("no `{name}` in the checkpoint")),
        })
}

/// Converts PyTorch-layout conv tensors to the layouts of the project's NHWC ops (see
/// `ops`): depthwise `[C,1,k,k]` (the tensors `is_depthwise` names) → `[k,k,C]`, pointwise
/// `[O,I,1,1]` → `[O,I]`, dense k×k `[O,I,k,k]` → `[O, k·k·I]` in (kh, kw, i) order. Names
/// are kept; other tensors pass through unchanged.
pub fn oihw_to_nhwc_layouts(
    path: &Path,
    tensors: HashMap<String, Tensor>,
    is_depthwise: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    let tensor_error = |source| WeightsError::Tensor {
        path: path.to_path_buf(),
        source,
    };
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let converted = match *t.dims() {
            [c, 1, kh, kw] if is_depthwise(&name) => {
                t.reshape((c, kh, kw)).and_then(|t| t.permute((1, 2, 0)))
            }
            [o, i, 1, 1] => t.reshape((o, i)),
            [o, i, kh, kw] => t
                .permute((0, 2, 3, 1))
                .and_then(|t| t.reshape((o, kh * kw * i))),
            _ => Ok(t),
        }
        .and_then(|t| t.contiguous())
        .map_err(tensor_error)?;
        out.insert(name, converted);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::{read_safetensors, write_safetensors};
    use candle_core::{DType, Device};

    /// Keras-semantics 3×3 "same" conv: NCHW conv2d of an NHWC input with an HWIO kernel.
    fn keras_conv(x: &Tensor, kernel: &Tensor, bias: &Tensor) -> Tensor {
        let y = x
            .permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(
                &kernel.permute((3, 2, 0, 1)).unwrap().contiguous().unwrap(),
                1,
                1,
                1,
                1,
            )
            .unwrap();
        y.permute((0, 2, 3, 1))
            .unwrap()
            .broadcast_add(bias)
            .unwrap()
    }

    #[test]
    fn efficientnet_import_folds_batch_norm_and_the_input_scale() {
        use crate::model::ops::{check::rel_err, conv3x3_input_reference, Act, Conv3x3};
        let dev = Device::Cpu;
        let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let positive = |n: usize| Tensor::rand(0.5f32, 2.0, n, &dev).unwrap();
        // A stem with its BatchNorm and a 5×5 depthwise conv with its own, PyTorch layouts.
        let mut torch = HashMap::new();
        torch.insert("_conv_stem.weight".to_string(), randn(&[4, 3, 3, 3]));
        torch.insert(
            "_blocks.0._depthwise_conv.weight".to_string(),
            randn(&[4, 1, 5, 5]),
        );
        for (bn, c) in [("_bn0", 4), ("_blocks.0._bn1", 4)] {
            torch.insert(format!("{bn}.weight"), positive(c));
            torch.insert(format!("{bn}.bias"), randn(&[c]));
            torch.insert(format!("{bn}.running_mean"), randn(&[c]));
            torch.insert(format!("{bn}.running_var"), positive(c));
        }
        let imported =
            import_efficientnet_lite(Path::new("lite.safetensors"), torch.clone()).unwrap();
        assert_eq!(
            imported["_blocks.0._depthwise_conv.weight"].dims(),
            [5, 5, 4]
        );
        assert_eq!(
            imported.len(),
            4,
            "two convs, weight and bias each; BatchNorms consumed"
        );

        // The stem on [-1, 1] pixels = PyTorch's conv + BatchNorm on (pixel − 127) / 128,
        // away from the border (where the paddings differ).
        let x = Tensor::rand(-1f32, 1f32, (2, 16, 16, 3), &dev).unwrap();
        let ours = conv3x3_input_reference(
            &x,
            &imported["_conv_stem.weight"],
            &imported["_conv_stem.bias"],
            Conv3x3 { stride: 1 },
            Act::Identity,
        )
        .unwrap();
        let scaled = ((((&x + 1.0).unwrap() * 127.5).unwrap() - 127.0).unwrap() / 128.0).unwrap();
        let conv = scaled
            .permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(&torch["_conv_stem.weight"], 1, 1, 1, 1)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        let stat = |s: &str| torch[&format!("_bn0.{s}")].clone();
        let theirs = conv
            .broadcast_sub(&stat("running_mean"))
            .unwrap()
            .broadcast_div(
                &(stat("running_var") + EFFICIENTNET_BN_EPS)
                    .unwrap()
                    .sqrt()
                    .unwrap(),
            )
            .unwrap()
            .broadcast_mul(&stat("weight"))
            .unwrap()
            .broadcast_add(&stat("bias"))
            .unwrap();
        let inside = |t: &Tensor| t.narrow(1, 1, 14).unwrap().narrow(2, 1, 14).unwrap();
        assert!(rel_err(&inside(&ours), &inside(&theirs)).unwrap() < 1e-5);
        // Not a Lite checkpoint: one line naming what is missing.
        let err = import_efficientnet_lite(Path::new("x.safetensors"), HashMap::new());
        match err {
            Err(WeightsError::Tensor { source, .. }) => {
                assert!(source.to_string().contains("_conv_stem"), "{source}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keras_vgg16_import_folds_the_caffe_input_and_keeps_conv_layouts() {
        use crate::model::ops::{check::rel_err, conv3x3_input_reference, Act, Conv3x3};
        use crate::model::vgg16::{conv_name, Vgg16, Vgg16Config, CONVS_PER_BLOCK};
        let dev = Device::Cpu;
        // A small Keras-layout file, as scripts/keras_h5_to_safetensors.py writes one.
        let config = Vgg16Config {
            widths: [4, 4, 6, 6, 6],
        };
        let mut keras = HashMap::new();
        let mut cin = 3;
        for (b, &convs) in CONVS_PER_BLOCK.iter().enumerate() {
            for c in 0..convs {
                let cout = config.widths[b];
                let name = conv_name(b, c);
                let kernel = Tensor::randn(0f32, 0.1, (3, 3, cin, cout), &dev).unwrap();
                let bias = Tensor::randn(0f32, 0.1, cout, &dev).unwrap();
                keras.insert(format!("{name}.kernel"), kernel);
                keras.insert(format!("{name}.bias"), bias);
                cin = cout;
            }
        }
        keras.insert(
            "fc1.kernel".into(),
            Tensor::zeros((6, 2), DType::F32, &dev).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vgg16_keras.safetensors");
        write_safetensors(&path, &keras, HashMap::new()).unwrap();
        let imported =
            import_keras_vgg16(&path, read_safetensors(&path, &dev).unwrap().tensors).unwrap();
        assert_eq!(
            imported.len(),
            26,
            "13 convs, weight and bias each; fc1 dropped"
        );
        let vb = candle_nn::VarBuilder::from_tensors(imported.clone(), DType::F32, &dev);
        let trunk = Vgg16::new(vb, config).unwrap();
        let x = Tensor::rand(-1f32, 1f32, (2, 32, 32, 3), &dev).unwrap();
        assert_eq!(trunk.forward_from(&x, 0).unwrap().dims(), [2, 6]);

        // block1_conv1 on [-1, 1] RGB = Keras' conv on its BGR 0..255 minus the means, away
        // from the border (where the two paddings differ).
        let same = Conv3x3 { stride: 1 };
        let ours = conv3x3_input_reference(
            &x,
            &imported["block1_conv1.weight"],
            &imported["block1_conv1.bias"],
            same,
            Act::Identity,
        )
        .unwrap();
        let pixels = ((&x + 1.0).unwrap() * 127.5).unwrap();
        let bgr = pixels
            .index_select(&Tensor::new(&[2u32, 1, 0], &dev).unwrap(), 3)
            .unwrap();
        let mean = Tensor::new(&VGG16_CAFFE_MEAN_BGR, &dev).unwrap();
        let caffe = bgr.broadcast_sub(&mean).unwrap();
        let theirs = keras_conv(
            &caffe,
            &keras["block1_conv1.kernel"],
            &keras["block1_conv1.bias"],
        );
        let inside = |t: &Tensor| t.narrow(1, 1, 30).unwrap().narrow(2, 1, 30).unwrap();
        assert!(rel_err(&inside(&ours), &inside(&theirs)).unwrap() < 1e-5);

        // A later conv: only the layout changes.
        let h = Tensor::randn(0f32, 1.0, (2, 8, 8, 4), &dev).unwrap();
        let ours = conv3x3_input_reference(
            &h,
            &imported["block2_conv1.weight"],
            &imported["block2_conv1.bias"],
            same,
            Act::Identity,
        )
        .unwrap();
        let theirs = keras_conv(
            &h,
            &keras["block2_conv1.kernel"],
            &keras["block2_conv1.bias"],
        );
        assert!(rel_err(&ours, &theirs).unwrap() < 1e-5);

        let mut missing = keras.clone();
        missing.remove("block3_conv2.bias");
        match import_keras_vgg16(&path, missing) {
            Err(WeightsError::Tensor { source, .. }) => {
                assert!(source.to_string().contains("block3_conv2.bias"), "{source}")
            }
            other => panic!("expected a missing-tensor error, got {other:?}"),
        }
    }
}
