//! The present stage, on the main thread: draws each frame's annotations, shows it, logs its
//! faces, acts on the window's keys, and passes the frame to the recorder while recording.

use super::analyse::Analysed;
use super::handoff::{Received, Receiver, Sender};
use super::record::RecorderMessage;
use super::stats::{Histogram, ProcessUsage};
use super::{ms, output_error, Mode, PipelineConfig, PipelineError};
use crate::record::FaceLog;
use crate::render::{Overlay, PreviewWindow, Readout, WindowEvent};
use image::RgbImage;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// The main thread's stage (see the module doc).
pub(super) struct Presenter<'a> {
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
    /// Latency since the last status line, and when that was.
    interval_latency: Histogram,
    interval_start: Instant,
    interval_shown: u64,
}

/// What the presenter reports once the run is over.
pub(super) struct Presented {
    pub shown: u64,
    pub faces: u64,
    pub latency: Histogram,
    pub render_ms: Histogram,
    /// Frames replaced in the hand-over before this stage took them.
    pub dropped_before: u64,
    /// What ended the run early (a window, face-log or recorder failure), if anything.
    pub error: Option<PipelineError>,
}

impl<'a> Presenter<'a> {
    /// `recording`: whether a recording was already started (by `--record`).
    pub fn new(
        config: &'a PipelineConfig,
        face_log: Option<FaceLog>,
        recorder: Sender<RecorderMessage>,
        recording: bool,
        frame_count: Option<u64>,
    ) -> Self {
        Self {
            config,
            overlay: Overlay::new(),
            window: None,
            face_log,
            recorder,
            recording,
            recorded: recording,
            progress: config.progress.then(|| {
                crate::progress::counting_bar(
                    frame_count.unwrap_or(0) as usize,
                    "annotate",
                    "frames",
                )
            }),
            latency: Histogram::default(),
            render_ms: Histogram::default(),
            recent: VecDeque::new(),
            shown: 0,
            faces: 0,
            interval_latency: Histogram::default(),
            interval_start: Instant::now(),
            interval_shown: 0,
        }
    }

    /// Every `report_every`: one line on the last interval, for long runs (soak tests, kiosks).
    fn report_status(&mut self) {
        let Some(every) = self.config.report_every else {
            return;
        };
        let elapsed = self.interval_start.elapsed();
        if elapsed < every {
            return;
        }
        let l = self.interval_latency.summary();
        let usage = ProcessUsage::now().map_or(String::new(), |u| {
            format!(
                ", rss {:.1} MB, {} threads, {} open files",
                u.rss_mb, u.threads, u.open_files
            )
        });
        log::info!(
            "status: {} frames shown, {:.1} fps, latency p50 {:.1} ms p95 {:.1} ms{usage}",
            self.shown,
            self.interval_shown as f64 / elapsed.as_secs_f64(),
            l.p50,
            l.p95
        );
        self.interval_latency = Histogram::default();
        self.interval_start = Instant::now();
        self.interval_shown = 0;
    }

    /// Presents frames until the stream ends, `stop` is set or the user quits, then raises
    /// `stop` (which tells the other stages to end) and closes this stage's outputs.
    pub fn run(mut self, input: Receiver<Analysed>, stop: &AtomicBool) -> Presented {
        let error = loop {
            if stop.load(Ordering::Relaxed) {
                break None;
            }
            // Wake at least every 50 ms to notice Ctrl-C and keep the window responsive when
            // frames stall (a camera hiccup, a slow first frame).
            let flow = match input.recv_timeout(Duration::from_millis(50)) {
                Received::Item(analysed) => self.present(analysed),
                Received::Closed => Ok(Flow::Quit),
                Received::TimedOut => Ok(self.idle()),
            };
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Quit) => break None,
                Err(e) => break Some(e),
            }
        };
        // Capture may be waiting for its next frame's time: `stop` ends it; closing our end of
        // the hand-over ends the stages in between.
        stop.store(true, Ordering::Relaxed);
        let dropped_before = input.dropped();
        drop(input);
        self.finish(dropped_before, error)
    }

    fn present(&mut self, analysed: Analysed) -> Result<Flow, PipelineError> {
        let Analysed { frame, faces } = analysed;
        let start = Instant::now();
        let mut image = frame.image;
        // REC tells the person at the window; drawn into a file (annotate, headless) it only
        // clutters the video.
        let in_window = self.config.mode == (Mode::Live { window: true });
        let readout = readout_of(&self.recent, self.recording && in_window);
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
        self.interval_latency.record(latency);
        self.interval_shown += 1;
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
        self.report_status();
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
                WindowEvent::ToggleLandmarks => {
                    self.overlay.show_landmarks = !self.overlay.show_landmarks;
                }
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
            Ok(()) => log::info!("snapshot saved: {}", path.display()),
            Err(e) => log::warn!("cannot save snapshot {}: {e}", path.display()),
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
            log::info!("recording to {}", path.display());
            RecorderMessage::Start(path)
        };
        self.recording = !self.recording;
        match self.recorder.send(message) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Quit,
        }
    }

    /// Closes the window, the face log and the recorder's queue (which finishes the file).
    fn finish(self, dropped_before: u64, error: Option<PipelineError>) -> Presented {
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
            dropped_before,
            error: error.or(face_log_error),
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
