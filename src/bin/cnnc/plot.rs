//! Figures for training runs: loss/accuracy curves and confusion matrices.
//!
//! Every figure is written twice, as `<stem>.png` (for quick viewing) and `<stem>.svg` (for
//! papers and zooming). Drawing uses `plotters` with the embedded DejaVu Sans font, so the output
//! does not depend on the fonts installed on the machine; PNG encoding uses the `png` crate.

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ffi::OsString;
use std::fs;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The font family every text element uses; registered by [`ensure_font`].
const FONT: &str = "sans-serif";

/// Size of the curves figure in pixels (width, height).
const CURVES_SIZE: (u32, u32) = (1200, 500);

/// Series colours (Tableau 10), cycled when there are more series.
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

/// Colour of text, axes and the line-style key.
const INK: RGBColor = RGBColor(40, 40, 40);
/// Colour of grid lines.
const GRID: RGBColor = RGBColor(225, 225, 225);

/// One training run's per-epoch curves (epochs are 1-based in the plot).
///
/// The four vectors may have different lengths (element `i` belongs to epoch `i + 1`);
/// non-finite values are left out of the plot.
pub struct Series {
    /// Name of the run, shown in the legend.
    pub label: String,
    /// Mean training loss per epoch.
    pub train_loss: Vec<f64>,
    /// Validation loss per epoch.
    pub val_loss: Vec<f64>,
    /// Training accuracy per epoch, in `0..=1`.
    pub train_acc: Vec<f64>,
    /// Validation accuracy per epoch, in `0..=1`.
    pub val_acc: Vec<f64>,
}

/// Draws a 2-panel figure (left: train/val loss vs epoch, right: train/val accuracy in % vs
/// epoch), one colour per series, solid = validation, dashed = training, with a legend of the
/// labels below the panels, axis labels and a title.
///
/// Writes both `<stem>.png` (1200×500) and `<stem>.svg` for `stem` like `runs/SeedCnn/curves`
/// (parent directories are created) and returns the two paths written, PNG first. Runs of a
/// single epoch are drawn as markers, NaN/infinite values are skipped (lines break there).
pub fn plot_curves(stem: &Path, title: &str, series: &[Series]) -> Result<[PathBuf; 2]> {
    ensure_font()?;
    write_both(stem, CURVES_SIZE, &Curves { title, series })
}

/// Draws a confusion matrix heat map (rows = true class, columns = predicted class, cell text =
/// count, colour = count as a fraction of its row) with class indices, axis labels, a colour
/// bar and a title, and writes `<stem>.png` and `<stem>.svg`.
///
/// The image size grows with the number of classes (cells of up to 64 px, about 900 px of
/// cells at most); counts are printed only where they fit in their cell. `matrix` must be
/// non-empty with rows of equal, non-zero length and at most 1000 classes. Returns the two paths written, PNG first.
pub fn plot_confusion(stem: &Path, title: &str, matrix: &[Vec<u64>]) -> Result<[PathBuf; 2]> {
    ensure_font()?;
    let rows = matrix.len();
    let cols = matrix.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        bail!("cannot plot an empty confusion matrix ({})", stem.display());
    }
    if let Some((i, row)) = matrix.iter().enumerate().find(|(_, r)| r.len() != cols) {
        bail!(
            "confusion matrix row {i} has {} entries, row 0 has {cols} ({})",
            row.len(),
            stem.display()
        );
    }
    if rows.max(cols) > MAX_CLASSES {
        bail!(
            "a {rows}×{cols} confusion matrix is too large to plot (at most {MAX_CLASSES} classes): {}",
            stem.display()
        );
    }
    let layout = ConfusionLayout::new(title, matrix)?;
    let size = layout.size;
    write_both(
        stem,
        size,
        &Confusion {
            layout,
            title,
            matrix,
        },
    )
}

/// Registers the embedded font under [`FONT`] once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../../assets/fonts/DejaVuSans.ttf"),
        )
        .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the embedded plot font (DejaVu Sans) could not be loaded"
        ))
    }
}

