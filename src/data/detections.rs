//! Detections of dataset images kept between runs (`--detect`): the detector's face for each
//! image file, keyed by its path, size and modification time, so a second run over the same
//! files does not detect again.

use crate::detect::Detection;
use crate::geometry::{FaceBox, Landmarks, Point};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bump when the detector, its settings or the face choice change: old entries are then unused.
const VERSION: &str = "yunet-largest-v2";

/// Per image file: the chosen face (box, score, landmarks), or none found.
pub struct DetectionCache {
    path: PathBuf,
    entries: Mutex<HashMap<String, Option<Vec<f32>>>>,
    changed: Mutex<bool>,
}

impl DetectionCache {
    /// The cache in `dir` (empty if there is none yet or it cannot be read).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join(format!("detections-{VERSION}.json"));
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            path,
            entries: Mutex::new(entries),
            changed: Mutex::new(false),
        }
    }

    /// What was found in `image` before, if the file is unchanged since.
    pub fn get(&self, image: &Path) -> Option<Option<Detection>> {
        let key = key(image)?;
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(&key)
            .map(|v| v.as_deref().and_then(from_values))
    }

    /// Records what was found in `image`.
    pub fn insert(&self, image: &Path, found: Option<&Detection>) {
        if let Some(key) = key(image) {
            let value = found.map(to_values);
            self.entries.lock().expect("cache lock").insert(key, value);
            *self.changed.lock().expect("cache lock") = true;
        }
    }

    /// Writes the cache back if anything was added (atomically, through a temporary file).
    pub fn save(&self) -> std::io::Result<()> {
        if !*self.changed.lock().expect("cache lock") {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec(&*self.entries.lock().expect("cache lock"))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// The file's absolute path, size and modification time.
fn key(image: &Path) -> Option<String> {
    let meta = std::fs::metadata(image).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let path = std::fs::canonicalize(image).ok()?;
    Some(format!(
        "{}|{}|{}",
        path.display(),
        meta.len(),
        modified.as_nanos()
    ))
}

/// Box, score, then the ten landmark coordinates when there are landmarks.
fn to_values(d: &Detection) -> Vec<f32> {
    let b = d.face;
    let mut v = vec![b.x, b.y, b.width, b.height, d.score as f32];
    if let Some(l) = d.landmarks {
        for p in [l.left_eye, l.right_eye, l.nose, l.left_mouth, l.right_mouth] {
            v.extend([p.x, p.y]);
        }
    }
    v
}

fn from_values(v: &[f32]) -> Option<Detection> {
    let (b, rest) = (v.get(..5)?, &v[5..]);
    let point = |i: usize| Point {
        x: rest[2 * i],
        y: rest[2 * i + 1],
    };
    let landmarks = (rest.len() == 10).then(|| Landmarks {
        left_eye: point(0),
        right_eye: point(1),
        nose: point(2),
        left_mouth: point(3),
        right_mouth: point(4),
    });
    Some(Detection {
        face: FaceBox {
            x: b[0],
            y: b[1],
            width: b[2],
            height: b[3],
        },
        score: b[4] as f64,
        landmarks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_survive_a_save_and_a_changed_file_is_detected_again() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.png");
        std::fs::write(&image, b"one").unwrap();
        let d = Detection {
            face: FaceBox {
                x: 1.0,
                y: 2.0,
                width: 30.0,
                height: 40.0,
            },
            score: 0.75,
            landmarks: Some(Landmarks::default()),
        };
        let cache = DetectionCache::open(dir.path());
        assert_eq!(cache.get(&image), None);
        cache.insert(&image, Some(&d));
        cache.insert(&dir.path().join("b.png"), None); // no such file: not cached
        cache.save().unwrap();
        let again = DetectionCache::open(dir.path());
        assert_eq!(again.get(&image), Some(Some(d)));
        std::fs::write(&image, b"changed").unwrap();
        assert_eq!(again.get(&image), None);
        again.insert(&image, None);
        assert_eq!(again.get(&image), Some(None));
    }
}
