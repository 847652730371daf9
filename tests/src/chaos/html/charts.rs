//! The time-series charts of `report.html`: throughput, latency, the leader band and the
//! replication lag, on one time axis with every fault's window shaded and labelled.
//!
//! Each chart is drawn by `plotters` into an SVG string; a chart that cannot be drawn becomes
//! a one-line note instead of failing the report.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{colour, Mark, Span, MAX_MARKS};
use crate::chaos::faults::FaultRecord;
use crate::chaos::samples::ClusterSample;

const WIDTH: u32 = 1060;
/// Rows (members, clients) are this many y units apart: plotters formats integer axes
/// with custom key points, not float ones.
pub(super) const ROW: i32 = 100;
const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error + 'static>>;

fn rgb(c: (u8, u8, u8)) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

/// Draws one chart into an SVG string.
pub(super) fn svg(height: u32, draw: impl FnOnce(&Area<'_>) -> Drawn) -> String {
    let mut buf = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(&root).map_err(|e| e.to_string()))
            .and_then(|_| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => buf,
        Err(e) => format!("<p class=\"note\">This chart could not be drawn: {e}</p>"),
    }
}

/// The time range every chart shares (ms on the run's clock).
#[derive(Debug, Clone, Copy)]
pub(super) struct TimeAxis {
    pub from: f64,
    pub to: f64,
}

impl TimeAxis {
    /// From the first to the last thing to draw.
    pub fn of(spans: &[Span], faults: &[FaultRecord], samples: &[ClusterSample]) -> TimeAxis {
        let times = spans
            .iter()
            .flat_map(|s| [Some(s.call_ms), s.end_ms])
            .flatten()
            .chain(
                faults
                    .iter()
                    .flat_map(|f| [Some(f.at_ms), f.healed_ms])
                    .flatten(),
            )
            .chain(samples.iter().map(|s| s.at_ms));
        let (mut from, mut to) = (f64::INFINITY, f64::NEG_INFINITY);
        for t in times {
            from = from.min(t);
            to = to.max(t);
        }
        if !from.is_finite() {
            (from, to) = (0.0, 1.0);
        }
        if to - from < 1e-6 {
            to = from + 1e-3;
        }
        TimeAxis { from, to }
    }

    fn span(&self) -> f64 {
        self.to - self.from
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.from..self.to
    }
}

/// Labels for a time axis spanning `span` ms.
pub(super) fn time_label(span: f64) -> impl Fn(&f64) -> String {
    move |ms: &f64| {
        if span >= 10_000.0 {
            format!("{:.0} s", ms / 1e3)
        } else if span >= 1_000.0 {
            format!("{:.1} s", ms / 1e3)
        } else if span >= 10.0 {
            format!("{ms:.0} ms")
        } else {
            format!("{:.0} µs", ms * 1e3)
        }
    }
}

/// `950`, `12k`, `3.4M`: a count or rate short enough for an axis.
fn count_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Where a fault's window ends: when the members could come back, at least wide enough to see.
fn fault_end(f: &FaultRecord, axis: &TimeAxis) -> f64 {
    let end = f.healed_ms.unwrap_or(axis.to);
    end.max(f.at_ms + axis.span() * 0.004)
}

/// A fault's label: `#3 kill-leader kv-1`.
pub(super) fn fault_label(f: &FaultRecord) -> String {
    format!("#{} {} {}", f.index, f.kind, f.targets.join(" "))
}

/// Shades every fault's window between `y0` and `y1` (drawn first, under the data).
fn fault_bands<'a, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    faults: &[FaultRecord],
    axis: &TimeAxis,
    (y0, y1): (Y::ValueType, Y::ValueType),
) -> Drawn
where
    Y::ValueType: Clone + 'static,
{
    let band = rgb(colour::FAULT);
    chart.draw_series(faults.iter().map(|f| {
        Rectangle::new(
            [(f.at_ms, y0.clone()), (fault_end(f, axis), y1.clone())],
            band.mix(0.18).filled(),
        )
    }))?;
    Ok(())
}

/// Labels every fault's window at `top` (drawn last, over the data); labels of neighbouring
/// faults alternate between two lines so that they do not overprint.
fn fault_labels<'a, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    faults: &[FaultRecord],
    top: Y::ValueType,
) -> Drawn
where
    Y::ValueType: Clone + 'static,
{
    let ink = RGBColor(0x5B, 0x3A, 0x7A);
    chart.draw_series(faults.iter().enumerate().map(|(i, f)| {
        let dy = if i % 2 == 0 { 2 } else { 17 };
        EmptyElement::at((f.at_ms, top.clone()))
            + Text::new(fault_label(f), (2, dy), (FONT, 13).into_font().color(&ink))
    }))?;
    Ok(())
}

