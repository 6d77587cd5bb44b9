//! The live and offline pipelines: threads joined by hand-overs, data flowing one way.
//!
//! ```text
//! capture ──► analyse (detect every N frames, track, model, smooth) ──► render/show ──► record
//! ```
//!
//! Live runs join the stages with keep-latest hand-overs (a busy stage makes the one before it
//! drop frames, counted, instead of queueing them), and play files at their own pace. Offline
//! runs (`annotate`) use blocking hand-overs and read as fast as the stages go, so every
//! frame is annotated. Timestamps come from capture, so recordings play at capture speed.

pub mod handoff;
pub mod stats;

use crate::capture::{self, CaptureConfig, CaptureError, Frame, Source};
use crate::detect::{Detection, DetectorConfig, FaceDetector};
use crate::model::preprocess::FaceBox;
use crate::model::AffectModel;
use crate::record::{FaceLog, Mp4Recorder, RecordError, RecorderConfig, RecordingSummary};
use crate::render::{Overlay, PreviewWindow, Readout, WindowError, WindowEvent};
use crate::smooth::{FaceResult, Smoother, SmoothingConfig};
use crate::track::{Tracker, TrackerConfig};
use candle_core::Device;
use handoff::{handoff, Policy, Received, Receiver, Sender};
use image::RgbImage;
use stats::{Histogram, RunStats};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

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
    /// The model failed on a batch of faces.
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),
    /// A results file (face log, snapshot) could not be written.
    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },
    /// A pipeline thread panicked (a bug).
    #[error("internal error: the {0} thread stopped unexpectedly")]
    Thread(&'static str),
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
}

impl PipelineConfig {
    pub fn new(source: Source, mode: Mode) -> Self {
        Self {
            source,
            capture: CaptureConfig::default(),
            mode,
            // Webcam faces are large; 240 px wide still finds faces from ~55 px at 640×480
            // and costs about two thirds of detection at 320.
            detector: DetectorConfig {
                max_width: 240,
                ..DetectorConfig::default()
            },
            detect_every: 4,
            classify_per_frame: 1,
            model_threads: 1,
            tracker: TrackerConfig::default(),
            smoothing: SmoothingConfig::default(),
            record: None,
            recorder: RecorderConfig::default(),
            face_log: None,
            snapshot_dir: PathBuf::from("."),
            max_frames: None,
            progress: false,
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

/// Frame facts the capture thread reports once the source is open.
struct Opened {
    describe: String,
    frame_count: Option<u64>,
}

struct CaptureEnd {
    frames: u64,
    notices: Vec<String>,
    error: Option<CaptureError>,
}

/// A frame with its faces, from the analysis thread.
struct Analysed {
    frame: Frame,
    faces: Vec<FaceResult>,
}

struct AnalysisEnd {
    frames: u64,
    tracks: u64,
    model_ms: Histogram,
    dropped_before: u64,
    error: Option<PipelineError>,
}

enum RecorderMessage {
    Start(PathBuf),
    Frame(RgbImage, Duration),
    Stop,
}

struct RecorderEnd {
    recordings: Vec<RecordingSummary>,
    error: Option<RecordError>,
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
    let started = Instant::now();
    let policy = config.policy();
    let (frames_tx, frames_rx) = handoff::<Frame>(policy);
    let (opened_tx, opened_rx) = mpsc::channel();
    let capture = {
        let (source, capture_config, stop) = (config.source.clone(), config.capture, stop.clone());
        let pace = matches!(config.mode, Mode::Live { .. });
        let max_frames = config.max_frames;
        thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                capture_thread(
                    &source,
                    &capture_config,
                    pace,
                    max_frames,
                    &stop,
                    &opened_tx,
                    &frames_tx,
                )
            })
            .expect("spawn capture thread")
    };
    let opened = match opened_rx.recv() {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            let _ = capture.join();
            return Err(e.into());
        }
        Err(_) => return Err(PipelineError::Thread("capture")),
    };
    eprintln!("source: {}", opened.describe);

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
        thread::Builder::new()
            .name("record".into())
            .spawn(move || recorder_thread(first_recording, recorder_config, &record_rx))
            .expect("spawn record thread")
    };

    let (located_tx, located_rx) = handoff::<Located>(policy);
    let detect = {
        let config = config.clone();
        thread::Builder::new()
            .name("detect".into())
            .spawn(move || detect_thread(&config, &frames_rx, &located_tx))
            .expect("spawn detect thread")
    };
    let (analysed_tx, analysed_rx) = handoff::<Analysed>(policy);
    let analysis = {
        let config = config.clone();
        thread::Builder::new()
            .name("analyse".into())
            .spawn(move || analysis_thread(&config, &model, &device, &located_rx, &analysed_tx))
            .expect("spawn analysis thread")
    };

    let mut presenter = Presenter {
        config,
        overlay: Overlay::new(),
        window: None,
        face_log,
        recorder: record_tx,
        recording,
        recorded: recording,
        progress: config.progress.then(|| {
            crate::progress::counting_bar(
                opened.frame_count.unwrap_or(0) as usize,
                "annotate",
                "frames",
            )
        }),
        latency: Histogram::default(),
        render_ms: Histogram::default(),
        recent: VecDeque::new(),
        shown: 0,
        faces: 0,
    };
    let mut error = loop {
        if stop.load(Ordering::Relaxed) {
            break None;
        }
        // Wake at least every 50 ms to notice Ctrl-C and keep the window responsive when
        // frames stall (a camera hiccup, a slow first frame).
        let flow = match analysed_rx.recv_timeout(Duration::from_millis(50)) {
            Received::Item(analysed) => presenter.present(analysed),
            Received::Closed => Ok(Flow::Quit),
            Received::TimedOut => Ok(presenter.idle()),
        };
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break None,
            Err(e) => break Some(e),
        }
    };
    // Closing our ends and raising `stop` tell the other stages to stop (capture may be waiting
    // for its next frame's time); then collect what they report.
    stop.store(true, Ordering::Relaxed);
    let dropped_before_render = analysed_rx.dropped();
    drop(analysed_rx);
    let presented = presenter.finish();
    let capture_end = capture
        .join()
        .map_err(|_| PipelineError::Thread("capture"))?;
    let detect_end = detect.join().map_err(|_| PipelineError::Thread("detect"))?;
    let analysis_end = analysis
        .join()
        .map_err(|_| PipelineError::Thread("analyse"))?;
    let recorder_end = recorder
        .join()
        .map_err(|_| PipelineError::Thread("record"))?;
    if let Some(e) = presented.face_log_error {
        error.get_or_insert(e);
    }
    let error = error
        .or(recorder_end.error.map(PipelineError::from))
        .or(analysis_end.error)
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
            + dropped_before_render,
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

