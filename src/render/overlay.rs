//! Draws the annotations onto a frame: per face a box, a tag with id, emotion and confidence,
//! a valence–arousal disc and, when asked, the landmarks; in a corner the fps and latency
//! readout.

use crate::model::labels::EMOTIONS;
use crate::smooth::FaceResult;
use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{
    draw_filled_circle_mut, draw_filled_rect_mut, draw_hollow_circle_mut, draw_hollow_rect_mut,
    draw_line_segment_mut, draw_text_mut, text_size,
};
use imageproc::rect::Rect;

/// One colour per emotion, in AffectNet order.
const EMOTION_COLORS: [Rgb<u8>; 8] = [
    Rgb([200, 200, 200]), // neutral
    Rgb([255, 200, 0]),   // happy
    Rgb([70, 130, 255]),  // sad
    Rgb([255, 120, 220]), // surprise
    Rgb([170, 90, 255]),  // fear
    Rgb([60, 200, 90]),   // disgust
    Rgb([255, 60, 40]),   // anger
    Rgb([255, 140, 40]),  // contempt
];
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const GREY: Rgb<u8> = Rgb([120, 120, 120]);
const RED: Rgb<u8> = Rgb([230, 30, 30]);
/// Landmark dots: a colour no emotion uses, visible on skin.
const LANDMARK: Rgb<u8> = Rgb([0, 255, 255]);

/// The corner readout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readout {
    pub fps: f64,
    /// Capture-to-display latency of recent frames, in milliseconds.
    pub latency_ms: f64,
    pub recording: bool,
}

pub struct Overlay {
    font: FontRef<'static>,
    /// Whether faces' landmarks are drawn (toggled by `l` in the window).
    pub show_landmarks: bool,
}

/// Where one face's annotations go: the box as detected (it may leave the frame), its tag,
/// and the valence–arousal widget (disc and text), the last two always inside the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FaceLayout {
    face_box: Rect,
    thickness: i32,
    pad: i32,
    tag: Rect,
    radius: i32,
    widget: Rect,
}

impl FaceLayout {
    /// `tag_text`: the tag's text size; `lines_w`: the widest valence/arousal line.
    fn new(
        (fw, fh): (u32, u32),
        face: &FaceResult,
        unit: f32,
        tag_text: (u32, u32),
        lines_w: i32,
    ) -> Self {
        let (fw, fh) = (fw as i32, fh as i32);
        let b = face.face;
        let (x, y) = (b.x.round() as i32, b.y.round() as i32);
        let (w, h) = (
            b.width.round().max(2.0) as i32,
            b.height.round().max(2.0) as i32,
        );
        let thickness = (2.0 * unit).round().max(1.0) as i32;
        let pad = (3.0 * unit) as i32;
        // Tag above the box, inside it when the box touches the top edge.
        let (tag_w, tag_h) = (tag_text.0 as i32 + 2 * pad, tag_text.1 as i32 + 2 * pad);
        let above = y - thickness - tag_h;
        let tag_y = if above >= 0 { above } else { y.max(0) };
        let tag = inside(x - thickness, tag_y, tag_w, tag_h, fw, fh);
        // The widget goes below the box, else above the tag, else beside the box on the side
        // with room; then it is pushed inside the frame.
        let radius = (20.0 * unit).round() as i32;
        let (ww, wh) = (2 * radius + pad + lines_w, 2 * radius);
        let below = y + h + thickness + pad;
        let over = tag.top() - pad - wh;
        let right = x + w + thickness + pad;
        let left = x - thickness - pad - ww;
        let (wx, wy) = if below + wh <= fh {
            (x, below)
        } else if over >= 0 {
            (x, over)
        } else if right + ww <= fw {
            (right, y + h - wh)
        } else if left >= 0 {
            (left, y + h - wh)
        } else {
            (x, y + h - wh) // no room outside: inside the box's bottom
        };
        Self {
            face_box: Rect::at(x, y).of_size(w as u32, h as u32),
            thickness,
            pad,
            tag,
            radius,
            widget: inside(wx, wy, ww, wh, fw, fh),
        }
    }
}

/// A `w`×`h` rectangle at (x, y), moved the least needed to lie inside a `fw`×`fh` frame
/// (at the top-left when it is larger than the frame).
fn inside(x: i32, y: i32, w: i32, h: i32, fw: i32, fh: i32) -> Rect {
    let x = x.min(fw - w).max(0);
    let y = y.min(fh - h).max(0);
    Rect::at(x, y).of_size(w.max(1) as u32, h.max(1) as u32)
}

impl Default for Overlay {
    fn default() -> Self {
        Self::new()
    }
}

impl Overlay {
    pub fn new() -> Self {
        let font = FontRef::try_from_slice(crate::DEJAVU_SANS)
            .expect("the bundled DejaVu Sans is a valid font");
        Self {
            font,
            show_landmarks: false,
        }
    }

