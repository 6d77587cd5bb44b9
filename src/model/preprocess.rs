//! The one preprocessing path shared by training, evaluation and live use: square face crop
//! with a margin, resize, colour mode, scaling to [-1, 1], NHWC batch.

use crate::geometry::FaceBox;
use candle_core::{Device, Result, Tensor};
use image::{imageops, GrayImage, RgbImage};
use std::fmt;
use std::str::FromStr;

/// How colour reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// Luma replicated to 3 channels (FER+ is grayscale; webcams are not).
    Gray,
    /// RGB as captured.
    Rgb,
}

impl fmt::Display for ColorMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColorMode::Gray => "gray",
            ColorMode::Rgb => "rgb",
        })
    }
}

impl FromStr for ColorMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "gray" => Ok(ColorMode::Gray),
            "rgb" => Ok(ColorMode::Rgb),
            other => Err(format!("unknown colour mode `{other}` (gray, rgb)")),
        }
    }
}

/// Preprocessing settings, stored in every weights file's metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    pub input_size: usize,
    pub color: ColorMode,
    /// Extra context around a detected face, as a fraction of the box side on each side.
    pub crop_margin: f32,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            input_size: 128,
            color: ColorMode::Gray,
            // Measured: the detector's box nearly fills FER+ (0.05) and DiffusionFER (0.03)
            // frames (examples/crop_margin.rs), so live crops add about that much.
            crop_margin: 0.05,
        }
    }
}

impl Preprocess {
    /// Square crop around `face` widened by the margin; parts outside the frame are black.
    pub fn crop_face(&self, frame: &RgbImage, face: FaceBox) -> RgbImage {
        let side = face.width.max(face.height) * (1.0 + 2.0 * self.crop_margin);
        let (cx, cy) = face.center();
        let (x0, y0) = (
            (cx - side / 2.0).round() as i64,
            (cy - side / 2.0).round() as i64,
        );
        let side = side.round().max(1.0) as u32;
        let mut crop = RgbImage::new(side, side);
        let (fw, fh) = (frame.width() as i64, frame.height() as i64);
        for y in 0..side as i64 {
            let sy = y0 + y;
            if sy < 0 || sy >= fh {
                continue;
            }
            for x in 0..side as i64 {
                let sx = x0 + x;
                if sx >= 0 && sx < fw {
                    crop.put_pixel(x as u32, y as u32, *frame.get_pixel(sx as u32, sy as u32));
                }
            }
        }
        crop
    }

    /// Channels kept per pixel by [`Preprocess::face_pixels`].
    pub fn channels(&self) -> usize {
        match self.color {
            ColorMode::Gray => 1,
            ColorMode::Rgb => 3,
        }
    }

    /// Face image (any size) → `input_size²` pixels in the colour mode (1 or 3 bytes each).
    /// Compact enough to hold a whole training set in memory.
    pub fn face_pixels(&self, face: &RgbImage) -> Vec<u8> {
        let s = self.input_size as u32;
        match self.color {
            ColorMode::Gray => {
                let gray: GrayImage = imageops::grayscale(face);
                if gray.dimensions() == (s, s) {
                    gray.into_raw()
                } else {
                    imageops::resize(&gray, s, s, imageops::FilterType::Triangle).into_raw()
                }
            }
            ColorMode::Rgb => {
                if face.dimensions() == (s, s) {
                    face.as_raw().clone()
                } else {
                    imageops::resize(face, s, s, imageops::FilterType::Triangle).into_raw()
                }
            }
        }
    }

    /// Appends the network input for `pixels` (from [`Preprocess::face_pixels`]) to `out`:
    /// `input_size²·3` values in [-1, 1], NHWC, optionally mirrored left–right.
    pub fn push_input(&self, pixels: &[u8], mirror: bool, out: &mut Vec<f32>) {
        let s = self.input_size;
        let ch = self.channels();
        for y in 0..s {
            for x in 0..s {
                let sx = if mirror { s - 1 - x } else { x };
                let p = &pixels[(y * s + sx) * ch..][..ch];
                for c in 0..3 {
                    out.push(p[c % ch] as f32 / 127.5 - 1.0);
                }
            }
        }
    }

    /// Face image (any size) → `input_size²·3` values in [-1, 1], NHWC order.
    pub fn to_input(&self, face: &RgbImage) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.input_size * self.input_size * 3);
        self.push_input(&self.face_pixels(face), false, &mut out);
        out
    }

    /// Stacks inputs from [`Preprocess::to_input`] into an `[N, S, S, 3]` tensor.
    pub fn batch(&self, inputs: &[Vec<f32>], device: &Device) -> Result<Tensor> {
        let s = self.input_size;
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (inputs.len(), s, s, 3), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn crop_is_square_with_margin_and_black_outside() {
        let frame = RgbImage::from_pixel(100, 80, Rgb([200, 100, 50]));
        let p = Preprocess {
            crop_margin: 0.2,
            ..Default::default()
        };
        let crop = p.crop_face(
            &frame,
            FaceBox {
                x: 0.0,
                y: 10.0,
                width: 40.0,
                height: 50.0,
            },
        );
        assert_eq!(crop.dimensions(), (70, 70));
        assert_eq!(crop.get_pixel(0, 35).0, [0, 0, 0]); // left of the frame
        assert_eq!(crop.get_pixel(40, 35).0, [200, 100, 50]);
    }

    #[test]
    fn input_is_scaled_to_minus_one_one() {
        let face = RgbImage::from_pixel(48, 48, Rgb([255, 0, 0]));
        let rgb = Preprocess {
            color: ColorMode::Rgb,
            ..Default::default()
        }
        .to_input(&face);
        assert_eq!(rgb.len(), 128 * 128 * 3);
        assert_eq!(&rgb[..3], &[1.0, -1.0, -1.0]);
        let gray = Preprocess::default().to_input(&face);
        assert!(gray[0] == gray[1] && gray[1] == gray[2] && gray[0] < 0.0);
    }

    #[test]
    fn mirror_flips_columns() {
        let p = Preprocess {
            input_size: 2,
            ..Default::default()
        };
        let (mut plain, mut mirrored) = (Vec::new(), Vec::new());
        p.push_input(&[0, 255, 0, 255], false, &mut plain);
        p.push_input(&[0, 255, 0, 255], true, &mut mirrored);
        assert_eq!(&plain[..6], &[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]);
        assert_eq!(&mirrored[..6], &[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]);
    }
}
