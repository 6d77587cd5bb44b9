//! Face tracking: detections associated across frames by box overlap (IoU) into stable ids.
//! Each track keeps a smoothed velocity, so between detection rounds (and when a detection
//! arrives late, computed on an older frame) its box is predicted for the frame at hand; each
//! match moves the predicted box part of the way to the detection, damping detector jitter.

use crate::detect::Detection;
use crate::geometry::{FaceBox, Landmarks};

/// Tracker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// Smallest IoU at which a detection continues a track.
    pub min_iou: f32,
    /// Detection rounds a track may go unmatched before it is dropped.
    pub max_missed: u32,
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
            max_missed: 2,
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

    /// Live tracks, oldest id first.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
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

    /// One detection round on frame `frame`: greedy matching of the predicted boxes by
    /// descending IoU, new ids for unmatched detections, and unmatched tracks aged and dropped
    /// after `max_missed` rounds.
    pub fn update(&mut self, detections: &[Detection], frame: u64) {
        let predicted: Vec<TrackedFace> =
            self.tracks.iter().map(|t| self.face_at(t, frame)).collect();
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (t, predicted) in predicted.iter().enumerate() {
            for (d, det) in detections.iter().enumerate() {
                let overlap = predicted.face.iou(&det.face);
                if overlap >= self.config.min_iou {
                    pairs.push((overlap, t, d));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_matched = vec![false; self.tracks.len()];
        let mut det_matched = vec![false; detections.len()];
        for (_, t, d) in pairs {
            if track_matched[t] || det_matched[d] {
                continue;
            }
            track_matched[t] = true;
            det_matched[d] = true;
            let track = &mut self.tracks[t];
            let (det, a) = (&detections[d], self.config.box_update);
            let face = predicted[t].face.lerp(&det.face, a);
            if frame > track.seen_at {
                let dt = (frame - track.seen_at) as f32;
                let measured = ((face.x - track.face.x) / dt, (face.y - track.face.y) / dt);
                let a = self.config.velocity_update;
                track.velocity.0 += a * (measured.0 - track.velocity.0);
                track.velocity.1 += a * (measured.1 - track.velocity.1);
            }
            track.face = face;
            track.landmarks = match (predicted[t].landmarks, det.landmarks) {
                (Some(before), Some(now)) => Some(before.lerp(&now, a)),
                (_, now) => now,
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
        let max_missed = self.config.max_missed;
        self.tracks.retain(|t| t.missed <= max_missed);
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

    #[test]
    fn ids_follow_moving_faces_and_vanished_faces_are_dropped() {
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
        // Face 2 leaves: it survives max_missed rounds, then is dropped; a newcomer gets id 3.
        for frame in 2..4 {
            tracker.update(&[det(4.0, 2.0, 52.0)], frame);
            assert_eq!(tracker.tracks().len(), 2);
        }
        tracker.update(&[det(4.0, 2.0, 52.0), det(400.0, 100.0, 60.0)], 4);
        let ids: Vec<u64> = tracker.tracks().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 3]);
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
