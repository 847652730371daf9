//! `kvset-bench chart`: SVG charts of results files (JSON lines written with `--output json`).
//!
//! For every workload in the inputs it draws two charts against concurrency (the requests in
//! flight, on a log2 axis, so that 16 → 64 → 256 are equal steps and C=1 is not squeezed
//! against C=16; ticks at the concurrencies present):
//!
//! - `<workload>-throughput.svg`: operations per second, linear axis from 0;
//! - `<workload>-p99.svg`: 99th-percentile latency in ms, on a log10 axis, because in a closed
//!   loop latency grows about linearly with concurrency (1 ms at C=1, hundreds at C=256) and a
//!   linear axis would flatten the low concurrencies into the floor.
//!
//! One line per system (`kvset`, `etcd`; a run's `label`, and a `watch` run's watcher count,
//! make series of their own so that different settings are never pooled). Where a (system,
//! workload, concurrency) has several runs, e.g. paired runs repeated to see the noise, the
//! line goes through their **median** and each run is drawn as a small ring at its value. The
//! median, not the mean, because on a 2-core machine shared by client and servers a run now
//! and then loses a few seconds to something else (compaction, a noisy neighbour): one such
//! outlier drags a mean of three runs far off while the median stays with the typical run, and
//! the rings still show the spread. A single run is its own median (no ring).
//!
//! Drawn with `plotters` (SVG backend); the legend sits in a strip right of the plot so that it
//! never covers data. Lines that are not results (blank ones aside) are errors naming the file
//! and line, as are workload names that could not be file names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use crate::cli::ChartArgs;

/// The plot's width; the legend's strip is added right of it.
const PLOT_WIDTH: u32 = 710;
const HEIGHT: u32 = 500;
/// Least width of the legend strip right of the plot; wider when a series' name needs it.
const LEGEND_WIDTH: u32 = 190;
/// Font sizes as given to plotters (the SVG's are these / 1.24).
const TITLE_SIZE: f64 = 22.0;
const LEGEND_SIZE: f64 = 18.0;
/// Rough width of one character, in ems of its font size in the SVG (names and titles are
/// mostly lower case), to fit the legend and the title.
const CHAR_EM: f64 = 0.58;
const FONT: &str = "sans-serif";
/// Radius of a median's dot and of one run's ring.
pub const MEDIAN_RADIUS: i32 = 4;
pub const RUN_RADIUS: i32 = 3;

/// Series colours (Okabe-Ito, readable with the common colour-vision deficiencies), by system:
/// kvset's series are blues and green, etcd's vermillion, orange and pink, any other system's
/// greys; a system's first series takes its first colour.
pub const KVSET_COLOURS: [RGBColor; 3] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x9E, 0x73),
];
pub const ETCD_COLOURS: [RGBColor; 3] = [
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0xCC, 0x79, 0xA7),
];
const OTHER_COLOURS: [RGBColor; 3] = [
    RGBColor(0x33, 0x33, 0x33),
    RGBColor(0x77, 0x77, 0x77),
    RGBColor(0xAA, 0xAA, 0xAA),
];

/// Why the charts could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} line {line}: not a kvset-bench result: {source}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{} line {line}: workload {workload:?} is not a name to make a file name of (letters, digits, '-' and '_')", path.display())]
    Workload {
        path: PathBuf,
        line: usize,
        workload: String,
    },
    #[error("{} line {line}: {field} is {value}, not a number >= 0", path.display())]
    Value {
        path: PathBuf,
        line: usize,
        field: &'static str,
        value: f64,
    },
    #[error("no results in {}", files.join(", "))]
    Empty { files: Vec<String> },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("drawing {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
}

/// The fields of one result line that the charts use (the rest of the line is not read, so
/// lines of older and newer versions chart alike).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Row {
    pub target: String,
    pub workload: String,
    pub concurrency: usize,
    pub ops_per_sec: f64,
    pub p99_ms: f64,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub watchers: Option<usize>,
}

/// What a chart plots against concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Throughput,
    P99,
}

