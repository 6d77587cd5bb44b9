//! The detect stage: finds faces on every N-th frame and passes each frame on with them.

use super::handoff::{handoff, Policy, Receiver, Sender};
use super::stats::Histogram;
use super::{ms, spawn_stage, Mode, PipelineConfig, PipelineError};
use crate::capture::Frame;
use crate::detect::{DetectError, Detection, FaceDetector};
use image::RgbImage;
use std::sync::mpsc;
use std::time::Instant;

/// A frame with, when the detector ran, the faces it found and the index of the frame it ran
/// on (this one offline; a recent one live).
pub(super) struct Located {
    pub frame: Frame,
    pub detections: Option<(u64, Vec<Detection>)>,
}

/// What the stage reports when it ends.
pub(super) struct DetectEnd {
    pub detect_ms: Histogram,
    pub dropped_before: u64,
    pub error: Option<PipelineError>,
}

/// The detect stage. Offline, every N-th frame is detected in order before it moves on, so
/// results do not depend on timing. Live, detection runs in a worker on a copy of the frame
/// and its result joins whichever frame is passing when it is ready: no frame waits for the
/// detector, and it runs every N frames or as often as it can keep up.
pub(super) fn run(
    config: &PipelineConfig,
    input: &Receiver<Frame>,
    output: &Sender<Located>,
) -> DetectEnd {
    let mut detect_ms = Histogram::default();
    let result = match config.mode {
        Mode::Offline => detect_in_order(config, input, output, &mut detect_ms),
        Mode::Live { .. } => detect_beside(config, input, output, &mut detect_ms),
    };
    DetectEnd {
        detect_ms,
        dropped_before: input.dropped(),
        error: result.err(),
    }
}

fn detect_in_order(
    config: &PipelineConfig,
    input: &Receiver<Frame>,
    output: &Sender<Located>,
    detect_ms: &mut Histogram,
) -> Result<(), PipelineError> {
    let every = u64::from(config.detect_every.max(1));
    // rustface's detector is not Send: it is created in the thread that uses it.
    let mut detector = FaceDetector::new(config.detector)?;
    while let Some(frame) = input.recv() {
        let detections = if frame.index % every == 0 {
            let t = Instant::now();
            let found = detector.detect(&frame.image)?;
            detect_ms.record(ms(t.elapsed()));
            Some((frame.index, found))
        } else {
            None
        };
        if output.send(Located { frame, detections }).is_err() {
            break;
        }
    }
    Ok(())
}

fn detect_beside(
    config: &PipelineConfig,
    input: &Receiver<Frame>,
    output: &Sender<Located>,
    detect_ms: &mut Histogram,
) -> Result<(), PipelineError> {
    let every = u64::from(config.detect_every.max(1));
    let (request_tx, request_rx) = handoff::<(u64, RgbImage)>(Policy::KeepLatest);
    let (found_tx, found_rx) = mpsc::channel::<Result<Found, DetectError>>();
    let detector_config = config.detector;
    let worker = spawn_stage("detector", move || {
        let mut detector = match FaceDetector::new(detector_config) {
            Ok(detector) => detector,
            Err(e) => {
                let _ = found_tx.send(Err(e));
                return;
            }
        };
        while let Some((index, image)) = request_rx.recv() {
            let t = Instant::now();
            let found = detector.detect(&image);
            let failed = found.is_err();
            let sent = found_tx.send(found.map(|faces| Found {
                index,
                faces,
                took_ms: ms(t.elapsed()),
            }));
            if sent.is_err() || failed {
                break;
            }
        }
    })?;
    let (mut busy, mut since_request) = (false, every);
    let mut failure = None;
    while let Some(frame) = input.recv() {
        let mut detections = None;
        match found_rx.try_recv() {
            Ok(Ok(found)) => {
                detect_ms.record(found.took_ms);
                detections = Some((found.index, found.faces));
                busy = false;
            }
            Ok(Err(e)) => {
                failure = Some(e);
                break;
            }
            Err(_) => {}
        }
        if !busy && since_request >= every {
            busy = request_tx.send((frame.index, frame.image.clone())).is_ok();
            since_request = 0;
        }
        since_request += 1;
        if output.send(Located { frame, detections }).is_err() {
            break;
        }
    }
    drop(request_tx);
    worker.join()?;
    failure.map_or(Ok(()), |e| Err(e.into()))
}

/// What the live detector worker found on one frame.
struct Found {
    index: u64,
    faces: Vec<Detection>,
    took_ms: f64,
}
