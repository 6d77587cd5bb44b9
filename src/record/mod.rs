//! The last pipeline stage: annotated video (H.264 MP4) and per-face results (JSONL/CSV).

pub mod facelog;
pub mod fmp4;
pub mod mp4;

pub use self::mp4::{Mp4Recorder, RecordError, RecorderConfig, RecordingSummary, DEFAULT_QP};
pub use facelog::FaceLog;
