//! Cameras through nokhwa: a plain `Camera` read in the capture thread (nokhwa's threaded
//! camera holds a lock during its callback and spins on errors). We ask for MJPEG at the
//! configured size and rate, re-read what the driver actually negotiated, and check every
//! frame against it (MJPEG decoding, with the Huffman-table fix, is in `mjpeg.rs`).

use super::mjpeg::decode_mjpeg;
use super::{CaptureConfig, CaptureError, FrameSource};
use image::RgbImage;
use std::time::{Duration, Instant};

/// Consecutive failed reads after which the camera counts as gone.
const MAX_FAILED_READS: u32 = 10;

/// Pixel layouts a camera may deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Rgb,
    Gray,
    Other(String),
}

/// What the driver agreed to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub pixels: PixelFormat,
}

/// The raw device: a seam so everything above it is tested with a fake camera.
pub trait RawCamera {
    fn negotiated(&self) -> Negotiated;
    /// Blocks until the next frame's bytes arrive.
    fn grab(&mut self) -> Result<Vec<u8>, String>;
}

/// Frames from a camera, decoded and checked.
pub struct CameraSource<C: RawCamera> {
    camera: C,
    index: u32,
    format: Negotiated,
    started: Instant,
    bad_frames: u64,
    /// Decoded size differing from the negotiated one, reported once.
    size_mismatch: Option<(u32, u32)>,
}

