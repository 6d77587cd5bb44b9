//! Face detection: faces found in a frame, in full-frame pixels, most confident first.

pub mod seeta;

pub use seeta::{DetectorConfig, FaceDetector};

use crate::geometry::FaceBox;

/// A face found in a frame, in full-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub face: FaceBox,
    pub score: f64,
}
