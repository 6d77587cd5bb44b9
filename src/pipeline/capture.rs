//! The capture stage: opens the source, reports what it is, then reads frames, pacing files
//! played live to their timestamps as a camera would deliver them.

use super::handoff::Sender;
use crate::capture::{self, CaptureConfig, CaptureError, Frame, Source};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Facts about the source, reported once it is open.
pub(super) struct Opened {
    pub describe: String,
    pub frame_count: Option<u64>,
}

/// What the stage reports when it ends.
pub(super) struct CaptureEnd {
    pub frames: u64,
    pub notices: Vec<String>,
    pub error: Option<CaptureError>,
}

pub(super) fn run(
    source: &Source,
    config: &CaptureConfig,
    pace: bool,
    max_frames: Option<u64>,
    stop: &AtomicBool,
    opened_tx: &mpsc::Sender<Result<Opened, CaptureError>>,
    out: &Sender<Frame>,
) -> CaptureEnd {
    let mut source = match capture::open(source, config) {
        Ok(source) => source,
        Err(e) => {
            let _ = opened_tx.send(Err(e));
            return CaptureEnd {
                frames: 0,
                notices: Vec::new(),
                error: None,
            };
        }
    };
    let _ = opened_tx.send(Ok(Opened {
        describe: source.describe(),
        frame_count: source.frame_count(),
    }));
    // Files played live are paced to their timestamps, as a camera would deliver them.
    let pace = pace && !source.is_live();
    let start = Instant::now();
    let mut frames = 0;
    let mut error = None;
    while !stop.load(Ordering::Relaxed) && max_frames.is_none_or(|m| frames < m) {
        let (timestamp, image) = match source.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        // Paced in short naps, so a quit is noticed during long gaps (slow image sources).
        while pace && !stop.load(Ordering::Relaxed) {
            match timestamp.checked_sub(start.elapsed()) {
                Some(wait) if !wait.is_zero() => thread::sleep(wait.min(Duration::from_millis(20))),
                _ => break,
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let frame = Frame {
            index: frames,
            timestamp,
            captured: Instant::now(),
            image,
        };
        frames += 1;
        if out.send(frame).is_err() {
            break;
        }
    }
    CaptureEnd {
        frames,
        notices: source.notices(),
        error,
    }
}
