//! FER+ (Microsoft's FER2013 relabelling): `FER2013{Train,Valid,Test}/label.csv`, each row
//! `image, "(x, y, w, h)", 10 votes` in the order neutral, happiness, surprise, sadness, anger,
//! disgust, fear, contempt, unknown, not-a-face.

use super::{DataError, LabelMode, LoadOptions, Sample, Splits};
use crate::model::labels::NUM_EMOTIONS;
use std::path::{Path, PathBuf};

/// AffectNet index of each FER+ emotion vote column.
const FER_TO_AFFECTNET: [usize; NUM_EMOTIONS] = [0, 1, 3, 2, 6, 5, 4, 7];
const VOTES: usize = 10;

/// Why a row yields no sample.
#[derive(Debug, PartialEq)]
pub enum Drop {
    /// Unknown or not-a-face has the most votes.
    NotAnEmotion,
    /// Two or more classes share the most votes.
    Tie,
}

/// Turns a row's 10 votes into (hard label, target) under `mode`.
pub fn votes_to_target(
    votes: &[u32; VOTES],
    mode: LabelMode,
) -> Result<(usize, [f32; NUM_EMOTIONS]), Drop> {
    let max = *votes.iter().max().expect("10 votes");
    let winners: Vec<usize> = (0..VOTES).filter(|&i| votes[i] == max).collect();
    if max == 0 {
        return Err(Drop::NotAnEmotion);
    }
    if winners.len() > 1 {
        return Err(Drop::Tie);
    }
    if winners[0] >= NUM_EMOTIONS {
        return Err(Drop::NotAnEmotion);
    }
    let label = FER_TO_AFFECTNET[winners[0]];
    let mut target = [0f32; NUM_EMOTIONS];
    match mode {
        LabelMode::Majority => target[label] = 1.0,
        LabelMode::Probability => {
            let total: u32 = votes[..NUM_EMOTIONS].iter().sum();
            for (fer, &v) in votes[..NUM_EMOTIONS].iter().enumerate() {
                target[FER_TO_AFFECTNET[fer]] = v as f32 / total as f32;
            }
        }
    }
    Ok((label, target))
}

/// Parses one split's `label.csv`.
fn load_split(
    dir: &Path,
    opts: &LoadOptions,
    skipped: &mut Vec<String>,
) -> Result<Vec<Sample>, DataError> {
    let file = dir.join("label.csv");
    let text = std::fs::read_to_string(&file).map_err(|source| DataError::Io {
        path: file.clone(),
        source,
    })?;
    let mut samples = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    for (i, record) in reader.records().enumerate() {
        let line = i + 1;
        let parsed = record
            .map_err(|e| e.to_string())
            .and_then(|r| parse_row(dir, &r));
        let (image, votes) = match parsed {
            Ok(p) => p,
            Err(reason) => {
                opts.bad_row(&file, line, reason, skipped)?;
                continue;
            }
        };
        match votes_to_target(&votes, opts.label_mode) {
            Ok(emotion) => samples.push(Sample {
                image,
                face: None,
                landmarks: None,
                emotion: Some(emotion),
                valence_arousal: None,
                origin: (file.clone(), line),
            }),
            Err(drop) => skipped.push(format!(
                "{}:{line}: dropped by label mode ({drop:?})",
                file.display()
            )),
        }
    }
    Ok(samples)
}

fn parse_row(dir: &Path, r: &csv::StringRecord) -> Result<(PathBuf, [u32; VOTES]), String> {
    if r.len() != 2 + VOTES {
        return Err(format!("expected {} columns, found {}", 2 + VOTES, r.len()));
    }
    let image = dir.join(r[0].trim());
    if !image.is_file() {
        return Err(format!("image {} does not exist", image.display()));
    }
    let mut votes = [0u32; VOTES];
    for (v, field) in votes.iter_mut().zip(r.iter().skip(2)) {
        *v = field
            .trim()
            .parse()
            .map_err(|_| format!("vote `{field}` is not a count"))?;
    }
    Ok((image, votes))
}

/// Reads FER+'s own Train/Valid/Test splits.
pub fn load(root: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    let mut skipped = Vec::new();
    let train = load_split(&root.join("FER2013Train"), opts, &mut skipped)?;
    let valid = load_split(&root.join("FER2013Valid"), opts, &mut skipped)?;
    let test = load_split(&root.join("FER2013Test"), opts, &mut skipped)?;
    Ok(Splits {
        train,
        valid,
        test,
        skipped,
        seeded: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurality_maps_fer_order_to_affectnet() {
        // 4 neutral, 1 sadness, 3 anger, 2 disgust → neutral.
        let votes = [4, 0, 0, 1, 3, 2, 0, 0, 0, 0];
        let (label, t) = votes_to_target(&votes, LabelMode::Majority).unwrap();
        assert_eq!((label, t[0]), (0, 1.0));
        let (_, soft) = votes_to_target(&votes, LabelMode::Probability).unwrap();
        assert_eq!(soft, [0.4, 0.0, 0.1, 0.0, 0.0, 0.2, 0.3, 0.0]);
        // Surprise column (FER index 2) is AffectNet 3.
        let (label, _) =
            votes_to_target(&[0, 0, 9, 0, 0, 0, 0, 0, 1, 0], LabelMode::Majority).unwrap();
        assert_eq!(label, 3);
    }

    #[test]
    fn unknown_winners_and_ties_are_dropped() {
        assert_eq!(
            votes_to_target(&[1, 0, 0, 0, 0, 0, 0, 0, 6, 3], LabelMode::Majority),
            Err(Drop::NotAnEmotion)
        );
        assert_eq!(
            votes_to_target(&[4, 4, 0, 0, 0, 0, 0, 0, 2, 0], LabelMode::Majority),
            Err(Drop::Tie)
        );
        assert_eq!(
            votes_to_target(&[0; VOTES], LabelMode::Probability),
            Err(Drop::NotAnEmotion)
        );
    }
}
