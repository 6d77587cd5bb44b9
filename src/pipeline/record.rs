//! The record stage: encodes frames into the current recording, which the presenter starts and
//! stops; whatever is open is finished at the end, also after an error, so files stay playable.

use super::handoff::Receiver;
use crate::record::{Mp4Recorder, RecordError, RecorderConfig, RecordingSummary};
use image::RgbImage;
use std::path::PathBuf;
use std::time::Duration;

/// What the presenter sends the recorder.
pub(super) enum RecorderMessage {
    Start(PathBuf),
    Frame(RgbImage, Duration),
    Stop,
}

/// What the stage reports when it ends.
pub(super) struct RecorderEnd {
    pub recordings: Vec<RecordingSummary>,
    pub error: Option<RecordError>,
}

pub(super) fn run(
    first: Option<Mp4Recorder>,
    config: RecorderConfig,
    input: &Receiver<RecorderMessage>,
) -> RecorderEnd {
    let mut current = first;
    let mut recordings = Vec::new();
    let mut error = None;
    let mut finish =
        |recorder: Mp4Recorder, error: &mut Option<RecordError>| match recorder.finish() {
            Ok(summary) if summary.frames == 0 => {
                log::info!("nothing was recorded; {} not kept", summary.path.display());
            }
            Ok(summary) => {
                log::info!(
                    "recording saved: {} ({} frames, {:.1} s)",
                    summary.path.display(),
                    summary.frames,
                    summary.duration.as_secs_f64()
                );
                recordings.push(summary);
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        };
    while let Some(message) = input.recv() {
        match message {
            RecorderMessage::Start(path) => {
                if let Some(old) = current.take() {
                    finish(old, &mut error);
                }
                match Mp4Recorder::create(&path, config) {
                    Ok(r) => current = Some(r),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            RecorderMessage::Stop => {
                if let Some(old) = current.take() {
                    finish(old, &mut error);
                }
            }
            RecorderMessage::Frame(image, timestamp) => {
                if let Some(recorder) = current.as_mut() {
                    if let Err(e) = recorder.write(&image, timestamp) {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
    }
    // Finalise whatever is open, also after an error, so the file stays playable.
    if let Some(recorder) = current.take() {
        finish(recorder, &mut error);
    }
    RecorderEnd { recordings, error }
}
