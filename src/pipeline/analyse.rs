//! The analyse stage: tracking, the model and smoothing. All faces due in a frame go through the
//! model as one batch.

use super::detect::Located;
use super::handoff::{Receiver, Sender};
use super::stats::Histogram;
use super::{ms, PipelineConfig, PipelineError};
use crate::capture::Frame;
use crate::model::AffectModel;
use crate::smooth::{FaceResult, Smoother};
use crate::track::{TrackedFace, Tracker};
use candle_core::Device;
use std::collections::HashMap;
use std::time::Instant;

/// A frame with its faces.
pub(super) struct Analysed {
    pub frame: Frame,
    pub faces: Vec<FaceResult>,
}

/// What the stage reports when it ends.
pub(super) struct AnalysisEnd {
    pub frames: u64,
    pub tracks: u64,
    pub model_ms: Histogram,
    pub dropped_before: u64,
    pub error: Option<PipelineError>,
}

/// Tracking, model and smoothing for one stream of located frames.
struct Analyser<'a> {
    model: &'a AffectModel,
    device: &'a Device,
    tracker: Tracker,
    smoother: Smoother,
    classify_per_frame: usize,
    /// Frame index of each tracked face's latest prediction.
    classified_at: HashMap<u64, u64>,
    model_pool: Option<rayon::ThreadPool>,
    model_ms: Histogram,
}

impl Analyser<'_> {
    fn analyse(&mut self, located: &Located) -> candle_core::Result<Vec<FaceResult>> {
        let frame = &located.frame;
        if let Some((detected_on, detections)) = &located.detections {
            // Tracks only end here, so per-face state is pruned here too; a lost track keeps
            // its state until it is forgotten, so a face that comes back resumes it.
            self.tracker.update(detections, *detected_on);
            let tracks = self.tracker.tracks();
            let alive = |id: u64| tracks.iter().any(|track| track.id == id);
            self.smoother.retain(alive);
            self.classified_at.retain(|id, _| alive(*id));
        }
        // New faces, and known faces in turn (longest-waiting first), go through the model as
        // one batch; the others keep their smoothed result, moved to the tracked box.
        let located: Vec<TrackedFace> = self
            .tracker
            .shown()
            .map(|t| self.tracker.face_at(t, frame.index))
            .collect();
        let waiting: Vec<Option<u64>> = located
            .iter()
            .map(|t| self.classified_at.get(&t.id).copied())
            .collect();
        let pending = faces_to_classify(&waiting, self.classify_per_frame);
        let mut results: Vec<Option<FaceResult>> = located
            .iter()
            .enumerate()
            .map(|(i, face)| {
                if pending.contains(&i) {
                    None
                } else {
                    self.smoother.current(face)
                }
            })
            .collect();
        if !pending.is_empty() {
            let t = Instant::now();
            let pre = self.model.meta.preprocess;
            let faces: Vec<Vec<u8>> = pending
                .iter()
                .map(|&i| {
                    let face = &located[i];
                    pre.face_pixels(&pre.crop(&frame.image, face.face, face.landmarks.as_ref()))
                })
                .collect();
            let batch = pre.batch_of(faces.iter().map(|f| (&f[..], false)), self.device)?;
            let model = self.model;
            let predictions = match &self.model_pool {
                Some(pool) => pool.install(|| model.predict(&batch))?,
                None => model.predict(&batch)?,
            };
            self.model_ms.record(ms(t.elapsed()));
            for (&i, p) in pending.iter().zip(predictions) {
                self.classified_at.insert(located[i].id, frame.index);
                results[i] = Some(self.smoother.update(&located[i], p));
            }
        }
        Ok(results.into_iter().flatten().collect())
    }
}

/// Which tracks go through the model on this frame, given the frame each was last classified
/// on (`None`: never): every new face, and at least `per_frame` faces in all, longest-waiting
/// first (ties: the oldest track).
fn faces_to_classify(classified_at: &[Option<u64>], per_frame: usize) -> Vec<usize> {
    let mut order: Vec<(Option<u64>, usize)> = classified_at.iter().copied().zip(0..).collect();
    order.sort();
    let new_faces = order.iter().take_while(|(at, _)| at.is_none()).count();
    order
        .iter()
        .take(new_faces.max(per_frame))
        .map(|&(_, i)| i)
        .collect()
}

pub(super) fn run(
    config: &PipelineConfig,
    model: &AffectModel,
    device: &Device,
    input: &Receiver<Located>,
    output: &Sender<Analysed>,
) -> AnalysisEnd {
    let mut analyser = Analyser {
        model,
        device,
        tracker: Tracker::new(config.tracker),
        smoother: Smoother::new(config.smoothing),
        classify_per_frame: config.classify_per_frame.max(1),
        classified_at: HashMap::new(),
        // Without a pool of its own the model runs on the global one (all cores).
        model_pool: rayon::ThreadPoolBuilder::new()
            .num_threads(config.model_threads.max(1))
            .thread_name(|i| format!("model-{i}"))
            .build()
            .ok(),
        model_ms: Histogram::default(),
    };
    let mut frames = 0;
    let mut error = None;
    while let Some(located) = input.recv() {
        match analyser.analyse(&located) {
            Ok(faces) => {
                frames += 1;
                let frame = located.frame;
                if output.send(Analysed { frame, faces }).is_err() {
                    break;
                }
            }
            Err(e) => {
                error = Some(PipelineError::Model(e));
                break;
            }
        }
    }
    AnalysisEnd {
        frames,
        tracks: analyser.tracker.ids_created(),
        model_ms: analyser.model_ms,
        dropped_before: input.dropped(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::faces_to_classify;

    #[test]
    fn new_faces_always_then_the_longest_waiting() {
        // Tracks 0 and 2 were classified on frames 7 and 3; 1 and 3 are new.
        let at = [Some(7), None, Some(3), None];
        assert_eq!(faces_to_classify(&at, 1), [1, 3]);
        assert_eq!(faces_to_classify(&at, 3), [1, 3, 2]);
        assert_eq!(faces_to_classify(&at, 10), [1, 3, 2, 0]);
        let known = [Some(7), Some(5), Some(5)];
        assert_eq!(faces_to_classify(&known, 1), [1]);
        assert_eq!(faces_to_classify(&known, 2), [1, 2]);
        assert!(faces_to_classify(&[], 2).is_empty());
    }
}
