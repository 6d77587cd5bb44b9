//! Face tracking: detections associated across frames into stable ids.
//!
//! Each track keeps a smoothed velocity, so between detection rounds (and when a detection
//! arrives late, computed on an older frame) its box is predicted for the frame at hand; each
//! match moves the predicted box part of the way to the detection, damping detector jitter.
//!
//! Association is greedy over gated pairs, in DeepSORT's cascade order: tracks matched on the
//! latest round pick first, then tracks lost for longer. A pair must overlap (IoU with the
//! predicted box) or, for a lost track, lie within a face width of where it was predicted,
//! and the sizes must agree; among the pairs of one rank the best affinity (IoU, less
//! the landmarks' disagreement) wins. Greedy is enough: the gates leave few competing pairs,
//! and where two faces cross, the cascade gives the visible face to the track that saw it
//! last, so the hidden face's track waits, predicted along its path, and takes the face back
//! when it reappears. A lost track is not shown after a couple of rounds but is remembered
//! for about a second.

use crate::detect::Detection;
use crate::geometry::{FaceBox, Landmarks};

/// Tracker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// Smallest IoU with the predicted box at which a detection continues a track.
    pub min_iou: f32,
    /// Detection rounds a track may go unmatched and still be shown, at its predicted box.
    pub shown_missed: u32,
    /// Frames a lost track is remembered (hidden), so a face that comes back within that time
    /// gets its id again: 30 ≈ 1 s at 30 fps.
    pub keep_lost_frames: u64,
    /// A lost track also takes a detection whose centre is within this many face widths of
    /// its predicted centre.
    pub lost_gate: f32,
    /// Largest ratio between a track's and a detection's width for a match.
    pub max_size_ratio: f32,
    /// Weight of the landmarks' mean distance (in face widths) against IoU in the affinity.
    pub landmark_weight: f32,
    /// Weight of the new detection when a matched box is updated (1 = no smoothing).
    pub box_update: f32,
    /// Weight of the newest velocity estimate in the track's moving average.
    pub velocity_update: f32,
    /// Frames a box is extrapolated at most; past that it stays put.
    pub max_predict_frames: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            min_iou: 0.3,
            shown_missed: 2,
            keep_lost_frames: 30,
            lost_gate: 1.0,
            max_size_ratio: 1.5,
            landmark_weight: 1.0,
            box_update: 0.6,
            velocity_update: 0.5,
            max_predict_frames: 15,
        }
    }
}

/// One tracked face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Track {
    pub id: u64,
    /// The box at frame `seen_at`.
    pub face: FaceBox,
    /// The landmarks at frame `seen_at`, when the detector gives them.
    pub landmarks: Option<Landmarks>,
    /// The detector's score of the last detection that updated the track.
    pub score: f64,
    /// Frame of the last detection that updated the box.
    pub seen_at: u64,
    /// Box movement in pixels per frame.
    pub velocity: (f32, f32),
    /// Detection rounds since this track was last matched.
    pub missed: u32,
}

/// Where a tracked face is on a given frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackedFace {
    pub id: u64,
    pub face: FaceBox,
    pub landmarks: Option<Landmarks>,
    /// The detector's score of the track's last detection.
    pub score: f64,
}

