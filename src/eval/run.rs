//! `affectcam eval`: score weights on datasets, with a leakage check, per-image predictions,
//! a confusion-matrix picture and example sheets.

use super::metrics::EvalReport;
use super::{predict, score, Predictions};
use crate::data::{self, FacePixels, LoadOptions, Sample};
use crate::model::labels::EMOTIONS;
use crate::model::preprocess::{CropMode, Preprocess};
use crate::model::AffectModel;
use crate::report::{self, Example};
use crate::run_error::{io_err, RunError};
use candle_core::Device;
use image::RgbImage;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Which split(s) of each dataset to use.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
    Test,
    /// Every sample.
    All,
}

/// Settings of an evaluation.
pub struct EvalOptions {
    pub data: Vec<PathBuf>,
    pub load: LoadOptions,
    pub split: Split,
    pub train_data: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub predictions: Option<PathBuf>,
    pub out: Option<PathBuf>,
    /// Where `--detect` keeps its detections between runs.
    pub cache_dir: PathBuf,
}

/// Evaluation images that are pixel-identical to training images.
#[derive(Debug, Clone, Serialize)]
pub struct Leakage {
    pub train_data: PathBuf,
    pub duplicates: usize,
    /// The metrics with those images removed.
    pub without_duplicates: EvalReport,
}

/// Which images of one data source were scored.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub data: PathBuf,
    /// `train`, `valid`, `test` or `all`.
    pub split: &'static str,
    /// The seed of a split made here (70/15/15, stratified); `None`: the dataset's own.
    pub seeded_split: Option<u64>,
    /// Images scored, of the usable images in all splits.
    pub images: usize,
    pub of: usize,
    /// With `--detect`: scored images where no face was found (scored with the dataset's
    /// framing).
    pub no_face: Vec<PathBuf>,
}

impl Scored {
    /// One line for the printed report.
    pub fn describe(&self) -> String {
        let which = match (self.split, self.seeded_split) {
            ("all", _) => "every split".to_string(),
            (split, Some(seed)) => format!("the {split} split made here (15 %, seed {seed})"),
            (split, None) => format!("its own {split} split"),
        };
        let hint = if self.split != "all" && self.images < self.of {
            "; --split all scores every image"
        } else {
            ""
        };
        let no_face = match self.no_face.len() {
            0 => String::new(),
            n => format!(" ({n} with no face found, scored as framed; listed in the JSON)"),
        };
        format!(
            "scored {which} of {}: {} of {} images{no_face}{hint}",
            self.data.display(),
            self.images,
            self.of
        )
    }
}

/// Everything `eval` measured; the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOutput {
    #[serde(flatten)]
    pub report: EvalReport,
    pub scored: Vec<Scored>,
    pub skipped: usize,
    pub leakage: Option<Leakage>,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
            Split::All => "all",
        }
    }
}

fn select(splits: data::Splits, split: Split) -> Vec<Sample> {
    match split {
        Split::Train => splits.train,
        Split::Valid => splits.valid,
        Split::Test => splits.test,
        Split::All => [splits.train, splits.valid, splits.test].concat(),
    }
}

/// Hashes of the training split's face pixels.
fn train_hashes(
    path: &Path,
    load: &LoadOptions,
    pre: &Preprocess,
    cache_dir: &Path,
) -> Result<HashSet<[u8; 32]>, RunError> {
    let splits = data::load(path, load)?;
    let load = LoadOptions {
        skip_bad: true,
        ..*load
    };
    let faces = data::decode(splits.train, pre, &load, cache_dir, "train data")?.faces;
    Ok(faces.iter().map(|f| data::pixel_hash(f)).collect())
}

/// Face pixels back to an image, for example sheets.
fn face_image(face: &FacePixels, pre: &Preprocess) -> RgbImage {
    let s = pre.input_size as u32;
    let ch = pre.channels();
    RgbImage::from_fn(s, s, |x, y| {
        let p = &face[(y as usize * s as usize + x as usize) * ch..][..ch];
        image::Rgb([p[0], p[(1).min(ch - 1)], p[(2).min(ch - 1)]])
    })
}

fn write_predictions(path: &Path, samples: &[Sample], preds: &Predictions) -> Result<(), RunError> {
    let mut w = csv::Writer::from_path(path).map_err(io_err(path))?;
    let mut header = vec![
        "file".to_string(),
        "true_label".into(),
        "predicted_label".into(),
    ];
    header.extend(EMOTIONS.iter().map(|e| format!("p_{e}")));
    header.extend(["valence", "arousal", "true_valence", "true_arousal"].map(String::from));
    w.write_record(&header).map_err(io_err(path))?;
    let opt = |v: Option<f32>| v.map_or(String::new(), |v| v.to_string());
    for (i, s) in samples.iter().enumerate() {
        let mut row = vec![
            s.image.display().to_string(),
            s.label().map_or(String::new(), |l| EMOTIONS[l].to_string()),
            EMOTIONS[preds.label(i)].to_string(),
        ];
        row.extend(preds.probs[i].iter().map(|p| format!("{p:.5}")));
        row.push(format!("{:.4}", preds.valence_arousal[i][0]));
        row.push(format!("{:.4}", preds.valence_arousal[i][1]));
        row.push(opt(s.valence_arousal.map(|v| v[0])));
        row.push(opt(s.valence_arousal.map(|v| v[1])));
        w.write_record(&row).map_err(io_err(path))?;
    }
    w.flush().map_err(io_err(path))
}

