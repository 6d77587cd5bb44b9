//! The live and offline pipelines: one thread per stage, joined by hand-overs, data flowing
//! one way. Each stage has its file; this one wires them together.
//!
//! ```text
//! capture ──► detect ──► analyse (track, model, smooth) ──► present (draw, show, log) ──► record
//! ```
//!
//! Live runs join the stages with keep-latest hand-overs (a busy stage makes the one before it
//! drop frames, counted, instead of queueing them), and play files at their own pace. Offline
//! runs (`annotate`) use blocking hand-overs and read as fast as the stages go, so every
//! frame is annotated. Timestamps come from capture, so recordings play at capture speed.

mod analyse;
mod capture;
mod detect;
pub mod handoff;
mod present;
mod record;
pub mod stats;

use crate::capture::{CaptureConfig, CaptureError, Frame, Source};
use crate::detect::{DetectorConfig, DetectorKind};
use crate::model::{AffectModel, Precision};
use crate::record::{FaceLog, Mp4Recorder, RecordError, RecorderConfig, RecordingSummary};
use crate::render::WindowError;
use crate::smooth::SmoothingConfig;
use crate::track::TrackerConfig;
use analyse::Analysed;
use candle_core::Device;
use detect::Located;
use handoff::{handoff, Policy};
use present::Presenter;
use record::RecorderMessage;
use stats::RunStats;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Run the detector on every N-th frame unless told otherwise; tracking carries faces between.
/// YuNet at the default width keeps `annotate` at ~87 fps with 1–3 faces on 2 cores detecting
/// every frame (`cargo bench --bench pipeline`; at 480 px ~59 fps, at 640 px ~44 fps).
pub const DEFAULT_DETECT_EVERY: u32 = 1;
/// Faces classified per frame at most unless told otherwise: what keeps 3 faces above 60 fps
/// in `annotate` on 2 cores. Every face of three on every frame where the 1×1 convs run on our
/// AVX-512 kernels, bf16 or f32 (on an AMD EPYC Zen 4: 80.6 fps in bf16, 76.0 in f32), one per
/// frame elsewhere (three faces each refreshed every third frame; f32 on gemm measured 54.6 fps
/// there, 33 on an AVX2 EPYC).
pub fn default_classify_per_frame(precision: Precision) -> usize {
    match precision {
        Precision::Bf16 | Precision::Int8 => 3,
        Precision::F32 | Precision::Auto if crate::model::ops::DenseFormat::F32.supported() => 3,
        Precision::F32 | Precision::Auto => 1,
    }
}
/// The detector unless told otherwise.
pub const DEFAULT_DETECTOR: DetectorKind = DetectorKind::Yunet;

/// Width video frames are downscaled to for detection unless told otherwise.
pub fn default_detect_width(kind: DetectorKind) -> u32 {
    match kind {
        // On hamilton_audience.mp4 (640×360, faces 12–81 px) YuNet at 320 px keeps 90 % of
        // the faces it finds at full width (1197 of 1335 over 300 frames; 480 px: 1210, 240 px:
        // 1014) for a quarter of the cost (3.6 against 14.0 ms per frame on 2 threads), and is
        // the width that keeps every-frame detection above 60 fps (examples/detect_widths.rs).
        DetectorKind::Yunet => 320,
        // Less than for photos: 240 px still finds faces from ~55 px at 640×480 and costs
        // about two thirds of detection at 320.
        DetectorKind::Seeta => 240,
    }
}

/// Errors that end a run (after any recording has been finalised).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source could not be opened or failed while reading.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The window could not be opened or updated.
    #[error(transparent)]
    Window(#[from] WindowError),
    /// The recording could not be written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The face detector could not be created or failed on a frame.
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    /// The model failed on a batch of faces.
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),
    /// A results file (face log, snapshot) could not be written.
    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },
    /// A pipeline thread panicked (a bug).
    #[error("internal error: the {0} thread stopped unexpectedly")]
    Thread(&'static str),
    /// The recording would replace the file being read.
    #[error("the output would overwrite the input {}", .0.display())]
    OverwritesSource(PathBuf),
    /// The operating system refused a new thread.
    #[error("cannot start the {stage} thread: {reason}")]
    Spawn { stage: &'static str, reason: String },
}

/// How frames are consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real-time: drop frames rather than fall behind; show a window unless headless.
    Live { window: bool },
    /// Every frame, as fast as possible (annotate).
    Offline,
}