impl<C: RawCamera> CameraSource<C> {
    pub fn new(camera: C, index: u32) -> Self {
        Self {
            format: camera.negotiated(),
            camera,
            index,
            started: Instant::now(),
            bad_frames: 0,
            size_mismatch: None,
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<RgbImage, String> {
        decode_frame(&self.format, bytes)
    }
}

/// Checks one raw frame against the negotiated format and decodes it.
pub fn decode_frame(format: &Negotiated, bytes: &[u8]) -> Result<RgbImage, String> {
    let Negotiated { width, height, .. } = *format;
    let pixels = (width as usize).saturating_mul(height as usize);
    let expect = |per_pixel: usize| {
        if bytes.len() == pixels.saturating_mul(per_pixel) {
            Ok(())
        } else {
            Err(format!(
                "frame of {} bytes, expected {} for {width}×{height}",
                bytes.len(),
                pixels.saturating_mul(per_pixel)
            ))
        }
    };
    match &format.pixels {
        PixelFormat::Mjpeg => decode_mjpeg(bytes),
        PixelFormat::Yuyv => {
            if width % 2 != 0 {
                return Err(format!("YUYV needs an even width, the camera says {width}"));
            }
            expect(2)?;
            Ok(yuyv_to_rgb(bytes, width, height))
        }
        PixelFormat::Rgb => {
            expect(3)?;
            Ok(RgbImage::from_raw(width, height, bytes.to_vec()).expect("length checked"))
        }
        PixelFormat::Gray => {
            expect(1)?;
            let gray =
                image::GrayImage::from_raw(width, height, bytes.to_vec()).expect("length checked");
            Ok(image::DynamicImage::ImageLuma8(gray).to_rgb8())
        }
        PixelFormat::Other(name) => Err(format!("unsupported pixel format {name}")),
    }
}

impl<C: RawCamera> FrameSource for CameraSource<C> {
    fn describe(&self) -> String {
        let f = &self.format;
        format!(
            "camera {}: {}×{} {:?} at {} fps",
            self.index, f.width, f.height, f.pixels, f.fps
        )
    }

    fn frame_count(&self) -> Option<u64> {
        None
    }

    fn next_frame(&mut self) -> Result<Option<(Duration, RgbImage)>, CaptureError> {
        if let PixelFormat::Other(name) = &self.format.pixels {
            return Err(CaptureError::Camera {
                index: self.index,
                reason: format!("delivers {name} pixels, which affectcam cannot decode"),
            });
        }
        let mut failures = 0;
        loop {
            let grabbed = self.camera.grab();
            let at = self.started.elapsed();
            let result = grabbed.and_then(|bytes| self.decode(&bytes));
            match result {
                Ok(image) => {
                    let (w, h) = image.dimensions();
                    if (w, h) != (self.format.width, self.format.height)
                        && self.size_mismatch.is_none()
                    {
                        log::warn!(
                            "camera {} negotiated {}×{} but sends {w}×{h} frames",
                            self.index,
                            self.format.width,
                            self.format.height
                        );
                        self.size_mismatch = Some((w, h));
                    }
                    return Ok(Some((at, image)));
                }
                Err(reason) => {
                    self.bad_frames += 1;
                    failures += 1;
                    if failures >= MAX_FAILED_READS {
                        return Err(CaptureError::CameraLost {
                            index: self.index,
                            reason,
                        });
                    }
                }
            }
        }
    }

    fn is_live(&self) -> bool {
        true
    }

    fn notices(&self) -> Vec<String> {
        if self.bad_frames == 0 {
            return Vec::new();
        }
        vec![format!(
            "{} camera frames were unreadable and skipped",
            self.bad_frames
        )]
    }
}

/// Opens camera `index` with nokhwa, asking for MJPEG at the configured size and rate.
pub fn open(
    index: u32,
    config: &CaptureConfig,
) -> Result<CameraSource<NokhwaCamera>, CaptureError> {
    use nokhwa::utils::{
        ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
        Resolution,
    };
    let found: Vec<String> = nokhwa::query(ApiBackend::Auto)
        .unwrap_or_default()
        .iter()
        .map(|info| format!("{} ({})", info.index(), info.human_name()))
        .collect();
    let wanted = CameraFormat::new(
        Resolution::new(config.width, config.height),
        FrameFormat::MJPEG,
        config.fps.round() as u32,
    );
    let requested = RequestedFormat::new::<nokhwa::pixel_format::RgbFormat>(
        RequestedFormatType::Closest(wanted),
    );
    let mut camera = match nokhwa::Camera::new(CameraIndex::Index(index), requested) {
        Ok(camera) => camera,
        Err(_) if found.is_empty() => return Err(CaptureError::NoCamera { index, found }),
        Err(e) => {
            return Err(CaptureError::Camera {
                index,
                reason: format!("cannot open it ({e}); cameras found: {}", found.join(", ")),
            })
        }
    };
    camera.open_stream().map_err(|e| CaptureError::Camera {
        index,
        reason: format!("cannot start streaming ({e})"),
    })?;
    let got = camera.camera_format();
    let source = CameraSource::new(NokhwaCamera(camera), index);
    let n = &source.format;
    if (n.width, n.height, n.fps) != (config.width, config.height, wanted.frame_rate())
        || got.format() != FrameFormat::MJPEG
    {
        log::warn!(
            "asked camera {index} for {}×{} MJPEG at {} fps, it gives {}×{} {:?} at {} fps",
            config.width,
            config.height,
            wanted.frame_rate(),
            n.width,
            n.height,
            n.pixels,
            n.fps
        );
    }
    Ok(source)
}

/// A nokhwa camera behind [`RawCamera`].
pub struct NokhwaCamera(nokhwa::Camera);

impl RawCamera for NokhwaCamera {
    fn negotiated(&self) -> Negotiated {
        use nokhwa::utils::FrameFormat;
        let format = self.0.camera_format();
        let pixels = match format.format() {
            FrameFormat::MJPEG => PixelFormat::Mjpeg,
            FrameFormat::YUYV => PixelFormat::Yuyv,
            FrameFormat::RAWRGB => PixelFormat::Rgb,
            FrameFormat::GRAY => PixelFormat::Gray,
            other => PixelFormat::Other(format!("{other:?}")),
        };
        Negotiated {
            width: format.width(),
            height: format.height(),
            fps: format.frame_rate(),
            pixels,
        }
    }

    fn grab(&mut self) -> Result<Vec<u8>, String> {
        self.0
            .frame()
            .map(|buffer| buffer.buffer().to_vec())
            .map_err(|e| e.to_string())
    }
}

/// YUYV 4:2:2 (Y0 U Y1 V per pixel pair) to RGB with the BT.601 video-range matrix.
fn yuyv_to_rgb(yuyv: &[u8], width: u32, height: u32) -> RgbImage {
    let mut rgb = Vec::with_capacity(yuyv.len() / 2 * 3);
    for quad in yuyv.chunks_exact(4) {
        let (u, v) = (f32::from(quad[1]) - 128.0, f32::from(quad[3]) - 128.0);
        for y in [quad[0], quad[2]] {
            let y = 1.164 * (f32::from(y) - 16.0);
            rgb.extend([
                (y + 1.596 * v).clamp(0.0, 255.0) as u8,
                (y - 0.392 * u - 0.813 * v).clamp(0.0, 255.0) as u8,
                (y + 2.017 * u).clamp(0.0, 255.0) as u8,
            ]);
        }
    }
    RgbImage::from_raw(width, height, rgb).expect("YUYV length checked by the caller")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::mjpeg::testing::{gradient, jpeg_of, strip_huffman_tables};

    /// A camera that plays back scripted reads.
    struct FakeCamera {
        format: Negotiated,
        reads: Vec<Result<Vec<u8>, String>>,
    }

    impl RawCamera for FakeCamera {
        fn negotiated(&self) -> Negotiated {
            self.format.clone()
        }
        fn grab(&mut self) -> Result<Vec<u8>, String> {
            if self.reads.is_empty() {
                return Err("No such device (os error 19)".into());
            }
            self.reads.remove(0)
        }
    }

    #[test]
    fn camera_frames_are_checked_and_a_lost_camera_is_an_error() {
        let img = gradient(8, 4);
        let yuyv: Vec<u8> = (0..8 * 4 / 2)
            .flat_map(|_| [128u8, 128, 128, 128])
            .collect();
        let mut reads: Vec<Result<Vec<u8>, String>> =
            vec![Ok(vec![0; 7]), Ok(yuyv), Err("timeout".into())];
        reads.push(Ok(yuyv_bytes_of(&img)));
        let mut source = CameraSource::new(
            FakeCamera {
                format: Negotiated {
                    width: 8,
                    height: 4,
                    fps: 30,
                    pixels: PixelFormat::Yuyv,
                },
                reads,
            },
            0,
        );
        // The short frame is skipped and counted; the grey one comes through.
        let (_, grey) = source.next_frame().unwrap().unwrap();
        assert_eq!(grey.dimensions(), (8, 4));
        assert!(grey
            .pixels()
            .all(|p| p.0.iter().all(|&c| c.abs_diff(130) <= 2)));
        assert!(source.next_frame().unwrap().is_some());
        assert_eq!(source.notices().len(), 1);
        match source.next_frame() {
            Err(CaptureError::CameraLost { index: 0, reason }) => {
                assert!(reason.contains("No such device"))
            }
            other => panic!("expected CameraLost, got {other:?}"),
        }
    }

    fn yuyv_bytes_of(img: &RgbImage) -> Vec<u8> {
        vec![100; (img.width() * img.height() * 2) as usize]
    }

    #[test]
    fn mjpeg_camera_frames_decode() {
        let img = gradient(16, 8);
        let mut source = CameraSource::new(
            FakeCamera {
                format: Negotiated {
                    width: 16,
                    height: 8,
                    fps: 30,
                    pixels: PixelFormat::Mjpeg,
                },
                reads: vec![Ok(strip_huffman_tables(&jpeg_of(&img)))],
            },
            1,
        );
        let (_, frame) = source.next_frame().unwrap().unwrap();
        assert_eq!(frame.dimensions(), (16, 8));
        assert!(source.describe().starts_with("camera 1: 16×8 Mjpeg"));
    }
}
