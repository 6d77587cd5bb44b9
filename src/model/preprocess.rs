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

/// Preprocessing settings, stored in every weights file's metadata (as its own keys, see
/// `ModelMeta::to_metadata`) and in a training recipe (serde).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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
    fn push_input(&self, pixels: &[u8], mirror: bool, out: &mut Vec<f32>) {
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

    /// The network input for faces' pixels (from [`Preprocess::face_pixels`]), each mirrored
    /// left–right where its flag says so: an `[N, S, S, 3]` tensor in [-1, 1].
    pub fn batch_of<'a>(
        &self,
        faces: impl IntoIterator<Item = (&'a [u8], bool)>,
        device: &Device,
    ) -> Result<Tensor> {
        let s = self.input_size;
        let faces = faces.into_iter();
        let mut values = Vec::with_capacity(faces.size_hint().0 * s * s * 3);
        let mut n = 0;
        for (pixels, mirror) in faces {
            self.push_input(pixels, mirror, &mut values);
            n += 1;
        }
        Tensor::from_vec(values, (n, s, s, 3), device)
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

    /// The batch of one face, flattened.
    fn input_of(p: &Preprocess, pixels: &[u8], mirror: bool) -> Vec<f32> {
        let batch = p.batch_of([(pixels, mirror)], &Device::Cpu).unwrap();
        batch.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn input_is_scaled_to_minus_one_one() {
        let face = RgbImage::from_pixel(48, 48, Rgb([255, 0, 0]));
        let rgb = Preprocess {
            color: ColorMode::Rgb,
            ..Default::default()
        };
        let rgb = input_of(&rgb, &rgb.face_pixels(&face), false);
        assert_eq!(rgb.len(), 128 * 128 * 3);
        assert_eq!(&rgb[..3], &[1.0, -1.0, -1.0]);
        let gray = Preprocess::default();
        let gray = input_of(&gray, &gray.face_pixels(&face), false);
        assert!(gray[0] == gray[1] && gray[1] == gray[2] && gray[0] < 0.0);
    }

    #[test]
    fn mirror_flips_columns() {
        let p = Preprocess {
            input_size: 2,
            ..Default::default()
        };
        let pixels = [0, 255, 0, 255];
        let plain = input_of(&p, &pixels, false);
        let mirrored = input_of(&p, &pixels, true);
        assert_eq!(&plain[..6], &[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]);
        assert_eq!(&mirrored[..6], &[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]);
    }
}
