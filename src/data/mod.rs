//! Datasets: readers for FER+, AffectNet-style CSV, generic CSV and class folders; splits;
//! decoding to model-ready face pixels.

pub mod affectnet;
pub mod detections;
pub mod ferplus;
pub mod folders;
pub mod generic;

use crate::detect::{Detection, DetectorConfig, DetectorKind, FaceDetector};
use crate::geometry::{FaceBox, Landmarks};
use crate::model::labels::NUM_EMOTIONS;
use crate::model::preprocess::Preprocess;
use detections::DetectionCache;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Errors reading a dataset. Each names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A row of a label file is malformed or refers to something unusable.
    #[error("{file}:{line}: {reason}")]
    BadRow {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    /// An image listed by the dataset cannot be decoded.
    #[error("{file}:{line}: cannot read image {image}: {reason}")]
    BadImage {
        file: PathBuf,
        line: usize,
        image: PathBuf,
        reason: String,
    },
    /// A class folder's name is not an emotion.
    #[error("{path}: folder `{name}` is not a class name (neutral, happy, sad, surprise, fear, disgust, anger, contempt, or an alias)")]
    UnknownClassFolder { path: PathBuf, name: String },
    /// The path is not in any known layout.
    #[error("{path}: not a recognised dataset (expected a FER+ folder, an AffectNet-style or generic CSV, or one folder per class); use --format")]
    UnknownFormat { path: PathBuf },
    /// The dataset holds no usable samples.
    #[error("{path}: no usable samples")]
    Empty { path: PathBuf },
    /// `--detect` was asked for, but the face detector cannot start or run.
    #[error("--detect: {0}")]
    Detector(String),
}

impl From<crate::detect::DetectError> for DataError {
    fn from(e: crate::detect::DetectError) -> Self {
        DataError::Detector(e.to_string())
    }
}

/// How FER+ crowd votes become targets.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelMode {
    /// Plurality vote; images where unknown/not-a-face wins, or with a tie, are dropped.
    Majority,
    /// Soft targets proportional to the emotion votes (plurality filter as above).
    Probability,
}

/// Dataset layouts.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `FER2013{Train,Valid,Test}/label.csv` with 10 crowd votes.
    Ferplus,
    /// CSV with `subDirectory_filePath, expression, valence, arousal` (+ optional face box).
    Affectnet,
    /// CSV with `file, label` and optional `valence, arousal` columns.
    Csv,
    /// One folder of images per class.
    Folders,
}

/// What a sample is labelled with.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub image: PathBuf,
    /// Face region within the image; `None` means the whole image.
    pub face: Option<FaceBox>,
    /// The face's landmarks (from `--detect`), for aligned crops.
    pub landmarks: Option<Landmarks>,
    /// Hard label and target distribution (one-hot, or crowd votes).
    pub emotion: Option<(usize, [f32; NUM_EMOTIONS])>,
    pub valence_arousal: Option<[f32; 2]>,
    /// Label file and line (1-based) the sample came from, for error messages.
    pub origin: (PathBuf, usize),
}

impl Sample {
    pub fn label(&self) -> Option<usize> {
        self.emotion.map(|(l, _)| l)
    }
}

/// A dataset's splits.
#[derive(Debug, Clone, Default)]
pub struct Splits {
    pub train: Vec<Sample>,
    pub valid: Vec<Sample>,
    pub test: Vec<Sample>,
    /// Rows skipped (bad rows with `skip_bad`, or dropped by the label mode), with reasons.
    pub skipped: Vec<String>,
    /// The seed of a split made here (70/15/15, stratified); `None`: the dataset's own.
    pub seeded: Option<u64>,
}

/// Options for reading datasets (serde: part of a training recipe).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LoadOptions {
    pub format: Option<Format>,
    pub label_mode: LabelMode,
    /// Skip and count bad rows instead of failing on the first.
    pub skip_bad: bool,
    /// Seed of the stratified 70/15/15 split of a source without its own (training's
    /// shuffling and augmentation have their own seed, so runs can differ in one and keep the
    /// same test faces). Recipes from before the two were told apart held one `seed` for both,
    /// always 0, the default here.
    #[serde(default)]
    pub split_seed: u64,
    /// Find each image's face with the live detector (YuNet) and crop it as live crops are
    /// made, instead of taking the dataset's box or whole image.
    #[serde(default)]
    pub detect: bool,
}

impl LoadOptions {
    /// Handles a bad row of `file`: an error, or with `skip_bad` a reason added to `skipped`.
    pub fn bad_row(
        &self,
        file: &Path,
        line: usize,
        reason: String,
        skipped: &mut Vec<String>,
    ) -> Result<(), DataError> {
        let e = DataError::BadRow {
            file: file.to_path_buf(),
            line,
            reason,
        };
        if !self.skip_bad {
            return Err(e);
        }
        skipped.push(e.to_string());
        Ok(())
    }
}

