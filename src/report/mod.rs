//! Figures people look at, written as PNGs: training curves, confusion matrices and
//! contact sheets of example face crops.
//!
//! Every figure is drawn by plotters into an in-memory RGB buffer and saved with `image`,
//! so all of them fail the same two ways ([`ReportError`]).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Once;

use image::{ImageFormat, Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

mod sheets;
pub use sheets::{save_example_sheet, Example};

/// Errors from rendering or saving a figure.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Drawing the figure for `path` failed (layout, font or rasterising).
    #[error("drawing {} failed", .path.display())]
    Draw {
        path: PathBuf,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// The finished PNG could not be written to `path`.
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
}

/// Font family every text style below names; it must match what [`ensure_font`] registers.
const FONT: &str = "sans-serif";

/// Distinguishable line colours (matplotlib's tab10), cycled over the series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

type DrawResult =
    Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

/// Registers the bundled DejaVu Sans as "sans-serif": with plotters' `ab_glyph` feature there
/// is no system font lookup, so text fails to draw until a font is registered.
fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The font is compiled in, so a failure here is a broken build, not a runtime condition.
        assert!(
            plotters::style::register_font(FONT, FontStyle::Normal, crate::DEJAVU_SANS).is_ok(),
            "bundled DejaVuSans.ttf is not a valid font"
        );
    });
}

fn draw_err<E: Error + Send + Sync + 'static>(path: &Path) -> impl FnOnce(E) -> ReportError + '_ {
    move |e| ReportError::Draw {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Runs `draw` on a plotters area over `canvas`, then saves `canvas` as a PNG at `path`.
fn render(
    path: &Path,
    mut canvas: RgbImage,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
) -> Result<(), ReportError> {
    ensure_font();
    let size = canvas.dimensions();
    {
        let root = BitMapBackend::with_buffer(&mut canvas, size).into_drawing_area();
        draw(&root).map_err(draw_err(path))?;
        root.present().map_err(draw_err(path))?;
    }
    canvas
        .save_with_format(path, ImageFormat::Png)
        .map_err(|source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn white_canvas(width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, Rgb([255, 255, 255]))
}

/// Width and height of `text` in `font`, in pixels.
fn text_size(path: &Path, font: &FontDesc<'_>, text: &str) -> Result<(u32, u32), ReportError> {
    font.box_size(text).map_err(draw_err(path))
}

/// Plots several named series against epoch as a line chart (900×500 PNG at `path`).
///
/// `series[i].1[j]` is the value at `epochs[j]`; values past the end of `epochs` are ignored.
/// Non-finite values (NaN for an epoch without that metric) are left out, and the y-range is
/// fitted to the remaining values.
pub fn plot_curves(
    path: &Path,
    title: &str,
    (x_label, epochs): (&str, &[usize]),
    series: &[(&str, &[f64])],
    y_label: &str,
) -> Result<(), ReportError> {
    let points: Vec<Vec<(usize, f64)>> = series
        .iter()
        .map(|(_, values)| {
            epochs
                .iter()
                .zip(values.iter())
                .filter(|(_, v)| v.is_finite())
                .map(|(&e, &v)| (e, v))
                .collect()
        })
        .collect();
    let (x_min, x_max) = match (epochs.iter().min(), epochs.iter().max()) {
        // One epoch sits in the middle of a unit range rather than on the axis.
        (Some(&lo), Some(&hi)) if lo == hi => (lo.saturating_sub(1), hi + 1),
        (Some(&lo), Some(&hi)) => (lo, hi),
        _ => (0, 1),
    };
    let (y_min, y_max) = points
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| {
            (lo.min(v), hi.max(v))
        });
    let (y_min, y_max) = if !y_min.is_finite() {
        (0.0, 1.0)
    } else if y_max == y_min {
        // A flat series still needs a visible range around it.
        (y_min - 0.5, y_max + 0.5)
    } else {
        let margin = 0.05 * (y_max - y_min);
        (y_min - margin, y_max + margin)
    };
    // Put the legend where the curves are not at the end: rising metrics (accuracy) finish
    // high, so their legend goes low, and falling ones (loss) the other way round.
    let last_values: Vec<f64> = points
        .iter()
        .filter_map(|p| p.last().map(|&(_, v)| v))
        .collect();
    let mean_last = last_values.iter().sum::<f64>() / last_values.len().max(1) as f64;
    let legend_at = if mean_last > (y_min + y_max) / 2.0 {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };

    render(path, white_canvas(900, 500), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x_min..x_max, y_min..y_max)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (i, ((name, _), pts)) in series.iter().zip(&points).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            // Dots mark each value, so a series with a single finite value is still visible.
            chart
                .draw_series(
                    LineSeries::new(pts.iter().copied(), color.stroke_width(2)).point_size(2),
                )?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
    })
}