/// `stem` with `.ext` appended (not replacing an extension: `run.v2/curves` stays intact).
fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = OsString::from(stem.as_os_str());
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Draws `fig` into a bitmap and into an SVG document and writes them to `<stem>.png` and
/// `<stem>.svg`, creating the parent directory.
fn write_both(stem: &Path, size: (u32, u32), fig: &impl Draw) -> Result<[PathBuf; 2]> {
    let png_path = with_ext(stem, "png");
    let svg_path = with_ext(stem, "svg");
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }

    // PNG: draw into an RGB buffer, then encode it ourselves.
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        fig.draw(&root)
            .and_then(|()| root.present())
            .map_err(|e| anyhow!("cannot draw {}: {e}", png_path.display()))?;
    }
    crate::outputs::write(&png_path, &encode_png(size, &rgb)?)?;

    // SVG: draw into a string, then write it.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        fig.draw(&root)
            .and_then(|()| root.present())
            .map_err(|e| anyhow!("cannot draw {}: {e}", svg_path.display()))?;
    }
    crate::outputs::write(&svg_path, svg.as_bytes())?;
    Ok([png_path, svg_path])
}

/// Encodes an 8-bit RGB buffer of `size` as PNG bytes.
fn encode_png(size: (u32, u32), rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, size.0, size.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("cannot encode a PNG")?;
    writer
        .write_image_data(rgb)
        .and_then(|()| writer.finish())
        .context("cannot encode a PNG")?;
    Ok(out)
}

/// A figure that can be drawn onto any plotters backend (bitmap and SVG are distinct types).
trait Draw {
    /// Draws the whole figure onto `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Result of drawing onto backend `DB`.
type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// The embedded font at `size` px in the default text colour.
fn text_style(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&INK)
}

/// The `(epoch, value * scale)` runs of consecutive finite values of `values`: a non-finite
/// value breaks the line instead of being drawn as a spike or bridged over.
fn segments(values: &[f64], scale: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let y = v * scale;
        if y.is_finite() {
            current.push(((i + 1) as f64, y));
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Integer epoch ticks for epochs `1..=n`: every epoch up to 10, otherwise multiples of a
/// 1-2-5 step giving at most 10 ticks.
fn epoch_ticks(n: usize) -> Vec<f64> {
    if n <= 10 {
        return (1..=n).map(|e| e as f64).collect();
    }
    let step = nice_step(n.div_ceil(10));
    (1..=n / step).map(|k| (k * step) as f64).collect()
}

/// The x axis of the curves: epochs `1..=n` with half an epoch of padding on either side and
/// integer ticks (plotters' own `f64` axis would put ticks at fractional epochs).
struct EpochAxis {
    /// Number of epochs.
    n: usize,
}

impl Ranged for EpochAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let range = self.range();
        let t = (value - range.start) / (range.end - range.start);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            epoch_ticks(self.n)
        }
    }

    fn range(&self) -> Range<f64> {
        0.5..self.n as f64 + 0.5
    }
}

/// The smallest number of the form 1, 2 or 5 × 10^k that is at least `min`.
fn nice_step(min: usize) -> usize {
    let mut base = 1;
    loop {
        for m in [1, 2, 5] {
            if m * base >= min {
                return m * base;
            }
        }
        base *= 10;
    }
}

/// The y range for `values`: their span padded by 6%, at least `min_span` wide, not below
/// zero when no value is negative; `0..default_hi` when there is no finite value.
fn y_range<'a>(
    values: impl Iterator<Item = &'a [(f64, f64)]>,
    min_span: f64,
    default_hi: f64,
) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for seg in values {
        for &(_, y) in seg {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    if lo > hi {
        return (0.0, default_hi);
    }
    let nonnegative = lo >= 0.0;
    let span = (hi - lo).max(min_span);
    let mid = (lo + hi) / 2.0;
    let (mut lo, hi) = (mid - span * 0.56, mid + span * 0.56);
    if nonnegative && lo < 0.0 {
        lo = 0.0;
    }
    (lo, hi)
}

/// The curves figure: title, loss and accuracy panels, legend.
struct Curves<'a> {
    /// Figure title.
    title: &'a str,
    /// The runs to draw.
    series: &'a [Series],
}

/// One legend entry: a line sample and a text.
struct LegendEntry {
    /// Text after the sample.
    text: String,
    /// Colour of the sample.
    color: RGBColor,
    /// Whether the sample is dashed (the training line style).
    dashed: bool,
}

