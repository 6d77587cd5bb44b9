//! One folder per class: `root/<class name>/*.{png,jpg,jpeg}` (names or aliases such as
//! `angry`, `happiness`). A folder that names no class is an error (or, with `skip_bad`, is
//! skipped and counted with its files).

use super::{one_hot, stratified_split, DataError, LoadOptions, Sample, Splits};
use crate::model::labels::emotion_index;
use std::path::Path;

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    paths.sort();
    Ok(paths)
}

/// Whether `dir` has at least one subfolder named after a class.
pub fn looks_like_class_folders(dir: &Path) -> bool {
    read_dir_sorted(dir).is_ok_and(|paths| {
        paths.iter().any(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(emotion_index)
                    .is_some()
        })
    })
}

/// Reads every class folder and splits 70/15/15, stratified and seeded.
pub fn load(root: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    let (mut samples, mut skipped) = (Vec::new(), Vec::new());
    for dir in read_dir_sorted(root)?.into_iter().filter(|p| p.is_dir()) {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let files: Vec<_> = read_dir_sorted(&dir)?
            .into_iter()
            .filter(|p| is_image(p))
            .collect();
        let Some(label) = emotion_index(&name) else {
            let e = DataError::UnknownClassFolder {
                path: dir.clone(),
                name: name.clone(),
            };
            if !opts.skip_bad {
                return Err(e);
            }
            skipped.extend(
                files
                    .iter()
                    .map(|f| format!("{}: unknown class folder", f.display())),
            );
            continue;
        };
        for (i, image) in files.into_iter().enumerate() {
            samples.push(Sample {
                image,
                face: None,
                landmarks: None,
                emotion: Some((label, one_hot(label))),
                valence_arousal: None,
                origin: (dir.clone(), i + 1),
            });
        }
    }
    Ok(stratified_split(samples, opts.split_seed, skipped))
}
