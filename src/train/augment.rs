//! Seeded random changes to training faces, applied to each face every time it is drawn: how the
//! live detector's boxes vary (scale, shift, tilt), lighting (brightness, contrast, gamma),
//! low-resolution faces (blur, down-then-up sampling) and occlusion (an erased rectangle).
//! Mirroring stays with the batch builder.

use image::{imageops, ImageBuffer, Luma, Rgb};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How strongly faces are changed (saved in the recipe).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Largest rotation either way, in degrees.
    pub rotate_deg: f32,
    /// Largest relative change of the face's size (0.1: 0.9–1.1×).
    pub scale: f32,
    /// Largest shift of the face centre, as a fraction of the side.
    pub translate: f32,
    /// Largest brightness shift and contrast/gamma change, as a fraction (0.3: ±30 %).
    pub photometric: f32,
    /// Chance of a blur or of down-then-up sampling to 20–64 px (FER+ faces are 48 px).
    pub degrade_p: f32,
    /// Chance of erasing a random rectangle of 2–15 % of the face.
    pub erase_p: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            rotate_deg: 15.0,
            // Live boxes vary in size and position by about a tenth of the side from
            // frame to frame and between detectors.
            scale: 0.12,
            translate: 0.08,
            photometric: 0.3,
            degrade_p: 0.3,
            erase_p: 0.25,
        }
    }
}

impl Augment {
    /// A changed copy of `pixels` (a `side`×`side` face with `channels` bytes per pixel, 1 or
    /// 3), drawn from `seed`: the same seed gives the same face.
    pub fn apply(&self, pixels: &[u8], side: usize, channels: usize, seed: u64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = self.warp(pixels, side, channels, &mut rng);
        self.relight(&mut out, &mut rng);
        if rng.random::<f32>() < self.degrade_p {
            out = degrade(out, side, channels, &mut rng);
        }
        if rng.random::<f32>() < self.erase_p {
            erase(&mut out, side, channels, &mut rng);
        }
        out
    }

    /// Random similarity transform about the centre, bilinear, edges repeated outward (the
    /// datasets' faces have no context beyond their frame).
    fn warp(&self, pixels: &[u8], side: usize, ch: usize, rng: &mut StdRng) -> Vec<u8> {
        let angle = symmetric(rng, self.rotate_deg).to_radians();
        let zoom = 1.0 + symmetric(rng, self.scale);
        let (tx, ty) = (
            symmetric(rng, self.translate) * side as f32,
            symmetric(rng, self.translate) * side as f32,
        );
        // Output pixel p comes from c + t + R(-angle)(p - c) / zoom.
        let (sin, cos) = angle.sin_cos();
        let (a, b) = (cos / zoom, sin / zoom);
        let c = (side as f32 - 1.0) / 2.0;
        let last = side as f32 - 1.0;
        let mut out = vec![0u8; pixels.len()];
        for y in 0..side {
            let dy = y as f32 - c;
            for x in 0..side {
                let dx = x as f32 - c;
                let sx = (c + tx + a * dx + b * dy).clamp(0.0, last);
                let sy = (c + ty - b * dx + a * dy).clamp(0.0, last);
                let (x0, y0) = (sx as usize, sy as usize);
                let (x1, y1) = ((x0 + 1).min(side - 1), (y0 + 1).min(side - 1));
                let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                for k in 0..ch {
                    let at = |xx: usize, yy: usize| pixels[(yy * side + xx) * ch + k] as f32;
                    let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
                    let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
                    out[(y * side + x) * ch + k] = (top + (bottom - top) * fy + 0.5) as u8;
                }
            }
        }
        out
    }

    /// Brightness, contrast and gamma through one lookup table.
    fn relight(&self, pixels: &mut [u8], rng: &mut StdRng) {
        let p = self.photometric;
        let brightness = symmetric(rng, p) * 128.0;
        let contrast = 1.0 + symmetric(rng, p);
        let gamma = (1.0 + symmetric(rng, p)).max(0.1);
        let table: Vec<u8> = (0..256)
            .map(|v| {
                let v = ((v as f32 - 128.0) * contrast + 128.0 + brightness).clamp(0.0, 255.0);
                (255.0 * (v / 255.0).powf(gamma)).round() as u8
            })
            .collect();
        for v in pixels {
            *v = table[*v as usize];
        }
    }
}

