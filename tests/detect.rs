//! The embedded face detectors: YuNet against the C++ original's outputs on the public-domain
//! sample photos (`../shared/weights/facedetect/reference_detections.json`) and against
//! `yunet_ref.py` on frames of the shared clips (`tests/data/yunet_clip_frames.json`, how it was
//! made is inside); SeetaFace against the sample photos' faces as seen.

mod common;

use affectcam::capture::video::Mp4Source;
use affectcam::capture::FrameSource;
use affectcam::detect::{Detection, DetectorConfig, DetectorKind, FaceDetector};
use affectcam::pipeline::default_detect_width;
use std::path::Path;

/// Largest differences between detections and expected `[score, x0, y0, x1, y1, lx0, ly0, …]`
/// rows: (score, box corner, landmark coordinate).
fn max_errors(found: &[Detection], expected: &[Vec<f64>], what: &str) -> (f64, f64, f64) {
    assert_eq!(found.len(), expected.len(), "{what}: {found:?}");
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for (d, want) in found.iter().zip(expected) {
        let b = d.face;
        let corners = [b.x, b.y, b.x + b.width, b.y + b.height];
        let marks = d.landmarks.expect("YuNet gives landmarks").flat();
        worst.0 = worst.0.max((d.score - want[0]).abs());
        for (got, want) in corners.iter().zip(&want[1..5]) {
            worst.1 = worst.1.max((f64::from(*got) - want).abs());
        }
        for (got, want) in marks.iter().zip(&want[5..15]) {
            worst.2 = worst.2.max((f64::from(*got) - want).abs());
        }
    }
    worst
}

fn rows(value: &serde_json::Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Full-resolution YuNet, as the reference ran.
fn yunet_full_size() -> FaceDetector {
    FaceDetector::new(DetectorConfig {
        max_width: u32::MAX,
        ..DetectorConfig::for_photos(DetectorKind::Yunet)
    })
    .unwrap()
}

#[test]
fn yunet_matches_the_reference_detections_on_the_sample_photos() {
    let Some(shared) = common::shared() else {
        return;
    };
    let reference = common::read_json(&shared.join("weights/facedetect/reference_detections.json"));
    let mut detector = yunet_full_size();
    for (name, image) in reference["images"].as_object().unwrap() {
        let frame = image::open(shared.join("samples").join(name))
            .unwrap()
            .to_rgb8();
        let found = detector.detect(&frame).unwrap();
        let (score, corner, landmark) = max_errors(&found, &rows(&image["faces_float"]), name);
        eprintln!(
            "{name}: max error score {score:.2e}, box {corner:.2e} px, landmarks {landmark:.2e} px"
        );
        assert!(
            score < 1e-3 && corner < 1.0 && landmark < 1.0,
            "{name}: {found:?}"
        );
    }
}

#[test]
fn yunet_agrees_with_the_numpy_reference_on_frames_of_the_shared_clips() {
    let Some(shared) = common::shared() else {
        return;
    };
    let expected = common::read_json(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/yunet_clip_frames.json"
    )));
    let frames = expected["frames"].as_array().unwrap();
    let mut detector = yunet_full_size();
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for clip in ["crying_to_laughing.mp4", "hamilton_audience.mp4"] {
        let mut source = Mp4Source::open(&shared.join("clips").join(clip)).unwrap();
        let mut index = 0;
        while let Some((_, image)) = source.next_frame().unwrap() {
            let want = frames
                .iter()
                .find(|f| f["clip"] == clip && f["frame"] == index);
            if let Some(want) = want {
                let found = detector.detect(&image).unwrap();
                let what = format!("{clip} frame {index}");
                let e = max_errors(&found, &rows(&want["faces"]), &what);
                worst = (worst.0.max(e.0), worst.1.max(e.1), worst.2.max(e.2));
            }
            index += 1;
        }
    }
    eprintln!(
        "{} clip frames: max error score {:.2e}, box {:.2e} px, landmarks {:.2e} px",
        frames.len(),
        worst.0,
        worst.1,
        worst.2
    );
    assert!(worst.0 < 1e-3 && worst.1 < 1.0 && worst.2 < 1.0);
}

