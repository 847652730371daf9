//! The report's structure, checked on fixed inputs: self-contained, one band and one label per
//! fault on every time chart, one mark per operation, and a violation's timeline with the
//! culprit and the cut marked.

use std::time::Duration;

use super::{colour, render, ReportInput};
use crate::chaos::backend::MemberInfo;
use crate::chaos::checks::RunVerdict;
use crate::chaos::faults::{FaultKind, FaultRecord, StepRecord};
use crate::chaos::report::{Recovery, RunReport};
use crate::chaos::samples::{ClusterSample, MemberSample};
use crate::chaos::workload::{ReadFrom, WorkloadConfig};
use crate::checker::{check_history, CheckOptions, Verdict};
use crate::history::{Event, EventKind, Function, History, Input, Output};

const MS: u64 = 1_000_000;

/// One operation of the fixture: client, key, what it wrote (`None`: a read), how it ended
/// (`Some(true)` ok, `Some(false)` fail, `None` info), invoke and completion in ms.
type Op = (
    u64,
    &'static str,
    Option<&'static str>,
    Option<bool>,
    u64,
    u64,
);

const OPS: [Op; 9] = [
    (1, "k0", Some("a"), Some(true), 100, 150),
    (2, "k0", None, Some(true), 200, 260),
    (3, "k1", Some("b"), Some(false), 900, 1_400),
    (1, "k1", Some("c"), None, 1_100, 0),
    (2, "k0", None, Some(true), 1_900, 2_700),
    (3, "k1", None, Some(true), 3_000, 3_050),
    (1, "k0", Some("d"), Some(true), 4_200, 4_900),
    (2, "k1", None, Some(false), 4_300, 4_800),
    (3, "k0", None, Some(true), 5_500, 5_520),
];

fn events() -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    for (op, &(client, key, write, end, call, ret)) in OPS.iter().enumerate() {
        let event = |kind, ms: u64| Event {
            client,
            op: op as u64,
            key: key.to_string(),
            kind,
            ts_ns: ms * MS,
            revision: None,
        };
        let f = if write.is_some() {
            Function::Put
        } else {
            Function::Get
        };
        events.push(event(
            EventKind::Invoke(match write {
                Some(v) => Input::Put { value: v.into() },
                None => Input::Get,
            }),
            call,
        ));
        match end {
            Some(true) => events.push(event(
                EventKind::Ok(match write {
                    Some(_) => Output::Put,
                    None => Output::Get { value: None },
                }),
                ret,
            )),
            Some(false) => events.push(event(EventKind::Fail(f), ret)),
            None => {}
        }
    }
    events.sort_by_key(|e| e.ts_ns);
    events
}

fn fault(index: usize, kind: FaultKind, target: &str, at_ms: f64, healed_ms: f64) -> FaultRecord {
    FaultRecord {
        index,
        kind,
        targets: vec![target.to_string()],
        leader_before: Some("kv-0".into()),
        term_before: 1,
        at_ms,
        healed_ms: Some(healed_ms),
        leader_lost: kind == FaultKind::KillLeader,
        leader_recovery_ms: Some(420.0),
        members: Vec::new(),
        probe_reads: 0,
        error: None,
        steps: Vec::new(),
        overlaps: Vec::new(),
        cut_short: false,
    }
}

/// A kill of the leader, and a compound fault on kv-2 with its two steps.
fn faults() -> Vec<FaultRecord> {
    let mut compound = fault(2, FaultKind::KillDuringSnapshot, "kv-2", 4_000.0, 5_000.0);
    compound.steps = vec![
        StepRecord {
            step: "wipe kv-2".into(),
            from_ms: 4_000.0,
            to_ms: Some(4_400.0),
            note: None,
            error: None,
        },
        StepRecord {
            step: "kill -9 kv-2 while catching up".into(),
            from_ms: 4_700.0,
            to_ms: Some(4_700.0),
            note: None,
            error: None,
        },
    ];
    vec![
        fault(1, FaultKind::KillLeader, "kv-0", 1_000.0, 2_500.0),
        compound,
    ]
}

