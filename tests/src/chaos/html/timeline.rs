//! The violation timeline of `report.html`, drawn the way porcupine's visualizer draws one: a
//! row per client, a bar per operation from invoke to completion, so that the overlaps the
//! checker reasoned about can be seen.
//!
//! It draws what the checker hands back for the refuted key ([`ViolationDetails`]): the
//! *window*, a part of the key's history already proven impossible, in colour; the key's other
//! operations in the same time span in grey (for context; the proof does not need them); the
//! *culprit*, the operation whose completion made every order impossible, outlined; and the
//! *cut*, the instant of that completion, as a vertical line. Operations still running at the
//! cut were checked as `info` and are drawn faded; an `info` operation has an open end.

use std::collections::{BTreeSet, HashSet};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::charts::{time_label, ROW};
use super::{colour, Span};
use crate::checker::ViolationDetails;
use crate::history::Function;

/// Context operations beyond this many are left out (the window is always drawn).
const MAX_CONTEXT: usize = 300;
/// Half a bar's height, in row units ([`ROW`] apart).
const BAR: i32 = 28;

fn fill(f: Function) -> RGBColor {
    match f {
        Function::Put => RGBColor(0x1F, 0x77, 0xB4),
        Function::Get => RGBColor(0x17, 0xBE, 0xCF),
        Function::Cas => RGBColor(0xBC, 0x80, 0xBD),
    }
}

/// One bar to draw.
struct Bar<'a> {
    span: &'a Span,
    row: usize,
    to: f64,
    in_window: bool,
    faded: bool,
    /// A window operation's label goes above its bar, or below it when it would overprint
    /// the label of the previous window operation on the row.
    label_below: bool,
}

