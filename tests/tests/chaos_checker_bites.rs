//! Proof that the harness's checks bite: the same short run, with the members' deliberate
//! `stale-linearizable-reads` fault on and off.
//!
//! With the fault, a LINEARIZABLE read is served from the member's local state without the
//! ReadIndex barrier. The run pins every read to a follower (`--read-from followers`) and
//! freezes members (`--faults pause`); right after a frozen member is thawed the nemesis reads
//! every contended key from it (the probe), while it is seconds behind. Writes acknowledged
//! before such a read are missing from its answer, which no linearization explains: the run
//! must report a violation (exit 1). Even between pauses a follower trails the leader by a few
//! milliseconds, so stale reads are not a matter of luck; the probe makes them certain.
//!
//! Without the fault, the very same run must pass (exit 0): the violation comes from the bug,
//! not from the harness.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kvset_tests::chaos::testing::{run_harness, Finished};
use kvset_tests::testkit::server_binary;

fn run(extra: &[&str], prefix: &str) -> (tempfile::TempDir, Finished) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    let out = dir.path().join("run");
    let mut args: Vec<String> = [
        "--backend",
        "process",
        "--duration",
        "15s",
        "--seed",
        "6",
        "--clients",
        "5",
        "--faults",
        "pause",
        "--fault-gap",
        "500ms..1s",
        "--fault-hold",
        "2s..3s",
        "--read-from",
        "followers",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--server-bin".into());
    args.push(server_binary().display().to_string());
    let binary = Path::new(env!("CARGO_BIN_EXE_kvset-chaos"));
    let finished = run_harness(binary, &args, &out, &[], Duration::from_secs(120));
    (dir, finished)
}

#[test]
fn stale_linearizable_reads_are_reported_as_a_violation() {
    let (dir, finished) = run(
        &["--server-arg=--fault=stale-linearizable-reads"],
        "kvset-chaos-stale-",
    );
    if finished.code != Some(1) {
        let kept = dir.keep();
        panic!(
            "expected exit 1 (violation), files kept in {}:\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    assert_eq!(report["verdict"], "violation");
    let linearizability = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "linearizability"))
        .expect("a linearizability check");
    assert_eq!(linearizability["status"], "fail", "{linearizability}");
    // The checker's evidence is in the report: a window of operations on one key.
    assert_eq!(report["linearizability"]["verdict"], "violation");
    assert!(report["linearizability"]["details"]["window"]
        .as_array()
        .is_some_and(|w| !w.is_empty()));
    // The members said which fault they ran with, and the report says it loudly.
    assert!(report["server_faults"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f
            .as_str()
            .is_some_and(|f| f.starts_with("stale-linearizable-reads")))));
    assert!(finished.stdout.contains("deliberate server faults"));
    assert!(finished.injected_kinds().iter().any(|k| k == "pause"));
    // The evidence is kept for reproduction: members' data and logs, and a history that the
    // checker alone also rejects.
    let out = &finished.out;
    assert!(out.join("data").exists(), "data removed after a violation");
    assert!(out.join("logs/kv-1.log").exists());
    let check = Command::new(env!("CARGO_BIN_EXE_kvset-chaos"))
        .arg("check")
        .arg(out.join("history.jsonl"))
        .output()
        .expect("run kvset-chaos check");
    assert_eq!(check.status.code(), Some(1));
    // The drawn report shows the refuted key's timeline with the culprit outlined and the cut.
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("<figure id=\"violation-timeline\"><svg"));
    assert!(html.contains("cut: no order exists from here"));
    assert!(
        html.contains("stroke=\"#B00020\" stroke-width=\"3\""),
        "no culprit outline"
    );
}

#[test]
fn the_same_run_without_the_fault_passes() {
    let (dir, finished) = run(&[], "kvset-chaos-control-");
    if finished.code != Some(0) {
        let kept = dir.keep();
        panic!(
            "expected exit 0 (pass), files kept in {}:\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    assert_eq!(report["verdict"], "pass");
    assert!(report["server_faults"]
        .as_array()
        .is_some_and(|f| f.is_empty()));
    // Reads really went to followers, and probes hit the thawed members.
    assert!(finished.injected_kinds().iter().any(|k| k == "pause"));
    let probes = report["ops"]
        .as_array()
        .and_then(|ops| ops.iter().find(|r| r["operation"] == "get (probe)"))
        .and_then(|r| r["ok"].as_u64())
        .unwrap_or(0);
    assert!(probes > 0, "no probe reads succeeded");
}