#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Every remembered track, shown or lost, oldest id first.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// The tracks to show: matched within the last `shown_missed` rounds, oldest id first.
    pub fn shown(&self) -> impl Iterator<Item = &Track> {
        let limit = self.config.shown_missed;
        self.tracks.iter().filter(move |t| t.missed <= limit)
    }

    /// Number of ids handed out so far.
    pub fn ids_created(&self) -> u64 {
        self.next_id - 1
    }

    /// Track `track`'s box and landmarks predicted for frame `frame` from its last box and
    /// velocity.
    pub fn face_at(&self, track: &Track, frame: u64) -> TrackedFace {
        let dt = frame
            .saturating_sub(track.seen_at)
            .min(self.config.max_predict_frames) as f32;
        let (dx, dy) = (track.velocity.0 * dt, track.velocity.1 * dt);
        TrackedFace {
            id: track.id,
            face: track.face.shifted(dx, dy),
            landmarks: track.landmarks.map(|l| l.shifted(dx, dy)),
            score: track.score,
        }
    }

    /// How well `det` continues a track predicted at `predicted` that has missed `missed`
    /// rounds, or `None` when the pair is outside the gates.
    fn affinity(&self, predicted: &TrackedFace, missed: u32, det: &Detection) -> Option<f32> {
        let c = &self.config;
        let (a, b) = (&predicted.face, &det.face);
        let ratio = a.width.max(b.width) / a.width.min(b.width).max(1e-3);
        if ratio > c.max_size_ratio {
            return None;
        }
        let overlap = a.iou(b);
        let ((ax, ay), (bx, by)) = (a.center(), b.center());
        let near = (ax - bx).hypot(ay - by) <= c.lost_gate * a.width.max(b.width);
        if overlap < c.min_iou && !(missed > 0 && near) {
            return None;
        }
        let landmark_gap = match (predicted.landmarks, det.landmarks) {
            (Some(p), Some(d)) => {
                let (p, d) = (p.points(), d.points());
                let gaps = p.iter().zip(&d).map(|(p, d)| (p.x - d.x).hypot(p.y - d.y));
                gaps.sum::<f32>() / 5.0 / a.width.max(1.0)
            }
            _ => 0.0,
        };
        Some(overlap - c.landmark_weight * landmark_gap)
    }

    /// One detection round on frame `frame`: greedy matching in cascade order (see the module
    /// doc), new ids for unmatched detections, unmatched tracks aged and forgotten
    /// `keep_lost_frames` after they were last seen.
    pub fn update(&mut self, detections: &[Detection], frame: u64) {
        let predicted: Vec<TrackedFace> =
            self.tracks.iter().map(|t| self.face_at(t, frame)).collect();
        // (rank: rounds missed, affinity, track, detection)
        let mut pairs: Vec<(u32, f32, usize, usize)> = Vec::new();
        for (t, (track, predicted)) in self.tracks.iter().zip(&predicted).enumerate() {
            for (d, det) in detections.iter().enumerate() {
                if let Some(affinity) = self.affinity(predicted, track.missed, det) {
                    pairs.push((track.missed, affinity, t, d));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut track_matched = vec![false; self.tracks.len()];
        let mut det_matched = vec![false; detections.len()];
        for (_, _, t, d) in pairs {
            if track_matched[t] || det_matched[d] {
                continue;
            }
            track_matched[t] = true;
            det_matched[d] = true;
            let track = &mut self.tracks[t];
            let (det, a) = (&detections[d], self.config.box_update);
            // A track back from being lost starts afresh at the detection: its prediction has
            // drifted and its velocity is stale.
            let face = if track.missed == 0 {
                predicted[t].face.lerp(&det.face, a)
            } else {
                det.face
            };
            if frame > track.seen_at {
                let dt = (frame - track.seen_at) as f32;
                let measured = ((face.x - track.face.x) / dt, (face.y - track.face.y) / dt);
                let a = self.config.velocity_update;
                track.velocity.0 += a * (measured.0 - track.velocity.0);
                track.velocity.1 += a * (measured.1 - track.velocity.1);
            }
            track.face = face;
            track.landmarks = match (predicted[t].landmarks, det.landmarks, track.missed) {
                (Some(before), Some(now), 0) => Some(before.lerp(&now, a)),
                (_, now, _) => now,
            };
            track.score = det.score;
            track.seen_at = frame;
            track.missed = 0;
        }
        for (track, matched) in self.tracks.iter_mut().zip(&track_matched) {
            if !matched {
                track.missed += 1;
            }
        }
        let keep = self.config.keep_lost_frames;
        self.tracks
            .retain(|t| t.missed == 0 || frame.saturating_sub(t.seen_at) <= keep);
        for (det, _) in detections.iter().zip(det_matched).filter(|(_, m)| !m) {
            self.tracks.push(Track {
                id: self.next_id,
                face: det.face,
                landmarks: det.landmarks,
                score: det.score,
                seen_at: frame,
                velocity: (0.0, 0.0),
                missed: 0,
            });
            self.next_id += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, side: f32) -> Detection {
        Detection {
            face: FaceBox {
                x,
                y,
                width: side,
                height: side,
            },
            score: 5.0,
            landmarks: None,
        }
    }

    fn shown_ids(tracker: &Tracker) -> Vec<u64> {
        tracker.shown().map(|t| t.id).collect()
    }

    #[test]
    fn ids_follow_moving_faces_and_vanished_faces_are_hidden_then_forgotten() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        tracker.update(&[det(0.0, 0.0, 50.0), det(200.0, 0.0, 50.0)], 0);
        let ids: Vec<u64> = tracker.tracks().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 2]);
        // Both move a little and arrive in the other order; ids stay with the faces.
        tracker.update(&[det(205.0, 3.0, 50.0), det(4.0, 2.0, 52.0)], 1);
        let by_id: Vec<(u64, f32)> = tracker.tracks().iter().map(|t| (t.id, t.face.x)).collect();
        assert_eq!(by_id.len(), 2);
        assert!(by_id[0].0 == 1 && by_id[0].1 < 10.0, "{by_id:?}");
        assert!(by_id[1].0 == 2 && by_id[1].1 > 200.0, "{by_id:?}");
        // Face 2 leaves: it is shown for shown_missed rounds, then hidden; a newcomer
        // elsewhere gets id 3.
        for frame in 2..4 {
            tracker.update(&[det(4.0, 2.0, 52.0)], frame);
            assert_eq!(shown_ids(&tracker), [1, 2]);
        }
        tracker.update(&[det(4.0, 2.0, 52.0), det(400.0, 100.0, 60.0)], 4);
        assert_eq!(shown_ids(&tracker), [1, 3]);
        // Remembered, hidden, for keep_lost_frames after it was last seen; then forgotten.
        assert_eq!(tracker.tracks().len(), 3);
        let keep = TrackerConfig::default().keep_lost_frames;
        tracker.update(&[det(4.0, 2.0, 52.0)], 1 + keep + 1);
        let ids: Vec<u64> = tracker.tracks().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn a_face_missed_for_most_of_a_second_comes_back_with_its_id() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        // Moving 3 px per frame, detected on every frame but 10..35 (hidden, say by a hand).
        for frame in 0..50u64 {
            let x = 100.0 + 3.0 * frame as f32;
            let seen = !(10..35).contains(&frame);
            let found = if seen {
                vec![det(x, 80.0, 90.0)]
            } else {
                vec![]
            };
            tracker.update(&found, frame);
        }
        assert_eq!(tracker.ids_created(), 1);
        assert_eq!(shown_ids(&tracker), [1]);
        // A face twice the size at the same place is someone else.
        tracker.update(&[det(250.0, 80.0, 180.0)], 50);
        assert_eq!(tracker.ids_created(), 2);
    }

    #[test]
    fn two_faces_crossing_keep_their_ids() {
        // Equal sizes, one row, opposite directions, 6 px per frame each, exactly level at
        // frame 40; while the boxes overlap by more than the detector's NMS allows, only the
        // front face (b) is found. Every detection must go to its own face's track.
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut ids = [
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
        ];
        for frame in 0..80u64 {
            let xa = 20.0 + 6.0 * frame as f32;
            let xb = 500.0 - 6.0 * frame as f32;
            let (a, b) = (det(xa, 100.0, 100.0), det(xb, 100.0, 100.0));
            let found = if a.face.iou(&b.face) > 0.2 {
                vec![(1, b)]
            } else {
                vec![(0, a), (1, b)]
            };
            let dets: Vec<Detection> = found.iter().map(|(_, d)| *d).collect();
            tracker.update(&dets, frame);
            for (face, d) in &found {
                let taker = tracker
                    .tracks()
                    .iter()
                    .filter(|t| t.seen_at == frame)
                    .min_by(|s, t| {
                        let gap = |t: &Track| (t.face.x - d.face.x).abs();
                        gap(s).total_cmp(&gap(t))
                    })
                    .unwrap();
                ids[*face].insert(taker.id);
            }
        }
        assert_eq!([ids[0].len(), ids[1].len()], [1, 1], "{ids:?}");
        assert_ne!(ids[0], ids[1]);
        assert_eq!(tracker.ids_created(), 2);
    }

    #[test]
    fn matched_boxes_move_part_way() {
        let mut tracker = Tracker::new(TrackerConfig {
            box_update: 0.5,
            ..TrackerConfig::default()
        });
        tracker.update(&[det(0.0, 0.0, 100.0)], 0);
        tracker.update(&[det(10.0, 0.0, 100.0)], 0);
        assert!((tracker.tracks()[0].face.x - 5.0).abs() < 1e-6);
    }

    #[test]
    fn boxes_follow_a_moving_face_between_detections() {
        // A face moving 4 px per frame, detected every 4th frame.
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut worst: f32 = 0.0;
        for frame in 0..60u64 {
            let truth = 4.0 * frame as f32;
            if frame % 4 == 0 {
                tracker.update(&[det(truth, 50.0, 80.0)], frame);
            }
            let track = tracker.tracks()[0];
            if frame >= 24 {
                worst = worst.max((tracker.face_at(&track, frame).face.x - truth).abs());
            }
        }
        assert_eq!(tracker.ids_created(), 1);
        assert!(worst < 3.0, "predicted boxes lag by {worst} px");
        // Without prediction the box would lag up to 12 px plus the smoothing lag.
    }
}
