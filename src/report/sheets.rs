//! Contact sheets: face crops in a grid, each with its caption, under a title.

use super::{ensure_font, render, text_size, white_canvas, ReportError, FONT};
use image::{imageops, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// A face crop with the caption drawn under it on a contact sheet.
#[derive(Debug, Clone)]
pub struct Example {
    /// The crop; any size, it is scaled to 128×128 on the sheet.
    pub image: RgbImage,
    /// One line such as "true happy / pred sad 0.71"; wrapped at word boundaries if too wide.
    pub caption: String,
}

/// Side of a face crop on the contact sheet, in pixels.
const THUMB: u32 = 128;

/// Splits `text` into lines no wider than `max_width` pixels, breaking between words
/// (a single word wider than that gets a line of its own).
fn wrap(
    path: &Path,
    font: &FontDesc<'_>,
    text: &str,
    max_width: u32,
) -> Result<Vec<String>, ReportError> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if text_size(path, font, &format!("{line} {word}"))?.0 <= max_width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    Ok(lines)
}

/// Saves a contact sheet: `examples` in a grid of `columns` (at least one) tiles per row, each
/// crop scaled to 128×128 with its caption under it, and `title` on top, on white.
pub fn save_example_sheet(
    path: &Path,
    title: &str,
    examples: &[Example],
    columns: usize,
) -> Result<(), ReportError> {
    ensure_font();
    let columns = columns.max(1) as u32;
    let rows = (examples.len() as u32).div_ceil(columns);
    let (pad, title_h, line_h) = (12, 48, 17);
    let tile_w = THUMB + 2 * pad;
    let caption_font: FontDesc = (FONT, 14).into();
    let mut captions = Vec::with_capacity(examples.len());
    for ex in examples {
        captions.push(wrap(path, &caption_font, &ex.caption, tile_w - 4)?);
    }
    // All tiles get room for the longest caption, so the rows stay aligned.
    let max_lines = captions.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let tile_h = THUMB + 6 + max_lines * line_h + pad;
    let title_font: FontDesc = (FONT, 22).into();
    let width = (columns * tile_w).max(text_size(path, &title_font, title)?.0 + 2 * pad);
    let height = title_h + rows * tile_h + pad;
    let grid_x = (width - columns * tile_w) / 2;
    let origin = |i: usize| {
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        (grid_x + col * tile_w + pad, title_h + row * tile_h)
    };

    // The crops go straight into the canvas; plotters only adds the text on top.
    let mut canvas = white_canvas(width, height);
    for (i, ex) in examples.iter().enumerate() {
        let thumb = imageops::resize(&ex.image, THUMB, THUMB, imageops::FilterType::Triangle);
        let (x, y) = origin(i);
        imageops::replace(&mut canvas, &thumb, x.into(), y.into());
    }
    render(path, canvas, |root| {
        let centred = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(
            title,
            ((width / 2) as i32, (title_h / 2) as i32),
            title_font.color(&BLACK).pos(centred),
        ))?;
        for (i, lines) in captions.iter().enumerate() {
            let (x, y) = origin(i);
            for (k, line) in lines.iter().enumerate() {
                let pos = (
                    (x + THUMB / 2) as i32,
                    (y + THUMB + 6 + k as u32 * line_h + line_h / 2) as i32,
                );
                root.draw(&Text::new(
                    line.as_str(),
                    pos,
                    caption_font.clone().color(&BLACK).pos(centred),
                ))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{brightness, non_white_pixels};
    use super::*;
    use image::Rgb;

    #[test]
    fn unwritable_path_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("sheet.png");
        let err = save_example_sheet(&path, "none", &[], 5).unwrap_err();
        assert!(matches!(&err, ReportError::Write { path: p, .. } if *p == path));
        assert!(err.to_string().contains("sheet.png"));
    }

    #[test]
    fn example_sheet_lays_out_a_grid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wrong.png");
        let examples: Vec<Example> = (0..7)
            .map(|i| Example {
                image: RgbImage::from_fn(96, 112, |x, y| {
                    Rgb([(x * 2) as u8, (y * 2) as u8, (i * 30) as u8])
                }),
                caption: format!("true happy / pred sad 0.{}", 50 + i),
            })
            .collect();
        save_example_sheet(&path, "wrongly classified (test)", &examples, 4).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        assert_eq!(w, 4 * (THUMB + 24));
        assert!(h > 48 + 2 * THUMB);
        // The first crop is pasted, scaled, at its tile's top-left corner.
        let (x0, y0) = (12, 48);
        assert_eq!(img.get_pixel(x0 + THUMB - 1, y0 + THUMB - 1).0[2], 0);
        assert!(brightness(&img, x0 + THUMB - 2, y0 + THUMB - 2) > 300);
        // The eighth tile is empty, so it stays white.
        assert_eq!(
            img.get_pixel(x0 + 3 * (THUMB + 24) + 10, h - 40).0,
            [255, 255, 255]
        );
        assert!(non_white_pixels(&img) > 7 * (THUMB * THUMB) as usize);
    }
}
