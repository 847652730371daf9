//! `report.html`: the run drawn, for people who want to see what happened rather than read it.
//!
//! `report.md` and `report.json` say *what* a run found; the HTML report shows *when*, so that a
//! dip in throughput, a stall or a violation can be read against the fault that caused it.
//! One file, self-contained: inline SVG drawn with `plotters` and a little CSS, no scripts, no
//! fonts, nothing fetched, so it opens from a CI artifact or an email as well as from disk.
//!
//! What it shows, top to bottom, on one time axis (the run's clock, on which the history's
//! `ts_ns` and the faults' times are both stamped):
//!
//! * **Throughput** — completions per second, split by outcome: `ok`, `fail` (certainly no
//!   effect) and `info` (unknown outcome, counted at its invoke: its completion time means
//!   nothing). Every fault's window is shaded and labelled with its kind and targets.
//! * **Latency** — one mark per operation: a dot for `ok`, a triangle for `fail` at its
//!   completion, and a cross along the top edge for `info` at its invoke (it has no latency).
//! * **Leader and term** — one row per member: who said it led (coloured by term, labelled at
//!   every change of term) and when the member did not answer at all. Only a run has this:
//!   it comes from the status polls the run makes anyway (see `chaos::samples`).
//! * **Replication lag** — per member, the highest commit index the cluster reported minus the
//!   member's applied index; a gap in a line is a member that did not answer.
//! * **Recovery** — the faults as a table, with the recovery times `report.md` also gives.
//! * **Violation** — when the checker refutes a key: the window of operations it proved
//!   impossible, as porcupine draws it: one row per client, a bar from invoke to completion,
//!   other operations on the key in grey, the operation whose completion made the history
//!   impossible outlined, and the cut (the instant after which no order exists) as a line.
//!
//! `kvset-chaos check FILE --html OUT` draws what the history alone allows: throughput,
//! latency and the violation; a history does not record faults or the cluster's state.
//!
//! What it leaves out: charts per key (other than the violating one), per-member request
//! rates, and interactivity (zoom, tooltips). Very long runs are thinned, never truncated:
//! the latency chart keeps every k-th operation past [`MAX_MARKS`] and says so.
//!
//! The module is split by job: this file lays out the page, `charts.rs` draws the time
//! series, `timeline.rs` draws the violation.

mod charts;
mod timeline;

use std::collections::HashMap;
use std::fmt::Write as _;

use super::faults::FaultRecord;
use super::report::{Recovery, RunReport};
use super::samples::ClusterSample;
use crate::checker::Verdict;
use crate::history::{Event, EventKind, Function};

/// Past this many operations the latency chart keeps every k-th one.
pub const MAX_MARKS: usize = 20_000;

/// Colours shared by the charts and the page's legend (also what tests look for).
pub mod colour {
    /// An `ok` operation.
    pub const OK: (u8, u8, u8) = (0x2C, 0xA0, 0x2C);
    /// A `fail` operation.
    pub const FAIL: (u8, u8, u8) = (0xD6, 0x27, 0x28);
    /// An `info` operation.
    pub const INFO: (u8, u8, u8) = (0xFF, 0x7F, 0x0E);
    /// A fault's window (drawn translucent).
    pub const FAULT: (u8, u8, u8) = (0x94, 0x67, 0xBD);
    /// The operation whose completion made a violation certain.
    pub const CULPRIT: (u8, u8, u8) = (0xB0, 0x00, 0x20);

    /// `#RRGGBB`, as the SVG spells it.
    pub fn hex(c: (u8, u8, u8)) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }
}

/// How an operation ended, for drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Completed `ok`.
    Ok,
    /// Completed `fail`.
    Fail,
    /// `info` or never completed.
    Info,
}

/// One operation as the charts see it: times in ms on the run's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The client.
    pub client: u64,
    /// The op id.
    pub op: u64,
    /// The key.
    pub key: String,
    /// The function.
    pub f: Function,
    /// A short label (`put 3`, `get → 3`, `cas 1→2 ✓`).
    pub label: String,
    /// Invoke time (ms).
    pub call_ms: f64,
    /// Completion time (ms); `None` for `info`.
    pub end_ms: Option<f64>,
    /// The outcome.
    pub mark: Mark,
}

/// Pairs a history's invokes with their completions, in invoke order.
pub fn spans(events: &[Event]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut open: HashMap<(u64, u64), usize> = HashMap::new();
    let ms = |ns: u64| ns as f64 / 1e6;
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "∅".into());
    for e in events {
        match &e.kind {
            EventKind::Invoke(input) => {
                open.insert((e.client, e.op), spans.len());
                let label = match input {
                    crate::history::Input::Get => "get".to_string(),
                    crate::history::Input::Put { value } => format!("put {value}"),
                    crate::history::Input::Cas { expected, value } => {
                        format!("cas {}→{value}", text(expected))
                    }
                };
                spans.push(Span {
                    client: e.client,
                    op: e.op,
                    key: e.key.clone(),
                    f: e.function(),
                    label,
                    call_ms: ms(e.ts_ns),
                    end_ms: None,
                    mark: Mark::Info,
                });
            }
            kind => {
                let Some(i) = open.remove(&(e.client, e.op)) else {
                    continue;
                };
                let span = &mut spans[i];
                match kind {
                    EventKind::Ok(output) => {
                        span.mark = Mark::Ok;
                        span.end_ms = Some(ms(e.ts_ns));
                        match output {
                            crate::history::Output::Get { value } => {
                                span.label = format!("get → {}", text(value));
                            }
                            crate::history::Output::Cas { succeeded } => {
                                span.label.push_str(if *succeeded { " ✓" } else { " ✗" });
                            }
                            crate::history::Output::Put => {}
                        }
                    }
                    EventKind::Fail(_) => {
                        span.mark = Mark::Fail;
                        span.end_ms = Some(ms(e.ts_ns));
                        span.label.push_str(" (fail)");
                    }
                    _ => {}
                }
            }
        }
    }
    spans
}

