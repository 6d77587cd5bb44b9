//! The one preprocessing path shared by training, evaluation and live use: square face crop
//! with a margin, resize, colour mode, scaling to [-1, 1], NHWC batch.

use crate::geometry::{FaceBox, Landmarks, Point};
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

/// How a face is cut out of a frame.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum CropMode {
    /// A square around the detector's box, widened by the crop margin.
    #[default]
    Box,
    /// A similarity transform from the landmarks: the eyes level, their midpoint on the
    /// vertical centre line at `eye_y` of the side, and the scale set so the mouth corners'
    /// midpoint lies `mouth_y - eye_y` of the side below it (along the levelled face; on a
    /// turned face it may sit off the centre line). Faces without landmarks (rustface) get
    /// the box crop.
    Aligned { eye_y: f32, mouth_y: f32 },
}

impl CropMode {
    /// The aligned layout of the training images: the medians of where YuNet finds the eye
    /// and mouth midpoints in 396 FER+ Test images, 0.376 and 0.773 of the side
    /// (`examples/crop_margin.rs`; muxspace: 0.405 and 0.769), so aligned crops frame faces
    /// as the main training source does.
    pub const ALIGNED: CropMode = CropMode::Aligned {
        eye_y: 0.38,
        mouth_y: 0.77,
    };
}

/// Preprocessing settings, stored in every weights file's metadata (as its own keys, see
/// `ModelMeta::to_metadata`) and in a training recipe (serde).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    pub input_size: usize,
    pub color: ColorMode,
    /// Extra context around a detected face, as a fraction of the box side on each side.
    pub crop_margin: f32,
    #[serde(default)]
    pub crop: CropMode,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            input_size: 128,
            color: ColorMode::Gray,
            // Measured: YuNet's box fills FER+ Test and muxspace images (median margins -0.012
            // and -0.004, examples/crop_margin.rs), and the shipped model scores better on
            // YuNet crops with 0 than with 0.05 (train/README.md).
            crop_margin: 0.0,
            crop: CropMode::Box,
        }
    }
}

impl Preprocess {
    /// The face cut out of `frame` as the crop mode says (aligned when `landmarks` are given
    /// and usable, else the box crop); parts outside the frame are black. The one crop used
    /// by live, annotate, predict, train and eval.
    pub fn crop(&self, frame: &RgbImage, face: FaceBox, landmarks: Option<&Landmarks>) -> RgbImage {
        match (self.crop, landmarks) {
            (CropMode::Aligned { eye_y, mouth_y }, Some(l)) => {
                aligned_crop(frame, l, eye_y, mouth_y, self.input_size)
                    .unwrap_or_else(|| self.crop_box(frame, face))
            }
            _ => self.crop_box(frame, face),
        }
    }

