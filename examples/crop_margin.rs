//! Measures how training faces are framed, to choose the live crop margin on evidence: runs the
//! live pipeline's face detector on dataset images and reports how far the image extends beyond
//! the detected box. A live crop with that margin frames faces the way the model saw them.
//!
//!     cargo run --release --example crop_margin -- ../shared/data/ferplus/FER2013Test [N] [yunet|seeta]
//!
//! The shipped model's margin (0.05) was measured with seeta, the live detector at the time.
//! With YuNet it also reports where the eye and mouth midpoints sit (fractions of the image
//! side, the eye line levelled), the layout `CropMode::ALIGNED` reproduces.

use affectcam::detect::{DetectorConfig, DetectorKind, FaceDetector};
use clap::ValueEnum;
use image::imageops;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("usage: crop_margin IMAGE_DIR [N] [yunet|seeta]"))?;
    let limit: usize = args.get(2).map_or(Ok(500), |n| n.parse())?;
    let kind = match args.get(3) {
        Some(name) => DetectorKind::from_str(name, true).map_err(|e| anyhow::anyhow!(e))?,
        None => DetectorKind::Yunet,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    paths.sort();
    // Small dataset images are upscaled so faces clear seeta's 20-pixel minimum.
    let mut detector = FaceDetector::new(DetectorConfig {
        max_width: 10_000,
        ..DetectorConfig::for_photos(kind)
    })?;
    let (mut margins, mut offsets, mut tried) = (Vec::new(), Vec::new(), 0usize);
    let (mut eye_ys, mut mouth_ys, mut eye_xs) = (Vec::new(), Vec::new(), Vec::new());
    for path in paths.iter().take(limit) {
        tried += 1;
        let img = image::open(path)?.to_rgb8();
        let side = img.width().max(img.height());
        let img = if side < 144 {
            let f = 144 / side;
            imageops::resize(
                &img,
                img.width() * f,
                img.height() * f,
                imageops::FilterType::Triangle,
            )
        } else {
            img
        };
        let faces = detector.detect(&img)?;
        let [face] = faces.as_slice() else { continue };
        let b = face.face;
        let box_side = b.width.max(b.height);
        let frame_side = img.width().min(img.height()) as f32;
        margins.push((frame_side / box_side - 1.0) / 2.0);
        let cy = (b.y + b.height / 2.0) / img.height() as f32 - 0.5;
        offsets.push(cy);
        if let Some(l) = face.landmarks {
            let side = img.width().min(img.height()) as f32;
            let eye = (
                (l.left_eye.x + l.right_eye.x) / 2.0,
                (l.left_eye.y + l.right_eye.y) / 2.0,
            );
            let mouth = (l.left_mouth.y + l.right_mouth.y) / 2.0;
            let angle = (l.right_eye.y - l.left_eye.y).atan2(l.right_eye.x - l.left_eye.x);
            let mouth_x = (l.left_mouth.x + l.right_mouth.x) / 2.0;
            // The eye-to-mouth drop along the levelled face's vertical axis.
            let drop = (mouth_x - eye.0) * -angle.sin() + (mouth - eye.1) * angle.cos();
            eye_ys.push(eye.1 / side);
            mouth_ys.push((eye.1 + drop) / side);
            eye_xs.push(eye.0 / side);
        }
    }
    let median = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f32::NAN)
    };
    let n = margins.len();
    let (q1, q3) = {
        margins.sort_by(f32::total_cmp);
        (
            margins.get(n / 4).copied().unwrap_or(f32::NAN),
            margins.get(3 * n / 4).copied().unwrap_or(f32::NAN),
        )
    };
    println!(
        "{dir}: one face found in {n}/{tried} images; margin median {:.3} (IQR {q1:.3}–{q3:.3}); face centre {:+.3} of the height below the image centre",
        median(&mut margins),
        median(&mut offsets)
    );
    if !eye_ys.is_empty() {
        println!(
            "landmarks in {} images: eye midpoint at x {:.3}, y {:.3}; mouth midpoint at y {:.3} (medians, fractions of the side)",
            eye_ys.len(),
            median(&mut eye_xs),
            median(&mut eye_ys),
            median(&mut mouth_ys)
        );
    }
    Ok(())
}