/// Length of a legend line sample, gap after it and between entries, in px.
const LEGEND_SAMPLE: i32 = 30;
/// Gap between a legend sample and its text, in px.
const LEGEND_GAP: i32 = 8;
/// Gap between legend entries, in px.
const LEGEND_SPACING: i32 = 28;
/// Height of one legend row, in px.
const LEGEND_ROW: i32 = 26;
/// Font size of legend text.
const LEGEND_FONT: f64 = 15.0;

impl Curves<'_> {
    /// The legend: one entry per series, then the line-style key.
    fn legend_entries(&self) -> Vec<LegendEntry> {
        let mut entries: Vec<LegendEntry> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| LegendEntry {
                text: s.label.clone(),
                color: PALETTE[i % PALETTE.len()],
                dashed: false,
            })
            .collect();
        entries.push(LegendEntry {
            text: "validation".into(),
            color: INK,
            dashed: false,
        });
        entries.push(LegendEntry {
            text: "training".into(),
            color: INK,
            dashed: true,
        });
        entries
    }

    /// Flows `entries` into centred rows of at most `width` px: for each row, the
    /// (entry index, x of its sample) pairs.
    fn legend_rows(entries: &[LegendEntry], width: i32) -> Vec<Vec<(usize, i32)>> {
        let font = (FONT, LEGEND_FONT).into_font();
        let widths: Vec<i32> = entries
            .iter()
            .map(|e| {
                let text = font
                    .box_size(&e.text)
                    .map_or(8 * e.text.len() as i32, |(w, _)| w as i32);
                LEGEND_SAMPLE + LEGEND_GAP + text
            })
            .collect();
        let mut rows: Vec<Vec<(usize, i32)>> = Vec::new();
        let mut row: Vec<(usize, i32)> = Vec::new();
        let mut used = 0;
        let mut finish = |row: &mut Vec<(usize, i32)>, used: i32| {
            let offset = (width - used).max(0) / 2;
            rows.push(row.drain(..).map(|(i, x)| (i, x + offset)).collect());
        };
        for (i, &w) in widths.iter().enumerate() {
            let start = if row.is_empty() {
                0
            } else {
                used + LEGEND_SPACING
            };
            if !row.is_empty() && start + w > width {
                finish(&mut row, used);
                row.push((i, 0));
                used = w;
            } else {
                row.push((i, start));
                used = start + w;
            }
        }
        if !row.is_empty() {
            finish(&mut row, used);
        }
        rows
    }
}

impl Draw for Curves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (w, h) = root.dim_in_pixel();
        let (w, h) = (w as i32, h as i32);
        root.draw(&Text::new(
            self.title.to_string(),
            (w / 2, 24),
            text_style(22.0).pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;

        let entries = self.legend_entries();
        let rows = Self::legend_rows(&entries, w - 40);
        let legend_h = rows.len() as i32 * LEGEND_ROW + 12;
        let title_h = 46;
        let panels = root.margin(title_h as u32, legend_h as u32, 0, 0);
        let halves = panels.split_evenly((1, 2));

        let n_epochs = self
            .series
            .iter()
            .flat_map(|s| [&s.train_loss, &s.val_loss, &s.train_acc, &s.val_acc])
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(1);
        let loss: Vec<_> = self
            .series
            .iter()
            .map(|s| (segments(&s.train_loss, 1.0), segments(&s.val_loss, 1.0)))
            .collect();
        let acc: Vec<_> = self
            .series
            .iter()
            .map(|s| (segments(&s.train_acc, 100.0), segments(&s.val_acc, 100.0)))
            .collect();
        draw_panel(&halves[0], "Loss", "loss", n_epochs, &loss, 1e-3, 1.0)?;
        draw_panel(
            &halves[1],
            "Accuracy",
            "accuracy (%)",
            n_epochs,
            &acc,
            1.0,
            100.0,
        )?;

        // Legend, below the panels so that it never hides data.
        let font = text_style(LEGEND_FONT).pos(Pos::new(HPos::Left, VPos::Center));
        for (r, row) in rows.iter().enumerate() {
            let y = h - legend_h + 4 + r as i32 * LEGEND_ROW + LEGEND_ROW / 2;
            for &(i, x) in row {
                let e = &entries[i];
                let x = x + 20;
                let line = [(x, y), (x + LEGEND_SAMPLE, y)];
                let style = e.color.stroke_width(2);
                if e.dashed {
                    root.draw(&DashedPathElement::new(line, 7, 5, style))?;
                } else {
                    root.draw(&PathElement::new(line, style))?;
                }
                root.draw(&Text::new(
                    e.text.clone(),
                    (x + LEGEND_SAMPLE + LEGEND_GAP, y),
                    font.clone(),
                ))?;
            }
        }
        Ok(())
    }
}

