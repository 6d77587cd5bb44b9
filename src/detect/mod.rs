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
use image::RgbImage;
pub use seeta::{SeetaDetector, SeetaSettings};
use std::borrow::Cow;
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
    pub fn scaled(&self, factor: f32) -> Detection {
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
            resized = shrink(frame, sw, sh);
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

/// `frame` downscaled to `width × height` (each at most the frame's): halved by 2×2 averages
/// while both sides stay at least twice the target, then bilinear. Under a millisecond for
/// 640×480 → 320×240, where `image`'s Triangle filter took 6–11 ms on this machine, as long as
/// the detection itself; the halvings average every pixel, so small faces are not aliased
/// away.
fn shrink(frame: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut image = Cow::Borrowed(frame);
    while image.width() >= 2 * width && image.height() >= 2 * height {
        image = Cow::Owned(halve(&image));
    }
    if image.dimensions() == (width, height) {
        return image.into_owned();
    }
    bilinear(&image, width, height)
}

/// 2×2 box average: `W × H` → `⌊W/2⌋ × ⌊H/2⌋`.
fn halve(image: &RgbImage) -> RgbImage {
    let (w, h) = (image.width() / 2, image.height() / 2);
    let stride = image.width() as usize * 3;
    let src = image.as_raw();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h as usize {
        let top = &src[2 * y * stride..][..stride];
        let bottom = &src[(2 * y + 1) * stride..][..stride];
        for x in 0..w as usize {
            for c in 0..3 {
                let (i, j) = (6 * x + c, 6 * x + 3 + c);
                let sum = u16::from(top[i]) + u16::from(top[j]) + u16::from(bottom[i]);
                out.push(((sum + u16::from(bottom[j]) + 2) / 4) as u8);
            }
        }
    }
    RgbImage::from_raw(w, h, out).expect("w × h × 3 bytes")
}

/// Bilinear resampling at pixel centres, weights in 1/256.
fn bilinear(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    /// Per output coordinate: the two source coordinates and the second one's weight.
    fn taps(from: u32, to: u32) -> Vec<(usize, usize, u32)> {
        let scale = from as f32 / to as f32;
        (0..to)
            .map(|o| {
                let s = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (from - 1) as f32);
                let i = s as usize;
                (
                    i,
                    (i + 1).min(from as usize - 1),
                    ((s - i as f32) * 256.0) as u32,
                )
            })
            .collect()
    }
    let (xs, ys) = (taps(image.width(), width), taps(image.height(), height));
    let stride = image.width() as usize * 3;
    let src = image.as_raw();
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for &(y0, y1, fy) in &ys {
        let (r0, r1) = (&src[y0 * stride..][..stride], &src[y1 * stride..][..stride]);
        for &(x0, x1, fx) in &xs {
            for c in 0..3 {
                let lerp = |row: &[u8]| {
                    u32::from(row[3 * x0 + c]) * (256 - fx) + u32::from(row[3 * x1 + c]) * fx
                };
                let v = lerp(r0) * (256 - fy) + lerp(r1) * fy;
                out.push(((v + (1 << 15)) >> 16) as u8);
            }
        }
    }
    RgbImage::from_raw(width, height, out).expect("width × height × 3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{imageops, Rgb};

    #[test]
    fn shrinking_averages_and_keeps_the_picture() {
        let flat = RgbImage::from_pixel(64, 48, Rgb([10, 200, 77]));
        assert_eq!(
            shrink(&flat, 32, 24),
            RgbImage::from_pixel(32, 24, Rgb([10, 200, 77]))
        );
        assert_eq!(
            shrink(&flat, 21, 17),
            RgbImage::from_pixel(21, 17, Rgb([10, 200, 77]))
        );
        let checker = RgbImage::from_fn(4, 2, |x, _| Rgb([if x % 2 == 0 { 0 } else { 255 }; 3]));
        assert_eq!(halve(&checker), RgbImage::from_pixel(2, 1, Rgb([128; 3])));
        // A smooth picture comes out as `image`'s Triangle filter makes it, to a level or two.
        let ramp = RgbImage::from_fn(640, 360, |x, y| {
            Rgb([
                (x * 255 / 639) as u8,
                (y * 255 / 359) as u8,
                ((x + y) / 4) as u8,
            ])
        });
        for (w, h) in [(320, 180), (480, 270), (240, 135)] {
            let ours = shrink(&ramp, w, h);
            let theirs = imageops::resize(&ramp, w, h, imageops::FilterType::Triangle);
            let diff: Vec<i32> = ours
                .as_raw()
                .iter()
                .zip(theirs.as_raw())
                .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                .collect();
            assert!(
                diff.iter().all(|&d| d <= 2),
                "{w}×{h}: {:?}",
                diff.iter().max()
            );
        }
    }
}
