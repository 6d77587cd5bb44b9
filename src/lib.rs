//! affectcam: real-time facial-affect recognition (8 emotions plus valence/arousal).
//!
//! Pipeline stages, data flowing one way: capture → detect → track → model → smooth → render
//! → record, run as threads by `pipeline`; `data`, `train` and `eval` sit beside them on the
//! same `model`.

pub mod bench;
pub mod capture;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod detect;
pub mod eval;
pub mod geometry;
pub mod model;
pub mod picture;
pub mod pipeline;
pub mod predict;
pub mod progress;
pub mod record;
pub mod render;
pub mod report;
pub mod run_error;
pub mod selftest;
pub mod smooth;
pub mod track;
pub mod train;

/// DejaVu Sans (Debian fonts-dejavu-core; licence in assets/), for plots and the overlay.
pub static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