/// `DIR/affectcam-<what>-<unix seconds>-<frame>.EXT`: unique within a run and across runs.
fn output_path(dir: &Path, what: &str, frame: u64, ext: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    dir.join(format!("affectcam-{what}-{secs}-{frame:06}.{ext}"))
}

/// Whether the run goes on after a frame.
enum Flow {
    Continue,
    Quit,
}

/// The main thread's stage: draws each frame's annotations, shows it, logs its faces, acts on
/// the window's keys, and passes the frame to the recorder while recording.
struct Presenter<'a> {
    config: &'a PipelineConfig,
    overlay: Overlay,
    window: Option<PreviewWindow>,
    face_log: Option<FaceLog>,
    recorder: Sender<RecorderMessage>,
    recording: bool,
    /// Whether a recording was started in this run (then --record's name is used up).
    recorded: bool,
    progress: Option<indicatif::ProgressBar>,
    latency: Histogram,
    render_ms: Histogram,
    /// (shown at, latency ms) of the last second's frames, for the readout.
    recent: VecDeque<(Instant, f64)>,
    shown: u64,
    faces: u64,
}

/// What the presenter reports once the run is over.
struct Presented {
    shown: u64,
    faces: u64,
    latency: Histogram,
    render_ms: Histogram,
    face_log_error: Option<PipelineError>,
}

