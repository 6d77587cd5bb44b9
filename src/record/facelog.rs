//! Per-face, per-frame results to a file: JSON Lines, or CSV when the name ends in `.csv`.
//! Probabilities, valence and arousal are the smoothed values that are shown; `raw` (JSONL
//! only) holds the face's latest model output, with `this_frame` telling whether it was
//! computed on this frame (a few faces are classified per frame, the others keep their last
//! result; see `--classify-per-frame`). `detector_score` and `landmarks` (in frame pixels,
//! left/right as seen in the image) come from the face's latest detection, moved with its
//! track; the landmarks are null (JSONL) or empty (CSV) with a detector that has none.

use crate::geometry::Landmarks;
use crate::model::labels::{probs_json, EMOTIONS};
use crate::smooth::FaceResult;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How far the file may lag behind the run: after a crash it is at most this much behind the
/// recording.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

enum Sink {
    Jsonl(BufWriter<File>),
    Csv(Box<csv::Writer<File>>),
}

pub struct FaceLog {
    path: PathBuf,
    sink: Sink,
    records: u64,
    flushed_at: Instant,
}

impl FaceLog {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let sink = if is_csv {
            let mut writer = csv::Writer::from_writer(file);
            let mut header = vec!["frame", "time_s", "id", "x", "y", "width", "height"];
            header.extend(EMOTIONS);
            header.extend([
                "label",
                "confidence",
                "valence",
                "arousal",
                "detector_score",
            ]);
            let landmark_columns: Vec<String> = Landmarks::NAMES
                .iter()
                .flat_map(|name| [format!("{name}_x"), format!("{name}_y")])
                .collect();
            header.extend(landmark_columns.iter().map(String::as_str));
            writer.write_record(&header)?;
            Sink::Csv(Box::new(writer))
        } else {
            Sink::Jsonl(BufWriter::new(file))
        };
        Ok(Self {
            path: path.to_path_buf(),
            sink,
            records: 0,
            flushed_at: Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One record per face of frame `frame` shown at `time`.
    pub fn write(
        &mut self,
        frame: u64,
        time: Duration,
        faces: &[FaceResult],
    ) -> std::io::Result<()> {
        for face in faces {
            let b = face.face;
            let s = &face.smoothed;
            match &mut self.sink {
                Sink::Jsonl(out) => {
                    let record = serde_json::json!({
                        "frame": frame,
                        "time_s": time.as_secs_f64(),
                        "id": face.id,
                        "box": [b.x, b.y, b.width, b.height],
                        "probs": probs_json(&s.probs),
                        "label": EMOTIONS[face.label],
                        "confidence": face.confidence,
                        "valence": s.valence,
                        "arousal": s.arousal,
                        "detector_score": face.detector_score,
                        "landmarks": face.landmarks.map(|l| l.to_json()),
                        "raw": {
                            "probs": probs_json(&face.raw.probs),
                            "label": EMOTIONS[face.raw.label()],
                            "valence": face.raw.valence,
                            "arousal": face.raw.arousal,
                            "this_frame": face.fresh,
                        },
                    });
                    writeln!(out, "{record}")?;
                }
                Sink::Csv(out) => {
                    let mut row = vec![
                        frame.to_string(),
                        format!("{:.4}", time.as_secs_f64()),
                        face.id.to_string(),
                    ];
                    row.extend([b.x, b.y, b.width, b.height].map(|v| format!("{v:.1}")));
                    row.extend(s.probs.iter().map(|p| format!("{p:.5}")));
                    row.push(EMOTIONS[face.label].to_string());
                    row.extend([face.confidence, s.valence, s.arousal].map(|v| format!("{v:.5}")));
                    row.push(format!("{:.5}", face.detector_score));
                    match face.landmarks {
                        Some(l) => row.extend(l.flat().map(|v| format!("{v:.1}"))),
                        None => row.extend(std::iter::repeat_n(String::new(), 10)),
                    }
                    out.write_record(&row)?;
                }
            }
            self.records += 1;
        }
        if self.flushed_at.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flushed_at = Instant::now();
        match &mut self.sink {
            Sink::Jsonl(out) => out.flush(),
            Sink::Csv(out) => out.flush(),
        }
    }

    /// Flushes the file; returns how many records were written.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.flush()?;
        Ok(self.records)
    }
}