/// What a report is drawn from.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    /// The page's title.
    pub title: &'a str,
    /// The history's events.
    pub events: &'a [Event],
    /// The run's report (`None` when drawing a history alone).
    pub run: Option<&'a RunReport>,
    /// The cluster samples of the run (empty for a history alone).
    pub samples: &'a [ClusterSample],
    /// The linearizability verdict, when there is one.
    pub verdict: Option<&'a Verdict>,
}

impl<'a> ReportInput<'a> {
    /// The faults (none for a history alone).
    fn faults(&self) -> &'a [FaultRecord] {
        self.run.map(|r| r.faults.as_slice()).unwrap_or(&[])
    }

    fn member_names(&self) -> Vec<String> {
        match self.run {
            Some(r) => r.members.iter().map(|m| m.name.clone()).collect(),
            None => Vec::new(),
        }
    }
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em auto;max-width:1100px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em}\
td.n{text-align:right}figure{margin:.5em 0}svg{max-width:100%;height:auto}\
.legend span{display:inline-block;margin-right:1.2em}\
.sw{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}\
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}.note{color:#666}";

/// Renders the whole page.
pub fn render(input: &ReportInput<'_>) -> String {
    let spans = spans(input.events);
    let faults = input.faults();
    let axis = charts::TimeAxis::of(&spans, faults, input.samples);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(input.title),
        escape(input.title)
    );
    summary(&mut h, input, &spans);

    let _ = writeln!(h, "<h2 id=\"operations\">Operations over time</h2>");
    legend(&mut h, !faults.is_empty());
    let _ = writeln!(
        h,
        "<figure id=\"throughput\">{}</figure>",
        charts::throughput(&axis, &spans, faults)
    );
    let (latency, stride) = charts::latency(&axis, &spans, faults);
    let _ = writeln!(h, "<figure id=\"latency\">{latency}</figure>");
    if stride > 1 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} operations: one in {stride} is drawn.</p>",
            spans.len()
        );
    }

    if input.run.is_some() {
        let names = input.member_names();
        let _ = writeln!(h, "<h2 id=\"leader\">Leader and term</h2>");
        if input.samples.is_empty() {
            let _ = writeln!(h, "<p class=\"note\">No status samples were recorded.</p>");
        } else {
            let _ = writeln!(
                h,
                "<p class=\"note\">One row per member: a bar where it said it led (shade by \
                 term, labelled at each new term); grey where it did not answer.</p>\
                 <figure id=\"leader-band\">{}</figure>",
                charts::leader_band(&axis, input.samples, &names, faults)
            );
            let _ = writeln!(
                h,
                "<h2 id=\"lag\">Replication lag</h2><p class=\"note\">Highest commit index \
                 reported by any member minus each member's applied index; a gap is a member \
                 that did not answer.</p>"
            );
            let _ = write!(h, "<p class=\"legend\">");
            for (m, name) in names.iter().enumerate() {
                let _ = write!(
                    h,
                    "<span><i class=\"sw\" style=\"background:{}\"></i>{}</span>",
                    colour::hex(charts::member_colour(m)),
                    escape(name)
                );
            }
            let _ = writeln!(
                h,
                "</p><figure id=\"lag-chart\">{}</figure>",
                charts::lag(&axis, input.samples, &names, faults)
            );
        }
    }
    if let Some(run) = input.run {
        recovery(&mut h, faults, &run.recovery);
    }
    if let Some(Verdict::Violation { key, details }) = input.verdict {
        let _ = writeln!(
            h,
            "<h2 id=\"violation\">Violation on key {}</h2>",
            escape(&format!("{key:?}"))
        );
        let _ = writeln!(
            h,
            "<p class=\"note\">One row per client; a bar from invoke to completion (an open \
             end: unknown outcome). Coloured: the operations the checker proved impossible \
             together; grey: the key's other operations in that time. Outlined in red: the \
             operation whose completion made the history impossible; the red line is that \
             instant (the cut).</p><figure id=\"violation-timeline\">{}</figure>",
            timeline::violation(&spans, key, details)
        );
        let _ = writeln!(h, "<pre>{}</pre>", escape(&details.to_string()));
    }
    let _ = writeln!(h, "</body></html>");
    h
}

