//! Temporal smoothing of each tracked face's predictions, after the model: an exponential
//! moving average of probabilities and valence/arousal, and hysteresis on the shown label so
//! it changes only when another emotion clearly leads. Without it labels flicker frame to
//! frame on ambiguous faces.

use crate::geometry::{FaceBox, Landmarks};
use crate::model::labels::{most_probable, NUM_EMOTIONS};
use crate::model::Prediction;
use crate::track::TrackedFace;
use std::collections::HashMap;

/// Smoothing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothingConfig {
    /// Weight of the newest prediction in the moving average (1 = no smoothing).
    pub alpha: f32,
    /// How far another emotion's smoothed probability must exceed the shown one to replace it.
    pub switch_margin: f32,
}

impl Default for SmoothingConfig {
    fn default() -> Self {
        Self {
            alpha: 0.3,
            switch_margin: 0.1,
        }
    }
}

/// What is shown for one face in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceResult {
    pub id: u64,
    pub face: FaceBox,
    /// Eyes, nose and mouth corners, when the detector gives them.
    pub landmarks: Option<Landmarks>,
    /// The detector's score of the face's last detection.
    pub detector_score: f64,
    /// The face's latest model output.
    pub raw: Prediction,
    /// Whether `raw` was computed on this frame (faces are not classified on every frame).
    pub fresh: bool,
    /// Smoothed probabilities and valence/arousal.
    pub smoothed: Prediction,
    /// Shown emotion (after hysteresis) and its smoothed probability.
    pub label: usize,
    pub confidence: f32,
}

#[derive(Debug, Clone, Copy)]
struct State {
    raw: Prediction,
    smoothed: Prediction,
    label: usize,
}

#[derive(Debug, Default)]
pub struct Smoother {
    config: SmoothingConfig,
    states: HashMap<u64, State>,
}

impl Smoother {
    pub fn new(config: SmoothingConfig) -> Self {
        Self {
            config,
            states: HashMap::new(),
        }
    }

    /// Folds this frame's prediction for `tracked` into its history.
    pub fn update(&mut self, tracked: &TrackedFace, raw: Prediction) -> FaceResult {
        let a = self.config.alpha;
        let state = self.states.entry(tracked.id).or_insert(State {
            raw,
            smoothed: raw,
            label: raw.label(),
        });
        state.raw = raw;
        let s = &mut state.smoothed;
        for k in 0..NUM_EMOTIONS {
            s.probs[k] += a * (raw.probs[k] - s.probs[k]);
        }
        s.valence += a * (raw.valence - s.valence);
        s.arousal += a * (raw.arousal - s.arousal);
        let leader = most_probable(&s.probs);
        if s.probs[leader] > s.probs[state.label] + self.config.switch_margin {
            state.label = leader;
        }
        FaceResult {
            id: tracked.id,
            face: tracked.face,
            landmarks: tracked.landmarks,
            detector_score: tracked.score,
            raw,
            fresh: true,
            smoothed: *s,
            label: state.label,
            confidence: s.probs[state.label],
        }
    }

    /// `tracked`'s current result, without a new prediction; `None` if the face has not been
    /// classified yet.
    pub fn current(&self, tracked: &TrackedFace) -> Option<FaceResult> {
        self.states.get(&tracked.id).map(|state| FaceResult {
            id: tracked.id,
            face: tracked.face,
            landmarks: tracked.landmarks,
            detector_score: tracked.score,
            raw: state.raw,
            fresh: false,
            smoothed: state.smoothed,
            label: state.label,
            confidence: state.smoothed.probs[state.label],
        })
    }

    /// Forgets faces that are no longer tracked.
    pub fn retain(&mut self, alive: impl Fn(u64) -> bool) {
        self.states.retain(|id, _| alive(*id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(leader: usize, p: f32) -> Prediction {
        let mut probs = [(1.0 - p) / 7.0; NUM_EMOTIONS];
        probs[leader] = p;
        Prediction {
            probs,
            valence: 0.5,
            arousal: -0.5,
        }
    }

    fn face(id: u64) -> TrackedFace {
        TrackedFace {
            id,
            face: FaceBox {
                x: 0.0,
                y: 0.0,
                width: 10.0,
                height: 10.0,
            },
            landmarks: None,
            score: 0.9,
        }
    }

    #[test]
    fn a_single_odd_frame_does_not_flip_the_label() {
        let mut smoother = Smoother::new(SmoothingConfig::default());
        for _ in 0..5 {
            assert_eq!(smoother.update(&face(1), prediction(1, 0.6)).label, 1);
        }
        let blip = smoother.update(&face(1), prediction(2, 0.6));
        assert_eq!(blip.label, 1, "one frame of 'sad' keeps 'happy'");
        assert_eq!(blip.raw.label(), 2);
        // A sustained change does switch.
        let labels: Vec<usize> = (0..10)
            .map(|_| smoother.update(&face(1), prediction(2, 0.6)).label)
            .collect();
        assert_eq!(*labels.last().unwrap(), 2);
        assert!(
            labels.windows(2).all(|w| w[0] <= w[1]),
            "one switch: {labels:?}"
        );
    }

    #[test]
    fn faces_are_smoothed_separately_and_forgotten() {
        let mut smoother = Smoother::new(SmoothingConfig::default());
        smoother.update(&face(1), prediction(0, 0.9));
        let other = smoother.update(&face(2), prediction(3, 0.9));
        assert_eq!(other.label, 3);
        assert!((other.smoothed.valence - 0.5).abs() < 1e-6);
        let kept = smoother.current(&face(2)).unwrap();
        assert!(!kept.fresh && kept.label == 3 && kept.raw == other.raw);
        smoother.retain(|id| id == 2);
        assert!(smoother.current(&face(1)).is_none());
        assert_eq!(smoother.update(&face(1), prediction(4, 0.9)).label, 4);
    }
}
