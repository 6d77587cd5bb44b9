//! rustface (SeetaFace frontal cascade, BSD-2-Clause; its model ships inside the rustface
//! crate and is embedded at build time). Detection runs on a downscaled
//! grayscale copy of the frame: rustface costs ~60 ms at 640×480 and ~18 ms at 320×240.
//! The detector is not `Send`: create it in the thread that uses it.

use super::Detection;
use crate::geometry::FaceBox;
use image::{imageops, RgbImage};

static SEETA_MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seeta_fd_frontal_v1.0.bin"));

/// Width photos are downscaled to for detection unless told otherwise (faces from ~40 px).
pub const PHOTO_DETECT_WIDTH: u32 = 320;

/// Detector settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Frames wider than this are downscaled to it before detection.
    pub max_width: u32,
    /// Cascade score threshold (rustface's default is 2.0; higher is stricter).
    pub min_score: f64,
    /// Scale factor between pyramid levels (closer to 1: slower, finds more sizes).
    pub pyramid_scale: f32,
    /// Sliding-window step in pixels.
    pub window_step: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            max_width: PHOTO_DETECT_WIDTH,
            min_score: 2.0,
            pyramid_scale: 0.8,
            window_step: 4,
        }
    }
}

pub struct FaceDetector {
    inner: Box<dyn rustface::Detector>,
    config: DetectorConfig,
}

impl FaceDetector {
    pub fn new(config: DetectorConfig) -> Self {
        let model =
            rustface::read_model(SEETA_MODEL).expect("the embedded SeetaFace model is valid");
        let mut inner = rustface::create_detector_with_model(model);
        inner.set_min_face_size(20);
        inner.set_score_thresh(config.min_score);
        inner.set_pyramid_scale_factor(config.pyramid_scale);
        inner.set_slide_window_step(config.window_step, config.window_step);
        Self { inner, config }
    }

    /// Faces in `frame`, most confident first.
    pub fn detect(&mut self, frame: &RgbImage) -> Vec<Detection> {
        let (w, h) = frame.dimensions();
        if w < 20 || h < 20 {
            return Vec::new();
        }
        let scale = (self.config.max_width as f32 / w as f32).min(1.0);
        let gray = imageops::grayscale(frame);
        let gray = if scale < 1.0 {
            let (sw, sh) = (
                (w as f32 * scale).round() as u32,
                (h as f32 * scale).round() as u32,
            );
            imageops::resize(&gray, sw, sh, imageops::FilterType::Triangle)
        } else {
            gray
        };
        let mut faces: Vec<Detection> = self
            .inner
            .detect(&rustface::ImageData::new(
                gray.as_raw(),
                gray.width(),
                gray.height(),
            ))
            .into_iter()
            .map(|f| {
                let b = f.bbox();
                Detection {
                    face: FaceBox {
                        x: b.x() as f32 / scale,
                        y: b.y() as f32 / scale,
                        width: b.width() as f32 / scale,
                        height: b.height() as f32 / scale,
                    },
                    score: f.score(),
                }
            })
            .collect();
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        faces
    }
}