impl Presenter<'_> {
    fn present(&mut self, analysed: Analysed) -> Result<Flow, PipelineError> {
        let Analysed { frame, faces } = analysed;
        let start = Instant::now();
        let mut image = frame.image;
        let readout = readout_of(&self.recent, self.recording);
        self.overlay.draw(&mut image, &faces, Some(&readout));
        self.render_ms.record(ms(start.elapsed()));

        let events = match self.config.mode {
            Mode::Live { window: true } => {
                if self.window.is_none() {
                    let (w, h) = image.dimensions();
                    self.window = Some(PreviewWindow::open("affectcam", w, h)?);
                }
                self.window.as_mut().expect("opened above").show(&image)?
            }
            _ => Vec::new(),
        };
        let now = Instant::now();
        let latency = ms(now.duration_since(frame.captured));
        self.latency.record(latency);
        self.recent.push_back((now, latency));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        self.shown += 1;
        self.faces += faces.len() as u64;
        if let Some(bar) = &self.progress {
            bar.inc(1);
        }
        if let Some(log) = self.face_log.as_mut() {
            log.write(frame.index, frame.timestamp, &faces)
                .map_err(|e| output_error(log.path(), e))?;
        }
        let mut flow = Flow::Continue;
        for event in events {
            match event {
                WindowEvent::Quit => flow = Flow::Quit,
                WindowEvent::Snapshot => self.snapshot(&image, frame.index),
                WindowEvent::ToggleRecording => flow = self.toggle_recording(frame.index),
            }
        }
        let message = RecorderMessage::Frame(image, frame.timestamp);
        if self.recording && self.recorder.send(message).is_err() {
            return Ok(Flow::Quit); // the recorder failed; its error is collected at the end
        }
        Ok(flow)
    }

    /// No frame came in time: keep the window alive; only quitting is acted on (snapshots
    /// and recording need a frame).
    fn idle(&mut self) -> Flow {
        let events = self.window.as_mut().map(|w| w.poll()).unwrap_or_default();
        if events.contains(&WindowEvent::Quit) {
            Flow::Quit
        } else {
            Flow::Continue
        }
    }

    fn snapshot(&self, image: &RgbImage, index: u64) {
        let path = output_path(&self.config.snapshot_dir, "snapshot", index, "png");
        match image.save(&path) {
            Ok(()) => eprintln!("snapshot saved: {}", path.display()),
            Err(e) => eprintln!("warning: cannot save snapshot {}: {e}", path.display()),
        }
    }

    fn toggle_recording(&mut self, index: u64) -> Flow {
        let message = if self.recording {
            RecorderMessage::Stop
        } else {
            // --record names the first recording; later ones must not overwrite it.
            let named = self.config.record.as_ref().filter(|_| !self.recorded);
            let path = named.cloned().unwrap_or_else(|| {
                output_path(&self.config.snapshot_dir, "recording", index, "mp4")
            });
            self.recorded = true;
            eprintln!("recording to {}", path.display());
            RecorderMessage::Start(path)
        };
        self.recording = !self.recording;
        match self.recorder.send(message) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Quit,
        }
    }

    /// Closes the window, the face log and the recorder's queue (which finishes the file).
    fn finish(self) -> Presented {
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
        let face_log_error = self.face_log.and_then(|log| {
            let path = log.path().to_path_buf();
            log.finish().err().map(|e| output_error(&path, e))
        });
        Presented {
            shown: self.shown,
            faces: self.faces,
            latency: self.latency,
            render_ms: self.render_ms,
            face_log_error,
        }
    }
}

/// Fps and median latency over the last second, for the corner readout.
fn readout_of(recent: &VecDeque<(Instant, f64)>, recording: bool) -> Readout {
    let mut latencies: Vec<f64> = recent.iter().map(|(_, l)| *l).collect();
    latencies.sort_by(f64::total_cmp);
    let fps = match (recent.front(), recent.back()) {
        (Some((first, _)), Some((last, _))) if recent.len() > 1 => {
            (recent.len() - 1) as f64 / last.duration_since(*first).as_secs_f64().max(1e-6)
        }
        _ => 0.0,
    };
    Readout {
        fps,
        latency_ms: latencies.get(latencies.len() / 2).copied().unwrap_or(0.0),
        recording,
    }
}

