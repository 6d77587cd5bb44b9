//! Cameras through nokhwa: a plain `Camera` read in the capture thread (nokhwa's threaded
//! camera holds a lock during its callback and spins on errors). We ask for MJPEG at the
//! configured size and rate, re-read what the driver actually negotiated, and check every
//! frame against it. MJPEG frames from cameras that omit their Huffman tables get the standard
//! tables inserted before decoding.

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

/// Decodes one MJPEG frame, supplying the standard Huffman tables when the camera left them out.
pub fn decode_mjpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    let with_tables;
    let jpeg = if has_huffman_tables(bytes) {
        bytes
    } else {
        with_tables = insert_standard_huffman_tables(bytes)?;
        &with_tables
    };
    crate::picture::decode(jpeg).map_err(|e| format!("bad MJPEG frame ({e})"))
}

/// Walks the JPEG marker segments up to the scan; true if any is a DHT (0xFFC4).
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    segments(jpeg).any(|(marker, _)| marker == 0xc4)
}

/// `(marker, offset of the 0xFF)` of each segment before the start of scan (0xFFDA).
fn segments(jpeg: &[u8]) -> impl Iterator<Item = (u8, usize)> + '_ {
    let mut pos = 2; // after SOI
    std::iter::from_fn(move || {
        if pos + 4 > jpeg.len() || jpeg[pos] != 0xff {
            return None;
        }
        let (marker, at) = (jpeg[pos + 1], pos);
        if marker == 0xda {
            pos = jpeg.len();
        } else {
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            pos += 2 + len;
        }
        Some((marker, at))
    })
}

/// Inserts a DHT segment with the tables of JPEG Annex K.3 right before the start of scan.
fn insert_standard_huffman_tables(jpeg: &[u8]) -> Result<Vec<u8>, String> {
    if !jpeg.starts_with(&[0xff, 0xd8]) {
        return Err("MJPEG frame does not start with a JPEG marker".into());
    }
    let Some((_, sos)) = segments(jpeg).find(|&(marker, _)| marker == 0xda) else {
        return Err("MJPEG frame has no image data (no start of scan)".into());
    };
    let mut out = Vec::with_capacity(jpeg.len() + 432);
    out.extend_from_slice(&jpeg[..sos]);
    out.extend_from_slice(&standard_dht_segment());
    out.extend_from_slice(&jpeg[sos..]);
    Ok(out)
}

fn standard_dht_segment() -> Vec<u8> {
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMA_BITS, &DC_VALUES),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALUES),
        (0x01, &DC_CHROMA_BITS, &DC_VALUES),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALUES),
    ];
    let body: Vec<u8> = tables
        .iter()
        .flat_map(|(class_id, bits, values)| {
            std::iter::once(*class_id)
                .chain(bits.iter().copied())
                .chain(values.iter().copied())
        })
        .collect();
    let len = (body.len() + 2) as u16;
    let mut segment = vec![0xff, 0xc4];
    segment.extend_from_slice(&len.to_be_bytes());
    segment.extend(body);
    segment
}

const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
#[rustfmt::skip]
const AC_LUMA_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const AC_CHROMA_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

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
    use image::Rgb;

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

    fn jpeg_of(img: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(img)
            .unwrap();
        bytes
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 8) as u8, (y * 8) as u8, 128]))
    }

    fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let dht: Vec<(usize, usize)> = segments(jpeg)
            .filter(|&(m, _)| m == 0xc4)
            .map(|(_, at)| {
                let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
                (at, at + 2 + len)
            })
            .collect();
        assert!(!dht.is_empty(), "the encoder wrote Huffman tables");
        let mut out = Vec::new();
        let mut from = 0;
        for (start, end) in dht {
            out.extend_from_slice(&jpeg[from..start]);
            from = end;
        }
        out.extend_from_slice(&jpeg[from..]);
        out
    }

    #[test]
    fn standard_tables_have_the_counts_their_bit_lengths_promise() {
        let count = |bits: &[u8; 16]| bits.iter().map(|&b| usize::from(b)).sum::<usize>();
        assert_eq!(count(&DC_LUMA_BITS), DC_VALUES.len());
        assert_eq!(count(&DC_CHROMA_BITS), DC_VALUES.len());
        assert_eq!(count(&AC_LUMA_BITS), AC_LUMA_VALUES.len());
        assert_eq!(count(&AC_CHROMA_BITS), AC_CHROMA_VALUES.len());
    }

    #[test]
    fn mjpeg_without_huffman_tables_decodes_like_the_original() {
        let img = gradient(32, 16);
        let jpeg = jpeg_of(&img);
        let stripped = strip_huffman_tables(&jpeg);
        assert!(!has_huffman_tables(&stripped));
        let original = decode_mjpeg(&jpeg).unwrap();
        let fixed = decode_mjpeg(&stripped).unwrap();
        assert_eq!(original, fixed);
        assert!(decode_mjpeg(b"not a jpeg").is_err());
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
