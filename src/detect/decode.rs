//! YuNet's post-processing: head maps → scored boxes with landmarks → non-maximum suppression,
//! as libfacedetection does it (anchor order, stable sort and `IoU ≤ threshold` decide ties
//! and borderline cases the same way, so results match the C++ detector).

use super::Detection;
use crate::geometry::{FaceBox, Landmarks, Point};

/// Strides of the three head levels, in anchor order.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// The heads' names in the weights file and their channels, in the order their outputs are
/// stacked in a level's map.
pub const HEAD_CHANNELS: [(&str, usize); 4] = [("cls", 1), ("bbox", 4), ("obj", 1), ("kps", 10)];
const CLS: usize = 0;
const BBOX: usize = 1;
const OBJ: usize = 5;
const KPS: usize = 6;
const CHANNELS: usize = 16;

/// libfacedetection clamps sigmoid inputs to this (where `exp` stays finite in f32).
const SIGMOID_CLAMP: f32 = 88.376_26;

/// One level's raw head outputs: `rows × cols` cells of [`HEAD_CHANNELS`] values (cls, 4 box,
/// obj, 10 landmark), row-major.
#[derive(Debug, Clone)]
pub struct HeadMaps {
    pub stride: usize,
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

/// A decoded anchor: box corners and landmarks in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub score: f32,
    /// x0, y0, x1, y1.
    pub corners: [f32; 4],
    /// x, y of the five landmarks in [`Landmarks::NAMES`] order.
    pub landmarks: [f32; 10],
}

impl Candidate {
    pub fn detection(&self) -> Detection {
        let [x0, y0, x1, y1] = self.corners;
        let p = &self.landmarks;
        Detection {
            face: FaceBox {
                x: x0,
                y: y0,
                width: x1 - x0,
                height: y1 - y0,
            },
            score: f64::from(self.score),
            landmarks: Some(Landmarks::from_points(std::array::from_fn(|i| Point {
                x: p[2 * i],
                y: p[2 * i + 1],
            }))),
        }
    }

    /// Intersection over union of the corner boxes, as libfacedetection computes it.
    fn iou(&self, other: &Candidate) -> f32 {
        let [ax0, ay0, ax1, ay1] = self.corners;
        let [bx0, by0, bx1, by1] = other.corners;
        let iw = ax1.min(bx1) - ax0.max(bx0);
        let ih = ay1.min(by1) - ay0.max(by0);
        if iw <= 0.0 || ih <= 0.0 {
            return 0.0;
        }
        let inter = iw * ih;
        inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v.clamp(-SIGMOID_CLAMP, SIGMOID_CLAMP)).exp())
}

/// Anchors scoring at least `min_score`, in anchor order (stride 8 row by row, then 16, 32).
/// Anchors whose box is not finite (`exp` overflow on junk far from any face) are dropped.
pub fn candidates(levels: &[HeadMaps], min_score: f32) -> Vec<Candidate> {
    let mut out = Vec::new();
    for level in levels {
        let s = level.stride as f32;
        for (cell, v) in level.values.chunks_exact(CHANNELS).enumerate() {
            let score = (sigmoid(v[CLS]) * sigmoid(v[OBJ])).sqrt();
            if score < min_score {
                continue;
            }
            let (row, col) = (cell / level.cols, cell % level.cols);
            debug_assert!(row < level.rows);
            let (px, py) = (col as f32 * s, row as f32 * s);
            let b = &v[BBOX..BBOX + 4];
            let (cx, cy) = (b[0] * s + px, b[1] * s + py);
            let (bw, bh) = (b[2].exp() * s, b[3].exp() * s);
            let corners = [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0];
            if !corners.iter().all(|c| c.is_finite()) {
                continue;
            }
            let mut landmarks = [0.0; 10];
            for (i, (l, &k)) in landmarks.iter_mut().zip(&v[KPS..KPS + 10]).enumerate() {
                *l = k * s + if i % 2 == 0 { px } else { py };
            }
            out.push(Candidate {
                score,
                corners,
                landmarks,
            });
        }
    }
    out
}

/// Greedy class-agnostic NMS: the best `top_k` candidates (stable sort, so ties keep anchor
/// order); each is kept when its IoU with every kept box is at most `max_iou`; at most
/// `keep_top_k` are returned, best first.
pub fn nms(
    mut candidates: Vec<Candidate>,
    top_k: usize,
    max_iou: f32,
    keep_top_k: usize,
) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(top_k);
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() == keep_top_k {
            break;
        }
        if kept.iter().all(|k| k.iou(&c) <= max_iou) {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(score: f32, corners: [f32; 4]) -> Candidate {
        Candidate {
            score,
            corners,
            landmarks: [0.0; 10],
        }
    }

    #[test]
    fn decodes_from_the_cell_corner_with_strided_offsets() {
        // One stride-8 level of 2×3 cells; only cell (1, 2) scores.
        let mut values = vec![-20.0; 6 * CHANNELS];
        let cell = &mut values[5 * CHANNELS..6 * CHANNELS];
        cell[CLS] = 3.0;
        cell[OBJ] = 3.0;
        cell[BBOX..BBOX + 4].copy_from_slice(&[0.5, -0.25, 0.0, 2f32.ln()]);
        for (i, k) in cell[KPS..].iter_mut().enumerate() {
            *k = i as f32 * 0.125;
        }
        let level = HeadMaps {
            stride: 8,
            rows: 2,
            cols: 3,
            values,
        };
        let [c] = candidates(&[level], 0.2)[..] else {
            panic!("expected one candidate")
        };
        assert!((c.score - sigmoid(3.0)).abs() < 1e-6);
        // Anchor at (16, 8); centre (20, 6); 8 × 16 px.
        assert_eq!(c.corners, [16.0, -2.0, 24.0, 14.0]);
        assert_eq!(c.landmarks[..4], [16.0, 9.0, 18.0, 11.0]);
    }

    #[test]
    fn overflowing_boxes_never_reach_nms() {
        let mut values = vec![0.0; CHANNELS];
        values[CLS] = 10.0;
        values[OBJ] = 10.0;
        values[BBOX + 2] = 200.0;
        let level = HeadMaps {
            stride: 32,
            rows: 1,
            cols: 1,
            values,
        };
        assert!(candidates(&[level], 0.2).is_empty());
    }

    #[test]
    fn nms_keeps_at_the_threshold_and_ties_in_anchor_order() {
        // b overlaps a with IoU exactly 1/3 (kept at 1/3, suppressed below it).
        let a = candidate(0.9, [0.0, 0.0, 10.0, 10.0]);
        let b = candidate(0.8, [5.0, 0.0, 15.0, 10.0]);
        assert_eq!(nms(vec![b, a], 10, 1.0 / 3.0, 10), [a, b]);
        assert_eq!(nms(vec![b, a], 10, 0.3, 10), [a]);
        // Equal scores: the earlier anchor wins.
        let first = candidate(0.5, [0.0, 0.0, 10.0, 10.0]);
        let second = candidate(0.5, [1.0, 0.0, 11.0, 10.0]);
        assert_eq!(nms(vec![first, second], 10, 0.45, 10), [first]);
        // top_k applies before NMS and keep_top_k after.
        let far = candidate(0.4, [100.0, 0.0, 110.0, 10.0]);
        assert_eq!(nms(vec![a, far], 1, 0.45, 10), [a]);
        assert_eq!(nms(vec![a, far], 10, 0.45, 1), [a]);
    }
}