/// Operations per second over time, one line per outcome, with the faults shaded.
pub(super) fn throughput(axis: &TimeAxis, spans: &[Span], faults: &[FaultRecord]) -> String {
    // About five operations a bucket for small histories, at most 120 buckets.
    let buckets = (spans.len() / 5).clamp(10, 120);
    let width = axis.span() / buckets as f64;
    let mut counts = vec![vec![0usize; buckets]; 3];
    for s in spans {
        // An info operation's completion time means nothing: count it at its invoke.
        let (t, row) = match (s.mark, s.end_ms) {
            (Mark::Ok, Some(t)) => (t, 0),
            (Mark::Fail, Some(t)) => (t, 1),
            _ => (s.call_ms, 2),
        };
        let b = (((t - axis.from) / width) as usize).min(buckets - 1);
        counts[row][b] += 1;
    }
    let per_sec = |n: usize| n as f64 / (width / 1e3);
    let top = counts
        .iter()
        .flat_map(|r| r.iter())
        .map(|&n| per_sec(n))
        .fold(1e-9, f64::max)
        * 1.25;
    svg(300, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(axis.range(), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&time_label(axis.span()))
            .light_line_style(TRANSPARENT)
            .y_label_formatter(&|v| count_label(*v))
            .y_desc("completions / s")
            .draw()?;
        fault_bands(&mut chart, faults, axis, (0.0, top))?;
        for (row, c) in [colour::OK, colour::FAIL, colour::INFO]
            .into_iter()
            .enumerate()
        {
            let points = (0..buckets).map(|b| {
                (
                    axis.from + (b as f64 + 0.5) * width,
                    per_sec(counts[row][b]),
                )
            });
            chart.draw_series(LineSeries::new(points, rgb(c).stroke_width(2)))?;
        }
        fault_labels(&mut chart, faults, top)?;
        Ok(())
    })
}

/// One mark per operation (at most [`MAX_MARKS`]; returns the stride used): latency of `ok`
/// and `fail` operations at their completion, `info` operations along the top at their invoke.
pub(super) fn latency(axis: &TimeAxis, spans: &[Span], faults: &[FaultRecord]) -> (String, usize) {
    let stride = spans.len().div_ceil(MAX_MARKS).max(1);
    let kept: Vec<&Span> = spans.iter().step_by(stride).collect();
    let max = kept
        .iter()
        .filter_map(|s| s.end_ms.map(|e| e - s.call_ms))
        .fold(1e-6, f64::max);
    // Headroom above the slowest operation for the info crosses and the fault labels.
    let top = max * 1.3;
    let span = axis.span();
    let svg = svg(320, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(axis.range(), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&time_label(span))
            .y_label_formatter(&time_label(max))
            .light_line_style(TRANSPARENT)
            .y_desc("latency")
            .draw()?;
        fault_bands(&mut chart, faults, axis, (0.0, top))?;
        let (ok, fail, info) = (rgb(colour::OK), rgb(colour::FAIL), rgb(colour::INFO));
        chart.draw_series(kept.iter().filter(|s| s.mark == Mark::Ok).filter_map(|s| {
            s.end_ms
                .map(|e| Circle::new((e, e - s.call_ms), 2, ok.filled()))
        }))?;
        chart.draw_series(
            kept.iter()
                .filter(|s| s.mark == Mark::Fail)
                .filter_map(|s| {
                    s.end_ms
                        .map(|e| TriangleMarker::new((e, e - s.call_ms), 4, fail.filled()))
                }),
        )?;
        chart.draw_series(
            kept.iter()
                .filter(|s| s.mark == Mark::Info)
                .map(|s| Cross::new((s.call_ms, max * 1.08), 4, info.stroke_width(1))),
        )?;
        fault_labels(&mut chart, faults, top)?;
        Ok(())
    });
    (svg, stride)
}

/// Member `m`'s colour in the lag chart (the page's legend uses it too).
pub(super) fn member_colour(m: usize) -> (u8, u8, u8) {
    PALETTE[m % PALETTE.len()]
}

/// Colours for members (lag lines) and terms (leader bars).
const PALETTE: [(u8, u8, u8); 6] = [
    (0x1F, 0x77, 0xB4),
    (0x8C, 0x56, 0x4B),
    (0x17, 0xBE, 0xCF),
    (0xE3, 0x77, 0xC2),
    (0xBC, 0xBD, 0x22),
    (0x7F, 0x7F, 0x7F),
];

fn member_count(samples: &[ClusterSample], names: &[String]) -> usize {
    samples
        .iter()
        .map(|s| s.members.len())
        .max()
        .unwrap_or(0)
        .max(names.len())
        .max(1)
}

fn member_name(names: &[String], i: usize) -> String {
    names.get(i).cloned().unwrap_or_else(|| format!("kv-{i}"))
}