/// Per series: (training, validation) line segments.
type PanelData = [(Vec<Vec<(f64, f64)>>, Vec<Vec<(f64, f64)>>)];

/// Draws one panel of the curves figure: `data` against epochs `1..=n_epochs`, with series
/// colours from [`PALETTE`], training dashed and validation solid, single points as markers.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    n_epochs: usize,
    data: &PanelData,
    min_span: f64,
    default_hi: f64,
) -> DrawResult<DB> {
    let all = data
        .iter()
        .flat_map(|(t, v)| t.iter().chain(v))
        .map(Vec::as_slice);
    let (lo, hi) = y_range(all, min_span, default_hi);
    // Enough decimals to tell ticks apart (plotters puts them about a fifth of the range apart
    // or closer).
    let decimals = (-((hi - lo) / 5.0).log10()).ceil().clamp(0.0, 6.0) as usize;
    let x_range = EpochAxis { n: n_epochs };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, text_style(17.0))
        .margin_left(12)
        .margin_right(28)
        .margin_top(4)
        .margin_bottom(4)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .axis_desc_style(text_style(15.0))
        .label_style(text_style(14.0))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .y_labels(8)
        .bold_line_style(GRID)
        .max_light_lines(0)
        .axis_style(INK)
        .draw()?;

    for (i, (train, _)) in data.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        for seg in train {
            if let [p] = seg.as_slice() {
                chart.draw_series([
                    Circle::new(*p, 6, WHITE.filled()),
                    Circle::new(*p, 6, color.stroke_width(2)),
                ])?;
            } else {
                chart.draw_series(DashedLineSeries::new(
                    seg.iter().copied(),
                    7,
                    5,
                    color.stroke_width(2),
                ))?;
            }
        }
    }
    // Validation on top of all training lines.
    for (i, (_, val)) in data.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        for seg in val {
            if let [p] = seg.as_slice() {
                chart.draw_series([Circle::new(*p, 5, color.filled())])?;
            } else {
                chart.draw_series(LineSeries::new(seg.iter().copied(), color.stroke_width(2)))?;
            }
        }
    }
    Ok(())
}

/// Light-to-dark blue colour stops of the confusion heat map (ColorBrewer "Blues").
const BLUES: [(f64, f64, f64); 5] = [
    (247.0, 251.0, 255.0),
    (198.0, 219.0, 239.0),
    (107.0, 174.0, 214.0),
    (33.0, 113.0, 181.0),
    (8.0, 48.0, 107.0),
];