/// Everything a run needs besides the model.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub source: Source,
    pub capture: CaptureConfig,
    pub mode: Mode,
    pub detector: DetectorConfig,
    /// Run the detector on every N-th frame; tracking carries faces in between.
    pub detect_every: u32,
    /// Faces classified per frame at most, the longest-waiting first (new faces always);
    /// the others keep their smoothed result until their turn.
    pub classify_per_frame: usize,
    /// Threads the model may use. One is the default: the stages already run in parallel,
    /// and a multi-threaded model on a busy 2-core machine stalls at every parallel step
    /// waiting for a descheduled worker (profiled: ~17 CPU-ms per face against ~10 alone).
    pub model_threads: usize,
    pub tracker: TrackerConfig,
    pub smoothing: SmoothingConfig,
    /// Recording to write (live: started at once; offline: the output).
    pub record: Option<PathBuf>,
    pub recorder: RecorderConfig,
    /// Per-face results, JSONL or CSV.
    pub face_log: Option<PathBuf>,
    /// Where `s` in the window saves snapshots.
    pub snapshot_dir: PathBuf,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// Show a progress bar (offline runs on a terminal).
    pub progress: bool,
    /// Log a status line (fps, latency, memory, threads, files) this often.
    pub report_every: Option<Duration>,
}

impl PipelineConfig {
    pub fn new(source: Source, mode: Mode) -> Self {
        Self {
            source,
            capture: CaptureConfig::default(),
            mode,
            detector: DetectorConfig {
                max_width: default_detect_width(DEFAULT_DETECTOR),
                ..DetectorConfig::for_photos(DEFAULT_DETECTOR)
            },
            detect_every: DEFAULT_DETECT_EVERY,
            classify_per_frame: default_classify_per_frame(Precision::F32),
            model_threads: 1,
            tracker: TrackerConfig::default(),
            smoothing: SmoothingConfig::default(),
            record: None,
            recorder: RecorderConfig::default(),
            face_log: None,
            snapshot_dir: PathBuf::from("."),
            max_frames: None,
            progress: false,
            report_every: None,
        }
    }

    fn policy(&self) -> Policy {
        match self.mode {
            Mode::Live { .. } => Policy::KeepLatest,
            // Room for a few frames evens out the detect stage's bursts.
            Mode::Offline => Policy::Block(4),
        }
    }
}

/// What a run produced. `error` is set when it ended early; everything was still finalised.
#[derive(Debug)]
pub struct RunOutcome {
    pub stats: RunStats,
    pub recordings: Vec<RecordingSummary>,
    pub error: Option<PipelineError>,
}

/// A running stage thread; joining it gives what the stage reports when it ends.
struct Stage<T> {
    name: &'static str,
    handle: thread::JoinHandle<T>,
}

/// Starts `body` on a thread named `name`.
fn spawn_stage<T: Send + 'static>(
    name: &'static str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<Stage<T>, PipelineError> {
    let handle = thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|e| PipelineError::Spawn {
            stage: name,
            reason: e.to_string(),
        })?;
    Ok(Stage { name, handle })
}

impl<T> Stage<T> {
    /// Waits for the stage to end; a panic in it becomes [`PipelineError::Thread`].
    fn join(self) -> Result<T, PipelineError> {
        self.handle
            .join()
            .map_err(|_| PipelineError::Thread(self.name))
    }
}

