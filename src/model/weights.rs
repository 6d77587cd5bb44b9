//! Weight files: the project's safetensors with metadata.

use super::backbone::Arch;
use super::labels::EMOTIONS;
use super::preprocess::{ColorMode, CropMode, Preprocess};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const NORMALIZE: &str = "minus1_1";
pub const VA_ACTIVATION: &str = "tanh";

/// Errors reading or writing weight files.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a complete safetensors file (wrong file or truncated).
    #[error("{path}: not a valid safetensors file (wrong or truncated file?): {reason}")]
    Format { path: PathBuf, reason: String },
    /// A metadata entry the model needs is absent.
    #[error("{path}: metadata `{key}` is missing; not an affectcam weights file")]
    MissingMetadata { path: PathBuf, key: &'static str },
    /// A metadata entry has a value this build cannot use.
    #[error("{path}: metadata `{key}` is `{found}`, expected {expected}")]
    Metadata {
        path: PathBuf,
        key: &'static str,
        found: String,
        expected: String,
    },
    /// A tensor is missing or has the wrong shape for the architecture.
    #[error("{path}")]
    Tensor {
        path: PathBuf,
        source: candle_core::Error,
    },
}

/// Everything besides the tensors that a model needs to be used correctly.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    /// The trunk (metadata `arch`).
    pub arch: Arch,
    pub preprocess: Preprocess,
    /// JSON of the training settings that produced the weights.
    pub recipe: String,
    /// Git commit of the code that trained them.
    pub commit: String,
}

impl Default for ModelMeta {
    fn default() -> Self {
        Self {
            arch: Arch::default(),
            preprocess: Preprocess::default(),
            recipe: "{}".to_string(),
            commit: String::new(),
        }
    }
}

/// The metadata name of a crop mode.
fn crop_mode_name(crop: CropMode) -> &'static str {
    match crop {
        CropMode::Box => "box",
        CropMode::Aligned { .. } => "aligned",
    }
}

impl ModelMeta {
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let p = &self.preprocess;
        [
            ("arch", self.arch.metadata_name().to_string()),
            ("classes", EMOTIONS.join(",")),
            ("input", format!("{}x{}", p.input_size, p.input_size)),
            ("color", p.color.to_string()),
            ("normalize", NORMALIZE.to_string()),
            ("crop_margin", p.crop_margin.to_string()),
            ("crop_mode", crop_mode_name(p.crop).to_string()),
            ("va_activation", VA_ACTIVATION.to_string()),
            ("recipe", self.recipe.clone()),
            ("commit", self.commit.clone()),
        ]
        .into_iter()
        .chain(
            match p.crop {
                CropMode::Box => None,
                CropMode::Aligned { eye_y, mouth_y } => Some([
                    ("crop_eye_y", eye_y.to_string()),
                    ("crop_mouth_y", mouth_y.to_string()),
                ]),
            }
            .into_iter()
            .flatten(),
        )
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Reads and checks metadata; the first problem is reported.
    pub fn from_metadata(path: &Path, md: &HashMap<String, String>) -> Result<Self, WeightsError> {
        let get = |key: &'static str| {
            md.get(key).ok_or_else(|| WeightsError::MissingMetadata {
                path: path.to_path_buf(),
                key,
            })
        };
        let mismatch = |key: &'static str, found: &str, expected: &str| WeightsError::Metadata {
            path: path.to_path_buf(),
            key,
            found: found.to_string(),
            expected: expected.to_string(),
        };
        let exact = |key: &'static str, expected: &str| -> Result<(), WeightsError> {
            let found = get(key)?;
            if found == expected {
                Ok(())
            } else {
                Err(mismatch(key, found, &format!("`{expected}`")))
            }
        };
        let arch_name = get("arch")?;
        let arch = Arch::from_metadata_name(arch_name).ok_or_else(|| {
            let names: Vec<String> = Arch::ALL
                .iter()
                .map(|a| format!("`{}`", a.metadata_name()))
                .collect();
            mismatch("arch", arch_name, &names.join(" or "))
        })?;
        exact("classes", &EMOTIONS.join(","))?;
        exact("normalize", NORMALIZE)?;
        exact("va_activation", VA_ACTIVATION)?;
        let input = get("input")?;
        let input_size = input
            .split_once('x')
            .filter(|(w, h)| w == h)
            .and_then(|(w, _)| w.parse::<usize>().ok())
            .filter(|&s| s >= 32)
            .ok_or_else(|| mismatch("input", input, "a square size such as `128x128`"))?;
        let color_str = get("color")?;
        let color = color_str
            .parse::<ColorMode>()
            .map_err(|_| mismatch("color", color_str, "`gray` or `rgb`"))?;
        let margin_str = get("crop_margin")?;
        let crop_margin = margin_str
            .parse::<f32>()
            .ok()
            .filter(|m| (0.0..=1.0).contains(m))
            .ok_or_else(|| mismatch("crop_margin", margin_str, "a number in [0, 1]"))?;
        // Weights from before aligned crops have no `crop_mode`: they use box crops.
        let crop = match md.get("crop_mode").map(String::as_str) {
            None | Some("box") => CropMode::Box,
            Some("aligned") => {
                let fraction = |key: &'static str| -> Result<f32, WeightsError> {
                    let v = get(key)?;
                    v.parse::<f32>()
                        .ok()
                        .filter(|f| (0.0..=1.0).contains(f))
                        .ok_or_else(|| mismatch(key, v, "a fraction of the crop side"))
                };
                let (eye_y, mouth_y) = (fraction("crop_eye_y")?, fraction("crop_mouth_y")?);
                if mouth_y <= eye_y {
                    return Err(mismatch(
                        "crop_mouth_y",
                        &mouth_y.to_string(),
                        "below crop_eye_y",
                    ));
                }
                CropMode::Aligned { eye_y, mouth_y }
            }
            Some(other) => return Err(mismatch("crop_mode", other, "`box` or `aligned`")),
        };
        Ok(Self {
            arch,
            preprocess: Preprocess {
                input_size,
                color,
                crop_margin,
                crop,
            },
            recipe: md.get("recipe").cloned().unwrap_or_default(),
            commit: md.get("commit").cloned().unwrap_or_default(),
        })
    }
}

