//! Test helpers shared by the kernels' tests (the op-by-op comparisons are in [`super::check`]).

use candle_core::Tensor;

pub use super::check::randn;

/// Largest absolute difference, relative to the reference's largest magnitude.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    super::check::rel_err(a, b).unwrap()
}
