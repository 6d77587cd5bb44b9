//! Redraws a training run's curves from its `history.csv` (for runs made by older builds).
//!
//!     cargo run --release --example plot_history -- runs/shipped

use affectcam::train::history::{plot_history, read_history};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: plot_history RUN_DIR"))?,
    );
    plot_history(&dir, &read_history(&dir)?)?;
    println!(
        "wrote loss.png, accuracy.png and va_ccc.png in {}",
        dir.display()
    );
    Ok(())
}