/// Tensors and metadata of a safetensors file held in memory.
pub struct LoadedFile {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// Reads every tensor (as f32) and the metadata of a safetensors file.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<LoadedFile, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_safetensors(path, &bytes, device)
}

/// Parses safetensors bytes; `path` names them in errors.
pub fn parse_safetensors(
    path: &Path,
    bytes: &[u8],
    device: &Device,
) -> Result<LoadedFile, WeightsError> {
    let format = |reason: String| WeightsError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| format(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format(e.to_string()))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let tensor = candle_core::safetensors::Load::load(&view, device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| format(format!("tensor `{name}`: {e}")))?;
        tensors.insert(name, tensor);
    }
    Ok(LoadedFile { tensors, metadata })
}

/// Writes tensors with metadata.
pub fn write_safetensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<(), WeightsError> {
    let tensor_error = |source| WeightsError::Tensor {
        path: path.to_path_buf(),
        source,
    };
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(&Device::Cpu).map_err(tensor_error)?;
        let data = t
            .flatten_all()
            .and_then(|f| f.to_vec1::<f32>())
            .map_err(tensor_error)?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((name.clone(), t.dims().to_vec(), bytes));
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let views = owned
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WeightsError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| WeightsError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    std::fs::write(path, bytes).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_mode_round_trips_and_old_weights_mean_box_crops() {
        let path = Path::new("w.safetensors");
        for crop in [CropMode::Box, CropMode::ALIGNED] {
            let meta = ModelMeta {
                preprocess: Preprocess {
                    crop,
                    ..Default::default()
                },
                ..Default::default()
            };
            let back = ModelMeta::from_metadata(path, &meta.to_metadata()).unwrap();
            assert_eq!(back.preprocess, meta.preprocess);
        }
        let mut md = ModelMeta::default().to_metadata();
        md.remove("crop_mode");
        let old = ModelMeta::from_metadata(path, &md).unwrap();
        assert_eq!(old.preprocess.crop, CropMode::Box);
        md.insert("crop_mode".into(), "aligned".into());
        let err = ModelMeta::from_metadata(path, &md).unwrap_err().to_string();
        assert!(err.contains("crop_eye_y"), "{err}");
        md.insert("crop_mode".into(), "warped".into());
        let err = ModelMeta::from_metadata(path, &md).unwrap_err().to_string();
        assert!(err.contains("crop_mode"), "{err}");
    }
}
