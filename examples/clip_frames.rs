//! Saves chosen frames of an MP4 clip as PNGs, decoded by affectcam's own reader, so other
//! tools (such as `../shared/weights/facedetect/yunet_ref.py`) see exactly the pixels the
//! pipeline sees.
//!
//!     cargo run --release --example clip_frames -- CLIP.mp4 OUT_DIR INDEX...
//!
//! Writes `OUT_DIR/<clip name>-<index>.png` (index zero-padded to 3 digits).

use affectcam::capture::video::Mp4Source;
use affectcam::capture::FrameSource;
use anyhow::{bail, Context};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [clip, out, indices @ ..] = args.as_slice() else {
        bail!("usage: clip_frames CLIP.mp4 OUT_DIR INDEX...");
    };
    let mut wanted: Vec<u64> = indices
        .iter()
        .map(|i| i.parse().with_context(|| format!("not a frame index: {i}")))
        .collect::<anyhow::Result<_>>()?;
    wanted.sort_unstable();
    let stem = Path::new(clip)
        .file_stem()
        .and_then(|s| s.to_str())
        .context("clip path has no file name")?;
    std::fs::create_dir_all(out)?;
    let mut source = Mp4Source::open(Path::new(clip))?;
    let mut index = 0u64;
    while let Some((_, image)) = source.next_frame()? {
        if wanted.binary_search(&index).is_ok() {
            let path = Path::new(out).join(format!("{stem}-{index:03}.png"));
            image.save(&path)?;
            println!("{}", path.display());
        }
        index += 1;
    }
    Ok(())
}