fn summary(h: &mut String, input: &ReportInput<'_>, spans: &[Span]) {
    let count = |m: Mark| spans.iter().filter(|s| s.mark == m).count();
    let verdict = match input.verdict {
        Some(Verdict::Linearizable) => "linearizable".to_string(),
        Some(Verdict::Violation { key, .. }) => format!("VIOLATION on key {key:?}"),
        Some(Verdict::Inconclusive { reason }) => format!("inconclusive: {reason}"),
        None => "not checked".to_string(),
    };
    if let Some(run) = input.run {
        let _ = writeln!(
            h,
            "<p>Verdict <b>{}</b> (exit {}) · seed {} · backend {} · {:.0} s · reproduce: \
             <code>{}</code></p>",
            escape(run.verdict.label()),
            run.exit_code,
            run.seed,
            escape(&run.backend),
            run.duration_ms as f64 / 1e3,
            escape(&run.reproduce)
        );
        if let Some(network) = &run.network {
            let _ = writeln!(h, "<p id=\"network\">Network: {}</p>", escape(network));
        }
        let _ = writeln!(
            h,
            "<table><tr><th>check</th><th>result</th><th>summary</th></tr>"
        );
        for c in &run.checks {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(c.name),
                escape(c.status.label()),
                escape(&c.summary)
            );
        }
        let _ = writeln!(h, "</table>");
    }
    let _ = writeln!(
        h,
        "<p>{} operations: {} ok, {} fail, {} info · linearizability: <b>{}</b></p>",
        spans.len(),
        count(Mark::Ok),
        count(Mark::Fail),
        count(Mark::Info),
        escape(&verdict)
    );
}

fn legend(h: &mut String, faults: bool) {
    let item = |c: (u8, u8, u8), text: &str| {
        format!(
            "<span><i class=\"sw\" style=\"background:{}\"></i>{text}</span>",
            colour::hex(c)
        )
    };
    let _ = write!(
        h,
        "<p class=\"legend\">{}{}{}",
        item(colour::OK, "ok (dot)"),
        item(colour::FAIL, "fail (triangle)"),
        item(colour::INFO, "info: unknown outcome (cross, at its invoke)")
    );
    if faults {
        let _ = write!(h, "{}", item(colour::FAULT, "fault window"));
    }
    let _ = writeln!(h, "</p>");
}

fn recovery(h: &mut String, faults: &[FaultRecord], recovery: &Recovery) {
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
    let _ = writeln!(h, "<h2 id=\"recovery\">Faults and recovery</h2>");
    if faults.is_empty() {
        let _ = writeln!(h, "<p>No faults were injected.</p>");
    } else {
        let _ = writeln!(
            h,
            "<table><tr><th>#</th><th>at (s)</th><th>fault</th><th>targets</th>\
             <th>leader before</th><th>healed (s)</th><th>leader loss → write (ms)</th>\
             <th>back → caught up (ms)</th><th>error</th></tr>"
        );
        for f in faults {
            let caught: Vec<String> = f
                .members
                .iter()
                .map(|m| format!("{} {}", m.member, ms(m.caught_up_ms)))
                .collect();
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                f.index,
                f.at_ms / 1e3,
                escape(f.kind.as_str()),
                escape(&f.targets.join(" ")),
                escape(f.leader_before.as_deref().unwrap_or("—")),
                f.healed_ms
                    .map(|v| format!("{:.1}", v / 1e3))
                    .unwrap_or_else(|| "—".into()),
                if f.leader_lost {
                    ms(f.leader_recovery_ms)
                } else {
                    String::new()
                },
                escape(&caught.join(", ")),
                escape(f.error.as_deref().unwrap_or(""))
            );
            // A compound fault: its steps, each with its own window.
            if !f.steps.is_empty() {
                let steps: Vec<String> = f
                    .steps
                    .iter()
                    .map(|st| match st.to_ms {
                        Some(to) if to > st.from_ms => {
                            format!("{} {:.1}–{:.1} s", st.step, st.from_ms / 1e3, to / 1e3)
                        }
                        Some(_) => format!("{} at {:.1} s", st.step, st.from_ms / 1e3),
                        None => format!("{} from {:.1} s, not undone", st.step, st.from_ms / 1e3),
                    })
                    .collect();
                let _ = writeln!(
                    h,
                    "<tr><td></td><td colspan=\"8\" class=\"note\">steps: {}</td></tr>",
                    escape(&steps.join("; "))
                );
            }
        }
        let _ = writeln!(h, "</table>");
    }
    let _ = writeln!(
        h,
        "<table><tr><th>measure</th><th>samples</th><th>p50 (ms)</th><th>p99 (ms)</th>\
         <th>max (ms)</th><th>not recovered in time</th></tr>"
    );
    for (name, st) in [
        (
            "leader loss → next acknowledged write",
            &recovery.leader_loss_to_write,
        ),
        ("member back → caught up", &recovery.restart_to_caught_up),
    ] {
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            st.count,
            ms(st.p50_ms),
            ms(st.p99_ms),
            ms(st.max_ms),
            st.not_observed
        );
    }
    let _ = writeln!(h, "</table>");
}

#[cfg(test)]
mod tests;