impl Metric {
    pub const ALL: [Metric; 2] = [Metric::Throughput, Metric::P99];

    /// The file name's suffix: `put-throughput.svg`, `put-p99.svg`.
    pub fn suffix(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P99 => "p99",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P99 => "p99 latency",
        }
    }

    /// The y axis's label, with its unit.
    pub fn y_label(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput (ops/s)",
            Metric::P99 => "p99 latency (ms, log scale)",
        }
    }

    fn value(self, row: &Row) -> f64 {
        match self {
            Metric::Throughput => row.ops_per_sec,
            Metric::P99 => row.p99_ms,
        }
    }
}

/// The x axis's label, with its unit.
pub const X_LABEL: &str = "concurrency (requests in flight, log2 scale)";

/// One system's values at one concurrency.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub concurrency: usize,
    pub median: f64,
    /// Every run's value, in input order.
    pub runs: Vec<f64>,
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// `kvset`, `etcd`, or either with the label / watcher count: `kvset (history on)`.
    pub name: String,
    pub colour: RGBColor,
    /// By concurrency, ascending.
    pub points: Vec<Point>,
}

/// The median: the middle value, or the mean of the two middle ones. `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Reads the JSON lines of `path`. Blank lines are skipped; anything else must be a result.
pub fn read_rows(path: &Path) -> Result<Vec<Row>, ChartError> {
    let text = std::fs::read_to_string(path).map_err(|source| ChartError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_rows(path, &text)
}

/// Parses JSON lines read from `path` (named in errors).
pub fn parse_rows(path: &Path, text: &str) -> Result<Vec<Row>, ChartError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|source| ChartError::Parse {
            path: path.to_path_buf(),
            line: line_no,
            source,
        })?;
        let name_ok = !row.workload.is_empty()
            && row
                .workload
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(ChartError::Workload {
                path: path.to_path_buf(),
                line: line_no,
                workload: row.workload,
            });
        }
        for (field, value) in [("ops_per_sec", row.ops_per_sec), ("p99_ms", row.p99_ms)] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(ChartError::Value {
                    path: path.to_path_buf(),
                    line: line_no,
                    field,
                    value,
                });
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The workloads of `rows`, in the order of `kvset-bench --workload`'s list (unknown ones
/// after, by name).
pub fn workloads(rows: &[Row]) -> Vec<String> {
    let mut names: Vec<&str> = rows.iter().map(|r| r.workload.as_str()).collect();
    names.sort_by_key(|w| (crate::workload::Workload::order(w), w.to_string()));
    names.dedup();
    names.into_iter().map(str::to_string).collect()
}

/// (system position: kvset, etcd, others; system; label; watchers).
type SeriesKey = (u8, String, Option<String>, Option<usize>);

/// The series of `workload`'s chart of `metric`: one per system (and label / watcher count),
/// one point per concurrency at the median of its runs.
pub fn series(rows: &[Row], workload: &str, metric: Metric) -> Vec<Series> {
    let mut groups: BTreeMap<SeriesKey, BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.workload == workload) {
        let position = match r.target.as_str() {
            "kvset" => 0,
            "etcd" => 1,
            _ => 2,
        };
        let key = (position, r.target.clone(), r.label.clone(), r.watchers);
        groups
            .entry(key)
            .or_default()
            .entry(r.concurrency)
            .or_default()
            .push(metric.value(r));
    }
    let mut seen = [0usize; 3];
    groups
        .into_iter()
        .map(|((position, target, label, watchers), by_c)| {
            let colours = [&KVSET_COLOURS, &ETCD_COLOURS, &OTHER_COLOURS][usize::from(position)];
            let colour = colours[seen[usize::from(position)] % colours.len()];
            seen[usize::from(position)] += 1;
            let mut qualifiers = Vec::new();
            if let Some(label) = label {
                qualifiers.push(label);
            }
            if let Some(w) = watchers {
                qualifiers.push(format!("{w} watcher{}", if w == 1 { "" } else { "s" }));
            }
            let name = if qualifiers.is_empty() {
                target
            } else {
                format!("{target} ({})", qualifiers.join(", "))
            };
            let points = by_c
                .into_iter()
                .filter_map(|(concurrency, runs)| {
                    median(&runs).map(|median| Point {
                        concurrency,
                        median,
                        runs,
                    })
                })
                .collect();
            Series {
                name,
                colour,
                points,
            }
        })
        .collect()
}