    /// Annotates `frame` in place.
    pub fn draw(&self, frame: &mut RgbImage, faces: &[FaceResult], readout: Option<&Readout>) {
        // Text and widgets scale with the frame so they stay legible from 320 to 1080 lines.
        let unit = (frame.height() as f32 / 480.0).max(0.5);
        for face in faces {
            self.draw_face(frame, face, unit);
            if let (true, Some(landmarks)) = (self.show_landmarks, face.landmarks) {
                for p in landmarks.points() {
                    let at = (p.x.round() as i32, p.y.round() as i32);
                    draw_filled_circle_mut(frame, at, (2.0 * unit).round() as i32, LANDMARK);
                }
            }
        }
        if let Some(readout) = readout {
            self.draw_readout(frame, readout, faces.len(), unit);
        }
    }

    fn draw_face(&self, frame: &mut RgbImage, face: &FaceResult, unit: f32) {
        let color = EMOTION_COLORS[face.label];
        let scale = PxScale::from(16.0 * unit);
        let small = PxScale::from(13.0 * unit);
        let s = face.smoothed;
        let tag = format!(
            "#{} {} {:.0}%",
            face.id,
            EMOTIONS[face.label],
            100.0 * face.confidence
        );
        let lines = [
            format!("valence {:+.2}", s.valence),
            format!("arousal {:+.2}", s.arousal),
        ];
        let text_w = lines
            .iter()
            .map(|l| text_size(small, &self.font, l).0)
            .max()
            .unwrap_or(0);
        let layout = FaceLayout::new(
            frame.dimensions(),
            face,
            unit,
            text_size(scale, &self.font, &tag),
            text_w as i32,
        );
        let b = layout.face_box;
        for t in 0..layout.thickness {
            draw_hollow_rect_mut(
                frame,
                Rect::at(b.left() - t, b.top() - t)
                    .of_size(b.width() + 2 * t as u32, b.height() + 2 * t as u32),
                color,
            );
        }
        draw_filled_rect_mut(frame, layout.tag, color);
        draw_text_mut(
            frame,
            BLACK,
            layout.tag.left() + layout.pad,
            layout.tag.top() + layout.pad,
            scale,
            &self.font,
            &tag,
        );

        // Valence–arousal disc: x = valence, up = arousal; its two text lines to the right.
        let r = layout.radius;
        let centre = (layout.widget.left() + r, layout.widget.top() + r);
        draw_filled_circle_mut(frame, centre, r, BLACK);
        draw_hollow_circle_mut(frame, centre, r, GREY);
        let (cx, cy) = (centre.0 as f32, centre.1 as f32);
        draw_line_segment_mut(frame, (cx - r as f32, cy), (cx + r as f32, cy), GREY);
        draw_line_segment_mut(frame, (cx, cy - r as f32), (cx, cy + r as f32), GREY);
        let dot = (
            (cx + s.valence.clamp(-1.0, 1.0) * r as f32).round() as i32,
            (cy - s.arousal.clamp(-1.0, 1.0) * r as f32).round() as i32,
        );
        draw_filled_circle_mut(frame, dot, (3.0 * unit).round() as i32, color);
        let text_x = centre.0 + r + layout.pad;
        let line_ys = [centre.1 - r, centre.1 + (2.0 * unit) as i32];
        for (line, y) in lines.iter().zip(line_ys) {
            draw_text_mut(frame, WHITE, text_x, y, small, &self.font, line);
        }
    }

