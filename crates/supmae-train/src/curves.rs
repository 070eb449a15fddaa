//! Training curves as a picture: the losses, the learning rate and the validation top-1 of
//! one or several runs against the epoch, read from their `log.jsonl` and drawn with
//! plotters into a PNG. Every learner rewrites `curves.png` in its run folder after each
//! epoch; `supmae plot` overlays several runs.
//!
//! Text is drawn with an embedded cut of DejaVu Sans (`assets/`), so no system font is
//! looked up and the pictures are the same on every machine.

use std::path::{Path, PathBuf};
#[cfg(not(target_arch = "wasm32"))]
use std::sync::OnceLock;

use image::{ImageFormat, RgbImage};
use plotters::prelude::*;
#[cfg(not(target_arch = "wasm32"))]
use plotters::style::{FontStyle, register_font};

use crate::error::{Result, TrainError};
use crate::run_dir::{LOG_FILE, write_atomic};

/// The file each learner writes into its run folder.
pub const CURVES_FILE: &str = "curves.png";

/// The picture's size, pixels.
pub const SIZE: (u32, u32) = (1500, 900);

#[cfg(not(target_arch = "wasm32"))]
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// A quantity drawn in its own panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// The training loss (pre-training: total; fine-tuning / probing: cross-entropy).
    Loss,
    /// Pre-training's reconstruction loss.
    Reconstruction,
    /// SupMAE's classification-branch loss.
    Classification,
    /// The learning rate.
    LearningRate,
    /// Validation top-1, %.
    ValTop1,
}

impl Metric {
    /// Every metric, in panel order.
    pub const ALL: [Metric; 5] = [
        Metric::Loss,
        Metric::Reconstruction,
        Metric::Classification,
        Metric::LearningRate,
        Metric::ValTop1,
    ];

    /// The panel's title.
    pub fn title(self) -> &'static str {
        match self {
            Metric::Loss => "training loss (total)",
            Metric::Reconstruction => "reconstruction loss",
            Metric::Classification => "classification loss",
            Metric::LearningRate => "learning rate",
            Metric::ValTop1 => "validation top-1 (%)",
        }
    }

    /// The `log.jsonl` keys that hold it, pre-training's first.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Metric::Loss => &["loss", "train_loss"],
            Metric::Reconstruction => &["rec_loss"],
            Metric::Classification => &["cls_loss"],
            Metric::LearningRate => &["lr"],
            Metric::ValTop1 => &["val_acc1_full", "test_acc1"],
        }
    }
}

/// One run's curves: `(epoch, value)` points (epochs from 1) of each metric it logs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurves {
    /// The legend's label (the run folder's name).
    pub label: String,
    /// Points of each metric, in [`Metric::ALL`] order.
    pub points: Vec<(Metric, Vec<(f64, f64)>)>,
}

impl RunCurves {
    /// Reads a run folder's `log.jsonl` (pre-training, fine-tuning or probing). Lines that
    /// are not JSON objects and values that are missing or not finite are left out.
    pub fn read(run: impl AsRef<Path>) -> Result<Self> {
        let run = run.as_ref();
        let path = run.join(LOG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
            path: path.clone(),
            source,
        })?;
        let label = run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| run.display().to_string());
        Ok(Self::parse(label, &text))
    }

    /// The curves in a `log.jsonl`'s text.
    pub fn parse(label: impl Into<String>, log: &str) -> Self {
        let mut points: Vec<(Metric, Vec<(f64, f64)>)> =
            Metric::ALL.iter().map(|&m| (m, Vec::new())).collect();
        for (line_no, line) in log.lines().enumerate() {
            let Ok(serde_json::Value::Object(row)) = serde_json::from_str(line) else {
                continue;
            };
            let epoch = row
                .get("epoch")
                .and_then(|e| e.as_f64())
                .unwrap_or(line_no as f64)
                + 1.0;
            for (metric, series) in &mut points {
                let value = metric
                    .keys()
                    .iter()
                    .find_map(|k| row.get(*k).and_then(|v| v.as_f64()));
                if let Some(v) = value.filter(|v| v.is_finite()) {
                    series.push((epoch, v));
                }
            }
        }
        Self {
            label: label.into(),
            points,
        }
    }

    fn series(&self, metric: Metric) -> &[(f64, f64)] {
        self.points
            .iter()
            .find(|(m, _)| *m == metric)
            .map_or(&[], |(_, s)| s.as_slice())
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn font_ready() -> Result<()> {
    static READY: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "the embedded font could not be read".to_string())
        })
        .clone()
        .map_err(plot_error)
}