#[test]
fn on_an_audience_yunet_finds_over_three_times_the_faces_seeta_finds() {
    let Some(shared) = common::shared() else {
        return;
    };
    // Every 10th frame of the clip, each detector at the pipeline's default width for it.
    let mut source = Mp4Source::open(&shared.join("clips/hamilton_audience.mp4")).unwrap();
    let frames: Vec<image::RgbImage> = std::iter::from_fn(|| source.next_frame().unwrap())
        .step_by(10)
        .map(|(_, image)| image)
        .collect();
    let count = |kind: DetectorKind| -> usize {
        let mut detector = FaceDetector::new(DetectorConfig {
            max_width: default_detect_width(kind),
            ..DetectorConfig::for_photos(kind)
        })
        .unwrap();
        frames
            .iter()
            .map(|f| detector.detect(f).unwrap().len())
            .sum()
    };
    let (yunet, seeta) = (count(DetectorKind::Yunet), count(DetectorKind::Seeta));
    eprintln!(
        "{} frames: yunet {yunet} faces, seeta {seeta}",
        frames.len()
    );
    assert!(yunet >= 3 * seeta.max(1), "yunet {yunet}, seeta {seeta}");
}

#[test]
fn seeta_finds_one_face_in_each_sample_photo() {
    let Some(shared) = common::shared() else {
        return;
    };
    let mut detector = FaceDetector::new(DetectorConfig::for_photos(DetectorKind::Seeta)).unwrap();
    // Face centres and sides in pixels, as seen in the photos.
    for (file, cx, cy, side) in [
        ("astronaut.png", 225.0, 116.0, 98.0),
        ("grace_hopper.jpg", 273.0, 220.0, 206.0),
    ] {
        let frame = image::open(shared.join("samples").join(file))
            .unwrap()
            .to_rgb8();
        let faces = detector.detect(&frame).unwrap();
        let [found] = faces.as_slice() else {
            panic!("{file}: expected one face, got {faces:?}")
        };
        let b = found.face;
        let (fx, fy) = b.center();
        assert!(
            (fx - cx).abs() < 0.2 * side && (fy - cy).abs() < 0.2 * side,
            "{file}: {b:?}"
        );
        assert!((b.width / side - 1.0).abs() < 0.3, "{file}: {b:?}");
        assert!(found.landmarks.is_none());
    }
}

#[test]
fn blank_and_tiny_frames_have_no_faces() {
    let mut kinds = vec![DetectorKind::Seeta];
    // A build without ../shared has no YuNet weights.
    if common::shared().is_some() {
        kinds.push(DetectorKind::Yunet);
    }
    for kind in kinds {
        let mut detector = FaceDetector::new(DetectorConfig::for_photos(kind)).unwrap();
        for (w, h) in [(640, 480), (8, 8), (1, 1), (0, 0)] {
            let found = detector.detect(&image::RgbImage::new(w, h)).unwrap();
            assert!(found.is_empty(), "{kind:?} {w}×{h}: {found:?}");
        }
    }
}

#[test]
fn a_downscaled_detection_is_mapped_back_to_frame_pixels() {
    let Some(shared) = common::shared() else {
        return;
    };
    let frame = image::open(shared.join("samples/astronaut.png"))
        .unwrap()
        .to_rgb8();
    let full = yunet_full_size().detect(&frame).unwrap();
    let mut half = FaceDetector::new(DetectorConfig {
        max_width: 256,
        ..DetectorConfig::for_photos(DetectorKind::Yunet)
    })
    .unwrap();
    let small = half.detect(&frame).unwrap();
    let (a, b) = (full[0], small[0]);
    assert!(a.face.iou(&b.face) > 0.8, "{a:?} vs {b:?}");
    // Half the pixels: within a tenth of the face (a few pixels of the half-size image).
    let near = 0.1 * a.face.width;
    for (pa, pb) in a
        .landmarks
        .unwrap()
        .points()
        .iter()
        .zip(b.landmarks.unwrap().points())
    {
        assert!(
            (pa.x - pb.x).abs() < near && (pa.y - pb.y).abs() < near,
            "{a:?} vs {b:?}"
        );
    }
}
