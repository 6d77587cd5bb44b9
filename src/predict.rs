//! `predict` on photos: find the faces (or take the whole image as one face crop), crop each
//! the way the model was trained, and classify them as one batch.

use crate::detect::FaceDetector;
use crate::geometry::FaceBox;
use crate::model::labels::{probs_json, EMOTIONS};
use crate::model::{AffectModel, Prediction};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Errors of predicting one photo.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The file is missing or not a decodable PNG/JPEG.
    #[error("cannot read image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// The face detector failed.
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    /// The model failed on the batch of faces.
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),
}

/// One face of a photo and what the model says of it.
#[derive(Debug, Clone)]
pub struct PhotoFace {
    /// Where the face is; `None` when the whole image was taken as the face.
    pub face: Option<FaceBox>,
    pub prediction: Prediction,
}

impl PhotoFace {
    fn bbox(&self) -> Option<[f32; 4]> {
        self.face.map(|b| [b.x, b.y, b.width, b.height])
    }

    /// The face as one JSON object: file, box, label, confidence, valence, arousal, probs.
    pub fn to_json(&self, file: &Path) -> serde_json::Value {
        let p = &self.prediction;
        serde_json::json!({
            "file": file, "box": self.bbox(), "label": EMOTIONS[p.label()],
            "confidence": p.probs[p.label()], "valence": p.valence, "arousal": p.arousal,
            "probs": probs_json(&p.probs),
        })
    }

    /// The face as one line of text.
    pub fn describe(&self, file: &Path) -> String {
        let p = &self.prediction;
        let at = self.bbox().map_or(String::new(), |[x, y, w, h]| {
            format!(" face at ({x:.0}, {y:.0}) {w:.0}×{h:.0}")
        });
        format!(
            "{}{at}: {} ({:.0}%), valence {:+.2}, arousal {:+.2}",
            file.display(),
            EMOTIONS[p.label()],
            100.0 * p.probs[p.label()],
            p.valence,
            p.arousal
        )
    }
}

/// The faces of the photo at `path`, most confident detection first; with no `detector` the
/// whole image is one face. An empty list means no face was found.
pub fn predict_photo(
    path: &Path,
    model: &AffectModel,
    device: &Device,
    detector: Option<&mut FaceDetector>,
) -> Result<Vec<PhotoFace>, PredictError> {
    let img = image::open(path)
        .map_err(|e| PredictError::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .to_rgb8();
    let faces: Vec<Option<FaceBox>> = match detector {
        Some(detector) => detector
            .detect(&img)?
            .into_iter()
            .map(|d| Some(d.face))
            .collect(),
        None => vec![None],
    };
    if faces.is_empty() {
        return Ok(Vec::new());
    }
    let pre = model.meta.preprocess;
    let inputs: Vec<Vec<f32>> = faces
        .iter()
        .map(|f| match f {
            Some(b) => pre.to_input(&pre.crop_face(&img, *b)),
            None => pre.to_input(&img),
        })
        .collect();
    let predictions = model.predict(&pre.batch(&inputs, device)?)?;
    Ok(faces
        .into_iter()
        .zip(predictions)
        .map(|(face, prediction)| PhotoFace { face, prediction })
        .collect())
}