/// The heat-map colour of `rate` in `0..=1`.
fn heat(rate: f64) -> RGBColor {
    let t = rate.clamp(0.0, 1.0) * (BLUES.len() - 1) as f64;
    let i = (t.floor() as usize).min(BLUES.len() - 2);
    let f = t - i as f64;
    let (a, b) = (BLUES[i], BLUES[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Pixel layout of a confusion matrix figure.
struct ConfusionLayout {
    /// Image size in px.
    size: (u32, u32),
    /// Side of one cell in px.
    cell: i32,
    /// Top-left corner of the grid.
    origin: (i32, i32),
    /// Number of rows (true classes) and columns (predicted classes).
    dims: (usize, usize),
    /// Class indices are labelled every `tick_step` classes.
    tick_step: usize,
    /// Font size of the counts in the cells.
    count_font: f64,
    /// The line under the title: sample count, accuracy, colour key.
    summary: String,
}

/// Largest number of classes [`plot_confusion`] draws (2 px per cell).
const MAX_CLASSES: usize = 1000;
/// Font size of class-index tick labels.
const TICK_FONT: f64 = 15.0;
/// Font size of the line under the confusion matrix title.
const SUMMARY_FONT: f64 = 14.0;
/// Height of the title band of the confusion figure (title and summary line).
const CONFUSION_TOP: i32 = 78;
/// Space below the grid: tick labels and axis description.
const CONFUSION_BOTTOM: i32 = 66;
/// Space right of the grid: colour bar and its labels.
const CONFUSION_RIGHT: i32 = 120;

impl ConfusionLayout {
    /// Lays out `matrix` (non-empty, rectangular) under `title`.
    fn new(title: &str, matrix: &[Vec<u64>]) -> Result<Self> {
        let (rows, cols) = (matrix.len(), matrix[0].len());
        let total: u64 = matrix.iter().flatten().sum();
        let mut summary = format!("{total} samples");
        if rows == cols && total > 0 {
            let correct: u64 = (0..rows).map(|i| matrix[i][i]).sum();
            summary += &format!(", accuracy {:.2}%", 100.0 * correct as f64 / total as f64);
        }
        summary += "; colour = share of the true class";
        let n = rows.max(cols) as i32;
        let cell = (900 / n).clamp(2, 64);
        let tick_step = nice_step((26 / cell + 1) as usize);
        let tick_font = (FONT, TICK_FONT).into_font();
        let width_of = |font: &FontDesc, s: &str| -> Result<i32> {
            font.box_size(s)
                .map(|(w, _)| w as i32)
                .map_err(|e| anyhow!("cannot measure text: {e}"))
        };
        let y_ticks = width_of(&tick_font, &(rows - 1).to_string())?;
        let left = 24 + 16 + y_ticks + 8 + 6;
        let grid = (cols as i32 * cell, rows as i32 * cell);
        let title_w = width_of(&(FONT, 20.0).into_font(), title)?;
        let needed = left + grid.0 + CONFUSION_RIGHT;
        let summary_w = width_of(&(FONT, SUMMARY_FONT).into_font(), &summary)?;
        let width = needed.max(title_w.max(summary_w) + 40).max(360);
        let height = (CONFUSION_TOP + grid.1 + CONFUSION_BOTTOM).max(300);
        // Centre the grid and colour bar when the title or the minimum size is wider.
        let origin = (
            left + (width - needed) / 2,
            CONFUSION_TOP + (height - CONFUSION_TOP - grid.1 - CONFUSION_BOTTOM) / 2,
        );
        Ok(Self {
            size: (width as u32, height as u32),
            cell,
            origin,
            dims: (rows, cols),
            tick_step,
            count_font: (cell as f64 * 0.3).min(18.0),
            summary,
        })
    }
}

/// The confusion matrix figure.
struct Confusion<'a> {
    /// Where everything goes.
    layout: ConfusionLayout,
    /// Figure title.
    title: &'a str,
    /// Counts, rows = true class, columns = predicted class.
    matrix: &'a [Vec<u64>],
}

impl Draw for Confusion<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let l = &self.layout;
        let (rows, cols) = l.dims;
        let cell = l.cell;
        let (x0, y0) = l.origin;
        let (gw, gh) = (cols as i32 * cell, rows as i32 * cell);
        let w = l.size.0 as i32;
        root.fill(&WHITE)?;

        // Title and a summary line.
        let centre = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(
            self.title.to_string(),
            (w / 2, 24),
            text_style(20.0).pos(centre),
        ))?;
        root.draw(&Text::new(
            l.summary.clone(),
            (w / 2, 52),
            text_style(SUMMARY_FONT)
                .color(&RGBColor(90, 90, 90))
                .pos(centre),
        ))?;

        // Cells.
        let gap = i32::from(cell >= 16);
        let count_font = text_style(l.count_font).pos(centre);
        for (r, row) in self.matrix.iter().enumerate() {
            let row_total: u64 = row.iter().sum();
            for (c, &count) in row.iter().enumerate() {
                let rate = if row_total == 0 {
                    0.0
                } else {
                    count as f64 / row_total as f64
                };
                let (cx, cy) = (x0 + c as i32 * cell, y0 + r as i32 * cell);
                root.draw(&Rectangle::new(
                    [(cx, cy), (cx + cell - 1 - gap, cy + cell - 1 - gap)],
                    heat(rate).filled(),
                ))?;
                let text = count.to_string();
                let fits = l.count_font >= 8.0
                    && count_font
                        .font
                        .box_size(&text)
                        .is_ok_and(|(tw, _)| (tw as i32) <= cell - 6);
                if fits {
                    let color = if rate > 0.5 { WHITE } else { INK };
                    root.draw(&Text::new(
                        text,
                        (cx + (cell - gap) / 2, cy + (cell - gap) / 2),
                        count_font.color(&color),
                    ))?;
                }
            }
        }
        root.draw(&Rectangle::new(
            [(x0 - 1, y0 - 1), (x0 + gw - gap, y0 + gh - gap)],
            INK.stroke_width(1),
        ))?;

        // Class-index ticks and axis descriptions.
        let tick = text_style(TICK_FONT);
        for c in (0..cols).step_by(l.tick_step) {
            let x = x0 + c as i32 * cell + (cell - gap) / 2;
            let y = y0 + gh + 2;
            root.draw(&PathElement::new([(x, y), (x, y + 4)], INK))?;
            root.draw(&Text::new(
                c.to_string(),
                (x, y + 7),
                tick.pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
        }
        for r in (0..rows).step_by(l.tick_step) {
            let x = x0 - 3;
            let y = y0 + r as i32 * cell + (cell - gap) / 2;
            root.draw(&PathElement::new([(x - 4, y), (x, y)], INK))?;
            root.draw(&Text::new(
                r.to_string(),
                (x - 7, y),
                tick.pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
        }
        let desc = text_style(15.0).pos(centre);
        root.draw(&Text::new(
            "predicted class",
            (x0 + gw / 2, y0 + gh + 44),
            desc.clone(),
        ))?;
        root.draw(&Text::new(
            "true class",
            (24, y0 + gh / 2),
            desc.transform(FontTransform::Rotate270),
        ))?;

        // Colour bar.
        let bx = x0 + gw + 24;
        let bar_w = 16;
        for y in 0..gh {
            let rate = 1.0 - y as f64 / (gh - 1).max(1) as f64;
            root.draw(&PathElement::new(
                [(bx, y0 + y), (bx + bar_w - 1, y0 + y)],
                heat(rate),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(bx - 1, y0 - 1), (bx + bar_w, y0 + gh)],
            INK.stroke_width(1),
        ))?;
        let marks: &[u32] = if gh >= 160 {
            &[0, 25, 50, 75, 100]
        } else {
            &[0, 50, 100]
        };
        for &pct in marks {
            let y = y0 + gh - 1 - ((gh - 1) as f64 * f64::from(pct) / 100.0).round() as i32;
            root.draw(&PathElement::new(
                [(bx + bar_w, y), (bx + bar_w + 4, y)],
                INK,
            ))?;
            root.draw(&Text::new(
                format!("{pct}%"),
                (bx + bar_w + 7, y),
                tick.pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    /// A fresh directory for one test's output (kept when `CNNC_KEEP_PLOTS` is set).
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cnnc-plot-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Removes `dir` unless `CNNC_KEEP_PLOTS` is set (to look at the figures).
    fn clean(dir: &Path) {
        if std::env::var_os("CNNC_KEEP_PLOTS").is_none() {
            fs::remove_dir_all(dir).unwrap();
        } else {
            eprintln!("plots kept in {}", dir.display());
        }
    }

    /// Decodes the PNG at `path`, checks its size (if given) and that it is not one flat
    /// colour; returns its size.
    fn check_png(path: &Path, size: Option<(u32, u32)>) -> (u32, u32) {
        let file = BufReader::new(fs::File::open(path).unwrap());
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        if let Some(size) = size {
            assert_eq!((info.width, info.height), size, "{}", path.display());
        }
        let px = info.color_type.samples();
        let data = &buf[..info.buffer_size()];
        let first = &data[..px];
        let distinct = data.chunks(px).filter(|p| p != &first).count();
        assert!(
            distinct > 1000,
            "{} is (almost) a single colour",
            path.display()
        );
        (info.width, info.height)
    }

    /// A decaying curve of `n` epochs.
    fn curve(n: usize, start: f64, end: f64, rate: f64) -> Vec<f64> {
        (0..n)
            .map(|i| end + (start - end) * (-(i as f64) * rate).exp())
            .collect()
    }

    #[test]
    fn curves_many_series_with_gaps() {
        let dir = test_dir("curves");
        let stem = dir.join("runs/SeedCnn/curves");
        let series: Vec<Series> = (0..6)
            .map(|k| {
                let r = 0.15 + 0.05 * k as f64;
                let mut val_loss = curve(30, 2.3, 0.2 + 0.03 * k as f64, r);
                val_loss[7] = f64::NAN;
                let mut train_acc = curve(30, 0.1, 0.99 - 0.01 * k as f64, r);
                train_acc[12] = f64::INFINITY;
                Series {
                    label: format!("run-{k} (lr {})", 0.01 * (k + 1) as f64),
                    train_loss: curve(30, 2.2, 0.05 + 0.02 * k as f64, r),
                    val_loss,
                    train_acc,
                    val_acc: curve(30, 0.1, 0.95 - 0.02 * k as f64, r * 0.9),
                }
            })
            .collect();
        let [png_path, svg_path] = plot_curves(&stem, "SeedCnn on digits", &series).unwrap();
        assert_eq!(png_path, dir.join("runs/SeedCnn/curves.png"));
        assert_eq!(svg_path, dir.join("runs/SeedCnn/curves.svg"));
        check_png(&png_path, Some(CURVES_SIZE));
        let svg = fs::read_to_string(&svg_path).unwrap();
        assert!(svg.contains("SeedCnn on digits"));
        for s in &series {
            assert!(svg.contains(&s.label), "{} missing from the SVG", s.label);
        }
        clean(&dir);
    }

    #[test]
    fn curves_single_epoch_and_degenerate_input() {
        let dir = test_dir("single");
        let series = [
            Series {
                label: "one epoch".into(),
                train_loss: vec![0.9],
                val_loss: vec![0.7],
                train_acc: vec![0.71],
                val_acc: vec![0.78],
            },
            Series {
                label: "diverged".into(),
                train_loss: vec![f64::NAN],
                val_loss: vec![f64::INFINITY],
                train_acc: vec![],
                val_acc: vec![f64::NAN],
            },
        ];
        let [png_path, svg_path] = plot_curves(&dir.join("c"), "Single epoch", &series).unwrap();
        check_png(&png_path, Some(CURVES_SIZE));
        let svg = fs::read_to_string(&svg_path).unwrap();
        assert!(svg.contains("Single epoch") && svg.contains("one epoch"));
        // No series at all still gives empty axes.
        let [png_path, _] = plot_curves(&dir.join("empty"), "Nothing yet", &[]).unwrap();
        check_png(&png_path, Some(CURVES_SIZE));
        clean(&dir);
    }

    #[test]
    fn confusion_matrices() {
        let dir = test_dir("confusion");
        let n = 10;
        let matrix: Vec<Vec<u64>> = (0..n)
            .map(|r| {
                (0..n)
                    .map(|c| {
                        if r == c {
                            950 + 4 * r as u64
                        } else {
                            ((r * 7 + c * 3) % 11) as u64
                        }
                    })
                    .collect()
            })
            .collect();
        let [png_path, svg_path] = plot_confusion(
            &dir.join("runs/x/confusion"),
            "SeedCnn confusion (test set)",
            &matrix,
        )
        .unwrap();
        let (w, h) = check_png(&png_path, None);
        assert!(w >= 600 && h >= 600, "{w}x{h}");
        let svg = fs::read_to_string(&svg_path).unwrap();
        assert!(svg.contains("SeedCnn confusion (test set)"));
        assert!(svg.contains("predicted class") && svg.lines().any(|l| l.trim() == "950"));

        // Many classes: no counts in the tiny cells, but still a readable figure.
        let big: Vec<Vec<u64>> = (0..100)
            .map(|r| {
                (0..100)
                    .map(|c| u64::from(r == c) * 90 + ((r + c) % 3) as u64)
                    .collect()
            })
            .collect();
        let [png_path, _] = plot_confusion(&dir.join("big"), "100 classes", &big).unwrap();
        check_png(&png_path, None);
        // A row with no samples and a 1×1 matrix.
        plot_confusion(&dir.join("zero"), "Zero row", &[vec![0, 0], vec![3, 5]]).unwrap();
        plot_confusion(&dir.join("one"), "One class", &[vec![7]]).unwrap();
        clean(&dir);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = test_dir("errors");
        fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join("file");
        fs::write(&blocker, "not a directory").unwrap();
        let stem = blocker.join("sub/curves");
        let err = plot_curves(&stem, "t", &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains(&blocker.display().to_string()),
            "{err:#}"
        );
        let err = plot_confusion(&stem, "t", &[vec![1]]).unwrap_err();
        assert!(
            format!("{err:#}").contains(&blocker.display().to_string()),
            "{err:#}"
        );
        assert!(plot_confusion(&dir.join("bad"), "t", &[vec![1, 2], vec![3]]).is_err());
        assert!(plot_confusion(&dir.join("bad"), "t", &[]).is_err());
        clean(&dir);
    }
}