/// `kvset-bench chart`: reads every input, writes two charts per workload into the output
/// directory, and returns their paths.
pub fn chart_command(args: &ChartArgs) -> Result<Vec<PathBuf>, ChartError> {
    let mut rows = Vec::new();
    for path in &args.inputs {
        rows.extend(read_rows(path)?);
    }
    let names: Vec<String> = args
        .inputs
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string())
        })
        .collect();
    write_charts(&rows, &names, &args.out_dir)
}

/// Writes `<workload>-throughput.svg` and `<workload>-p99.svg` for every workload of `rows`
/// into `out_dir` (created if missing); `sources` name the inputs in the titles.
pub fn write_charts(
    rows: &[Row],
    sources: &[String],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ChartError> {
    if rows.is_empty() {
        return Err(ChartError::Empty {
            files: sources.to_vec(),
        });
    }
    std::fs::create_dir_all(out_dir).map_err(|source| ChartError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for workload in workloads(rows) {
        for metric in Metric::ALL {
            let path = out_dir.join(format!("{workload}-{}.svg", metric.suffix()));
            let title = format!(
                "{workload}: {} by concurrency ({})",
                metric.title(),
                sources.join(", ")
            );
            let svg = render(&title, metric, &series(rows, &workload, metric)).map_err(|e| {
                ChartError::Draw {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
            std::fs::write(&path, svg).map_err(|source| ChartError::Write {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
    }
    Ok(written)
}

type Drawn = Result<(), Box<dyn std::error::Error + 'static>>;

/// A drawing error as text (plotters' errors borrow the backend).
#[derive(Debug)]
struct DrawError(String);

impl fmt::Display for DrawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DrawError {}

fn draw_err(e: impl fmt::Display) -> Box<dyn std::error::Error> {
    Box::new(DrawError(e.to_string()))
}

/// The chart as an SVG document.
pub fn render(
    title: &str,
    metric: Metric,
    series: &[Series],
) -> Result<String, Box<dyn std::error::Error>> {
    let mut buf = String::new();
    {
        let longest = series
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        let legend_width = LEGEND_WIDTH.max(50 + text_width(longest, LEGEND_SIZE));
        let width = PLOT_WIDTH + legend_width;
        // A title too long for the width (many inputs) gets a smaller font.
        let fit = f64::from(width - 20) / f64::from(text_width(title.chars().count(), 1.0));
        let title_size = TITLE_SIZE.min(fit).max(10.0);
        let root = SVGBackend::with_string(&mut buf, (width, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let root = root
            .titled(title, (FONT, title_size).into_font().color(&BLACK))
            .map_err(draw_err)?;
        let (plot, legend) = root.split_horizontally(PLOT_WIDTH);
        draw_plot(&plot, metric, series)?;
        draw_legend(&legend, series)?;
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// About how many pixels `chars` characters take at plotters' font size `size`.
fn text_width(chars: usize, size: f64) -> u32 {
    (chars as f64 * size / 1.24 * CHAR_EM).ceil() as u32
}

/// 1, 2, 5, 10, 20, 50...: the ticks of a log10 axis from `lo` to `hi`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo * 0.9999 && t <= hi * 1.0001 {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// Round ticks (steps of 1, 2 or 5 times a power of ten) from 0 to `hi`, four to eight of them.
fn linear_ticks(hi: f64) -> Vec<f64> {
    let raw = hi / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= hi * 1.0001)
        .collect()
}

/// `950`, `2k`, `2.5k`, `12k`, `1.2M`: ops/s short enough for an axis.
fn count_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        let k = v / 1e3;
        if (k - k.round()).abs() < 1e-6 {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else {
        format!("{v:.0}")
    }
}

/// `v` to three significant digits (undoes the rounding of a log axis's thousandths).
fn round_sig(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return v;
    }
    let f = 10f64.powf(2.0 - v.log10().floor());
    (v * f).round() / f
}

/// `0.5`, `1`, `20`, `500`: milliseconds for an axis.
fn ms_label(v: f64) -> String {
    if v < 1.0 {
        format!("{v}")
    } else {
        format!("{v:.0}")
    }
}

/// Thousandths of a unit: the plot's coordinates are integers, because plotters labels the key
/// points of integer axes but not of float ones.
const MILLI: f64 = 1000.0;

fn milli(v: f64) -> i64 {
    (v * MILLI).round() as i64
}

fn unmilli(v: i64) -> f64 {
    v as f64 / MILLI
}

/// The y axis: its range and key points (in the plotted unit) and the map of a value into it.
type YAxis = (std::ops::Range<f64>, Vec<f64>, fn(f64) -> f64);

/// Plots on log axes by mapping the values: x is log2(concurrency), y is ops/s or
/// log10(p99 ms), with key points (and labels) at the concurrencies present and at round values.
fn draw_plot<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    metric: Metric,
    series: &[Series],
) -> Drawn
where
    DB::ErrorType: 'static,
{
    let mut concurrencies: Vec<usize> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.concurrency))
        .collect();
    concurrencies.sort_unstable();
    concurrencies.dedup();
    let x_of = |c: usize| (c.max(1) as f64).log2();
    let (x_lo, x_hi) = match (concurrencies.first(), concurrencies.last()) {
        (Some(&a), Some(&b)) => (x_of(a), x_of(b)),
        _ => (0.0, 0.0),
    };
    // Half a doubling of room at each end (a whole one when there is a single concurrency).
    let pad = if x_hi - x_lo < 1e-9 { 1.0 } else { 0.5 };
    let x_range = milli(x_lo - pad)..milli(x_hi + pad);
    let x_keys: Vec<i64> = concurrencies.iter().map(|&c| milli(x_of(c))).collect();

    let values = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| p.runs.iter().copied()));
    let (y_range, y_keys, y_of): YAxis = match metric {
        Metric::Throughput => {
            let top = values.fold(0.0f64, f64::max);
            let top = if top > 0.0 { top * 1.1 } else { 1.0 };
            (0.0..top, linear_ticks(top), |v| v)
        }
        Metric::P99 => {
            let positive: Vec<f64> = values.filter(|v| *v > 0.0).collect();
            let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = positive.iter().copied().fold(0.0f64, f64::max);
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 1.0) };
            // Out to the next round (1-2-5) value beyond the data at each end, so that the
            // ends of the data are between labelled values.
            let lo = log_ticks(lo / 10.0, lo)
                .last()
                .copied()
                .unwrap_or(lo / 2.0)
                .min(lo / 1.2);
            let hi = log_ticks(hi, hi * 10.0)
                .first()
                .copied()
                .unwrap_or(hi * 2.0)
                .max(hi * 1.2);
            let ticks = log_ticks(lo, hi).into_iter().map(f64::log10).collect();
            (lo.log10()..hi.log10(), ticks, |v| v.log10())
        }
    };
    // A value the axis cannot show (p99 of 0 on a log axis) sits on the axis's floor.
    let floor = y_range.start;
    let y = move |v: f64| {
        let y = y_of(v);
        milli(if y.is_finite() { y.max(floor) } else { floor })
    };
    let x = move |c: usize| milli(x_of(c));

    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            x_range.with_key_points(x_keys),
            (milli(y_range.start)..milli(y_range.end))
                .with_key_points(y_keys.into_iter().map(milli).collect()),
        )
        .map_err(draw_err)?;
    let x_label = |x: &i64| format!("{:.0}", 2f64.powf(unmilli(*x)));
    let y_label = move |v: &i64| match metric {
        Metric::Throughput => count_label(unmilli(*v)),
        Metric::P99 => ms_label(round_sig(10f64.powf(unmilli(*v)))),
    };
    chart
        .configure_mesh()
        .x_desc(X_LABEL)
        .y_desc(metric.y_label())
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
        .draw()
        .map_err(draw_err)?;

    for s in series {
        let colour = s.colour;
        let medians: Vec<(i64, i64)> = s
            .points
            .iter()
            .map(|p| (x(p.concurrency), y(p.median)))
            .collect();
        // One point makes no line: a workload run at one concurrency is its dots alone.
        if medians.len() > 1 {
            chart
                .draw_series(LineSeries::new(medians.clone(), colour.stroke_width(2)))
                .map_err(draw_err)?;
        }
        chart
            .draw_series(
                medians
                    .iter()
                    .map(|&xy| Circle::new(xy, MEDIAN_RADIUS, colour.filled())),
            )
            .map_err(draw_err)?;
        // Each run where there are several, as rings around the median.
        chart
            .draw_series(
                s.points
                    .iter()
                    .filter(|p| p.runs.len() > 1)
                    .flat_map(|p| p.runs.iter().map(move |&v| (p.concurrency, v)))
                    .map(|(c, v)| Circle::new((x(c), y(v)), RUN_RADIUS, colour.stroke_width(1))),
            )
            .map_err(draw_err)?;
    }
    Ok(())
}

/// The legend, right of the plot: a colour bar and the name of each series, then what the dots
/// and rings are.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, series: &[Series]) -> Drawn
where
    DB::ErrorType: 'static,
{
    let text = (FONT, LEGEND_SIZE).into_font().color(&BLACK);
    let note = (FONT, 15).into_font().color(&RGBColor(0x55, 0x55, 0x55));
    let (x0, mut y0) = (6, 30);
    for s in series {
        let colour = s.colour;
        area.draw(&Rectangle::new(
            [(x0, y0 - 2), (x0 + 26, y0 + 2)],
            colour.filled(),
        ))
        .map_err(draw_err)?;
        area.draw(&Text::new(s.name.clone(), (x0 + 34, y0 - 8), text.clone()))
            .map_err(draw_err)?;
        y0 += 24;
    }
    y0 += 6;
    let repeated = series
        .iter()
        .any(|s| s.points.iter().any(|p| p.runs.len() > 1));
    let lines: &[&str] = if repeated {
        &["dots: median of the runs", "rings: each run"]
    } else {
        &["dots: one run each"]
    };
    for line in lines {
        area.draw(&Text::new(*line, (x0, y0), note.clone()))
            .map_err(draw_err)?;
        y0 += 18;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two workloads: `put` at C=1, 16, 64 with three kvset runs at 16 and two etcd runs at 64;
    /// `cas` at C=64 only.
    const FIXTURE: &str = r#"
{"target":"kvset","workload":"put","concurrency":1,"ops_per_sec":500.0,"p99_ms":3.0,"label":null}
{"target":"etcd","workload":"put","concurrency":1,"ops_per_sec":1100.0,"p99_ms":1.5,"label":null}
{"target":"kvset","workload":"put","concurrency":16,"ops_per_sec":1600.0,"p99_ms":15.0,"label":null}
{"target":"kvset","workload":"put","concurrency":16,"ops_per_sec":1000.0,"p99_ms":40.0,"label":null}
{"target":"kvset","workload":"put","concurrency":16,"ops_per_sec":1700.0,"p99_ms":14.0,"label":null}
{"target":"etcd","workload":"put","concurrency":16,"ops_per_sec":5300.0,"p99_ms":7.4,"label":null}
{"target":"kvset","workload":"put","concurrency":64,"ops_per_sec":2000.0,"p99_ms":56.0,"label":null}
{"target":"etcd","workload":"put","concurrency":64,"ops_per_sec":9700.0,"p99_ms":16.0,"label":null}
{"target":"etcd","workload":"put","concurrency":64,"ops_per_sec":9500.0,"p99_ms":18.0,"label":null}

{"target":"etcd","workload":"cas","concurrency":64,"ops_per_sec":900.0,"p99_ms":190.0,"label":null}
{"target":"kvset","workload":"cas","concurrency":64,"ops_per_sec":1500.0,"p99_ms":73.0,"label":null}
"#;

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// What the `<text>` elements of `svg` say.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    /// The opening tags `<name ...>` of `svg` that contain every one of `attrs`.
    fn tags<'a>(svg: &'a str, name: &str, attrs: &[String]) -> Vec<&'a str> {
        svg.split('<')
            .filter(|t| t.starts_with(name))
            .filter(|t| attrs.iter().all(|a| t.contains(a.as_str())))
            .collect()
    }

    fn out_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kvset-bench-chart-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn medians_take_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[1600.0, 1000.0, 1700.0]), Some(1600.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn series_pool_repeated_runs_at_their_median() {
        let rows = parse_rows(Path::new("fixture.jsonl"), FIXTURE).unwrap();
        let put = series(&rows, "put", Metric::Throughput);
        let names: Vec<&str> = put.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["kvset", "etcd"]);
        let kvset: Vec<(usize, f64, usize)> = put[0]
            .points
            .iter()
            .map(|p| (p.concurrency, p.median, p.runs.len()))
            .collect();
        assert_eq!(kvset, [(1, 500.0, 1), (16, 1600.0, 3), (64, 2000.0, 1)]);
        assert_eq!(put[1].points[2].median, 9600.0);
        let p99 = series(&rows, "put", Metric::P99);
        assert_eq!(p99[0].points[1].median, 15.0);
        assert_eq!(workloads(&rows), ["put", "cas"]);
    }

    #[test]
    fn labels_and_watcher_counts_are_series_of_their_own() {
        let text = r#"{"target":"kvset","workload":"watch","concurrency":1,"ops_per_sec":100.0,"p99_ms":2.0,"label":null,"watchers":1}
{"target":"kvset","workload":"watch","concurrency":1,"ops_per_sec":90.0,"p99_ms":3.0,"label":"history on","watchers":1000}"#;
        let rows = parse_rows(Path::new("w.jsonl"), text).unwrap();
        let names: Vec<String> = series(&rows, "watch", Metric::Throughput)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            ["kvset (1 watcher)", "kvset (history on, 1000 watchers)"]
        );
        let colours: Vec<RGBColor> = series(&rows, "watch", Metric::P99)
            .into_iter()
            .map(|s| s.colour)
            .collect();
        assert_eq!(
            colours,
            [KVSET_COLOURS[0], KVSET_COLOURS[1]],
            "kvset stays blue"
        );
    }

    #[test]
    fn every_workload_gets_both_charts_with_both_series_and_their_medians() {
        let rows = parse_rows(Path::new("fixture.jsonl"), FIXTURE).unwrap();
        let dir = out_dir("render");
        let written = write_charts(&rows, &["fixture.jsonl".to_string()], &dir).unwrap();
        let expected: Vec<PathBuf> = [
            "put-throughput.svg",
            "put-p99.svg",
            "cas-throughput.svg",
            "cas-p99.svg",
        ]
        .iter()
        .map(|f| dir.join(f))
        .collect();
        assert_eq!(written, expected);

        let (kvset, etcd) = (hex(KVSET_COLOURS[0]), hex(ETCD_COLOURS[0]));
        // (file, y axis label, points per series, rings per series)
        let cases = [
            ("put-throughput.svg", Metric::Throughput, 3, (3, 2)),
            ("put-p99.svg", Metric::P99, 3, (3, 2)),
            ("cas-throughput.svg", Metric::Throughput, 1, (0, 0)),
            ("cas-p99.svg", Metric::P99, 1, (0, 0)),
        ];
        for (file, metric, points, (kvset_rings, etcd_rings)) in cases {
            let svg = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(svg.trim_start().starts_with("<svg"), "{file}: {svg}");
            assert!(svg.trim_end().ends_with("</svg>"), "{file}");
            assert_eq!(
                svg.matches("<text").count(),
                svg.matches("</text>").count(),
                "{file}"
            );
            let texts = texts(&svg);
            let workload = file.split('-').next().unwrap();
            let title = format!(
                "{workload}: {} by concurrency (fixture.jsonl)",
                metric.title()
            );
            for text in ["kvset", "etcd", X_LABEL, metric.y_label(), &title] {
                assert!(
                    texts.iter().any(|t| t == text),
                    "{file} lacks {text:?}: {texts:?}"
                );
            }
            for (colour, rings) in [(&kvset, kvset_rings), (&etcd, etcd_rings)] {
                let stroke = format!("stroke=\"{colour}\"");
                let fill = format!("fill=\"{colour}\"");
                // The median line: one polyline through every concurrency, none for one point.
                let lines = tags(&svg, "polyline", std::slice::from_ref(&stroke));
                assert_eq!(lines.len(), usize::from(points > 1), "{file} {colour}");
                if let Some(line) = lines.first() {
                    let xy = line.split("points=\"").nth(1).unwrap();
                    let xy = &xy[..xy.find('"').unwrap()];
                    assert_eq!(xy.split_whitespace().count(), points, "{file}: {line}");
                }
                let r = |n: i32| format!("r=\"{n}\"");
                let dots = tags(&svg, "circle", &[fill.clone(), r(MEDIAN_RADIUS)]);
                assert_eq!(dots.len(), points, "{file} {colour} medians");
                let ring_tags = tags(&svg, "circle", &[stroke.clone(), r(RUN_RADIUS)]);
                assert_eq!(ring_tags.len(), rings, "{file} {colour} runs");
            }
            // The x axis is labelled at the concurrencies present.
            let ticks: &[&str] = if points == 3 {
                &["1", "16", "64"]
            } else {
                &["64"]
            };
            for t in ticks {
                assert!(texts.iter().any(|x| x == t), "{file} lacks tick {t}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_malformed_line_is_named_by_file_and_number() {
        let text = "{\"target\":\"kvset\",\"workload\":\"put\",\"concurrency\":1,\"ops_per_sec\":1.0,\"p99_ms\":1.0}\n\n{\"target\":\"etcd\",\"workload\":\"put\",\"concurrency\":";
        let err = parse_rows(Path::new("runs/bad.jsonl"), text).unwrap_err();
        assert!(matches!(err, ChartError::Parse { line: 3, .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("runs/bad.jsonl line 3: not a kvset-bench result"),
            "{message}"
        );

        let missing = "{\"target\":\"kvset\",\"workload\":\"put\"}";
        let err = parse_rows(Path::new("m.jsonl"), missing).unwrap_err();
        assert!(err.to_string().starts_with("m.jsonl line 1: "), "{err}");
        assert!(err.to_string().contains("concurrency"), "{err}");

        let escape = "{\"target\":\"kvset\",\"workload\":\"../put\",\"concurrency\":1,\"ops_per_sec\":1.0,\"p99_ms\":1.0}";
        let err = parse_rows(Path::new("e.jsonl"), escape).unwrap_err();
        assert!(
            matches!(err, ChartError::Workload { line: 1, .. }),
            "{err:?}"
        );

        let err = read_rows(Path::new("/nonexistent/kvset-bench.jsonl")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/kvset-bench.jsonl: "),
            "{err}"
        );
    }

    #[test]
    fn no_rows_is_an_error_not_an_empty_directory() {
        let rows = parse_rows(Path::new("empty.jsonl"), "\n\n").unwrap();
        let dir = out_dir("empty");
        let err = write_charts(&rows, &["empty.jsonl".to_string()], &dir).unwrap_err();
        assert_eq!(err.to_string(), "no results in empty.jsonl");
        assert!(!dir.exists());
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            log_ticks(1.0, 500.0),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
        assert_eq!(
            linear_ticks(11_000.0),
            [0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10_000.0]
        );
        assert_eq!(count_label(2500.0), "2.5k");
        assert_eq!(count_label(10_000.0), "10k");
        assert_eq!(ms_label(0.5), "0.5");
    }
}
