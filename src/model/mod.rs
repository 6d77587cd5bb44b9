//! The affect model: a trunk (MobileNetV2; EfficientNet-Lite0 or VGG16 for the study) and a
//! two-output head, shared by train, eval and live.

pub mod backbone;
pub mod efficientnet_lite;
pub mod head;
pub mod import;
pub mod inverted_residual_net;
pub mod labels;
pub mod mobilenetv2;
pub mod ops;
pub mod preprocess;
pub mod vgg16;
pub mod weights;

use backbone::Trunk;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use head::{Head, HeadOutput};
use labels::NUM_EMOTIONS;
use std::collections::HashMap;
use std::path::Path;
pub use weights::{ModelMeta, WeightsError};

/// The trained weights that ship with affectcam (see weights/README.md), embedded in the binary
/// so it works with no flags from a clone or `cargo install`.
pub static SHIPPED_WEIGHTS: &[u8] =
    include_bytes!("../../weights/affectcam-mobilenetv2.safetensors");
pub const SHIPPED_WEIGHTS_NAME: &str = "<embedded weights/affectcam-mobilenetv2.safetensors>";

/// Trunk + emotion/valence-arousal head.
#[derive(Debug, Clone)]
pub struct AffectModel {
    pub trunk: Trunk,
    pub head: Head,
    pub meta: ModelMeta,
    /// Whether [`AffectModel::predict`] averages each face with its mirror image.
    pub mirror_average: bool,
}

/// One face's prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Softmax probabilities in AffectNet class order.
    pub probs: [f32; NUM_EMOTIONS],
    pub valence: f32,
    pub arousal: f32,
}

impl Prediction {
    /// Index of the most probable class.
    pub fn label(&self) -> usize {
        labels::most_probable(&self.probs)
    }
}

impl AffectModel {
    pub fn new(vb: VarBuilder, meta: ModelMeta) -> candle_core::Result<Self> {
        Ok(Self {
            trunk: Trunk::new(meta.arch, vb.clone())?,
            head: Head::new(vb, meta.arch.feature_channels())?,
            meta,
            mirror_average: false,
        })
    }