/// One row per member: who led (by term) and who did not answer, with the faults shaded.
pub(super) fn leader_band(
    axis: &TimeAxis,
    samples: &[ClusterSample],
    names: &[String],
    faults: &[FaultRecord],
) -> String {
    let n = member_count(samples, names);
    // Each sample holds until the next one (the last for one typical gap).
    let gap = samples
        .windows(2)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .fold(0.0, f64::max)
        .min(axis.span() / 50.0);
    let until = |i: usize| {
        samples
            .get(i + 1)
            .map(|s| s.at_ms)
            .unwrap_or(samples[i].at_ms + gap)
    };
    // Runs of equal state per member: (member, from, to, Some(term) leading / None down).
    let mut bars: Vec<(usize, f64, f64, Option<u64>)> = Vec::new();
    let mut terms: Vec<(usize, f64, u64)> = Vec::new();
    let mut last_term = None;
    for m in 0..n {
        let mut run: Option<(f64, Option<u64>)> = None;
        let mut run_end = 0.0;
        for (i, s) in samples.iter().enumerate() {
            let state = s.members.get(m).and_then(|ms| {
                if !ms.reachable {
                    Some(None)
                } else if s.leader().is_some_and(|(l, _)| l == m) {
                    Some(Some(ms.term))
                } else {
                    None
                }
            });
            match (run, state) {
                (Some((_, cur)), Some(st)) if cur == st => {}
                _ => {
                    if let Some((from, st)) = run.take() {
                        bars.push((m, from, run_end, st));
                    }
                    run = state.map(|st| (s.at_ms, st));
                }
            }
            run_end = until(i);
        }
        if let Some((from, st)) = run {
            bars.push((m, from, run_end, st));
        }
    }
    for s in samples {
        if let Some((m, term)) = s.leader() {
            if last_term != Some(term) {
                terms.push((m, s.at_ms, term));
                last_term = Some(term);
            }
        }
    }
    let rows = n as i32;
    let height = 90 + 34 * n as u32;
    svg(height, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(
                axis.range(),
                // Half a row of headroom on top for the fault labels.
                (-ROW / 2..rows * ROW).with_key_points((0..rows).map(|i| i * ROW).collect()),
            )?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_label_formatter(&time_label(axis.span()))
            .y_label_formatter(&|y| member_name(names, (*y / ROW).max(0) as usize))
            .draw()?;
        fault_bands(&mut chart, faults, axis, (-ROW / 2, rows * ROW))?;
        chart.draw_series(bars.iter().map(|&(m, from, to, st)| {
            let y = m as i32 * ROW;
            let style = match st {
                Some(term) => rgb(PALETTE[(term % 2) as usize]).mix(0.85).filled(),
                None => RGBColor(0xBB, 0xBB, 0xBB).mix(0.8).filled(),
            };
            Rectangle::new([(from, y - ROW * 3 / 10), (to, y + ROW * 3 / 10)], style)
        }))?;
        chart.draw_series(terms.iter().map(|&(m, at, term)| {
            // Above the bar's start, in ink: a short bar has no room for it inside.
            EmptyElement::at((at, m as i32 * ROW + ROW * 3 / 10))
                + Text::new(
                    format!("t{term}"),
                    (1, -13),
                    (FONT, 13).into_font().color(&BLACK),
                )
        }))?;
        fault_labels(&mut chart, faults, rows * ROW)?;
        Ok(())
    })
}

/// Each member's lag behind the highest commit index reported, with the faults shaded.
pub(super) fn lag(
    axis: &TimeAxis,
    samples: &[ClusterSample],
    names: &[String],
    faults: &[FaultRecord],
) -> String {
    let n = member_count(samples, names);
    // Per member, runs of consecutive answered samples: a gap breaks the line.
    let mut lines: Vec<(usize, Vec<(f64, f64)>)> = Vec::new();
    for m in 0..n {
        let mut current: Vec<(f64, f64)> = Vec::new();
        for s in samples {
            let point = s.members.get(m).filter(|ms| ms.reachable).and_then(|ms| {
                s.commit_index()
                    .map(|c| (s.at_ms, c.saturating_sub(ms.applied_index) as f64))
            });
            match point {
                Some(p) => current.push(p),
                None if !current.is_empty() => lines.push((m, std::mem::take(&mut current))),
                None => {}
            }
        }
        if !current.is_empty() {
            lines.push((m, current));
        }
    }
    let top = lines
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.3;
    svg(260, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(axis.range(), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&time_label(axis.span()))
            .light_line_style(TRANSPARENT)
            .y_label_formatter(&|v| count_label(*v))
            .y_desc("entries behind")
            .draw()?;
        fault_bands(&mut chart, faults, axis, (0.0, top))?;
        for (m, line) in &lines {
            let c = rgb(member_colour(*m));
            chart.draw_series(LineSeries::new(line.iter().copied(), c.stroke_width(2)))?;
        }
        fault_labels(&mut chart, faults, top)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_labels_pick_a_unit_for_the_span() {
        assert_eq!(time_label(60_000.0)(&12_000.0), "12 s");
        assert_eq!(time_label(5_000.0)(&1_500.0), "1.5 s");
        assert_eq!(time_label(200.0)(&42.0), "42 ms");
        assert_eq!(time_label(0.2)(&0.05), "50 µs");
        assert_eq!(count_label(1_540_000.0), "1.5M");
        assert_eq!(count_label(25_000.0), "25k");
        assert_eq!(count_label(0.5), "0.5");
    }
}