    /// Square crop around `face` widened by the margin; parts outside the frame are black.
    fn crop_box(&self, frame: &RgbImage, face: FaceBox) -> RgbImage {
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

fn midpoint(a: Point, b: Point) -> Point {
    Point {
        x: (a.x + b.x) / 2.0,
        y: (a.y + b.y) / 2.0,
    }
}

/// The aligned crop (see [`CropMode::Aligned`]), sampled bilinearly at about the face's own
/// scale (at most twice `input_size` a side, so the resize to the input still filters);
/// `None` when the landmarks give no usable eye-to-mouth distance.
fn aligned_crop(
    frame: &RgbImage,
    l: &Landmarks,
    eye_y: f32,
    mouth_y: f32,
    input_size: usize,
) -> Option<RgbImage> {
    let eye = midpoint(l.left_eye, l.right_eye);
    let mouth = midpoint(l.left_mouth, l.right_mouth);
    let angle = (l.right_eye.y - l.left_eye.y).atan2(l.right_eye.x - l.left_eye.x);
    let (sin, cos) = angle.sin_cos();
    // Eye-to-mouth distance along the face's vertical axis (-sin, cos).
    let drop = (mouth.x - eye.x) * -sin + (mouth.y - eye.y) * cos;
    if !(drop >= 2.0 && mouth_y > eye_y) {
        return None;
    }
    let side = drop / (mouth_y - eye_y);
    let n = side.round().clamp(16.0, 2.0 * input_size as f32) as u32;
    let step = side / n as f32;
    let (fw, fh) = (frame.width() as i64, frame.height() as i64);
    let pixel = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= fw || y >= fh {
            return [0.0; 3];
        }
        frame.get_pixel(x as u32, y as u32).0.map(f32::from)
    };
    let mut crop = RgbImage::new(n, n);
    for (u, v, out) in crop.enumerate_pixels_mut() {
        // Offsets from the eye midpoint in source pixels, along the eye line and down the face.
        let along = (u as f32 + 0.5) * step - side / 2.0;
        let down = (v as f32 + 0.5) * step - eye_y * side;
        let sx = eye.x + along * cos - down * sin - 0.5;
        let sy = eye.y + along * sin + down * cos - 0.5;
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let [a, b, c, d] = [
            pixel(x0, y0),
            pixel(x0 + 1, y0),
            pixel(x0, y0 + 1),
            pixel(x0 + 1, y0 + 1),
        ];
        out.0 = std::array::from_fn(|k| {
            let top = a[k] + (b[k] - a[k]) * fx;
            let bottom = c[k] + (d[k] - c[k]) * fx;
            (top + (bottom - top) * fy).round() as u8
        });
    }
    Some(crop)
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
        let crop = p.crop(
            &frame,
            FaceBox {
                x: 0.0,
                y: 10.0,
                width: 40.0,
                height: 50.0,
            },
            None,
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

    /// Landmarks of a face with the eye midpoint at `eye`, interocular `iod`, tilted by `deg`.
    fn tilted_landmarks(eye: (f32, f32), drop: f32, deg: f32) -> Landmarks {
        let (sin, cos) = deg.to_radians().sin_cos();
        let at = |along: f32, down: f32| Point {
            x: eye.0 + along * cos - down * sin,
            y: eye.1 + along * sin + down * cos,
        };
        Landmarks {
            left_eye: at(-15.0, 0.0),
            right_eye: at(15.0, 0.0),
            nose: at(0.0, drop / 2.0),
            left_mouth: at(-10.0, drop),
            right_mouth: at(10.0, drop),
        }
    }

    #[test]
    fn aligned_crop_levels_the_eyes_and_places_eyes_and_mouth() {
        // A frame with a bright dot on each eye and on the mouth centre of a face tilted 20°.
        let mut frame = RgbImage::new(200, 200);
        let l = tilted_landmarks((100.0, 80.0), 36.0, 20.0);
        let mouth = midpoint(l.left_mouth, l.right_mouth);
        for p in [l.left_eye, l.right_eye, mouth] {
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (x, y) = ((p.x + dx as f32) as u32, (p.y + dy as f32) as u32);
                    frame.put_pixel(x, y, Rgb([255, 255, 255]));
                }
            }
        }
        let p = Preprocess {
            crop: CropMode::Aligned {
                eye_y: 0.4,
                mouth_y: 0.76,
            },
            crop_margin: 0.05,
            ..Default::default()
        };
        let face = FaceBox {
            x: 60.0,
            y: 50.0,
            width: 80.0,
            height: 80.0,
        };
        let crop = p.crop(&frame, face, Some(&l));
        // Side = drop / (0.76 - 0.4) = 100 source pixels, sampled 1:1.
        assert_eq!(crop.dimensions(), (100, 100));
        let bright = |x: u32, y: u32| crop.get_pixel(x, y).0[0] > 100;
        // Eyes level at y = 40, 15 px either side of the centre; the mouth at y = 76.
        assert!(bright(35, 40) && bright(65, 40), "eyes not level at row 40");
        assert!(bright(50, 76), "mouth not at row 76");
        assert!(!bright(50, 40) && !bright(50, 60));
        // Without landmarks, or with degenerate ones, the box crop is used.
        assert_eq!(p.crop(&frame, face, None).dimensions(), (88, 88));
        let flat = tilted_landmarks((100.0, 80.0), 0.0, 0.0);
        assert_eq!(p.crop(&frame, face, Some(&flat)).dimensions(), (88, 88));
    }
}