/// In wasm, plotters draws text with the browser's canvas only, not into a bitmap.
#[cfg(target_arch = "wasm32")]
fn font_ready() -> Result<()> {
    Err(plot_error(
        "training curves are drawn by native builds only (plotters has no bitmap fonts in wasm)",
    ))
}

fn plot_error(reason: impl std::fmt::Display) -> TrainError {
    TrainError::InvalidConfig {
        field: "plot",
        reason: reason.to_string(),
    }
}

/// Draws the runs' curves (overlaid, one colour per run) into a picture of `size` pixels:
/// one panel per metric that any run logs, and a legend.
pub fn draw(runs: &[RunCurves], size: (u32, u32)) -> Result<RgbImage> {
    font_ready()?;
    let (w, h) = size;
    if w < 300 || h < 200 || u64::from(w) * u64::from(h) > 50_000_000 {
        return Err(plot_error(format!(
            "a {w}x{h} picture is too small or too large"
        )));
    }
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let panels = root.split_evenly((2, 3));
        for (panel, metric) in panels.iter().zip(Metric::ALL) {
            draw_panel(panel, runs, metric)?;
        }
        if let Some(legend) = panels.get(5) {
            draw_legend(legend, runs)?;
        }
        root.present().map_err(plot_error)?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_error("picture buffer size"))
}

fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    runs: &[RunCurves],
    metric: Metric,
) -> Result<()> {
    let all: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|r| r.series(metric).iter().copied())
        .collect();
    let title = (FAMILY, 20).into_font();
    if all.is_empty() {
        area.titled(metric.title(), title)
            .map_err(plot_error)?
            .draw_text(
                "not logged",
                &TextStyle::from((FAMILY, 16).into_font()).color(&BLACK.mix(0.5)),
                (20, 20),
            )
            .map_err(plot_error)?;
        return Ok(());
    }
    let (x0, x1) = bounds(all.iter().map(|p| p.0));
    let (y0, y1) = bounds(all.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(metric.title(), title)
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(WHITE)
        .y_label_formatter(&|v| format_tick(*v, y0, y1))
        // Epochs are whole numbers: fractional ticks stay unlabelled.
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-9 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(plot_error)?;
    for (i, run) in runs.iter().enumerate() {
        let series = run.series(metric);
        if series.is_empty() {
            continue;
        }
        let style = ShapeStyle::from(&colour(i)).stroke_width(2);
        chart
            .draw_series(LineSeries::new(series.iter().copied(), style))
            .map_err(plot_error)?;
        if series.len() <= 60 {
            chart
                .draw_series(
                    series
                        .iter()
                        .map(|&p| Circle::new(p, 3, ShapeStyle::from(&colour(i)).filled())),
                )
                .map_err(plot_error)?;
        }
    }
    Ok(())
}

fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    runs: &[RunCurves],
) -> Result<()> {
    let text = TextStyle::from((FAMILY, 16).into_font());
    area.draw_text("runs", &TextStyle::from((FAMILY, 20).into_font()), (20, 16))
        .map_err(plot_error)?;
    for (i, run) in runs.iter().enumerate().take(24) {
        let y = 52 + 26 * i as i32;
        area.draw(&PathElement::new(
            vec![(20, y + 8), (60, y + 8)],
            ShapeStyle::from(&colour(i)).stroke_width(3),
        ))
        .map_err(plot_error)?;
        let mut label = run.label.clone();
        if label.chars().count() > 40 {
            label = format!(
                "...{}",
                label
                    .chars()
                    .rev()
                    .take(37)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
            );
        }
        area.draw_text(&label, &text, (70, y)).map_err(plot_error)?;
    }
    Ok(())
}

