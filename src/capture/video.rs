//! H.264-in-MP4 files (plain or fragmented), read with no system libraries: our demuxer on
//! `mp4-atom` and Cisco's OpenH264 decoder (built from source by the `openh264` crate).

use super::demux::{read_video_track, DemuxError, Sample};
use super::{CaptureError, FrameSource};
use image::RgbImage;
use openh264::decoder::{DecodeOptions, DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264::OpenH264API;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Annex-B start code that OpenH264 expects in front of every NAL unit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Where an MP4 file's bytes come from: a file, or memory (tests, fuzzing).
pub trait MediaReader: Read + Seek {}
impl<T: Read + Seek> MediaReader for T {}

pub struct Mp4Source {
    path: PathBuf,
    file: Box<dyn MediaReader>,
    timescale: u32,
    samples: Vec<Sample>,
    next_sample: usize,
    sample_bytes: Vec<u8>,
    /// Bytes of each NAL unit's length prefix in the samples (from the avcC box).
    length_size: usize,
    decoder: Decoder,
    /// SPS and PPS from the avcC box, sent before the first sample.
    parameter_sets: Vec<u8>,
    annex_b: Vec<u8>,
    /// Presentation times (track timescale) of samples sent but not yet output: with B-frames
    /// the decoder returns pictures in presentation order, so each output takes the smallest.
    pending_pts: BinaryHeap<Reverse<u64>>,
    decoded: VecDeque<(Duration, RgbImage)>,
    /// Presentation time of the first picture, which becomes time zero (B-frame streams
    /// usually start later, shifted by an edit list).
    first_pts: Option<u64>,
    flushed: bool,
    describe: String,
}

impl Mp4Source {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = File::open(path).map_err(|source| CaptureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Self::from_reader(path, Box::new(BufReader::new(file)), len)
    }

    /// Reads an MP4 file of `len` bytes from `file`; `path` names it in messages.
    pub fn from_reader(
        path: &Path,
        mut file: Box<dyn MediaReader>,
        len: u64,
    ) -> Result<Self, CaptureError> {
        let fail = |reason: String| CaptureError::Video {
            path: path.to_path_buf(),
            reason,
        };
        let track = read_video_track(&mut file, len).map_err(|e| match e {
            DemuxError::Codec(found) => CaptureError::Unsupported {
                path: path.to_path_buf(),
                found: format!("{found} video; only H.264 is decoded"),
            },
            other => fail(other.to_string()),
        })?;
        let avc = &track.avcc;
        let mut parameter_sets = Vec::new();
        for nal in avc
            .sequence_parameter_sets
            .iter()
            .chain(&avc.picture_parameter_sets)
        {
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(nal);
        }
        // B-frames need the decoder to hold pictures back until their turn: no flushing.
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| fail(format!("cannot start the H.264 decoder ({e})")))?;
        let cut_off = if track.truncated {
            ", cut off (kept up to the last complete fragment)"
        } else {
            ""
        };
        let describe = format!(
            "{}: {}×{} H.264, {} frames at {:.1} fps{cut_off}",
            path.display(),
            track.width,
            track.height,
            track.samples.len(),
            track.frame_rate()
        );
        Ok(Self {
            path: path.to_path_buf(),
            length_size: usize::from(avc.length_size.clamp(1, 4)),
            file,
            timescale: track.timescale,
            samples: track.samples,
            next_sample: 0,
            sample_bytes: Vec::new(),
            decoder,
            parameter_sets,
            annex_b: Vec::new(),
            pending_pts: BinaryHeap::new(),
            decoded: VecDeque::new(),
            first_pts: None,
            flushed: false,
            describe,
        })
    }

    fn fail(&self, reason: String) -> CaptureError {
        CaptureError::Video {
            path: self.path.clone(),
            reason,
        }
    }

    /// Sends the next sample to the decoder, queueing any picture it returns.
    fn decode_next_sample(&mut self) -> Result<(), CaptureError> {
        let index = self.next_sample + 1; // frames are numbered from 1 in messages
        let sample = self.samples[self.next_sample];
        self.next_sample += 1;
        self.sample_bytes.resize(sample.size as usize, 0);
        let read = self
            .file
            .seek(SeekFrom::Start(sample.offset))
            .and_then(|_| self.file.read_exact(&mut self.sample_bytes));
        if let Err(e) = read {
            return Err(self.fail(format!("cannot read frame {index} ({e})")));
        }
        self.annex_b.clear();
        if index == 1 {
            self.annex_b.extend_from_slice(&self.parameter_sets);
        }
        if !length_prefixed_to_annex_b(&self.sample_bytes, self.length_size, &mut self.annex_b) {
            return Err(self.fail(format!("frame {index} is damaged (bad NAL unit lengths)")));
        }
        let pts = (sample.decode_time as i64)
            .saturating_add(sample.composition_offset)
            .max(0) as u64;
        self.pending_pts.push(Reverse(pts));
        let options = DecodeOptions::new().flush_after_decode(Flush::NoFlush);
        match self.decoder.decode_with_options(&self.annex_b, options) {
            Ok(Some(picture)) => {
                let image = to_rgb(&picture);
                self.queue(image);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(self.fail(format!("frame {index} cannot be decoded ({e})"))),
        }
    }

    fn queue(&mut self, image: RgbImage) {
        let Reverse(pts) = self.pending_pts.pop().unwrap_or(Reverse(0));
        let pts = pts.saturating_sub(*self.first_pts.get_or_insert(pts));
        let nanos = u128::from(pts) * 1_000_000_000 / u128::from(self.timescale);
        self.decoded
            .push_back((Duration::from_nanos(nanos as u64), image));
    }
}

fn to_rgb(picture: &DecodedYUV) -> RgbImage {
    let (w, h) = picture.dimensions();
    let mut rgb = vec![0; w * h * 3];
    picture.write_rgb8(&mut rgb);
    RgbImage::from_raw(w as u32, h as u32, rgb).expect("buffer sized to the picture")
}

/// MP4 samples hold NAL units behind big-endian length prefixes; OpenH264 wants start codes.
/// Returns false when a length runs past the sample.
fn length_prefixed_to_annex_b(mut sample: &[u8], length_size: usize, out: &mut Vec<u8>) -> bool {
    while !sample.is_empty() {
        if sample.len() < length_size {
            return false;
        }
        let len = sample[..length_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let rest = &sample[length_size..];
        if len > rest.len() {
            return false;
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&rest[..len]);
        sample = &rest[len..];
    }
    true
}

impl FrameSource for Mp4Source {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn frame_count(&self) -> Option<u64> {
        Some(self.samples.len() as u64)
    }

    fn next_frame(&mut self) -> Result<Option<(Duration, RgbImage)>, CaptureError> {
        loop {
            if let Some(frame) = self.decoded.pop_front() {
                return Ok(Some(frame));
            }
            if self.next_sample < self.samples.len() {
                self.decode_next_sample()?;
                continue;
            }
            if self.flushed {
                return Ok(None);
            }
            self.flushed = true;
            let remaining: Result<Vec<RgbImage>, _> = self
                .decoder
                .flush_remaining()
                .map(|pictures| pictures.iter().map(to_rgb).collect());
            let remaining =
                remaining.map_err(|e| self.fail(format!("cannot decode the last frames ({e})")))?;
            for image in remaining {
                self.queue(image);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_length_prefixes_to_start_codes() {
        let mut out = Vec::new();
        let sample = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x41];
        assert!(length_prefixed_to_annex_b(&sample, 4, &mut out));
        assert_eq!(out, [0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x41]);
        out.clear();
        assert!(!length_prefixed_to_annex_b(&[0, 0, 0, 9, 1], 4, &mut out));
        assert!(!length_prefixed_to_annex_b(&[0, 0], 4, &mut out));
    }
}
