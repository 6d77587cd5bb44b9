//! Reading PNG and JPEG files with bounded memory: a hostile or broken file (a header that
//! claims 100,000 × 100,000 pixels) is an error, not an allocation of gigabytes.

use image::{ImageReader, ImageResult, Limits, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Largest side accepted, in pixels.
const MAX_SIDE: u32 = 16_384;
/// Largest decoding buffer, in bytes (a 8,000 × 8,000 RGB photo needs 192 MB).
const MAX_ALLOC: u64 = 256 << 20;

/// Camera frames are at most 8K: a frame claiming more is damaged, and decoding it would
/// take seconds (a fuzzed progressive JPEG of 15264 × 11936 took over 10 s).
const MAX_CAMERA_SIDE: u32 = 8192;
const MAX_CAMERA_ALLOC: u64 = 64 << 20;

fn limits(side: u32, alloc: u64) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(alloc);
    limits
}

fn decode_within(bytes: &[u8], limits: Limits) -> ImageResult<RgbImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    reader.limits(limits);
    Ok(reader.decode()?.to_rgb8())
}

/// Decodes an image held in memory (format from its contents) to RGB.
pub fn decode(bytes: &[u8]) -> ImageResult<RgbImage> {
    decode_within(bytes, limits(MAX_SIDE, MAX_ALLOC))
}

/// Decodes one camera frame (a JPEG from an MJPEG stream), within a camera's sizes.
pub fn decode_camera_frame(bytes: &[u8]) -> ImageResult<RgbImage> {
    decode_within(bytes, limits(MAX_CAMERA_SIDE, MAX_CAMERA_ALLOC))
}

/// Reads and decodes an image file (format from its contents) to RGB.
pub fn open(path: &Path) -> ImageResult<RgbImage> {
    let mut reader = ImageReader::open(path)?.with_guessed_format()?;
    reader.limits(limits(MAX_SIDE, MAX_ALLOC));
    Ok(reader.decode()?.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_claiming_a_huge_image_is_an_error() {
        // A valid PNG signature and IHDR for 100,000 × 100,000 RGB, and nothing else.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(100_000u32.to_be_bytes());
        ihdr.extend(100_000u32.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        png.extend((13u32).to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc32(&ihdr).to_be_bytes());
        assert!(decode(&png).is_err());
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn decodes_a_small_png() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&bytes).unwrap(), img);
    }
}