/// Saves 20 correctly and 20 wrongly classified faces (evenly spread over the set).
fn write_examples(
    out: &Path,
    samples: &[Sample],
    faces: &[FacePixels],
    preds: &Predictions,
    pre: &Preprocess,
) -> Result<(), RunError> {
    for (correct, name) in [
        (true, "examples_correct.png"),
        (false, "examples_wrong.png"),
    ] {
        let picked: Vec<usize> = (0..samples.len())
            .filter(|&i| {
                samples[i]
                    .label()
                    .is_some_and(|l| (l == preds.label(i)) == correct)
            })
            .collect();
        let step = (picked.len() / 20).max(1);
        let examples: Vec<Example> = picked
            .iter()
            .step_by(step)
            .take(20)
            .map(|&i| {
                let (t, p) = (samples[i].label().unwrap_or(0), preds.label(i));
                Example {
                    image: face_image(&faces[i], pre),
                    caption: format!(
                        "true {} / pred {} {:.2}",
                        EMOTIONS[t], EMOTIONS[p], preds.probs[i][p]
                    ),
                }
            })
            .collect();
        let title = if correct {
            "correctly classified"
        } else {
            "misclassified"
        };
        report::save_example_sheet(&out.join(name), title, &examples, 5)?;
    }
    Ok(())
}

/// Runs an evaluation and writes the requested outputs.
pub fn run(
    model: &AffectModel,
    device: &Device,
    opts: &EvalOptions,
) -> Result<EvalOutput, RunError> {
    let pre = model.meta.preprocess;
    // Weights trained on aligned crops need landmarks for every face.
    let load = LoadOptions {
        detect: opts.load.detect || pre.crop != CropMode::Box,
        ..opts.load
    };
    let (mut samples, mut faces, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    let mut scored = Vec::new();
    for path in &opts.data {
        let splits = data::load(path, &opts.load)?;
        skipped += splits.skipped.len();
        let of = splits.train.len() + splits.valid.len() + splits.test.len();
        let seeded_split = splits.seeded;
        let decoded = data::decode(
            select(splits, opts.split),
            &pre,
            &load,
            &opts.cache_dir,
            "decoding",
        )?;
        skipped += decoded.skipped.len();
        scored.push(Scored {
            data: path.clone(),
            split: opts.split.name(),
            seeded_split,
            images: decoded.samples.len(),
            of,
            no_face: decoded.no_face,
        });
        samples.extend(decoded.samples);
        faces.extend(decoded.faces);
    }
    if samples.is_empty() {
        return Err(RunError::Empty);
    }
    let preds = predict(model, &faces, 64, device, "evaluating")?;
    let report = score(&samples, &preds);
    let leakage = match &opts.train_data {
        Some(train) => {
            let seen = train_hashes(train, &load, &pre, &opts.cache_dir)?;
            let keep: Vec<usize> = (0..samples.len())
                .filter(|&i| !seen.contains(&data::pixel_hash(&faces[i])))
                .collect();
            let kept_samples: Vec<Sample> = keep.iter().map(|&i| samples[i].clone()).collect();
            let kept_preds = Predictions {
                probs: keep.iter().map(|&i| preds.probs[i]).collect(),
                valence_arousal: keep.iter().map(|&i| preds.valence_arousal[i]).collect(),
            };
            Some(Leakage {
                train_data: train.clone(),
                duplicates: samples.len() - keep.len(),
                without_duplicates: score(&kept_samples, &kept_preds),
            })
        }
        None => None,
    };
    if let Some(path) = &opts.predictions {
        write_predictions(path, &samples, &preds)?;
    }
    if let Some(out) = &opts.out {
        std::fs::create_dir_all(out).map_err(io_err(out))?;
        let headline = leakage.as_ref().map_or(&report, |l| &l.without_duplicates);
        if let Some(c) = &headline.classification {
            let title = match &leakage {
                Some(l) => format!(
                    "n {} ({} duplicates of training images removed)",
                    headline.n, l.duplicates
                ),
                None => format!("n {}", headline.n),
            };
            report::plot_confusion_matrix(
                &out.join("confusion.png"),
                &title,
                &EMOTIONS,
                &c.confusion,
            )?;
        }
        write_examples(out, &samples, &faces, &preds, &pre)?;
    }
    let output = EvalOutput {
        report,
        scored,
        skipped,
        leakage,
    };
    if let Some(path) = &opts.json {
        let json = serde_json::to_string_pretty(&output).map_err(io_err(path))?;
        std::fs::write(path, json).map_err(io_err(path))?;
    }
    Ok(output)
}
