//! Evidence for the default detector and detection width: runs each detector at several
//! detection widths on every frame of a clip and reports the faces found per frame against
//! the time per frame, and how many of them the full-width YuNet also finds (IoU ≥ 0.4; the
//! clips have no ground truth, so this tells new finds from lost ones, not right from wrong).
//!
//!     cargo run --release --example detect_widths -- ../shared/clips/hamilton_audience.mp4

use affectcam::capture::video::Mp4Source;
use affectcam::capture::FrameSource;
use affectcam::detect::{DetectorConfig, DetectorKind, FaceDetector};
use anyhow::Context;
use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let clip = std::env::args()
        .nth(1)
        .context("usage: detect_widths CLIP.mp4")?;
    let mut source = Mp4Source::open(Path::new(&clip))?;
    let frames: Vec<image::RgbImage> =
        std::iter::from_fn(|| source.next_frame().transpose().map(|r| r.map(|(_, f)| f)))
            .collect::<Result<_, _>>()?;
    println!("{clip}: {} frames", frames.len());
    println!(
        "detector  width  faces/frame (mean, max)  total  also at full width  ms/frame (median)"
    );
    let mut full_width: Option<Vec<Vec<affectcam::geometry::FaceBox>>> = None;
    for (kind, widths) in [
        (DetectorKind::Yunet, [640, 480, 320, 240]),
        (DetectorKind::Seeta, [640, 480, 320, 240]),
    ] {
        for width in widths {
            let mut detector = FaceDetector::new(DetectorConfig {
                max_width: width,
                ..DetectorConfig::for_photos(kind)
            })?;
            let (mut boxes, mut ms) = (Vec::new(), Vec::new());
            for frame in &frames {
                let t = Instant::now();
                let found = detector.detect(frame)?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                boxes.push(found.iter().map(|d| d.face).collect::<Vec<_>>());
            }
            ms.sort_by(f64::total_cmp);
            let reference = full_width.get_or_insert_with(|| boxes.clone());
            let confirmed: usize = boxes
                .iter()
                .zip(reference.iter())
                .map(|(found, full)| {
                    let seen =
                        |b: &&affectcam::geometry::FaceBox| full.iter().any(|f| f.iou(b) >= 0.4);
                    found.iter().filter(seen).count()
                })
                .sum();
            let total: usize = boxes.iter().map(Vec::len).sum();
            println!(
                "{:8}  {width:5}  {:6.2} {:3}             {total:6}  {confirmed:6}              {:8.1}",
                format!("{kind:?}").to_lowercase(),
                total as f64 / frames.len() as f64,
                boxes.iter().map(Vec::len).max().unwrap_or(0),
                ms[ms.len() / 2],
            );
        }
    }
    Ok(())
}
