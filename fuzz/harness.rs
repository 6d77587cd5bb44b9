//! What each fuzz target does with one input. The targets in `fuzz_targets/` call these, and
//! `tests/fuzz_regressions.rs` runs them on every committed crasher in `fuzz/regressions/`,
//! so a fixed crash stays fixed in CI. A harness may return errors freely; it must not panic,
//! hang or allocate without bound.

use affectcam::capture::camera::{decode_frame, Negotiated, PixelFormat};
use affectcam::capture::mjpeg::decode_mjpeg;
use affectcam::capture::video::Mp4Source;
use affectcam::capture::FrameSource;
use affectcam::data::{self, Format, LabelMode, LoadOptions};
use affectcam::geometry::FaceBox;
use affectcam::model::preprocess::Preprocess;
use affectcam::model::AffectModel;
use std::io::Cursor;
use std::path::Path;

/// Frames decoded at most per input: enough to reach the decoder's reordering and flushing.
const MAX_FRAMES: usize = 8;

/// The MP4 demuxer and the H.264 decode path.
pub fn mp4(data: &[u8]) {
    let reader = Box::new(Cursor::new(data.to_vec()));
    let Ok(mut source) = Mp4Source::from_reader(Path::new("fuzz.mp4"), reader, data.len() as u64)
    else {
        return;
    };
    for _ in 0..MAX_FRAMES {
        if !matches!(source.next_frame(), Ok(Some(_))) {
            break;
        }
    }
}

/// The weights loader: safetensors, its metadata, and the model's tensor checks.
pub fn weights(data: &[u8]) {
    let _ = AffectModel::load_bytes(
        Path::new("fuzz.safetensors"),
        data,
        &candle_core::Device::Cpu,
    );
}

/// The FER+, AffectNet-style and generic CSV readers (the first byte picks one), strict and
/// with `--skip-bad`. Rows may name `a.png`, which exists.
pub fn dataset_csv(data: &[u8]) {
    let Some((&which, sheet)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary folder");
    let image = tiny_png();
    let (path, format) = match which % 3 {
        0 => {
            for split in ["FER2013Train", "FER2013Valid", "FER2013Test"] {
                let folder = dir.path().join(split);
                std::fs::create_dir(&folder).expect("split folder");
                std::fs::write(folder.join("label.csv"), sheet).expect("label.csv");
                std::fs::write(folder.join("a.png"), &image).expect("a.png");
            }
            (dir.path().to_path_buf(), Format::Ferplus)
        }
        kind => {
            let path = dir.path().join("sheet.csv");
            std::fs::write(&path, sheet).expect("sheet");
            std::fs::write(dir.path().join("a.png"), &image).expect("a.png");
            let format = if kind == 1 {
                Format::Affectnet
            } else {
                Format::Csv
            };
            (path, format)
        }
    };
    for skip_bad in [false, true] {
        let opts = LoadOptions {
            format: Some(format),
            label_mode: LabelMode::Probability,
            skip_bad,
            split_seed: 0,
            detect: false,
        };
        let _ = data::load(&path, &opts);
    }
}

/// Decoding a dataset image file and making the model's input from it, with a face box
/// taken from the input's first bytes.
pub fn image_file(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (corner, file) = data.split_at(4);
    let Ok(image) = affectcam::picture::decode(file) else {
        return;
    };
    let pre = Preprocess::default();
    let face = FaceBox {
        x: f32::from(corner[0]) - 64.0,
        y: f32::from(corner[1]) - 64.0,
        width: f32::from(corner[2]) + 1.0,
        height: f32::from(corner[3]) + 1.0,
    };
    let pixels = pre.face_pixels(&pre.crop(&image, face, None));
    let _ = pre.batch_of([(&pixels[..], false)], &candle_core::Device::Cpu);
}

/// The camera frame checks: the first byte picks the pixel format, the next four the
/// negotiated size, the rest is the frame.
pub fn camera_frame(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let (head, frame) = data.split_at(5);
    let pixels = match head[0] % 5 {
        0 => PixelFormat::Mjpeg,
        1 => PixelFormat::Yuyv,
        2 => PixelFormat::Rgb,
        3 => PixelFormat::Gray,
        _ => PixelFormat::Other("fuzz".into()),
    };
    let format = Negotiated {
        width: u32::from(u16::from_le_bytes([head[1], head[2]])),
        height: u32::from(u16::from_le_bytes([head[3], head[4]])),
        fps: 30,
        pixels,
    };
    let _ = decode_frame(&format, frame);
    let _ = decode_mjpeg(frame);
}

/// A valid 1×1 PNG.
fn tiny_png() -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::new(1, 1)
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("PNG in memory");
    bytes
}
