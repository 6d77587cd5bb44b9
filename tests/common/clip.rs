//! Synthetic test clips: real face photos pasted onto a 640×480 background at known, slowly
//! moving positions, encoded to H.264 MP4 by affectcam's own recorder.

use affectcam::geometry::FaceBox;
use affectcam::record::{Mp4Recorder, RecorderConfig};
use image::{imageops, Rgb, RgbImage};
use std::path::Path;
use std::time::Duration;

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 480;
pub const FPS: f64 = 30.0;

/// A face to paste: a square region of a photo centred on the face, the face's side in that
/// region, where it starts in the clip, how large it is drawn, and how it moves per frame.
pub struct FaceSprite {
    pub region: RgbImage,
    /// Face side as a fraction of the region side.
    pub face_fraction: f32,
    pub x: f32,
    pub y: f32,
    /// Side of the pasted region in clip pixels.
    pub side: u32,
    pub dx: f32,
    pub dy: f32,
}

impl FaceSprite {
    /// A square region of `photo` around a face at (`cx`, `cy`) of side `face_side`, taking
    /// `context` times the face side.
    pub fn from_photo(photo: &RgbImage, cx: f32, cy: f32, face_side: f32, context: f32) -> Self {
        let side = (face_side * context).round() as u32;
        let x0 = (cx - side as f32 / 2.0).max(0.0) as u32;
        let y0 = (cy - side as f32 / 2.0).max(0.0) as u32;
        let region = imageops::crop_imm(photo, x0, y0, side, side).to_image();
        Self {
            region,
            face_fraction: 1.0 / context,
            x: 0.0,
            y: 0.0,
            side,
            dx: 0.0,
            dy: 0.0,
        }
    }

    /// The pasted square and the face box inside it, at frame `i`.
    fn placement(&self, i: usize) -> (i64, i64, FaceBox) {
        let (x, y) = (self.x + self.dx * i as f32, self.y + self.dy * i as f32);
        let face = self.side as f32 * self.face_fraction;
        let inset = (self.side as f32 - face) / 2.0;
        let b = FaceBox {
            x: x.round() + inset,
            y: y.round() + inset,
            width: face,
            height: face,
        };
        (x.round() as i64, y.round() as i64, b)
    }
}

/// Frames of the clip and the known face boxes in each.
pub struct Clip {
    pub frames: Vec<RgbImage>,
    pub boxes: Vec<Vec<FaceBox>>,
}

/// A textured background: smooth colour ramps plus a grid of soft blocks, nothing face-like.
fn background() -> RgbImage {
    RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let block = ((x / 40 + y / 40) % 2) as u8 * 18;
        Rgb([
            (60 + x * 80 / WIDTH) as u8 + block,
            (90 + y * 60 / HEIGHT) as u8,
            (120 - x * 40 / WIDTH) as u8 + block,
        ])
    })
}

pub fn render(sprites: &[FaceSprite], frames: usize) -> Clip {
    let bg = background();
    let scaled: Vec<RgbImage> = sprites
        .iter()
        .map(|s| imageops::resize(&s.region, s.side, s.side, imageops::FilterType::CatmullRom))
        .collect();
    let mut clip = Clip {
        frames: Vec::new(),
        boxes: Vec::new(),
    };
    for i in 0..frames {
        let mut frame = bg.clone();
        let mut boxes = Vec::new();
        for (sprite, img) in sprites.iter().zip(&scaled) {
            let (x, y, b) = sprite.placement(i);
            imageops::replace(&mut frame, img, x, y);
            boxes.push(b);
        }
        clip.frames.push(frame);
        clip.boxes.push(boxes);
    }
    clip
}

/// The standard 3-face clip: Grace Hopper and the astronaut from `shared/samples`, and one
/// DiffusionFER face, each drifting 60 px over the clip in its own part of the frame.
pub fn three_faces(shared: &Path, frames: usize) -> Clip {
    render(&sprites(shared, frames), frames)
}

/// The same clip with Grace Hopper alone.
pub fn one_face(shared: &Path, frames: usize) -> Clip {
    let mut sprites = sprites(shared, frames);
    sprites.truncate(1);
    render(&sprites, frames)
}

/// Grace Hopper and the astronaut, the same size on one row, moving towards each other at
/// 5 px per frame so that they cross (the astronaut in front) halfway through the clip.
pub fn crossing(shared: &Path, frames: usize) -> Clip {
    let mut sprites = sprites(shared, frames);
    sprites.truncate(2);
    let travel = 450.0;
    for (sprite, (x, dx)) in sprites.iter_mut().zip([(20.0, 1.0), (20.0 + travel, -1.0)]) {
        (sprite.x, sprite.y, sprite.side) = (x, 150.0, 150);
        (sprite.dx, sprite.dy) = (dx * travel / frames as f32, 0.0);
    }
    render(&sprites, frames)
}

fn sprites(shared: &Path, frames: usize) -> Vec<FaceSprite> {
    let open = |p: &Path| {
        image::open(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .to_rgb8()
    };
    let samples = shared.join("samples");
    // Face centres and sides as seen in the photos (tests/detect.rs).
    let mut hopper = FaceSprite::from_photo(
        &open(&samples.join("grace_hopper.jpg")),
        273.0,
        220.0,
        206.0,
        1.5,
    );
    let step = 60.0 / frames as f32;
    (hopper.x, hopper.y, hopper.side, hopper.dy) = (20.0, 40.0, 180, step);
    let mut astronaut = FaceSprite::from_photo(
        &open(&samples.join("astronaut.png")),
        225.0,
        116.0,
        98.0,
        1.5,
    );
    (astronaut.x, astronaut.y, astronaut.side, astronaut.dx) = (250.0, 290.0, 150, step);
    // DiffusionFER crops are the face itself, edge to edge.
    let diffusion =
        open(&shared.join("data/diffusionfer/DiffusionEmotion_S_cropped/happy/aajwceye_1.png"));
    let mut generated = FaceSprite::from_photo(&diffusion, 112.0, 112.0, 224.0, 1.0);
    (generated.x, generated.y, generated.side, generated.dy) = (460.0, 40.0, 140, step);
    vec![hopper, astronaut, generated]
}

/// Encodes `clip` at 30 fps with the project's recorder.
pub fn write_mp4(clip: &Clip, path: &Path) {
    let mut recorder = Mp4Recorder::create(path, RecorderConfig::default()).unwrap();
    for (i, frame) in clip.frames.iter().enumerate() {
        recorder
            .write(frame, Duration::from_secs_f64(i as f64 / FPS))
            .unwrap();
    }
    recorder.finish().unwrap();
}