/// White → dark blue colour ramp for a value in [0, 1] (close to matplotlib's "Blues").
fn blues(v: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 3] = [
        (247.0, 251.0, 255.0),
        (107.0, 174.0, 214.0),
        (8.0, 48.0, 107.0),
    ];
    let t = v.clamp(0.0, 1.0) * 2.0;
    let i = (t as usize).min(1);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Draws a confusion matrix as a heat map (rows = true class, columns = predicted), coloured by
/// the row-normalised value (per-class recall); each cell shows that value and its count.
///
/// The PNG at `path` grows with the number of classes (cells of at least 80×80 pixels).
///
/// # Panics
/// If `confusion` is not a square matrix with one row per class name.
pub fn plot_confusion_matrix(
    path: &Path,
    title: &str,
    class_names: &[&str],
    confusion: &[Vec<u64>],
) -> Result<(), ReportError> {
    let n = class_names.len();
    assert!(
        confusion.len() == n && confusion.iter().all(|row| row.len() == n),
        "confusion matrix must be {n}×{n} to match the class names"
    );
    ensure_font();
    let label_font: FontDesc = (FONT, 15).into();
    let mut name_w = 0;
    for name in class_names {
        name_w = name_w.max(text_size(path, &label_font, name)?.0);
    }
    // Cells wide enough for the column names, so they never overlap.
    let cell = name_w.max(70) + 12;
    let (pad, title_h, axis_title_h, names_h) = (16, 48, 24, 26);
    let left = pad + axis_title_h + name_w + 12;
    let grid = n as u32 * cell;
    let width =
        (left + grid + 2 * pad).max(text_size(path, &(FONT, 22).into(), title)?.0 + 2 * pad);
    let height = title_h + grid + names_h + axis_title_h + pad;

    render(path, white_canvas(width, height), |root| {
        let at = |x: u32, y: u32| (x as i32, y as i32);
        let centred = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(
            title,
            at(width / 2, title_h / 2),
            (FONT, 22).into_font().color(&BLACK).pos(centred),
        ))?;
        for (r, row) in confusion.iter().enumerate() {
            let total: u64 = row.iter().sum();
            let y0 = title_h + r as u32 * cell;
            root.draw(&Text::new(
                class_names[r],
                at(left - 10, y0 + cell / 2),
                label_font
                    .clone()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
            for (c, &count) in row.iter().enumerate() {
                let recall = if total == 0 {
                    0.0
                } else {
                    count as f64 / total as f64
                };
                let x0 = left + c as u32 * cell;
                root.draw(&Rectangle::new(
                    [at(x0, y0), at(x0 + cell, y0 + cell)],
                    blues(recall).filled(),
                ))?;
                // Past the middle of the ramp the blue is too dark for black text.
                let ink = if recall > 0.5 { WHITE } else { BLACK };
                let (cx, cy) = (x0 + cell / 2, y0 + cell / 2);
                let value = (FONT, 18).into_font().color(&ink).pos(centred);
                root.draw(&Text::new(format!("{recall:.2}"), at(cx, cy - 10), value))?;
                let count_style = (FONT, 13).into_font().color(&ink).pos(centred);
                root.draw(&Text::new(
                    format!("n {count}"),
                    at(cx, cy + 13),
                    count_style,
                ))?;
            }
        }
        root.draw(&Rectangle::new(
            [at(left, title_h), at(left + grid, title_h + grid)],
            BLACK.stroke_width(1),
        ))?;
        for (c, name) in class_names.iter().enumerate() {
            let x = left + c as u32 * cell + cell / 2;
            root.draw(&Text::new(
                *name,
                at(x, title_h + grid + names_h / 2 + 4),
                label_font.clone().color(&BLACK).pos(centred),
            ))?;
        }
        let axis_font = (FONT, 17).into_font();
        let bottom = title_h + grid + names_h + axis_title_h / 2 + 6;
        root.draw(&Text::new(
            "predicted",
            at(left + grid / 2, bottom),
            axis_font.clone().color(&BLACK).pos(centred),
        ))?;
        let rotated = axis_font
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(centred);
        root.draw(&Text::new(
            "true",
            at(pad + axis_title_h / 2, title_h + grid / 2),
            rotated,
        ))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(super) fn non_white_pixels(img: &RgbImage) -> usize {
        img.pixels().filter(|p| p.0 != [255, 255, 255]).count()
    }

    pub(super) fn brightness(img: &RgbImage, x: u32, y: u32) -> u32 {
        img.get_pixel(x, y).0.iter().map(|&c| u32::from(c)).sum()
    }

    #[test]
    fn training_curves_png_has_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let train = [2.1, 1.6, 1.3, 1.1, 0.95, 0.9, 0.86, 0.84];
        let val = [2.0, 1.7, f64::NAN, 1.35, 1.3, 1.28, 1.3, 1.33];
        let epochs: Vec<usize> = (1..=8).collect();
        plot_curves(
            &path,
            "loss",
            ("epoch", &epochs),
            &[("train", &train), ("validation", &val)],
            "loss",
        )
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (900, 500));
        assert!(non_white_pixels(&img) > 5_000);
        // Both line colours are present.
        for color in &PALETTE[..2] {
            let rgb = [color.0, color.1, color.2];
            assert!(img.pixels().filter(|p| p.0 == rgb).count() > 100);
        }
    }

    #[test]
    fn training_curves_tolerate_no_finite_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        plot_curves(
            &path,
            "nothing yet",
            ("epoch", &[1]),
            &[("val", &[f64::NAN])],
            "CCC",
        )
        .unwrap();
        assert_eq!(
            image::open(&path).unwrap().to_rgb8().dimensions(),
            (900, 500)
        );
    }

    #[test]
    fn confusion_matrix_darkens_with_recall() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        let names = [
            "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
        ];
        let confusion: Vec<Vec<u64>> = (0..8)
            .map(|r| {
                (0..8)
                    .map(|c| if r == c { 90 } else { (r + c) as u64 % 3 })
                    .collect()
            })
            .collect();
        plot_confusion_matrix(&path, "AffectNet test (n 3999)", &names, &confusion).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();

        // Recompute the layout to sample the top-left corner of cells (clear of the text).
        let font: FontDesc = (FONT, 15).into();
        let name_w = names
            .iter()
            .map(|n| font.box_size(n).unwrap().0)
            .max()
            .unwrap();
        let cell = name_w.max(70) + 12;
        let (left, top) = (16 + 24 + name_w + 12, 48);
        assert_eq!(
            img.dimensions(),
            (left + 8 * cell + 32, top + 8 * cell + 26 + 24 + 16)
        );
        let sample = |r: u32, c: u32| brightness(&img, left + c * cell + 4, top + r * cell + 4);
        assert!(
            sample(0, 0) < sample(0, 1),
            "diagonal cell should be darker"
        );
        assert!(sample(3, 3) < sample(3, 0));
        assert!(sample(3, 3) < 300, "high recall should be dark blue");
        assert!(sample(3, 0) > 600, "low recall should be near white");
        // The diagonal carries white text on its dark fill.
        let diag = |x: u32, y: u32| img.get_pixel(left + x, top + y).0;
        assert!((0..cell)
            .flat_map(|x| (0..cell).map(move |y| (x, y)))
            .any(|(x, y)| diag(x, y) == [255, 255, 255]));
    }
}
