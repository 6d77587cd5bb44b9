//! affectcam: real-time facial-affect recognition (8 emotions plus valence/arousal).
//!
//! Pipeline stages, data flowing one way: capture → detect → track → model → render → record;
//! `data`, `train` and `eval` sit beside them on the same `model`.

pub mod bench;
pub mod cli;
pub mod data;
pub mod detect;
pub mod eval;
pub mod model;
pub mod progress;
pub mod report;
pub mod train;