fn capture_thread(
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

/// A frame with, when the detector ran, the faces it found and the index of the frame it ran
/// on (this one offline; a recent one live).
struct Located {
    frame: Frame,
    detections: Option<(u64, Vec<Detection>)>,
}

struct DetectEnd {
    detect_ms: Histogram,
    dropped_before: u64,
}

/// The detect stage. Offline, every N-th frame is detected in order before it moves on, so
/// results do not depend on timing. Live, detection runs in a worker on a copy of the frame
/// and its result joins whichever frame is passing when it is ready: no frame waits for the
/// detector, and it runs every N frames or as often as it can keep up.
fn detect_thread(
    config: &PipelineConfig,
    input: &Receiver<Frame>,
    output: &Sender<Located>,
) -> DetectEnd {
    let every = u64::from(config.detect_every.max(1));
    let mut detect_ms = Histogram::default();
    if config.mode == Mode::Offline {
        // rustface's detector is not Send: it is created in the thread that uses it.
        let mut detector = FaceDetector::new(config.detector);
        while let Some(frame) = input.recv() {
            let detections = (frame.index % every == 0).then(|| {
                let t = Instant::now();
                let found = detector.detect(&frame.image);
                detect_ms.record(ms(t.elapsed()));
                (frame.index, found)
            });
            if output.send(Located { frame, detections }).is_err() {
                break;
            }
        }
    } else {
        let (request_tx, request_rx) = handoff::<(u64, RgbImage)>(Policy::KeepLatest);
        let (found_tx, found_rx) = mpsc::channel::<(u64, Vec<Detection>, f64)>();
        let detector_config = config.detector;
        let worker = thread::Builder::new()
            .name("detector".into())
            .spawn(move || {
                let mut detector = FaceDetector::new(detector_config);
                while let Some((index, image)) = request_rx.recv() {
                    let t = Instant::now();
                    let found = detector.detect(&image);
                    if found_tx.send((index, found, ms(t.elapsed()))).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn detector thread");
        let (mut busy, mut since_request) = (false, every);
        while let Some(frame) = input.recv() {
            let mut detections = None;
            if let Ok((index, found, took)) = found_rx.try_recv() {
                detect_ms.record(took);
                detections = Some((index, found));
                busy = false;
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
        let _ = worker.join();
    }
    DetectEnd {
        detect_ms,
        dropped_before: input.dropped(),
    }
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
            // Tracks only end here, so per-face state is pruned here too.
            self.tracker.update(detections, *detected_on);
            let tracks = self.tracker.tracks();
            let alive = |id: u64| tracks.iter().any(|track| track.id == id);
            self.smoother.retain(alive);
            self.classified_at.retain(|id, _| alive(*id));
        }
        // New faces, and known faces in turn (longest-waiting first), go through the model as
        // one batch; the others keep their smoothed result, moved to the tracked box.
        let tracks = self.tracker.tracks();
        let boxes: Vec<FaceBox> = tracks
            .iter()
            .map(|t| self.tracker.face_at(t, frame.index))
            .collect();
        let mut order: Vec<(Option<u64>, usize)> = tracks
            .iter()
            .enumerate()
            .map(|(i, t)| (self.classified_at.get(&t.id).copied(), i))
            .collect();
        order.sort();
        let new_faces = order.iter().take_while(|(at, _)| at.is_none()).count();
        let pending: Vec<usize> = order
            .iter()
            .take(new_faces.max(self.classify_per_frame))
            .map(|&(_, i)| i)
            .collect();
        let mut results: Vec<Option<FaceResult>> = tracks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if pending.contains(&i) {
                    None
                } else {
                    self.smoother.current(t.id, boxes[i])
                }
            })
            .collect();
        if !pending.is_empty() {
            let t = Instant::now();
            let pre = self.model.meta.preprocess;
            let inputs: Vec<Vec<f32>> = pending
                .iter()
                .map(|&i| pre.to_input(&pre.crop_face(&frame.image, boxes[i])))
                .collect();
            let batch = pre.batch(&inputs, self.device)?;
            let model = self.model;
            let predictions = match &self.model_pool {
                Some(pool) => pool.install(|| model.predict(&batch))?,
                None => model.predict(&batch)?,
            };
            self.model_ms.record(ms(t.elapsed()));
            for (&i, p) in pending.iter().zip(predictions) {
                self.classified_at.insert(tracks[i].id, frame.index);
                results[i] = Some(self.smoother.update(tracks[i].id, boxes[i], p));
            }
        }
        Ok(results.into_iter().flatten().collect())
    }
}

fn analysis_thread(
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

fn recorder_thread(
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
                eprintln!("nothing was recorded; {} not kept", summary.path.display());
            }
            Ok(summary) => {
                eprintln!(
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
