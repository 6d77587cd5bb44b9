//! `predict` on photos: find the faces (or take the whole image as one face crop), crop each
//! the way the model was trained, and classify them as one batch.

use crate::detect::{Detection, FaceDetector};
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
    pub detection: Option<Detection>,
    pub prediction: Prediction,
}

impl PhotoFace {
    fn bbox(&self) -> Option<[f32; 4]> {
        self.detection
            .map(|d| [d.face.x, d.face.y, d.face.width, d.face.height])
    }

    /// The face as one JSON object: file, box, detector score, landmarks, label, confidence,
    /// valence, arousal, probs.
    pub fn to_json(&self, file: &Path) -> serde_json::Value {
        let p = &self.prediction;
        let d = self.detection.as_ref();
        serde_json::json!({
            "file": file, "box": self.bbox(), "detector_score": d.map(|d| d.score),
            "landmarks": d.and_then(|d| d.landmarks).map(|l| l.to_json()),
            "label": EMOTIONS[p.label()], "confidence": p.probs[p.label()],
            "valence": p.valence, "arousal": p.arousal, "probs": probs_json(&p.probs),
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
    let img = crate::picture::open(path).map_err(|e| PredictError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let faces: Vec<Option<Detection>> = match detector {
        Some(detector) => detector.detect(&img)?.into_iter().map(Some).collect(),
        None => vec![None],
    };
    if faces.is_empty() {
        return Ok(Vec::new());
    }
    let pre = model.meta.preprocess;
    let pixels: Vec<Vec<u8>> = faces
        .iter()
        .map(|f| match f {
            Some(d) => pre.face_pixels(&pre.crop(&img, d.face, d.landmarks.as_ref())),
            None => pre.face_pixels(&img),
        })
        .collect();
    let batch = pre.batch_of(pixels.iter().map(|p| (&p[..], false)), device)?;
    let predictions = model.predict(&batch)?;
    Ok(faces
        .into_iter()
        .zip(predictions)
        .map(|(detection, prediction)| PhotoFace {
            detection,
            prediction,
        })
        .collect())
}
