//! The error of a training or evaluation run: both read datasets and weights, run the model,
//! draw plots and write files, so they fail the same ways.

use crate::data::DataError;
use crate::model::weights::WeightsError;
use crate::report::ReportError;
use std::path::{Path, PathBuf};

/// Errors of a `train` or `eval` run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Reading a dataset failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Reading the initial weights or writing the result failed.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A tensor operation failed.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// Drawing a plot failed.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Reading or writing a file of the run failed.
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The weights training should start from are not there.
    #[error("initial weights not found at {0}; pass --init FILE (ImageNet or affectcam weights; Keras' VGG16 .h5 converts with scripts/keras_h5_to_safetensors.py) or --init none")]
    InitNotFound(PathBuf),
    /// The training settings cannot work together.
    #[error("{0}")]
    Config(String),
    /// The evaluation's selection holds no samples.
    #[error("no samples to evaluate in the chosen split")]
    Empty,
}

/// Names `path` in a failure to read or write it (I/O, CSV or JSON).
pub(crate) fn io_err<E: Into<std::io::Error>>(path: &Path) -> impl FnOnce(E) -> RunError + '_ {
    move |e| RunError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}
