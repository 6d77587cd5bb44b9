//! Draws what training augmentation does to faces: one row per input image, the face as the
//! model sees it unchanged, then eight augmented draws (seeds 0–7).
//!
//!     cargo run --release --example augment_sheet -- OUT.png IMAGE...

use affectcam::model::preprocess::Preprocess;
use affectcam::train::augment::Augment;
use anyhow::{bail, Context};
use image::{GrayImage, Luma};

const DRAWS: u32 = 8;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, images @ ..] = args.as_slice() else {
        bail!("usage: augment_sheet OUT.png IMAGE...");
    };
    let (pre, augment) = (Preprocess::default(), Augment::default());
    let side = pre.input_size as u32;
    let mut sheet =
        GrayImage::from_pixel(side * (DRAWS + 1), side * images.len() as u32, Luma([255]));
    for (row, path) in images.iter().enumerate() {
        let rgb = affectcam::picture::open(std::path::Path::new(path))
            .with_context(|| format!("cannot read {path}"))?;
        let face = pre.face_pixels(&rgb);
        for column in 0..=DRAWS {
            let pixels = match column {
                0 => face.clone(),
                c => augment.apply(&face, side as usize, 1, c as u64 - 1),
            };
            let tile = GrayImage::from_raw(side, side, pixels).context("tile size")?;
            image::imageops::replace(
                &mut sheet,
                &tile,
                (column * side) as i64,
                (row as u32 * side) as i64,
            );
        }
    }
    sheet.save(out)?;
    println!("{out}");
    Ok(())
}
