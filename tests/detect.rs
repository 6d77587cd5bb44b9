//! The embedded SeetaFace detector finds the faces in the public-domain sample photos.

mod common;

use affectcam::detect::{DetectorConfig, FaceDetector};

#[test]
fn finds_one_face_in_each_sample_photo() {
    let Some(shared) = common::shared() else {
        return;
    };
    let mut detector = FaceDetector::new(DetectorConfig::default());
    // Face centres and sides in pixels, as seen in the photos.
    for (file, cx, cy, side) in [
        ("astronaut.png", 225.0, 116.0, 98.0),
        ("grace_hopper.jpg", 273.0, 220.0, 206.0),
    ] {
        let frame = image::open(shared.join("samples").join(file))
            .unwrap()
            .to_rgb8();
        let faces = detector.detect(&frame);
        let [found] = faces.as_slice() else {
            panic!("{file}: expected one face, got {faces:?}")
        };
        let b = found.face;
        let (fx, fy) = (b.x + b.width / 2.0, b.y + b.height / 2.0);
        assert!(
            (fx - cx).abs() < 0.2 * side && (fy - cy).abs() < 0.2 * side,
            "{file}: {b:?}"
        );
        assert!((b.width / side - 1.0).abs() < 0.3, "{file}: {b:?}");
    }
}

#[test]
fn blank_and_tiny_frames_have_no_faces() {
    let mut detector = FaceDetector::new(DetectorConfig::default());
    assert!(detector.detect(&image::RgbImage::new(640, 480)).is_empty());
    assert!(detector.detect(&image::RgbImage::new(8, 8)).is_empty());
}