/// The range of `values`, padded by 5% (a constant series gets a unit-wide range).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1e-3)
    };
    (lo - pad, hi + pad)
}

/// A tick label with as many decimals as the axis' range needs (scientific notation for
/// tiny or huge values, such as learning rates).
fn format_tick(v: f64, lo: f64, hi: f64) -> String {
    let biggest = lo.abs().max(hi.abs());
    if v == 0.0 {
        return "0".into();
    }
    if !(1e-2..1e4).contains(&biggest) {
        return format!("{v:.1e}");
    }
    let step = (hi - lo) / 8.0;
    let decimals = if step > 0.0 {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    } else {
        2
    };
    format!("{v:.decimals$}")
}

/// Draws `runs` and writes the PNG to `path` atomically.
pub fn write_png(runs: &[RunCurves], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let picture = draw(runs, SIZE)?;
    let mut bytes = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(plot_error)?;
    write_atomic(path, &bytes)
}

/// Rewrites `curves.png` in a run folder from its `log.jsonl`; returns the picture's path.
pub fn write_run_curves(run: impl AsRef<Path>) -> Result<PathBuf> {
    let run = run.as_ref();
    let curves = RunCurves::read(run)?;
    let path = run.join(CURVES_FILE);
    write_png(&[curves], &path)?;
    Ok(path)
}

/// What a learner does after logging an epoch: redraws `curves.png`. A picture that cannot
/// be drawn is not worth stopping a training run for, so a failure is only reported.
pub(crate) fn refresh(run: &Path) {
    if let Err(e) = write_run_curves(run) {
        eprintln!(
            "warning: {}: could not draw {CURVES_FILE}: {e}",
            run.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRETRAIN: &str = r#"{"epoch":0,"lr":0.001,"loss":0.9,"rec_loss":0.88,"cls_loss":2.1,"val_acc1_full":30.0}
{"epoch":1,"lr":0.002,"loss":0.7,"rec_loss":0.68,"cls_loss":1.5,"val_acc1_full":45.5}
not json
{"epoch":2,"lr":0.0015,"loss":null,"rec_loss":0.6,"cls_loss":1.2}"#;

    #[test]
    fn logs_of_either_kind_become_points_per_metric() {
        let run = RunCurves::parse("a", PRETRAIN);
        assert_eq!(run.series(Metric::Loss), &[(1.0, 0.9), (2.0, 0.7)]);
        assert_eq!(run.series(Metric::Reconstruction).len(), 3);
        assert_eq!(run.series(Metric::ValTop1), &[(1.0, 30.0), (2.0, 45.5)]);
        let probe = RunCurves::parse(
            "b",
            r#"{"epoch":0,"lr":0.1,"train_loss":2.0,"test_acc1":50.0,"test_loss":1.9}"#,
        );
        assert_eq!(probe.series(Metric::Loss), &[(1.0, 2.0)]);
        assert_eq!(probe.series(Metric::ValTop1), &[(1.0, 50.0)]);
        assert!(probe.series(Metric::Reconstruction).is_empty());
    }

    #[test]
    fn the_picture_has_its_size_and_is_not_blank() {
        let runs = [
            RunCurves::parse("run-a", PRETRAIN),
            RunCurves::parse("run-b", &PRETRAIN.replace("0.88", "0.95")),
        ];
        let picture = draw(&runs, (900, 600)).unwrap();
        assert_eq!(picture.dimensions(), (900, 600));
        let inked = picture.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(inked > 900 * 600 / 50, "only {inked} non-white pixels");
        // Both runs' colours are there.
        for c in [colour(0), colour(1)] {
            assert!(
                picture.pixels().any(|p| p.0 == [c.0, c.1, c.2]),
                "{c:?} missing"
            );
        }
        assert!(draw(&runs, (10, 10)).is_err());
    }
}
