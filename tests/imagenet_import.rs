//! The ImageNet imports are faithful (Keras' MobileNetV2, PyTorch's EfficientNet-Lite0 with
//! its BatchNorms folded): with its own 1000-way classifier, Grace Hopper's portrait gets
//! uniform/mortarboard/gown/suit classes in the top 5.

mod common;

use affectcam::model::backbone::{Arch, Trunk};
use affectcam::model::import::{import_efficientnet_lite, import_keras_imagenet};
use affectcam::model::preprocess::{ColorMode, Preprocess};
use affectcam::model::weights::read_safetensors;
use candle_core::{DType, Device, D};
use candle_nn::VarBuilder;

/// ImageNet indices: military uniform, academic gown, mortarboard, suit.
const EXPECTED: [u32; 4] = [652, 400, 667, 834];

fn top5(arch: Arch, size: usize) -> Option<Vec<u32>> {
    let shared = common::shared()?;
    let device = Device::Cpu;
    let path = shared.join(arch.default_init().trim_start_matches("../shared/"));
    let file = read_safetensors(&path, &device).unwrap().tensors;
    let (tensors, classifier) = match arch {
        Arch::MobileNetV2 => (import_keras_imagenet(&path, file).unwrap(), "predictions"),
        Arch::EfficientNetLite0 => (import_efficientnet_lite(&path, file).unwrap(), "_fc"),
        Arch::Vgg16 => unreachable!("no ImageNet VGG16 weights here"),
    };
    let classifier_w = tensors[&format!("{classifier}.weight")].clone();
    let classifier_b = tensors[&format!("{classifier}.bias")].clone();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let trunk = Trunk::new(arch, vb).unwrap();
    let image = image::open(shared.join("samples/grace_hopper.jpg"))
        .unwrap()
        .to_rgb8();
    let pre = Preprocess {
        input_size: size,
        color: ColorMode::Rgb,
        crop_margin: 0.0,
        ..Default::default()
    };
    let x = pre
        .batch_of([(&pre.face_pixels(&image)[..], false)], &device)
        .unwrap();
    let features = trunk.forward(&x).unwrap();
    let logits = features
        .matmul(&classifier_w.t().unwrap())
        .unwrap()
        .broadcast_add(&classifier_b)
        .unwrap();
    let order = logits.arg_sort_last_dim(false).unwrap();
    let top: Vec<u32> = order
        .narrow(D::Minus1, 0, 5)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    Some(top)
}

#[test]
fn grace_hopper_top5_at_224_and_128() {
    // Measured: 224 → [652, 439, 667, 834, 400]; 128 → [457 bow tie, 652, 906, 400, 834].
    let arch = Arch::MobileNetV2;
    for (size, min_hits) in [(224, 4), (128, 3)] {
        let Some(top) = top5(arch, size) else { return };
        let hits = top.iter().filter(|c| EXPECTED.contains(c)).count();
        eprintln!("top-5 at {size}: {top:?}");
        assert!(
            hits >= min_hits,
            "top-5 at {size} is {top:?}; expected {min_hits} of {EXPECTED:?}"
        );
    }
    let Some(top) = top5(arch, 224) else { return };
    assert_eq!(
        top[0], 652,
        "military uniform should be the top-1 class at 224"
    );
}

#[test]
fn efficientnet_lite0_grace_hopper_top5_at_224_and_128() {
    // Lite0 also names the ties: Windsor tie 906, bow tie 457.
    let expected = [EXPECTED.as_slice(), &[906, 457]].concat();
    for (size, min_hits) in [(224, 4), (128, 3)] {
        let Some(top) = top5(Arch::EfficientNetLite0, size) else {
            return;
        };
        let hits = top.iter().filter(|c| expected.contains(c)).count();
        eprintln!("EfficientNet-Lite0 top-5 at {size}: {top:?}");
        assert!(
            hits >= min_hits,
            "top-5 at {size} is {top:?}; expected {min_hits} of {expected:?}"
        );
        if size == 224 {
            assert_eq!(top[0], 652, "military uniform should be the top-1 class");
        }
    }
}