/// The timeline of the refuted key `key`, from all the history's `spans`.
pub(super) fn violation(spans: &[Span], key: &str, details: &ViolationDetails) -> String {
    let window: HashSet<(u64, u64)> = details
        .window
        .iter()
        .map(|w| (w.operation.client, w.operation.op))
        .collect();
    let pending: HashSet<(u64, u64)> = details
        .window
        .iter()
        .filter(|w| w.pending_at_cut)
        .map(|w| (w.operation.client, w.operation.op))
        .collect();
    let culprit = details.culprit.as_ref().map(|c| (c.client, c.op));
    let cut = details.cut_ns.map(|ns| ns as f64 / 1e6);
    let on_key: Vec<&Span> = spans.iter().filter(|s| s.key == key).collect();
    let windowed: Vec<&Span> = on_key
        .iter()
        .copied()
        .filter(|s| window.contains(&(s.client, s.op)))
        .collect();
    if windowed.is_empty() {
        return "<p class=\"note\">The window's operations are not in this history.</p>".into();
    }
    let from = windowed
        .iter()
        .map(|s| s.call_ms)
        .fold(f64::INFINITY, f64::min);
    let mut to = windowed
        .iter()
        .filter(|s| !pending.contains(&(s.client, s.op)))
        .filter_map(|s| s.end_ms)
        .chain(cut)
        .fold(from, f64::max);
    if to <= from {
        to = windowed.iter().map(|s| s.call_ms).fold(from, f64::max) + 1e-3;
    }
    let pad = (to - from) * 0.06;
    let (x0, x1) = (from - pad, to + pad);
    let mut context: Vec<&Span> = on_key
        .iter()
        .copied()
        .filter(|s| !window.contains(&(s.client, s.op)))
        .filter(|s| s.call_ms <= to && s.end_ms.is_none_or(|e| e >= from))
        .collect();
    context.truncate(MAX_CONTEXT);

    let clients: Vec<u64> = windowed
        .iter()
        .chain(context.iter())
        .map(|s| s.client)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let row = |c: u64| clients.iter().position(|&x| x == c).unwrap_or(0);
    // Per row, where the last label above a bar ends (ms, estimated from its length).
    let mut label_end = vec![f64::NEG_INFINITY; clients.len()];
    let ms_per_char = (x1 - x0) / 960.0 * 7.5;
    let bars: Vec<Bar<'_>> = context
        .iter()
        .map(|s| (s, false))
        .chain(windowed.iter().map(|s| (s, true)))
        .map(|(s, in_window)| {
            let id = (s.client, s.op);
            let running = pending.contains(&id);
            let end = if running {
                cut.unwrap_or(x1)
            } else {
                s.end_ms.unwrap_or(x1)
            };
            let r = row(s.client);
            let label_below = in_window && s.call_ms < label_end[r];
            if in_window && !label_below {
                label_end[r] = s.call_ms + (s.label.chars().count() + 2) as f64 * ms_per_char;
            }
            Bar {
                span: s,
                row: r,
                to: end.min(x1).max(s.call_ms),
                in_window,
                faded: running || s.end_ms.is_none(),
                label_below,
            }
        })
        .collect();

    let n = clients.len();
    let rows = n as i32;
    let culprit_colour = RGBColor(colour::CULPRIT.0, colour::CULPRIT.1, colour::CULPRIT.2);
    // A strip below the rows for the cut's label.
    let height = 100 + 40 * n as u32;
    super::charts::svg(height, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(
                x0..x1,
                (-ROW..rows * ROW - ROW * 4 / 10)
                    .with_key_points((0..rows).map(|i| i * ROW).collect()),
            )?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&time_label(x1 - x0))
            .y_label_formatter(&|y| {
                clients
                    .get((*y / ROW).max(0) as usize)
                    .map(|c| format!("client {c}"))
                    .unwrap_or_default()
            })
            .draw()?;
        chart.draw_series(bars.iter().map(|b| {
            let y = b.row as i32 * ROW;
            let base = if b.in_window {
                fill(b.span.f)
            } else {
                RGBColor(0xC8, 0xC8, 0xC8)
            };
            let alpha = if b.faded { 0.35 } else { 0.85 };
            Rectangle::new(
                [(b.span.call_ms, y - BAR), (b.to, y + BAR)],
                base.mix(alpha).filled(),
            )
        }))?;
        chart.draw_series(bars.iter().filter(|b| b.in_window).map(|b| {
            let label = if pending.contains(&(b.span.client, b.span.op)) {
                format!("{} (running at the cut)", b.span.label)
            } else {
                b.span.label.clone()
            };
            let (edge, dy) = if b.label_below { (-BAR, 2) } else { (BAR, -14) };
            EmptyElement::at((b.span.call_ms, b.row as i32 * ROW + edge))
                + Text::new(label, (2, dy), ("sans-serif", 13).into_font().color(&BLACK))
        }))?;
        if let Some(c) = culprit {
            chart.draw_series(bars.iter().filter(|b| (b.span.client, b.span.op) == c).map(
                |b| {
                    // A closed path, not a rectangle: plotters' SVG rectangles drop the
                    // stroke width.
                    let (y0, y1) = (b.row as i32 * ROW - BAR - 6, b.row as i32 * ROW + BAR + 6);
                    let (x0, x1) = (b.span.call_ms, b.to);
                    PathElement::new(
                        vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)],
                        culprit_colour.stroke_width(3),
                    )
                },
            ))?;
        }
        if let Some(t) = cut {
            chart.draw_series(LineSeries::new(
                [(t, -ROW), (t, rows * ROW - ROW * 4 / 10)],
                culprit_colour.stroke_width(2),
            ))?;
            chart.draw_series(std::iter::once(
                EmptyElement::at((t, -ROW))
                    + Text::new(
                        "cut: no order exists from here",
                        (-4, -14),
                        ("sans-serif", 13)
                            .into_font()
                            .color(&culprit_colour)
                            .pos(Pos::new(HPos::Right, VPos::Top)),
                    ),
            ))?;
        }
        Ok(())
    })
}