/// kv-0 leads in term 1 until it is killed at 1 s, is down until 2.5 s; kv-1 leads in term 2
/// from 1.5 s. Applied indexes grow by 10 a sample; kv-2 does not answer from 4 s to 5 s.
fn samples() -> Vec<ClusterSample> {
    (0..24)
        .map(|i| {
            let at = i as f64 * 250.0;
            let commit = 10 * i as u64;
            let member = |m: usize| {
                let down = m == 0 && (1_000.0..2_500.0).contains(&at);
                let paused = m == 2 && (4_000.0..5_000.0).contains(&at);
                let (leader, term) = match (m, at < 1_000.0, at >= 1_500.0) {
                    (0, true, _) => (true, 1),
                    (1, _, true) => (true, 2),
                    (_, true, _) => (false, 1),
                    _ => (false, 2),
                };
                MemberSample {
                    reachable: !down && !paused,
                    leader: leader && !down,
                    term,
                    commit_index: commit,
                    applied_index: if m == 2 {
                        commit.saturating_sub(5)
                    } else {
                        commit
                    },
                }
            };
            ClusterSample {
                at_ms: at,
                members: (0..3).map(member).collect(),
            }
        })
        .collect()
}

fn run_report(faults: Vec<FaultRecord>) -> RunReport {
    RunReport {
        verdict: RunVerdict::Pass,
        exit_code: 0,
        seed: 7,
        backend: "process".into(),
        cluster: "3 local members".into(),
        network: Some("namespaces: network namespaces kvsnt7n0..2 on bridge kvsnt7b".into()),
        members: (0..3)
            .map(|i| MemberInfo {
                name: format!("kv-{i}"),
                endpoint: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect(),
        server_faults: Vec::new(),
        workload: WorkloadConfig {
            clients: 3,
            keys: 2,
            rate: 0.0,
            read_from: ReadFrom::Leader,
            op_timeout: Duration::from_secs(2),
            seed: 7,
        },
        duration_ms: 6_000,
        elapsed_ms: 9_000.0,
        started_unix: 0,
        reproduce: "kvset-chaos run --seed 7 --out <dir> & co".into(),
        ops: Vec::new(),
        recovery: Recovery::of(&faults),
        faults,
        unsupported_faults: Vec::new(),
        checks: Vec::new(),
        linearizability: None,
        lost_writes: None,
        convergence: None,
        errors: Vec::new(),
        files: Vec::new(),
        out_dir: "/tmp/run".into(),
    }
}

/// The SVG inside `<figure id="ID">`.
fn figure<'a>(html: &'a str, id: &str) -> &'a str {
    let open = format!("<figure id=\"{id}\">");
    let start = html
        .find(&open)
        .unwrap_or_else(|| panic!("no figure {id} in:\n{html}"))
        + open.len();
    let end = start + html[start..].find("</figure>").expect("figure closed");
    &html[start..end]
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// How many `<text>` elements of `svg` say exactly `text` (plotters puts it on a line of its
/// own).
fn texts(svg: &str, text: &str) -> usize {
    count(svg, &format!(">\n{}\n</text>", super::escape(text)))
}

/// Elements `<TAG ...>` whose attributes include `attr`.
fn elements(svg: &str, tag: &str, attr: &str) -> usize {
    svg.split(&format!("<{tag} "))
        .skip(1)
        .filter(|rest| rest.split('>').next().is_some_and(|a| a.contains(attr)))
        .count()
}

fn assert_self_contained(html: &str) {
    for bad in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "<script",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(
            !html.contains(bad),
            "the report refers outside itself: {bad}"
        );
    }
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
}

fn render_run() -> String {
    let events = events();
    let samples = samples();
    let report = run_report(faults());
    render(&ReportInput {
        title: "fixture run",
        events: &events,
        run: Some(&report),
        samples: &samples,
        verdict: Some(&Verdict::Linearizable),
    })
}

#[test]
fn a_run_report_is_self_contained_and_shades_every_fault_on_every_time_chart() {
    let html = render_run();
    assert_self_contained(&html);
    let band = format!("fill=\"{}\"", colour::hex(colour::FAULT));
    for id in ["throughput", "latency", "leader-band", "lag-chart"] {
        let svg = figure(&html, id);
        assert!(svg.starts_with("<svg"), "{id} is not inline SVG");
        assert_eq!(elements(svg, "rect", &band), 2, "fault bands in {id}");
        for label in ["#1 kill-leader kv-0", "#2 kill-during-snapshot kv-2"] {
            assert_eq!(texts(svg, label), 1, "label {label} in {id}");
        }
    }
    // The recovery table lists both faults.
    assert!(html.contains("<td>kill-leader</td><td>kv-0</td>"), "{html}");
    assert!(
        html.contains("<td>kill-during-snapshot</td><td>kv-2</td>"),
        "{html}"
    );
    assert!(
        html.contains("steps: wipe kv-2 4.0–4.4 s; kill -9 kv-2 while catching up at 4.7 s"),
        "{html}"
    );
    // Which network mode ran.
    assert!(
        html.contains("<p id=\"network\">Network: namespaces: network namespaces kvsnt7n0..2"),
        "{html}"
    );
}

