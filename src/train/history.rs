//! A run's history: one record per epoch in `history.csv`, and the training curves drawn
//! from it.

use crate::report;
use crate::run_error::{io_err, RunError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One epoch's line of `history.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_f1_macro: f64,
    pub val_valence_ccc: f64,
    pub val_arousal_ccc: f64,
    pub seconds: f64,
}

/// Writes the epochs so far as `history.csv` in `out`.
pub fn write_history(out: &Path, history: &[EpochRecord]) -> Result<(), RunError> {
    let path = out.join("history.csv");
    let mut w = csv::Writer::from_path(&path).map_err(io_err(&path))?;
    for r in history {
        w.serialize(r).map_err(io_err(&path))?;
    }
    w.flush().map_err(io_err(&path))
}

/// Reads a run's `history.csv`.
pub fn read_history(out: &Path) -> Result<Vec<EpochRecord>, RunError> {
    let path = out.join("history.csv");
    csv::Reader::from_path(&path)
        .map_err(io_err(&path))?
        .deserialize()
        .collect::<Result<_, _>>()
        .map_err(io_err(&path))
}

/// Draws a run's training curves (`loss.png`, `accuracy.png`, `va_ccc.png`) into `out`.
pub fn plot_history(out: &Path, history: &[EpochRecord]) -> Result<(), RunError> {
    let epochs: Vec<usize> = history.iter().map(|r| r.epoch).collect();
    let col = |f: fn(&EpochRecord) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    let (tl, vl) = (col(|r| r.train_loss), col(|r| r.val_loss));
    report::plot_curves(
        &out.join("loss.png"),
        "loss",
        ("epoch", &epochs),
        &[("train", &tl), ("validation", &vl)],
        "loss",
    )?;
    let (ta, va, f1) = (
        col(|r| r.train_accuracy),
        col(|r| r.val_accuracy),
        col(|r| r.val_f1_macro),
    );
    report::plot_curves(
        &out.join("accuracy.png"),
        "emotion",
        ("epoch", &epochs),
        &[
            ("train accuracy", &ta),
            ("val accuracy", &va),
            ("val macro-F1", &f1),
        ],
        "score",
    )?;
    let (cv, ca) = (col(|r| r.val_valence_ccc), col(|r| r.val_arousal_ccc));
    report::plot_curves(
        &out.join("va_ccc.png"),
        "valence / arousal",
        ("epoch", &epochs),
        &[("val valence CCC", &cv), ("val arousal CCC", &ca)],
        "CCC",
    )?;
    Ok(())
}
