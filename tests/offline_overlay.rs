//! What an annotated file shows: the live-only parts of the overlay stay out of it.

mod common;

use affectcam::capture::video::Mp4Source;
use affectcam::capture::FrameSource;
use common::clip;

/// Pixels of the REC indicator's red (230, 30, 30), allowing for H.264 colour error.
fn red_pixels(frame: &image::RgbImage, width: u32, height: u32) -> usize {
    (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let [r, g, b] = frame.get_pixel(x, y).0;
            r > 170 && g < 90 && b < 90
        })
        .count()
}

#[test]
fn annotate_draws_no_rec_indicator() {
    let Some(shared) = common::shared() else {
        return;
    };
    let clip = clip::one_face(&shared, 10);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.mp4"), dir.path().join("out.mp4"));
    clip::write_mp4(&clip, &input);
    let (ok, _, stderr) =
        common::run_affectcam(&[&"annotate", &"--input", &input, &"--output", &output]);
    assert!(ok, "{stderr}");
    let mut source = Mp4Source::open(&output).unwrap();
    let (_, frame) = source.next_frame().unwrap().unwrap();
    // The readout sits in the top-left corner; REC would follow its text.
    let (_, input_frame) = Mp4Source::open(&input)
        .unwrap()
        .next_frame()
        .unwrap()
        .unwrap();
    let before = red_pixels(&input_frame, 400, 40);
    let after = red_pixels(&frame, 400, 40);
    assert!(
        after <= before + 5,
        "{after} red pixels in the readout (input {before})"
    );
}
