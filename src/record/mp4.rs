//! Annotated video out: H.264 from OpenH264 in a fragmented MP4 (`fmp4.rs`). The header is
//! written with the first frame; then, about once a second, the encoder is asked for a key
//! frame and the fragment before it is written and synced, so a killed process (a crash, an
//! out-of-memory kill, a power cut) loses at most about a second, and what is on disk always
//! plays. Frames keep their capture timestamps (variable frame rate), so a recording plays at
//! the speed it was captured even when frames were dropped. Memory holds one fragment at most.

use super::fmp4::{FragmentedMp4, TIMESCALE};
use image::RgbImage;
use openh264::encoder::{
    Encoder, EncoderConfig, FrameRate, IntraFramePeriod, QpRange, RateControlMode, UsageType,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::OpenH264API;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fragment is closed at the first key frame after this much video: what a crash can lose.
const FRAGMENT_TICKS: u64 = TIMESCALE as u64;

/// Errors writing a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The output file cannot be created.
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing the MP4 structure or data failed (disk full, file removed...).
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    /// The H.264 encoder failed.
    #[error("H.264 encoder error for {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
    /// Frames must keep the size of the first one.
    #[error("{path}: frame size changed from {first:?} to {now:?} during recording")]
    SizeChanged {
        path: PathBuf,
        first: (u32, u32),
        now: (u32, u32),
    },
}

/// H.264 quantiser of recordings unless told otherwise: visually clean at webcam sizes.
pub const DEFAULT_QP: u8 = 26;

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecorderConfig {
    /// H.264 quantiser, 0–51: lower is better quality and larger files.
    pub qp: u8,
    /// Nominal frame rate, for the encoder's rate control.
    pub fps: f32,
    /// A key frame at least this often, in frames, so players can seek.
    pub keyframe_interval: u32,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            qp: DEFAULT_QP,
            fps: crate::capture::DEFAULT_FPS as f32,
            keyframe_interval: 60,
        }
    }
}

/// An encoded frame waiting for the next one's timestamp, which sets its duration.
struct PendingSample {
    start: u64,
    bytes: Vec<u8>,
    is_sync: bool,
}

/// What was written, once a recording is finished.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingSummary {
    pub path: PathBuf,
    pub frames: u64,
    pub duration: Duration,
    pub bytes: u64,
}

pub struct Mp4Recorder {
    path: PathBuf,
    config: RecorderConfig,
    /// The file, until the header is written with the first frame.
    file: Option<File>,
    mp4: Option<FragmentedMp4>,
    encoder: Option<Encoder>,
    /// Even-sized area of the frame that is encoded (4:2:0 needs even sides).
    size: Option<(u32, u32)>,
    first_size: Option<(u32, u32)>,
    yuv: Option<YUVBuffer>,
    pending: Option<PendingSample>,
    first_timestamp: Option<Duration>,
    frames: u64,
}

fn to_ticks(t: Duration) -> u64 {
    (t.as_nanos() * u128::from(TIMESCALE) / 1_000_000_000) as u64
}

