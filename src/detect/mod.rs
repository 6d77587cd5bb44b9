//! Face detection: faces found in a frame, in full-frame pixels, most confident first.
//!
//! Two detectors behind one [`FaceDetector`]: YuNet, libfacedetection's CNN (the default:
//! boxes, a 0–1 score and five landmarks, faces from ~10 px, turned faces too) and SeetaFace,
//! rustface's frontal cascade (boxes only). Either can run on a downscaled copy of the frame
//! (`max_width`); results are mapped back to the frame's pixels.

pub mod decode;
pub mod seeta;
pub mod yunet;

use crate::geometry::{FaceBox, Landmarks};
use crate::model::WeightsError;
use image::{imageops, RgbImage};
pub use seeta::{SeetaDetector, SeetaSettings};
pub use yunet::{YunetDetector, YunetSettings};

/// A face found in a frame, in full-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub face: FaceBox,
    /// The detector's confidence: 0–1 for YuNet, the cascade's unbounded score for SeetaFace.
    pub score: f64,
    /// Eyes, nose and mouth corners (YuNet only).
    pub landmarks: Option<Landmarks>,
}

impl Detection {
    /// The same detection with every coordinate multiplied by `factor`.
    fn scaled(&self, factor: f32) -> Detection {
        Detection {
            face: self.face.scaled(factor),
            landmarks: self.landmarks.map(|l| l.scaled(factor)),
            ..*self
        }
    }
}

/// Which detector finds the faces.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    /// libfacedetection's CNN (YuNet): boxes, landmarks, small and turned faces.
    Yunet,
    /// rustface's SeetaFace frontal cascade: boxes only, frontal faces.
    Seeta,
}

impl DetectorKind {
    /// Width photos are downscaled to before detection unless told otherwise. YuNet finds
    /// faces from ~10 px and costs 0.5 GFLOP at 640×480; the cascade needs 20-px faces and
    /// costs ~18 ms at 320×240.
    pub fn photo_width(self) -> u32 {
        match self {
            DetectorKind::Yunet => 640,
            DetectorKind::Seeta => 320,
        }
    }
}

/// Detector settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    pub kind: DetectorKind,
    /// Frames wider than this are downscaled to it before detection.
    pub max_width: u32,
    pub yunet: YunetSettings,
    pub seeta: SeetaSettings,
}

impl DetectorConfig {
    /// `kind` with its photo width and default settings.
    pub fn for_photos(kind: DetectorKind) -> Self {
        Self {
            kind,
            max_width: kind.photo_width(),
            yunet: YunetSettings::default(),
            seeta: SeetaSettings::default(),
        }
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self::for_photos(DetectorKind::Yunet)
    }
}

/// Errors creating or running a detector.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// This binary was built without the YuNet weights (see build.rs).
    #[error(
        "this build has no YuNet face-detector weights (it needs \
         ../shared/weights/facedetect/yunet.safetensors or AFFECTCAM_YUNET_WEIGHTS when \
         building); use --detector seeta"
    )]
    NoYunetWeights,
    /// The YuNet weights are not a complete, well-formed weights file.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The network failed on a frame.
    #[error("face detector: {0}")]
    Network(#[from] candle_core::Error),
}

enum Backend {
    Yunet(Box<YunetDetector>),
    Seeta(SeetaDetector),
}

/// The configured detector. Not `Send` (rustface's is not): create it in the thread that
/// uses it.
pub struct FaceDetector {
    backend: Backend,
    max_width: u32,
}

impl FaceDetector {
    pub fn new(config: DetectorConfig) -> Result<Self, DetectError> {
        let backend = match config.kind {
            DetectorKind::Yunet => Backend::Yunet(Box::new(YunetDetector::embedded(config.yunet)?)),
            DetectorKind::Seeta => Backend::Seeta(SeetaDetector::new(config.seeta)),
        };
        Ok(Self {
            backend,
            max_width: config.max_width,
        })
    }

    /// Faces in `frame`, most confident first.
    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let (w, h) = frame.dimensions();
        let scale = (self.max_width as f32 / w as f32).min(1.0);
        let resized;
        let image = if scale < 1.0 {
            let sw = ((w as f32 * scale).round() as u32).max(1);
            let sh = ((h as f32 * scale).round() as u32).max(1);
            resized = imageops::resize(frame, sw, sh, imageops::FilterType::Triangle);
            &resized
        } else {
            frame
        };
        let mut faces = match &mut self.backend {
            Backend::Yunet(net) => net.detect(image)?,
            Backend::Seeta(cascade) => cascade.detect(image),
        };
        if scale < 1.0 {
            faces = faces.iter().map(|d| d.scaled(1.0 / scale)).collect();
        }
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(faces)
    }
}