/// Runs the pipeline until the source ends, `stop` is set, or the user quits the window.
pub fn run(
    config: &PipelineConfig,
    model: AffectModel,
    device: Device,
    stop: Arc<AtomicBool>,
) -> Result<RunOutcome, PipelineError> {
    if config.mode == (Mode::Live { window: true }) {
        crate::render::window::check_display()?;
    }
    if let (Source::Path(input), Some(output)) = (&config.source, &config.record) {
        let same_file = output.exists()
            && std::fs::canonicalize(output).ok() == std::fs::canonicalize(input).ok();
        if same_file {
            return Err(PipelineError::OverwritesSource(input.clone()));
        }
    }
    let started = Instant::now();
    let policy = config.policy();
    let (frames_tx, frames_rx) = handoff::<Frame>(policy);
    let (opened_tx, opened_rx) = mpsc::channel();
    let capture = {
        let (source, capture_config, stop) = (config.source.clone(), config.capture, stop.clone());
        let pace = matches!(config.mode, Mode::Live { .. });
        let max_frames = config.max_frames;
        spawn_stage("capture", move || {
            capture::run(
                &source,
                &capture_config,
                pace,
                max_frames,
                &stop,
                &opened_tx,
                &frames_tx,
            )
        })?
    };
    let opened = match opened_rx.recv() {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            let _ = capture.join();
            return Err(e.into());
        }
        Err(_) => return Err(PipelineError::Thread("capture")),
    };
    log::info!("source: {}", opened.describe);

    // Outputs are created before any work so a bad path fails at once.
    let face_log = match &config.face_log {
        Some(path) => Some(FaceLog::create(path).map_err(|e| output_error(path, e))?),
        None => None,
    };
    let (record_tx, record_rx) = handoff::<RecorderMessage>(Policy::Block(4));
    let first_recording = match &config.record {
        Some(path) => Some(Mp4Recorder::create(path, config.recorder)?),
        None => None,
    };
    let recording = first_recording.is_some();
    let recorder = {
        let recorder_config = config.recorder;
        spawn_stage("record", move || {
            record::run(first_recording, recorder_config, &record_rx)
        })?
    };
    let (located_tx, located_rx) = handoff::<Located>(policy);
    let detect = {
        let config = config.clone();
        spawn_stage("detect", move || {
            detect::run(&config, &frames_rx, &located_tx)
        })?
    };
    let (analysed_tx, analysed_rx) = handoff::<Analysed>(policy);
    let analysis = {
        let config = config.clone();
        spawn_stage("analyse", move || {
            analyse::run(&config, &model, &device, &located_rx, &analysed_tx)
        })?
    };

    let presenter = Presenter::new(config, face_log, record_tx, recording, opened.frame_count);
    let presented = presenter.run(analysed_rx, &stop);
    let capture_end = capture.join()?;
    let detect_end = detect.join()?;
    let analysis_end = analysis.join()?;
    let recorder_end = recorder.join()?;
    let error = presented
        .error
        .or(recorder_end.error.map(PipelineError::from))
        .or(analysis_end.error)
        .or(detect_end.error)
        .or(capture_end.error.map(PipelineError::from));
    let recorded_frames: u64 = recorder_end.recordings.iter().map(|r| r.frames).sum();
    let wall_s = started.elapsed().as_secs_f64();
    let stats = RunStats {
        source: opened.describe,
        frames_in: capture_end.frames,
        frames_analysed: analysis_end.frames,
        frames_shown: presented.shown,
        frames_dropped: detect_end.dropped_before
            + analysis_end.dropped_before
            + presented.dropped_before,
        frames_recorded: recorded_frames,
        wall_s,
        fps: presented.shown as f64 / wall_s.max(1e-9),
        latency_ms: presented.latency.summary(),
        detect_ms: detect_end.detect_ms.summary(),
        model_ms: analysis_end.model_ms.summary(),
        render_ms: presented.render_ms.summary(),
        faces: presented.faces,
        tracks: analysis_end.tracks,
        notices: capture_end.notices,
    };
    Ok(RunOutcome {
        stats,
        recordings: recorder_end.recordings,
        error,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn output_error(path: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}
