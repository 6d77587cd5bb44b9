//! A folder of PNG/JPEG images (sorted by name) or one image, played at a fixed rate.

use super::{CaptureError, FrameSource};
use image::{imageops, Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct ImageSource {
    what: String,
    files: Vec<PathBuf>,
    next: usize,
    fps: f64,
    /// Size of the first image; later images are fitted into it so the stream has one size.
    size: Option<(u32, u32)>,
    skipped_files: usize,
    resized: usize,
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

impl ImageSource {
    pub fn folder(dir: &Path, fps: f64) -> Result<Self, CaptureError> {
        let io = |source| CaptureError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        let mut other = 0;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_file() && is_image_name(&path) {
                files.push(path);
            } else {
                other += 1;
            }
        }
        if files.is_empty() {
            return Err(CaptureError::NoImages {
                path: dir.to_path_buf(),
                other,
            });
        }
        files.sort();
        let what = format!("{}: {} images at {fps:.1} fps", dir.display(), files.len());
        Ok(Self::new(what, files, fps, other))
    }

    pub fn single(path: &Path, fps: f64) -> Result<Self, CaptureError> {
        Ok(Self::new(
            format!("{}: one image", path.display()),
            vec![path.to_path_buf()],
            fps,
            0,
        ))
    }

    fn new(what: String, files: Vec<PathBuf>, fps: f64, skipped_files: usize) -> Self {
        Self {
            what,
            files,
            next: 0,
            fps: fps.max(0.01),
            size: None,
            skipped_files,
            resized: 0,
        }
    }
}

/// Scales `img` to fit inside `width`×`height` keeping its aspect, centred on black.
fn fit_into(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = (width as f32 / img.width() as f32).min(height as f32 / img.height() as f32);
    let (w, h) = (
        ((img.width() as f32 * scale).round() as u32).clamp(1, width),
        ((img.height() as f32 * scale).round() as u32).clamp(1, height),
    );
    let scaled = imageops::resize(img, w, h, imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([0, 0, 0]));
    imageops::replace(
        &mut canvas,
        &scaled,
        i64::from((width - w) / 2),
        i64::from((height - h) / 2),
    );
    canvas
}

impl FrameSource for ImageSource {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn frame_count(&self) -> Option<u64> {
        Some(self.files.len() as u64)
    }

    fn next_frame(&mut self) -> Result<Option<(Duration, RgbImage)>, CaptureError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        let image = crate::picture::open(path).map_err(|source| CaptureError::Image {
            path: path.clone(),
            source,
        })?;
        let image = match self.size {
            None => {
                self.size = Some(image.dimensions());
                image
            }
            Some((w, h)) if image.dimensions() == (w, h) => image,
            Some((w, h)) => {
                self.resized += 1;
                fit_into(&image, w, h)
            }
        };
        let timestamp = Duration::from_secs_f64(self.next as f64 / self.fps);
        self.next += 1;
        Ok(Some((timestamp, image)))
    }

    fn notices(&self) -> Vec<String> {
        let mut notices = Vec::new();
        if self.skipped_files > 0 {
            notices.push(format!(
                "{} files in the folder are not PNG/JPEG images and were skipped",
                self.skipped_files
            ));
        }
        if let (Some((w, h)), true) = (self.size, self.resized > 0) {
            notices.push(format!(
                "{} images differ in size from the first and were fitted into {w}×{h}",
                self.resized
            ));
        }
        notices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_a_folder_in_name_order_at_the_given_rate() {
        let dir = tempfile::tempdir().unwrap();
        for (name, shade) in [("b.png", 200u8), ("a.png", 100)] {
            RgbImage::from_pixel(8, 6, Rgb([shade; 3]))
                .save(dir.path().join(name))
                .unwrap();
        }
        RgbImage::from_pixel(16, 6, Rgb([50; 3]))
            .save(dir.path().join("c.png"))
            .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let mut source = ImageSource::folder(dir.path(), 10.0).unwrap();
        let (t0, first) = source.next_frame().unwrap().unwrap();
        let (t1, second) = source.next_frame().unwrap().unwrap();
        let (_, third) = source.next_frame().unwrap().unwrap();
        assert!(source.next_frame().unwrap().is_none());
        assert_eq!(
            (first.get_pixel(0, 0)[0], second.get_pixel(0, 0)[0]),
            (100, 200)
        );
        assert_eq!((t0, t1), (Duration::ZERO, Duration::from_millis(100)));
        assert_eq!(third.dimensions(), (8, 6), "fitted into the first size");
        assert_eq!(source.notices().len(), 2, "{:?}", source.notices());
    }

    #[test]
    fn a_folder_without_images_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let err = ImageSource::folder(dir.path(), 30.0).err().unwrap();
        assert!(err
            .to_string()
            .contains("no PNG or JPEG images (1 other files)"));
    }
}
