//! The run's final evaluation: the best weights on each source's test split, written as
//! `eval_test_<source>.json` and `confusion_test_<source>.png`.

use super::data::{source_name, FaceSet};
use crate::eval::{self, metrics::EvalReport};
use crate::model::labels::EMOTIONS;
use crate::model::AffectModel;
use crate::report;
use crate::run_error::{io_err, RunError};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Scores `model` on every non-empty test split and writes each report into `out`.
pub fn evaluate_test_splits(
    model: &AffectModel,
    tests: &[(PathBuf, FaceSet)],
    out: &Path,
    device: &Device,
) -> Result<Vec<(PathBuf, EvalReport)>, RunError> {
    let mut reports = Vec::new();
    for (path, set) in tests {
        if set.samples.is_empty() {
            continue;
        }
        let name = source_name(path);
        let preds = eval::predict(model, &set.faces, 64, device, &format!("{name} test"))?;
        let report = eval::score(&set.samples, &preds);
        let json_path = out.join(format!("eval_test_{name}.json"));
        let json =
            serde_json::to_string_pretty(&report).map_err(|e| RunError::Config(e.to_string()))?;
        std::fs::write(&json_path, json).map_err(io_err(&json_path))?;
        if let Some(c) = &report.classification {
            report::plot_confusion_matrix(
                &out.join(format!("confusion_test_{name}.png")),
                &format!("{name} test (n {})", set.samples.len()),
                &EMOTIONS,
                &c.confusion,
            )?;
        }
        reports.push((path.clone(), report));
    }
    Ok(reports)
}