/// Uniform in [-range, range].
fn symmetric(rng: &mut StdRng, range: f32) -> f32 {
    if range <= 0.0 {
        0.0
    } else {
        rng.random_range(-range..=range)
    }
}

/// A Gaussian blur (σ 0.8 px), or down-then-up sampling to 20–64 px (a low-resolution face).
fn degrade(pixels: Vec<u8>, side: usize, ch: usize, rng: &mut StdRng) -> Vec<u8> {
    let s = side as u32;
    let small = rng.random_range(20..=64u32).min(s);
    let blur = rng.random_bool(0.5);
    fn resample<P: image::Pixel<Subpixel = u8> + 'static>(
        img: ImageBuffer<P, Vec<u8>>,
        s: u32,
        small: u32,
        blur: bool,
    ) -> Vec<u8> {
        if blur {
            imageops::blur(&img, 0.8).into_raw()
        } else {
            let down = imageops::resize(&img, small, small, imageops::FilterType::Triangle);
            imageops::resize(&down, s, s, imageops::FilterType::Triangle).into_raw()
        }
    }
    match ch {
        1 => resample(
            ImageBuffer::<Luma<u8>, _>::from_raw(s, s, pixels).expect("side² bytes"),
            s,
            small,
            blur,
        ),
        _ => resample(
            ImageBuffer::<Rgb<u8>, _>::from_raw(s, s, pixels).expect("side²·3 bytes"),
            s,
            small,
            blur,
        ),
    }
}

/// Fills a random rectangle (2–15 % of the area, aspect 1:2 to 2:1) with one random grey.
fn erase(pixels: &mut [u8], side: usize, ch: usize, rng: &mut StdRng) {
    let area = rng.random_range(0.02..0.15f32) * (side * side) as f32;
    let aspect = rng.random_range(0.5..2.0f32);
    let w = ((area * aspect).sqrt() as usize).clamp(1, side);
    let h = ((area / aspect).sqrt() as usize).clamp(1, side);
    let (x0, y0) = (
        rng.random_range(0..=side - w),
        rng.random_range(0..=side - h),
    );
    let value: u8 = rng.random();
    for y in y0..y0 + h {
        pixels[(y * side + x0) * ch..(y * side + x0 + w) * ch].fill(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A face-like test picture: a horizontal gradient with a bright square.
    fn picture(side: usize, ch: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(side * side * ch);
        for y in 0..side {
            for x in 0..side {
                let v = if (40..60).contains(&x) && (40..60).contains(&y) {
                    250
                } else {
                    (x * 200 / side) as u8
                };
                p.extend(std::iter::repeat_n(v, ch));
            }
        }
        p
    }

    #[test]
    fn same_seed_same_face_and_size_kept() {
        let aug = Augment::default();
        for ch in [1, 3] {
            let p = picture(128, ch);
            let a = aug.apply(&p, 128, ch, 7);
            assert_eq!(a.len(), p.len());
            assert_eq!(a, aug.apply(&p, 128, ch, 7));
            assert_ne!(a, aug.apply(&p, 128, ch, 8));
        }
    }

    #[test]
    fn zero_strength_is_the_identity() {
        let none = Augment {
            rotate_deg: 0.0,
            scale: 0.0,
            translate: 0.0,
            photometric: 0.0,
            degrade_p: 0.0,
            erase_p: 0.0,
        };
        let p = picture(64, 1);
        assert_eq!(none.apply(&p, 64, 1, 3), p);
    }

    #[test]
    fn changes_stay_moderate() {
        // Over many draws the face stays recognisably the same picture: the mean absolute
        // change is well under the picture's own contrast.
        let aug = Augment::default();
        let p = picture(128, 1);
        let mut total = 0.0;
        for seed in 0..50 {
            let a = aug.apply(&p, 128, 1, seed);
            let diff: f64 = a
                .iter()
                .zip(&p)
                .map(|(&x, &y)| (x as f64 - y as f64).abs())
                .sum();
            total += diff / p.len() as f64;
        }
        let mean = total / 50.0;
        assert!(mean > 2.0 && mean < 60.0, "mean absolute change {mean}");
    }
}