/// Sheet names tried, in order, when a CSV dataset is given as a folder.
const SHEET_NAMES: [&str; 3] = ["dataset_sheet.csv", "training.csv", "labels.csv"];

/// The label sheet inside a dataset folder.
pub fn find_sheet(dir: &Path) -> Option<PathBuf> {
    SHEET_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The sheet a CSV dataset path names: the file itself, or the sheet in the folder.
fn sheet_of(path: &Path) -> Result<PathBuf, DataError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    find_sheet(path).ok_or_else(|| DataError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// Detects a path's layout.
pub fn detect_format(path: &Path) -> Result<Format, DataError> {
    if path.join("FER2013Train").join("label.csv").is_file() {
        return Ok(Format::Ferplus);
    }
    let csv = if path.is_dir() {
        find_sheet(path)
    } else {
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        is_csv.then(|| path.to_path_buf())
    };
    if let Some(csv) = csv {
        // Only the header decides; the reader parses the whole sheet afterwards.
        let mut header = String::new();
        std::fs::File::open(&csv)
            .and_then(|f| std::io::BufRead::read_line(&mut std::io::BufReader::new(f), &mut header))
            .map_err(|source| DataError::Io {
                path: csv.clone(),
                source,
            })?;
        let header = header.trim_end().to_ascii_lowercase();
        if header.contains("subdirectory_filepath") {
            return Ok(Format::Affectnet);
        }
        if generic::is_generic_header(&header) {
            return Ok(Format::Csv);
        }
    }
    if path.is_dir() && folders::looks_like_class_folders(path) {
        return Ok(Format::Folders);
    }
    Err(DataError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// Reads a dataset into splits (its own, or a seeded stratified 70/15/15).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    let format = match opts.format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    let splits = match format {
        Format::Ferplus => ferplus::load(path, opts)?,
        Format::Affectnet => affectnet::load(path, opts)?,
        Format::Csv => generic::load(path, opts)?,
        Format::Folders => folders::load(path, opts)?,
    };
    if splits.train.len() + splits.valid.len() + splits.test.len() == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(splits)
}

/// Seeded stratified split (by hard label; unlabelled samples form their own stratum).
pub fn stratified_split(samples: Vec<Sample>, seed: u64, skipped: Vec<String>) -> Splits {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut strata: Vec<Vec<Sample>> = vec![Vec::new(); NUM_EMOTIONS + 1];
    for s in samples {
        strata[s.label().unwrap_or(NUM_EMOTIONS)].push(s);
    }
    let mut splits = Splits {
        skipped,
        seeded: Some(seed),
        ..Default::default()
    };
    for mut stratum in strata {
        stratum.shuffle(&mut rng);
        let n = stratum.len();
        let n_test = (n as f64 * 0.15).round() as usize;
        let n_valid = (n as f64 * 0.15).round() as usize;
        let test = stratum.split_off(n - n_test);
        let valid = stratum.split_off(n - n_test - n_valid);
        splits.train.extend(stratum);
        splits.valid.extend(valid);
        splits.test.extend(test);
    }
    splits
}

/// A one-hot target.
pub fn one_hot(label: usize) -> [f32; NUM_EMOTIONS] {
    let mut t = [0.0; NUM_EMOTIONS];
    t[label] = 1.0;
    t
}

/// Model-ready face pixels (`input_size²` × channels of the colour mode).
pub type FacePixels = Vec<u8>;

/// Decoded samples and their face pixels, with what happened on the way.
#[derive(Default)]
pub struct Decoded {
    pub samples: Vec<Sample>,
    pub faces: Vec<FacePixels>,
    /// Why samples were dropped (unreadable images, with `skip_bad`), one line each.
    pub skipped: Vec<String>,
    /// With `detect`: the images where the detector found no face (they keep the dataset's
    /// framing).
    pub no_face: Vec<PathBuf>,
}

/// Decodes, crops and resizes every sample in parallel with a progress bar. Unreadable
/// images fail with file and line, or with `skip_bad` are dropped and returned as reasons.
/// With `detect`, each image's largest YuNet face (box and landmarks) replaces the dataset's
/// box; images where none is found keep it (or the whole image) and are listed. Detections are
/// kept in `cache_dir` between runs.
pub fn decode(
    samples: Vec<Sample>,
    pre: &Preprocess,
    opts: &LoadOptions,
    cache_dir: &Path,
    what: &str,
) -> Result<Decoded, DataError> {
    let cache = opts.detect.then(|| DetectionCache::open(cache_dir));
    if opts.detect {
        // Fails here, once, if this build has no detector weights.
        FaceDetector::new(DetectorConfig::for_photos(DetectorKind::Yunet))?;
    }
    let bar = crate::progress::counting_bar(samples.len(), what, "images");
    let decoded: Vec<Result<(Option<Detection>, FacePixels), DataError>> = samples
        .par_iter()
        .map_init(
            || {
                opts.detect
                    .then(|| FaceDetector::new(dataset_detector()).map_err(|e| e.to_string()))
            },
            |detector, s| {
                let result = crate::picture::open(&s.image)
                    .map_err(|e| DataError::BadImage {
                        file: s.origin.0.clone(),
                        line: s.origin.1,
                        image: s.image.clone(),
                        reason: e.to_string(),
                    })
                    .and_then(|rgb| {
                        let found = match (detector, &cache) {
                            (Some(d), Some(cache)) => match cache.get(&s.image) {
                                Some(found) => found,
                                None => {
                                    let d =
                                        d.as_mut().map_err(|e| DataError::Detector(e.clone()))?;
                                    let found = detect_face(d, &rgb)?;
                                    cache.insert(&s.image, found.as_ref());
                                    found
                                }
                            },
                            _ => None,
                        };
                        let (face, landmarks) = match found {
                            Some(d) => (Some(d.face), d.landmarks),
                            None => (s.face, s.landmarks),
                        };
                        let crop = match face {
                            Some(b) => pre.crop(&rgb, b, landmarks.as_ref()),
                            None => rgb,
                        };
                        Ok((found, pre.face_pixels(&crop)))
                    });
                bar.inc(1);
                result
            },
        )
        .collect();
    bar.finish_and_clear();
    let tried = samples.len();
    let mut out = Decoded::default();
    for (mut s, d) in samples.into_iter().zip(decoded) {
        match d {
            Ok((found, p)) => {
                match found {
                    Some(d) => (s.face, s.landmarks) = (Some(d.face), d.landmarks),
                    None if opts.detect => out.no_face.push(s.image.clone()),
                    None => {}
                }
                out.samples.push(s);
                out.faces.push(p);
            }
            Err(e) if opts.skip_bad => out.skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    if let Some(cache) = cache {
        if let Err(e) = cache.save() {
            log::warn!(
                "cannot save the detection cache in {}: {e}",
                cache_dir.display()
            );
        }
        log::info!(
            "{what}: no face found in {} of {tried} images; they keep the dataset's framing",
            out.no_face.len()
        );
    }
    Ok(out)
}

/// The detector for dataset images: YuNet on the whole image, however large.
fn dataset_detector() -> DetectorConfig {
    DetectorConfig {
        max_width: u32::MAX,
        ..DetectorConfig::for_photos(DetectorKind::Yunet)
    }
}

/// The largest face in a dataset image (a portrait's subject, not a face in the background).
/// Images under 144 px a side (FER+ is 48 px) are enlarged first: YuNet needs some context
/// around a face that fills the picture.
fn detect_face(
    detector: &mut FaceDetector,
    rgb: &RgbImage,
) -> Result<Option<Detection>, DataError> {
    let side = rgb.width().max(rgb.height());
    let factor = 144u32.div_ceil(side.max(1)).max(1);
    if factor == 1 {
        return Ok(largest(detector.detect(rgb)?));
    }
    let big = image::imageops::resize(
        rgb,
        rgb.width() * factor,
        rgb.height() * factor,
        image::imageops::FilterType::Triangle,
    );
    Ok(largest(detector.detect(&big)?).map(|d| d.scaled(1.0 / factor as f32)))
}

fn largest(faces: Vec<Detection>) -> Option<Detection> {
    let area = |d: &Detection| d.face.width * d.face.height;
    faces.into_iter().max_by(|a, b| area(a).total_cmp(&area(b)))
}

/// Hash of decoded pixels, to find images duplicated across splits.
pub fn pixel_hash(pixels: &[u8]) -> [u8; 32] {
    *blake3::hash(pixels).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(label: Option<usize>) -> Sample {
        Sample {
            image: PathBuf::from("x.png"),
            face: None,
            landmarks: None,
            emotion: label.map(|l| (l, one_hot(l))),
            valence_arousal: None,
            origin: (PathBuf::from("labels.csv"), 1),
        }
    }

    #[test]
    fn stratified_split_keeps_class_proportions_and_is_seeded() {
        let samples: Vec<Sample> = (0..100).map(|i| sample(Some(i % 2))).collect();
        let a = stratified_split(samples.clone(), 7, Vec::new());
        let b = stratified_split(samples, 7, Vec::new());
        assert_eq!((a.train.len(), a.valid.len(), a.test.len()), (68, 16, 16));
        let zeros = a.test.iter().filter(|s| s.label() == Some(0)).count();
        assert_eq!(zeros, 8);
        assert_eq!(a.train, b.train);
    }
}
