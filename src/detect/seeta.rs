//! rustface (SeetaFace frontal cascade, BSD-2-Clause; its model ships inside the rustface
//! crate and is embedded at build time): boxes only, no landmarks, frontal faces from 20 px.
//! It costs ~60 ms at 640×480 and ~18 ms at 320×240, so it runs on a downscaled copy.
//! The detector is not `Send`: create it in the thread that uses it.

use super::Detection;
use crate::geometry::FaceBox;
use image::{imageops, RgbImage};

static SEETA_MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seeta_fd_frontal_v1.0.bin"));

/// The cascade's smallest face side in pixels (of the image it runs on).
const MIN_FACE: u32 = 20;

/// Cascade settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeetaSettings {
    /// Cascade score threshold (rustface's default is 2.0; higher is stricter).
    pub min_score: f64,
    /// Scale factor between pyramid levels (closer to 1: slower, finds more sizes).
    pub pyramid_scale: f32,
    /// Sliding-window step in pixels.
    pub window_step: u32,
}

impl Default for SeetaSettings {
    fn default() -> Self {
        Self {
            min_score: 2.0,
            pyramid_scale: 0.8,
            window_step: 4,
        }
    }
}

pub struct SeetaDetector {
    inner: Box<dyn rustface::Detector>,
}

impl SeetaDetector {
    pub fn new(settings: SeetaSettings) -> Self {
        let model =
            rustface::read_model(SEETA_MODEL).expect("the embedded SeetaFace model is valid");
        let mut inner = rustface::create_detector_with_model(model);
        inner.set_min_face_size(MIN_FACE);
        inner.set_score_thresh(settings.min_score);
        inner.set_pyramid_scale_factor(settings.pyramid_scale);
        inner.set_slide_window_step(settings.window_step, settings.window_step);
        Self { inner }
    }

    /// Faces in `frame`, in its pixels, in the cascade's order; the score is the cascade's
    /// (unbounded, higher is surer).
    pub fn detect(&mut self, frame: &RgbImage) -> Vec<Detection> {
        let (w, h) = frame.dimensions();
        if w < MIN_FACE || h < MIN_FACE {
            return Vec::new();
        }
        let gray = imageops::grayscale(frame);
        self.inner
            .detect(&rustface::ImageData::new(gray.as_raw(), w, h))
            .into_iter()
            .map(|f| {
                let b = f.bbox();
                Detection {
                    face: FaceBox {
                        x: b.x() as f32,
                        y: b.y() as f32,
                        width: b.width() as f32,
                        height: b.height() as f32,
                    },
                    score: f.score(),
                    landmarks: None,
                }
            })
            .collect()
    }
}
