//! The best epoch: which one it is, when to stop waiting for a better one, and its weights,
//! written as soon as it is reached.

use super::Trainer;
use crate::model::weights;
use crate::model::ModelMeta;
use crate::run_error::RunError;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// What an epoch's validation loss means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The lowest validation loss so far (the first epoch always is).
    Improved,
    /// No better, but still within the patience.
    Wait,
    /// `patience` epochs without improvement: stop.
    Stop,
}

/// Tracks the epoch with the lowest validation loss and ends the run after `patience` epochs
/// without a lower one.
#[derive(Debug)]
pub struct EarlyStopping {
    patience: usize,
    /// Epoch and validation loss of the best epoch so far.
    best: Option<(usize, f64)>,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> Self {
        Self {
            patience,
            best: None,
        }
    }

    /// Records epoch `epoch`'s validation loss (epochs count up from 1).
    pub fn observe(&mut self, epoch: usize, val_loss: f64) -> Verdict {
        if self.best.is_none_or(|(_, best_loss)| val_loss < best_loss) {
            self.best = Some((epoch, val_loss));
            Verdict::Improved
        } else if self
            .best
            .is_some_and(|(best_epoch, _)| epoch - best_epoch >= self.patience)
        {
            Verdict::Stop
        } else {
            Verdict::Wait
        }
    }
}

/// The best epoch's weights, kept for the final evaluation.
pub struct BestWeights {
    pub epoch: usize,
    pub tensors: HashMap<String, Tensor>,
}

impl BestWeights {
    /// Copies the trainer's weights as epoch `epoch`'s and writes them to `path` now, so an
    /// interrupted run still leaves its best weights.
    pub fn save(
        epoch: usize,
        trainer: &Trainer,
        meta: &ModelMeta,
        path: &Path,
    ) -> Result<Self, RunError> {
        let tensors = trainer
            .tensors()
            .into_iter()
            .map(|(k, t)| t.copy().map(|t| (k, t)))
            .collect::<candle_core::Result<_>>()?;
        weights::write_safetensors(path, &tensors, meta.to_metadata())?;
        Ok(Self { epoch, tensors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_a_lower_loss() {
        let mut stopping = EarlyStopping::new(2);
        assert_eq!(stopping.observe(1, 1.0), Verdict::Improved);
        assert_eq!(stopping.observe(2, 0.5), Verdict::Improved);
        assert_eq!(stopping.observe(3, 0.5), Verdict::Wait); // equal is no improvement
        assert_eq!(stopping.observe(4, 0.4), Verdict::Improved);
        assert_eq!(stopping.observe(5, 0.9), Verdict::Wait);
        assert_eq!(stopping.observe(6, 0.8), Verdict::Stop);
    }

    #[test]
    fn zero_patience_stops_at_the_first_miss_and_nan_never_improves() {
        let mut stopping = EarlyStopping::new(0);
        assert_eq!(stopping.observe(1, 1.0), Verdict::Improved);
        assert_eq!(stopping.observe(2, f64::NAN), Verdict::Stop);
        let mut stopping = EarlyStopping::new(3);
        assert_eq!(stopping.observe(1, f64::NAN), Verdict::Improved);
        assert_eq!(stopping.observe(2, 0.1), Verdict::Wait);
    }
}
