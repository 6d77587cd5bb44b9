//! Generic CSV: a header with `file` and `label` columns and optional `valence`, `arousal`.
//! Labels are class names (or aliases) or AffectNet indices; an empty label or V/A cell means
//! "not labelled". Paths are relative to the CSV's folder.

use super::{one_hot, sheet_of, stratified_split, DataError, LoadOptions, Sample, Splits};
use crate::model::labels::{emotion_index, NUM_EMOTIONS};
use std::path::Path;

/// Whether a CSV header looks like this format.
pub fn is_generic_header(header: &str) -> bool {
    let cols: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    cols.iter().any(|c| c == "file") && cols.iter().any(|c| c == "label")
}

fn parse_label(v: &str) -> Result<Option<usize>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if let Ok(i) = v.parse::<usize>() {
        return if i < NUM_EMOTIONS {
            Ok(Some(i))
        } else {
            Err(format!("class index {i} is not in 0..{NUM_EMOTIONS}"))
        };
    }
    emotion_index(v)
        .map(Some)
        .ok_or_else(|| format!("unknown class `{v}`"))
}

fn parse_va(v: Option<&str>, name: &str) -> Result<Option<f32>, String> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            let x: f32 = v
                .parse()
                .map_err(|_| format!("{name} `{v}` is not a number"))?;
            if (-1.0..=1.0).contains(&x) {
                Ok(Some(x))
            } else {
                Err(format!("{name} {x} is outside [-1, 1]"))
            }
        }
    }
}

/// Reads the CSV (or a folder holding one) and splits it 70/15/15, stratified and seeded.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    let sheet = &sheet_of(path)?;
    let root = sheet.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(sheet).map_err(|source| DataError::Io {
        path: sheet.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = reader.headers().cloned().unwrap_or_default();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(file_col), Some(label_col)) = (col("file"), col("label")) else {
        return Err(DataError::BadRow {
            file: sheet.to_path_buf(),
            line: 1,
            reason: "expected `file` and `label` columns".into(),
        });
    };
    let (v_col, a_col) = (col("valence"), col("arousal"));
    let (mut samples, mut skipped) = (Vec::new(), Vec::new());
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let parsed = record.map_err(|e| e.to_string()).and_then(|r| {
            let image = root.join(r.get(file_col).unwrap_or_default().trim());
            if !image.is_file() {
                return Err(format!("image {} does not exist", image.display()));
            }
            let label = parse_label(r.get(label_col).unwrap_or_default().trim())?;
            let v = parse_va(v_col.and_then(|c| r.get(c)), "valence")?;
            let a = parse_va(a_col.and_then(|c| r.get(c)), "arousal")?;
            Ok(Sample {
                image,
                face: None,
                landmarks: None,
                emotion: label.map(|l| (l, one_hot(l))),
                valence_arousal: v.zip(a).map(|(v, a)| [v, a]),
                origin: (sheet.to_path_buf(), line),
            })
        });
        match parsed {
            Ok(s) => samples.push(s),
            Err(reason) => opts.bad_row(sheet, line, reason, &mut skipped)?,
        }
    }
    Ok(stratified_split(samples, opts.split_seed, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::LabelMode;

    #[test]
    fn names_indices_and_optional_va() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"").unwrap();
        let sheet = dir.path().join("faces.csv");
        std::fs::write(
            &sheet,
            "file,label,valence,arousal\na.png,Happy,0.5,0.1\na.png,6,,\na.png,,-0.2,0.3\n",
        )
        .unwrap();
        let opts = LoadOptions {
            format: None,
            detect: false,
            label_mode: LabelMode::Majority,
            skip_bad: false,
            split_seed: 1,
        };
        let splits = load(&sheet, &opts).unwrap();
        let mut all = [splits.train, splits.valid, splits.test].concat();
        all.sort_by_key(|s| s.origin.1);
        assert_eq!(all[0].label(), Some(1));
        assert_eq!(all[0].valence_arousal, Some([0.5, 0.1]));
        assert_eq!((all[1].label(), all[1].valence_arousal), (Some(6), None));
        assert_eq!(
            (all[2].label(), all[2].valence_arousal),
            (None, Some([-0.2, 0.3]))
        );
        std::fs::write(&sheet, "file,label\na.png,joyful\n").unwrap();
        let err = load(&sheet, &opts).unwrap_err().to_string();
        assert!(err.contains("faces.csv:2: unknown class `joyful`"), "{err}");
    }
}