    /// Builds the model from named tensors (an error names the first missing or misshapen one).
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        meta: ModelMeta,
        device: &Device,
    ) -> candle_core::Result<Self> {
        Self::new(VarBuilder::from_tensors(tensors, DType::F32, device), meta)
    }

    /// Loads a project weights file, checking metadata, then tensor names and shapes.
    pub fn load(path: &Path, device: &Device) -> Result<Self, WeightsError> {
        let file = weights::read_safetensors(path, device)?;
        Self::from_loaded(path, file, device)
    }

    /// The shipped weights.
    pub fn shipped(device: &Device) -> Result<Self, WeightsError> {
        Self::load_bytes(Path::new(SHIPPED_WEIGHTS_NAME), SHIPPED_WEIGHTS, device)
    }

    /// Loads weights held in memory (embedded in the binary); `name` appears in errors.
    pub fn load_bytes(name: &Path, bytes: &[u8], device: &Device) -> Result<Self, WeightsError> {
        let file = weights::parse_safetensors(name, bytes, device)?;
        Self::from_loaded(name, file, device)
    }

    fn from_loaded(
        path: &Path,
        file: weights::LoadedFile,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let meta = ModelMeta::from_metadata(path, &file.metadata)?;
        Self::from_tensors(file.tensors, meta, device).map_err(|source| WeightsError::Tensor {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Prepares the model for inference on the CPU (MobileNetV2's blocks fused into one op
    /// each) in the number format asked for (`Auto`, `Bf16` and `Int8` fall back to f32 where
    /// theirs cannot run: another CPU, the GPU, VGG16), and returns the one in use.
    /// The prepared ops hold copies of the weights: call it again after changing them.
    pub fn set_precision(&mut self, precision: Precision) -> candle_core::Result<Precision> {
        let runs = |format: ops::DenseFormat| {
            matches!(self.trunk, Trunk::InvertedResidual(_))
                && self.head.device().is_cpu()
                && format.supported()
        };
        let calibrated = matches!(&self.trunk, Trunk::InvertedResidual(t) if t.is_calibrated());
        let format = match precision {
            // int8 only on calibrated weights: uncalibrated, it loses 1.3 points of FER+ accuracy.
            Precision::Auto if calibrated && runs(ops::DenseFormat::Int8) => ops::DenseFormat::Int8,
            Precision::Auto => ops::DenseFormat::Bf16,
            Precision::F32 => ops::DenseFormat::F32,
            Precision::Bf16 => ops::DenseFormat::Bf16,
            Precision::Int8 => ops::DenseFormat::Int8,
        };
        let format = Some(format)
            .filter(|&f| runs(f))
            .unwrap_or(ops::DenseFormat::F32);
        if let Trunk::InvertedResidual(trunk) = &mut self.trunk {
            if self.head.device().is_cpu() {
                trunk.prepare_inference(Some(format))?;
            }
        }
        Ok(match format {
            ops::DenseFormat::F32 => Precision::F32,
            ops::DenseFormat::Bf16 => Precision::Bf16,
            ops::DenseFormat::Int8 => Precision::Int8,
        })
    }

    /// Images `[N, S, S, 3]` in [-1, 1] → logits and valence/arousal (inference mode).
    pub fn forward(&self, images: &Tensor) -> candle_core::Result<HeadOutput> {
        ops::on_cpu_pool(images.device(), || {
            self.head.forward_t(&self.trunk.forward(images)?, false)
        })
    }

    /// Per projection of an inverted-residual trunk, its range tensor's checkpoint name and
    /// the largest value each input channel reaches on `images` (see `eval::calibrate`);
    /// `None` for VGG16.
    pub fn projection_input_maxima(
        &self,
        images: &Tensor,
    ) -> candle_core::Result<Option<Vec<(String, Tensor)>>> {
        match &self.trunk {
            Trunk::InvertedResidual(trunk) => trunk.projection_input_maxima(images).map(Some),
            Trunk::Vgg16(_) => Ok(None),
        }
    }

    /// Images `[N, S, S, 3]` → one [`Prediction`] per image; with [`Self::mirror_average`],
    /// the mean of the image's and its mirror image's (one forward pass over both): a face
    /// and its mirror show the same expression, so the mean cancels some of the net's
    /// left–right bias at twice the work.
    pub fn predict(&self, images: &Tensor) -> candle_core::Result<Vec<Prediction>> {
        if !self.mirror_average {
            return self.forward(images)?.predictions();
        }
        let (n, width) = (images.dim(0)?, images.dim(2)?);
        let columns: Vec<u32> = (0..width as u32).rev().collect();
        let columns = Tensor::new(columns.as_slice(), images.device())?;
        let mirrored = images.index_select(&columns, 2)?;
        let both = self
            .forward(&Tensor::cat(&[images, &mirrored], 0)?)?
            .predictions()?;
        let (plain, mirrored) = both.split_at(n);
        Ok(plain
            .iter()
            .zip(mirrored)
            .map(|(a, b)| Prediction {
                probs: std::array::from_fn(|i| (a.probs[i] + b.probs[i]) / 2.0),
                valence: (a.valence + b.valence) / 2.0,
                arousal: (a.arousal + b.arousal) / 2.0,
            })
            .collect())
    }
}

/// Number format of inference's 1×1 convs (89 % of MobileNetV2's multiply-adds).
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The fastest that keeps f32's accuracy: int8 where it runs and the weights are calibrated
    /// (a CPU with AVX512-VNNI; the shipped weights are), else bf16 where it runs (AVX512-BF16),
    /// else f32; MobileNetV2 or EfficientNet-Lite0 on the CPU (f32 for VGG16 and on the GPU).
    #[default]
    Auto,
    /// f32 throughout.
    F32,
    /// bf16 weights and inputs with f32 sums, bias and activation (AVX512-BF16); f32 where
    /// the CPU lacks it.
    Bf16,
    /// int8 weights (a scale per output channel) and inputs (a scale per pixel; the
    /// projections' inputs smoothed by their calibrated ranges where the weights file has
    /// them, see `calibrate`) with i32 sums and f32 bias and activation (AVX512-VNNI); f32
    /// where the CPU lacks it.
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

/// Which device runs the model.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA when this build has it and a GPU is present, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

/// Errors choosing a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// CUDA was asked for but this binary was built without it.
    #[error("this build has no CUDA support; rebuild with `cargo build --release --features cuda` (needs nvcc)")]
    NoCudaSupport,
    /// CUDA was asked for but no usable GPU was found.
    #[error("no usable CUDA device (is there an NVIDIA GPU with its driver?): {0}")]
    NoCudaDevice(candle_core::Error),
}

/// "cpu", or "cuda:0 (GPU NAME)".
pub fn device_label(device: &Device) -> String {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => {
            let name = dev.cuda_stream().context().name().unwrap_or_default();
            format!("cuda:0 ({name})")
        }
        Device::Cpu => "cpu".to_string(),
        other => format!("{other:?}"),
    }
}

pub fn select_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        DeviceChoice::Cuda if !candle_core::utils::cuda_is_available() => {
            Err(DeviceError::NoCudaSupport)
        }
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(DeviceError::NoCudaDevice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_average_is_the_mean_of_a_face_and_its_mirror_image() {
        let dev = Device::Cpu;
        let mut model = AffectModel::shipped(&dev).unwrap();
        let (n, s) = (3, 128);
        let values: Vec<f32> = Tensor::rand(-1f32, 1f32, n * s * s * 3, &dev)
            .unwrap()
            .to_vec1()
            .unwrap();
        // Mirrored here pixel by pixel, not as `predict` does it.
        let mirrored: Vec<f32> = (0..n * s * s)
            .flat_map(|p| {
                let (row, x) = (p / s, p % s);
                let from = (row * s + s - 1 - x) * 3;
                values[from..from + 3].to_vec()
            })
            .collect();
        let x = Tensor::from_vec(values, (n, s, s, 3), &dev).unwrap();
        let mirrored = Tensor::from_vec(mirrored, (n, s, s, 3), &dev).unwrap();
        let plain = model.predict(&x).unwrap();
        let of_mirror = model.predict(&mirrored).unwrap();
        model.mirror_average = true;
        let averaged = model.predict(&x).unwrap();
        let averaged_mirror = model.predict(&mirrored).unwrap();
        let close = |a: f32, b: f32| (a - b).abs() < 1e-4;
        for i in 0..n {
            let (a, b, m) = (plain[i], of_mirror[i], averaged[i]);
            assert!(
                (0..NUM_EMOTIONS).all(|c| close(m.probs[c], (a.probs[c] + b.probs[c]) / 2.0)),
                "face {i}: {m:?} from {a:?} and {b:?}"
            );
            assert!(close(m.valence, (a.valence + b.valence) / 2.0));
            assert!(close(m.arousal, (a.arousal + b.arousal) / 2.0));
            // A face and its mirror image now read the same.
            let r = averaged_mirror[i];
            assert!(
                (0..NUM_EMOTIONS).all(|c| close(m.probs[c], r.probs[c])),
                "face {i}"
            );
        }
    }

    #[test]
    fn inference_preparation_keeps_the_predictions() {
        let dev = Device::Cpu;
        let mut model = AffectModel::shipped(&dev).unwrap();
        // Batch 1 splits the small layers by channel, batch 8 by bands: both paths are hit.
        for batch in [1, 8] {
            let x = Tensor::rand(-1f32, 1f32, (batch, 128, 128, 3), &dev).unwrap();
            let mut run = |precision| {
                model.set_precision(precision).unwrap();
                model.forward(&x).unwrap()
            };
            let fused = run(Precision::F32);
            let reduced = [
                (Precision::Bf16, run(Precision::Bf16)),
                (Precision::Int8, run(Precision::Int8)),
            ];
            if let Trunk::InvertedResidual(trunk) = &mut model.trunk {
                trunk.prepare_inference(None).unwrap();
            }
            let plain = model.forward(&x).unwrap();
            let err = |a: &Tensor, b: &Tensor| {
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                d.to_scalar::<f32>().unwrap()
            };
            assert!(
                err(&fused.logits, &plain.logits) < 1e-3,
                "f32, batch {batch}"
            );
            assert!(
                err(&fused.valence_arousal, &plain.valence_arousal) < 1e-4,
                "f32, batch {batch}"
            );
            // Where the CPU has them, bf16 moves these logits by hundredths; int8 by up to ~0.4
            // on this noise, far from the faces it was calibrated on (on faces: tests/shipped).
            for ((precision, out), bound) in reduced.iter().zip([0.3, 0.6]) {
                let e = err(&out.logits, &plain.logits);
                assert!(e < bound, "{precision}, batch {batch}: {e}");
            }
        }
    }

    #[test]
    fn auto_runs_int8_only_on_calibrated_weights() {
        use ops::DenseFormat;
        let dev = Device::Cpu;
        let reduced = |int8_allowed: bool| {
            if int8_allowed && DenseFormat::Int8.supported() {
                Precision::Int8
            } else if DenseFormat::Bf16.supported() {
                Precision::Bf16
            } else {
                Precision::F32
            }
        };
        let mut shipped = AffectModel::shipped(&dev).unwrap();
        assert_eq!(
            shipped.set_precision(Precision::Auto).unwrap(),
            reduced(true)
        );
        let vars = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let mut uncalibrated = AffectModel::new(vb, ModelMeta::default()).unwrap();
        assert_eq!(
            uncalibrated.set_precision(Precision::Auto).unwrap(),
            reduced(false)
        );
    }
}