impl Mp4Recorder {
    /// Creates the file now, so a bad path fails before any frame is processed.
    pub fn create(path: &Path, config: RecorderConfig) -> Result<Self, RecordError> {
        let file = File::create(path).map_err(|source| RecordError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            file: Some(file),
            mp4: None,
            encoder: None,
            size: None,
            first_size: None,
            yuv: None,
            pending: None,
            first_timestamp: None,
            frames: 0,
        })
    }

    fn write_error(&self, e: impl std::fmt::Display) -> RecordError {
        RecordError::Write {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn encode_error(&self, e: impl std::fmt::Display) -> RecordError {
        RecordError::Encode {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Encodes one frame shown at `timestamp` (from the start of the stream).
    pub fn write(&mut self, frame: &RgbImage, timestamp: Duration) -> Result<(), RecordError> {
        let dims = frame.dimensions();
        let first = *self.first_size.get_or_insert(dims);
        if dims != first {
            return Err(RecordError::SizeChanged {
                path: self.path.clone(),
                first,
                now: dims,
            });
        }
        let (w, h) = *self.size.get_or_insert((dims.0 & !1, dims.1 & !1));
        if self.encoder.is_none() {
            let config = EncoderConfig::new()
                .max_frame_rate(FrameRate::from_hz(self.config.fps))
                .usage_type(UsageType::CameraVideoRealTime)
                // Constant quality: rate control would need frame skipping, and every frame
                // must reach the file (the frame count is part of the contract).
                .rate_control_mode(RateControlMode::Off)
                .qp(QpRange::new(self.config.qp, self.config.qp))
                .skip_frames(false)
                .intra_frame_period(IntraFramePeriod::from_num_frames(
                    self.config.keyframe_interval,
                ))
                .num_threads(1);
            let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
                .map_err(|e| self.encode_error(e))?;
            self.encoder = Some(encoder);
        }
        let yuv = self
            .yuv
            .get_or_insert_with(|| YUVBuffer::new(w as usize, h as usize));
        if (w, h) == dims {
            yuv.read_rgb8(RgbSliceU8::new(frame.as_raw(), (w as usize, h as usize)));
        } else {
            let even = image::imageops::crop_imm(frame, 0, 0, w, h).to_image();
            yuv.read_rgb8(RgbSliceU8::new(even.as_raw(), (w as usize, h as usize)));
        }
        let first_ts = *self.first_timestamp.get_or_insert(timestamp);
        let start = to_ticks(timestamp.saturating_sub(first_ts));
        let encoder = self.encoder.as_mut().expect("created above");
        // A fragment that has its second of video ends at the next key frame: make this one.
        let fragment_full = self
            .mp4
            .as_ref()
            .is_some_and(|m| m.fragment_span() + start.saturating_sub(m.end()) >= FRAGMENT_TICKS);
        if fragment_full {
            encoder.force_intra_frame();
        }
        let bitstream = encoder.encode(&*yuv).map_err(|e| RecordError::Encode {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        // Annex-B NAL units → parameter sets for the avcC box, the rest length-prefixed.
        let (mut sps, mut pps, mut sample, mut is_sync) = (None, None, Vec::new(), false);
        for layer in (0..bitstream.num_layers()).filter_map(|i| bitstream.layer(i)) {
            for nal in (0..layer.nal_count()).filter_map(|i| layer.nal_unit(i)) {
                let nal = strip_start_code(nal);
                let Some(&header) = nal.first() else { continue };
                match header & 0x1f {
                    7 => sps = Some(nal.to_vec()),
                    8 => pps = Some(nal.to_vec()),
                    kind => {
                        is_sync |= kind == 5;
                        sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                        sample.extend_from_slice(nal);
                    }
                }
            }
        }
        if let Some(file) = self.file.take() {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(self.encode_error("the first frame came without SPS/PPS"));
            };
            let mp4 = FragmentedMp4::start(file, w as u16, h as u16, &sps, &pps)
                .map_err(|e| self.write_error(e))?;
            self.mp4 = Some(mp4);
        }
        if sample.is_empty() {
            return Err(self.encode_error(format!("frame {} produced no data", self.frames)));
        }
        self.finish_pending(start);
        let mp4 = self.mp4.as_mut().expect("started above");
        if is_sync && mp4.fragment_span() >= FRAGMENT_TICKS {
            mp4.write_fragment().map_err(|e| self.write_error(e))?;
        }
        self.pending = Some(PendingSample {
            start,
            bytes: sample,
            is_sync,
        });
        self.frames += 1;
        Ok(())
    }

    /// Moves the held frame into the fragment, now that the next one's start (its end) is
    /// known.
    fn finish_pending(&mut self, next_start: u64) {
        let (Some(pending), Some(mp4)) = (self.pending.take(), self.mp4.as_mut()) else {
            return;
        };
        // At least one tick, so frames with repeated timestamps stay in order; decode times
        // are the running sum, so they never go backwards.
        let duration = next_start.saturating_sub(mp4.end()).max(1);
        mp4.add(&pending.bytes, duration as u32, pending.is_sync);
    }

    /// Writes the last frame's fragment and the total duration into the header. A recording
    /// without frames is removed: an MP4 with no video track only confuses players.
    pub fn finish(mut self) -> Result<RecordingSummary, RecordError> {
        if let Some(pending) = &self.pending {
            // The last frame lasts one nominal frame interval.
            let interval = (f64::from(TIMESCALE) / f64::from(self.config.fps.max(1.0))) as u64;
            self.finish_pending(pending.start + interval);
        }
        let Some(mp4) = self.mp4.take() else {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.path);
            return Ok(RecordingSummary {
                path: self.path,
                frames: 0,
                duration: Duration::ZERO,
                bytes: 0,
            });
        };
        let end = mp4.end();
        mp4.finish().map_err(|e| self.write_error(e))?;
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(RecordingSummary {
            path: self.path,
            frames: self.frames,
            duration: Duration::from_nanos(end * 1_000_000_000 / u64::from(TIMESCALE)),
            bytes,
        })
    }
}

fn strip_start_code(nal: &[u8]) -> &[u8] {
    nal.strip_prefix(&[0, 0, 0, 1])
        .or_else(|| nal.strip_prefix(&[0, 0, 1]))
        .unwrap_or(nal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::video::Mp4Source;
    use crate::capture::FrameSource;
    use image::Rgb;

    fn frame(i: u32) -> RgbImage {
        RgbImage::from_fn(64, 48, |x, y| {
            Rgb([
                (x * 4 + i * 8) as u8,
                (y * 5) as u8,
                if x > 32 { 200 } else { 40 },
            ])
        })
    }

    #[test]
    fn recording_round_trips_frames_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.mp4");
        let mut recorder = Mp4Recorder::create(&path, RecorderConfig::default()).unwrap();
        // Irregular capture times, as from a live source that dropped frames.
        let times_ms = [0u64, 33, 67, 133, 167, 200, 300, 333];
        for (i, &ms) in times_ms.iter().enumerate() {
            recorder
                .write(&frame(i as u32), Duration::from_millis(1000 + ms))
                .unwrap();
        }
        let summary = recorder.finish().unwrap();
        assert_eq!(summary.frames, 8);
        let mut source = Mp4Source::open(&path).unwrap();
        assert_eq!(source.frame_count(), Some(8));
        let mut decoded = Vec::new();
        while let Some((t, img)) = source.next_frame().unwrap() {
            decoded.push((t, img));
        }
        assert_eq!(decoded.len(), 8);
        for ((t, img), (&ms, i)) in decoded.iter().zip(times_ms.iter().zip(0u32..)) {
            assert!(
                (t.as_secs_f64() * 1000.0 - ms as f64).abs() < 1.0,
                "{t:?} vs {ms}"
            );
            let original = frame(i);
            let err: f64 = img
                .as_raw()
                .iter()
                .zip(original.as_raw())
                .map(|(&a, &b)| (a as f64 - b as f64).abs())
                .sum::<f64>()
                / img.as_raw().len() as f64;
            assert!(err < 8.0, "frame {i}: mean abs error {err}");
        }
    }

    #[test]
    fn odd_sizes_are_cropped_to_even_and_size_changes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.mp4");
        let mut recorder = Mp4Recorder::create(&path, RecorderConfig::default()).unwrap();
        let odd = RgbImage::from_pixel(33, 17, Rgb([90, 120, 200]));
        recorder.write(&odd, Duration::ZERO).unwrap();
        let other = RgbImage::from_pixel(40, 20, Rgb([0, 0, 0]));
        assert!(matches!(
            recorder.write(&other, Duration::from_millis(33)),
            Err(RecordError::SizeChanged { .. })
        ));
        recorder.finish().unwrap();
        let mut source = Mp4Source::open(&path).unwrap();
        let (_, img) = source.next_frame().unwrap().unwrap();
        assert_eq!(img.dimensions(), (32, 16));
    }

    #[test]
    fn a_recording_without_frames_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.mp4");
        let recorder = Mp4Recorder::create(&path, RecorderConfig::default()).unwrap();
        assert!(path.exists());
        assert_eq!(recorder.finish().unwrap().frames, 0);
        assert!(!path.exists());
    }

    #[test]
    fn an_unwritable_path_fails_at_creation() {
        let err = Mp4Recorder::create(Path::new("/nonexistent-dir/x.mp4"), Default::default())
            .err()
            .unwrap();
        assert!(err
            .to_string()
            .starts_with("cannot create /nonexistent-dir/x.mp4"));
    }
}