#[test]
fn the_latency_chart_has_one_mark_per_operation_by_outcome() {
    let html = render_run();
    let svg = figure(&html, "latency");
    let ok = OPS.iter().filter(|o| o.3 == Some(true)).count();
    let fail = OPS.iter().filter(|o| o.3 == Some(false)).count();
    let info = OPS.iter().filter(|o| o.3.is_none()).count();
    let fill = |c| format!("fill=\"{}\"", colour::hex(c));
    assert_eq!(elements(svg, "circle", &fill(colour::OK)), ok);
    assert_eq!(elements(svg, "polygon", &fill(colour::FAIL)), fail);
    // A cross is two strokes.
    let stroke = format!("stroke=\"{}\"", colour::hex(colour::INFO));
    assert_eq!(elements(svg, "line", &stroke), 2 * info);
    assert!(html.contains(&format!(
        "{} operations: {ok} ok, {fail} fail, {info} info",
        OPS.len()
    )));
}

#[test]
fn the_leader_band_labels_each_term_and_shows_the_member_down() {
    let html = render_run();
    let svg = figure(&html, "leader-band");
    assert_eq!(texts(svg, "t1"), 1, "{svg}");
    assert_eq!(texts(svg, "t2"), 1, "{svg}");
    for name in ["kv-0", "kv-1", "kv-2"] {
        assert_eq!(texts(svg, name), 1, "row {name}");
    }
    // kv-0 down from 1 s to 2.5 s and kv-2 paused: two grey bars.
    assert_eq!(elements(svg, "rect", "fill=\"#BBBBBB\""), 2, "{svg}");
}

#[test]
fn a_history_alone_draws_no_cluster_charts() {
    let events = events();
    let html = render(&ReportInput {
        title: "history",
        events: &events,
        run: None,
        samples: &[],
        verdict: None,
    });
    assert_self_contained(&html);
    figure(&html, "throughput");
    figure(&html, "latency");
    for absent in ["leader-band", "lag-chart", "recovery", "violation"] {
        assert!(!html.contains(&format!("id=\"{absent}")), "{absent}");
    }
    // An empty history still makes a page, with empty charts.
    let html = render(&ReportInput {
        title: "empty",
        events: &[],
        run: None,
        samples: &[],
        verdict: Some(&Verdict::Linearizable),
    });
    assert_self_contained(&html);
    assert!(figure(&html, "latency").starts_with("<svg"));
}

#[test]
fn a_violation_draws_the_key_timeline_with_the_culprit_and_the_cut() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/porcupine-etcd/etcd_097.jsonl"
    );
    let history = History::from_file(path).unwrap();
    let report = check_history(&history, &CheckOptions::default());
    let Verdict::Violation { key, details } = &report.verdict else {
        panic!("etcd_097 is a violation (EXPECTED.tsv)");
    };
    let culprit = details
        .culprit
        .clone()
        .expect("a shrunk window names its culprit");
    let events: Vec<Event> = history.events().cloned().collect();
    let html = render(&ReportInput {
        title: "etcd_097",
        events: &events,
        run: None,
        samples: &[],
        verdict: Some(&report.verdict),
    });
    assert_self_contained(&html);
    assert!(html.contains(&format!(
        "Violation on key {}",
        super::escape(&format!("{key:?}"))
    )));
    let svg = figure(&html, "violation-timeline");
    let red = format!("stroke=\"{}\"", colour::hex(colour::CULPRIT));
    // The culprit outlined once (a closed path, 3 px), the cut drawn once (a line, 2 px).
    let outline = format!("{red} stroke-width=\"3\"");
    let cut = format!("{red} stroke-width=\"2\"");
    assert_eq!(elements(svg, "polyline", &outline), 1, "culprit outline");
    assert_eq!(elements(svg, "polyline", &cut), 1, "cut line");
    assert_eq!(texts(svg, "cut: no order exists from here"), 1);
    // One row per client of the window.
    for w in &details.window {
        assert_eq!(
            texts(svg, &format!("client {}", w.operation.client)),
            1,
            "row of client {}",
            w.operation.client
        );
    }
    // Every window operation is a labelled bar; the culprit's label is among them.
    let labelled = svg.matches("<text ").count();
    assert!(labelled >= details.window.len(), "{labelled} labels");
    let spans = super::spans(&events);
    let culprit_span = spans
        .iter()
        .find(|s| (s.client, s.op) == (culprit.client, culprit.op))
        .unwrap();
    assert!(
        texts(svg, &culprit_span.label) >= 1,
        "{}",
        culprit_span.label
    );
}