    fn draw_readout(&self, frame: &mut RgbImage, readout: &Readout, faces: usize, unit: f32) {
        let scale = PxScale::from(15.0 * unit);
        let text = format!(
            "{:.1} fps  latency {:.0} ms  {faces} face{}",
            readout.fps,
            readout.latency_ms,
            if faces == 1 { "" } else { "s" }
        );
        let (tw, th) = text_size(scale, &self.font, &text);
        let pad = (4.0 * unit) as i32;
        let rec_space = if readout.recording { th as i32 * 3 } else { 0 };
        draw_filled_rect_mut(
            frame,
            Rect::at(0, 0).of_size(tw + (2 * pad + rec_space) as u32, th + 2 * pad as u32),
            BLACK,
        );
        draw_text_mut(frame, WHITE, pad, pad, scale, &self.font, &text);
        if readout.recording {
            let x = tw as i32 + 2 * pad;
            let cy = pad + th as i32 / 2;
            draw_filled_circle_mut(frame, (x + th as i32 / 2, cy), th as i32 / 2, RED);
            draw_text_mut(
                frame,
                RED,
                x + th as i32 + pad / 2,
                pad,
                scale,
                &self.font,
                "REC",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{FaceBox, Landmarks, Point};
    use crate::model::Prediction;

    #[test]
    fn draws_box_tag_disc_and_readout_where_expected() {
        let mut frame = RgbImage::from_pixel(640, 480, Rgb([30, 30, 30]));
        let prediction = Prediction {
            probs: [0.05, 0.65, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],
            valence: 0.5,
            arousal: 0.2,
        };
        let face = FaceResult {
            id: 7,
            face: FaceBox {
                x: 200.0,
                y: 150.0,
                width: 120.0,
                height: 120.0,
            },
            landmarks: Some(Landmarks::from_points(
                [
                    (230.0, 190.0),
                    (290.0, 190.0),
                    (260.0, 215.0),
                    (235.0, 240.0),
                    (285.0, 240.0),
                ]
                .map(|(x, y)| Point { x, y }),
            )),
            detector_score: 0.9,
            raw: prediction,
            fresh: true,
            smoothed: prediction,
            label: 1,
            confidence: 0.65,
        };
        let readout = Readout {
            fps: 29.7,
            latency_ms: 31.0,
            recording: true,
        };
        let mut overlay = Overlay::new();
        let blank = frame.clone();
        overlay.draw(&mut frame, &[face], Some(&readout));
        assert_ne!(
            *frame.get_pixel(260, 215),
            LANDMARK,
            "landmarks off by default"
        );
        let mut with_landmarks = blank;
        overlay.show_landmarks = true;
        overlay.draw(&mut with_landmarks, &[face], Some(&readout));
        assert_eq!(*with_landmarks.get_pixel(260, 215), LANDMARK, "nose dot");
        let happy = EMOTION_COLORS[1];
        assert_eq!(*frame.get_pixel(200, 200), happy, "left edge of the box");
        assert_eq!(*frame.get_pixel(319, 260), happy, "right edge of the box");
        assert_eq!(
            *frame.get_pixel(260, 210),
            Rgb([30, 30, 30]),
            "inside stays clear"
        );
        let tag_pixels = (130..150)
            .flat_map(|y| (198..300).map(move |x| (x, y)))
            .filter(|&(x, y)| *frame.get_pixel(x, y) == happy)
            .count();
        assert!(
            tag_pixels > 500,
            "tag background above the box: {tag_pixels}"
        );
        let readout_white = (0..25)
            .flat_map(|y| (0..200).map(move |x| (x, y)))
            .filter(|&(x, y)| frame.get_pixel(x, y).0.iter().all(|&c| c > 200))
            .count();
        assert!(readout_white > 50, "readout text drawn: {readout_white}");
    }

    fn face_at(x: f32, y: f32, side: f32) -> FaceResult {
        let prediction = Prediction {
            probs: [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            valence: -0.3,
            arousal: 0.4,
        };
        FaceResult {
            id: 1,
            face: FaceBox {
                x,
                y,
                width: side,
                height: side,
            },
            landmarks: None,
            detector_score: 0.9,
            raw: prediction,
            fresh: true,
            smoothed: prediction,
            label: 0,
            confidence: 0.9,
        }
    }

    #[test]
    fn tag_and_disc_stay_inside_the_frame_wherever_the_face_is() {
        let (fw, fh) = (640u32, 360u32);
        let within = |r: Rect| {
            r.left() >= 0 && r.top() >= 0 && r.right() < fw as i32 && r.bottom() < fh as i32
        };
        // Near every edge and corner, half outside, and a face filling the frame.
        for (x, y, side) in [
            (300.0, 300.0, 50.0),
            (300.0, 330.0, 60.0),
            (600.0, 150.0, 80.0),
            (-30.0, 150.0, 80.0),
            (600.0, 320.0, 80.0),
            (-20.0, -20.0, 60.0),
            (280.0, -40.0, 70.0),
            (0.0, 0.0, 360.0),
        ] {
            let layout = FaceLayout::new((fw, fh), &face_at(x, y, side), 0.75, (90, 14), 80);
            assert!(
                within(layout.tag),
                "tag {:?} for a face at ({x}, {y})",
                layout.tag
            );
            assert!(
                within(layout.widget),
                "disc and text {:?} for a face at ({x}, {y})",
                layout.widget
            );
        }
        // A face near the bottom puts the disc above the tag, not below the frame.
        let layout = FaceLayout::new((fw, fh), &face_at(300.0, 300.0, 50.0), 0.75, (90, 14), 80);
        assert!(layout.widget.bottom() < layout.tag.top(), "{layout:?}");
        // With room below, it stays below the box.
        let layout = FaceLayout::new((fw, fh), &face_at(300.0, 50.0, 50.0), 0.75, (90, 14), 80);
        assert!(layout.widget.top() > 100, "{layout:?}");
        // Drawing at the edges never panics, with pixels inside the frame only.
        let mut frame = RgbImage::new(fw, fh);
        Overlay::new().draw(&mut frame, &[face_at(620.0, 340.0, 90.0)], None);
    }
}
