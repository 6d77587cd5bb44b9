//! AffectNet-style CSV: columns found by name — `subDirectory_filePath`, `expression`,
//! `valence`, `arousal`, and optionally `face_x, face_y, face_width, face_height`. Image paths
//! are relative to the CSV's folder. Expression codes 0–7 are AffectNet's classes; 8–10 (none,
//! uncertain, no face) leave the sample without an emotion label, as does a V/A of -2
//! (AffectNet's "not annotated") for valence/arousal.

use super::{one_hot, sheet_of, stratified_split, DataError, LoadOptions, Sample, Splits};
use crate::geometry::FaceBox;
use crate::model::labels::NUM_EMOTIONS;
use std::path::{Path, PathBuf};

struct Columns {
    path: usize,
    expression: Option<usize>,
    valence: Option<usize>,
    arousal: Option<usize>,
    face: Option<[usize; 4]>,
}

impl Columns {
    fn find(header: &csv::StringRecord) -> Option<Self> {
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let face = ["face_x", "face_y", "face_width", "face_height"].map(col);
        Some(Self {
            path: col("subDirectory_filePath")?,
            expression: col("expression"),
            valence: col("valence"),
            arousal: col("arousal"),
            face: face
                .iter()
                .all(Option::is_some)
                .then(|| face.map(|c| c.unwrap_or(0))),
        })
    }
}

fn parse_row(root: &Path, cols: &Columns, r: &csv::StringRecord) -> Result<Sample, String> {
    let field = |i: usize| {
        r.get(i)
            .map(str::trim)
            .ok_or_else(|| format!("missing column {}", i + 1))
    };
    let image = root.join(field(cols.path)?);
    if !image.is_file() {
        return Err(format!("image {} does not exist", image.display()));
    }
    let emotion = match cols.expression {
        Some(c) => {
            let v = field(c)?;
            let code: usize = v
                .parse()
                .map_err(|_| format!("expression `{v}` is not a class index"))?;
            match code {
                0..NUM_EMOTIONS => Some((code, one_hot(code))),
                8..=10 => None,
                _ => return Err(format!("expression {code} is not an AffectNet code (0–10)")),
            }
        }
        None => None,
    };
    let va_value = |c: Option<usize>, name: &str| -> Result<Option<f32>, String> {
        let Some(c) = c else { return Ok(None) };
        let v = field(c)?;
        let x: f32 = v
            .parse()
            .map_err(|_| format!("{name} `{v}` is not a number"))?;
        if x == -2.0 {
            Ok(None)
        } else if (-1.0..=1.0).contains(&x) {
            Ok(Some(x))
        } else {
            Err(format!("{name} {x} is outside [-1, 1]"))
        }
    };
    let valence_arousal = match (
        va_value(cols.valence, "valence")?,
        va_value(cols.arousal, "arousal")?,
    ) {
        (Some(v), Some(a)) => Some([v, a]),
        _ => None,
    };
    let face = match cols.face {
        Some(c) => {
            let mut b = [0f32; 4];
            for (v, &i) in b.iter_mut().zip(&c) {
                let s = field(i)?;
                *v = s
                    .parse()
                    .map_err(|_| format!("face box value `{s}` is not a number"))?;
            }
            if b[2] <= 0.0 || b[3] <= 0.0 {
                return Err("face box has no area".to_string());
            }
            Some(FaceBox {
                x: b[0],
                y: b[1],
                width: b[2],
                height: b[3],
            })
        }
        None => None,
    };
    Ok(Sample {
        image,
        face,
        landmarks: None,
        emotion,
        valence_arousal,
        origin: (PathBuf::new(), 0),
    })
}

/// Reads every row of a sheet.
pub fn read_sheet(
    sheet: &Path,
    opts: &LoadOptions,
    skipped: &mut Vec<String>,
) -> Result<Vec<Sample>, DataError> {
    let root = sheet.parent().unwrap_or(Path::new("."));
    let io = |source| DataError::Io {
        path: sheet.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(sheet).map_err(io)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| DataError::BadRow {
        file: sheet.to_path_buf(),
        line: 1,
        reason: e.to_string(),
    })?;
    let cols = Columns::find(header).ok_or_else(|| DataError::BadRow {
        file: sheet.to_path_buf(),
        line: 1,
        reason: "no `subDirectory_filePath` column".to_string(),
    })?;
    let mut samples = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let parsed = record
            .map_err(|e| e.to_string())
            .and_then(|r| parse_row(root, &cols, &r));
        match parsed {
            Ok(mut s) => {
                s.origin = (sheet.to_path_buf(), line);
                samples.push(s);
            }
            Err(reason) => opts.bad_row(sheet, line, reason, skipped)?,
        }
    }
    Ok(samples)
}

/// Reads a sheet (or a folder holding one) and splits it 70/15/15, stratified and seeded.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    let sheet = sheet_of(path)?;
    let mut skipped = Vec::new();
    let samples = read_sheet(&sheet, opts, &mut skipped)?;
    Ok(stratified_split(samples, opts.split_seed, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::LabelMode;

    fn opts(skip_bad: bool) -> LoadOptions {
        LoadOptions {
            format: None,
            detect: false,
            label_mode: LabelMode::Majority,
            skip_bad,
            split_seed: 0,
        }
    }

    fn sheet(rows: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"").unwrap();
        let path = dir.path().join("dataset_sheet.csv");
        std::fs::write(
            &path,
            format!("subDirectory_filePath,valence,arousal,expression\n{rows}"),
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn columns_by_name_and_missing_labels() {
        let (_d, path) = sheet("a.png,0.5,-0.25,1\na.png,-2,-2,9\n");
        let s = read_sheet(&path, &opts(false), &mut Vec::new()).unwrap();
        assert_eq!(s[0].label(), Some(1));
        assert_eq!(s[0].valence_arousal, Some([0.5, -0.25]));
        assert_eq!(s[0].origin.1, 2);
        assert_eq!((s[1].label(), s[1].valence_arousal), (None, None));
    }

    #[test]
    fn bad_rows_name_file_and_line_or_are_counted() {
        let (_d, path) = sheet("a.png,0.5,0.1,1\na.png,1.5,0,1\nmissing.png,0,0,0\na.png,0,0,12\n");
        let err = read_sheet(&path, &opts(false), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dataset_sheet.csv:3") && err.contains("outside [-1, 1]"),
            "{err}"
        );
        let mut skipped = Vec::new();
        let s = read_sheet(&path, &opts(true), &mut skipped).unwrap();
        assert_eq!((s.len(), skipped.len()), (1, 3));
        assert!(skipped[1].contains(":4:") && skipped[1].contains("does not exist"));
    }
}
