//! The coordination workloads end to end: `kvset-chaos run` on the process backend for 25 s
//! with two watchers, two lock clients (and their lease keepers) and faults that kill, restart
//! and freeze members, which must pass every check — the watch, lock and lease checks included
//! — and leave evidence that `kvset-chaos check <run dir>` re-judges the same way. Then the
//! evidence is tampered with, one planted bug at a time (an acknowledged write's event
//! dropped, an event delivered twice, an increment lost from the counter), and the re-check
//! must report a violation.
//!
//! About 40 s (25 s of load, start, heal, check); bounded at 150 s. A failing run keeps its
//! directory and prints where it is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kvset_tests::chaos::testing::{run_dir, run_harness};
use kvset_tests::testkit::server_binary;

fn check(binary: &Path, dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(binary)
        .arg("check")
        .arg(dir)
        .output()
        .expect("run kvset-chaos check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A copy of the run's evidence (history and the coordination files) in a new directory, with
/// `file`'s lines rewritten by `plant`.
fn tampered(out: &Path, into: &Path, file: &str, plant: impl Fn(&mut Vec<String>)) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    for f in [
        "history.jsonl",
        "watch.jsonl",
        "locks.jsonl",
        "leases.jsonl",
    ] {
        std::fs::copy(out.join(f), into.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(out.join(file)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    plant(&mut lines);
    std::fs::write(into.join(file), lines.join("\n") + "\n").unwrap();
    into.to_path_buf()
}

#[test]
fn watchers_and_lock_clients_pass_under_faults_and_planted_bugs_are_caught() {
    let (dir, out) = run_dir("kvset-chaos-coord-");
    let args: Vec<String> = [
        "--backend",
        "process",
        "--duration",
        "25s",
        "--seed",
        "14",
        "--clients",
        "4",
        "--watchers",
        "2",
        "--lock-clients",
        "2",
        "--faults",
        "kill-follower,kill-leader,restart,pause",
        "--fault-gap",
        "1s..2s",
        "--server-bin",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([server_binary().display().to_string()])
    .collect();
    let binary = Path::new(env!("CARGO_BIN_EXE_kvset-chaos"));
    let finished = run_harness(binary, &args, &out, &[], Duration::from_secs(150));
    if finished.code != Some(0) {
        let kept = dir.keep();
        panic!(
            "the run did not pass (files kept in {}):\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    let checks = report["checks"].as_array().expect("checks");
    for name in ["watch", "lock", "lease"] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {checks:?}"));
        assert_eq!(c["status"], "pass", "{c}");
    }
    assert!(finished.injected_kinds().len() >= 3, "too few faults");
    let files: Vec<&str> = report["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for f in ["watch.jsonl", "locks.jsonl", "leases.jsonl"] {
        assert!(files.contains(&f), "{f} not in {files:?}");
    }
    assert!(
        report["reproduce"]
            .as_str()
            .is_some_and(|r| r.contains("--watchers 2 --lock-clients 2")),
        "{}",
        report["reproduce"]
    );

    // The watchers resumed across the faults, and saw real traffic.
    let watch = std::fs::read_to_string(out.join("watch.jsonl")).unwrap();
    let opens = watch
        .lines()
        .filter(|l| l.contains(r#""type":"open""#))
        .count();
    assert!(opens > 2, "the watchers never resumed ({opens} opens)");
    let events: Vec<&str> = watch
        .lines()
        .filter(|l| l.contains(r#""type":"event""#))
        .collect();
    assert!(events.len() > 200, "only {} events", events.len());

    // The run directory re-judged: the same verdict.
    let (code, stdout) = check(binary, &out);
    assert_eq!(code, Some(0), "{stdout}");
    for name in ["watch", "lock", "lease"] {
        assert!(stdout.contains(&format!("  {name} ")), "{stdout}");
    }

    // Planted bugs.
    let scratch = tempfile::tempdir().unwrap();
    let first_event = events[events.len() / 2].to_string();
    let dropped = tampered(&out, &scratch.path().join("dropped"), "watch.jsonl", |l| {
        l.retain(|x| x != &first_event)
    });
    let duplicated = tampered(&out, &scratch.path().join("dup"), "watch.jsonl", |l| {
        let at = l.iter().position(|x| x == &first_event).unwrap();
        l.insert(at + 1, first_event.clone());
    });
    let lost = tampered(&out, &scratch.path().join("lost"), "locks.jsonl", |l| {
        // Drop the final counter by one below the acknowledged increments.
        let fin = l.pop().unwrap();
        let value: serde_json::Value = serde_json::from_str(&fin).unwrap();
        let acked = l.iter().filter(|x| x.contains(r#""outcome":"ok""#)).count() as i64;
        assert!(value["value"].as_i64().unwrap() >= acked);
        l.push(format!(r#"{{"type":"final","value":{}}}"#, acked - 1));
    });
    for (what, planted) in [
        ("a dropped event", dropped),
        ("a duplicated event", duplicated),
        ("a lost increment", lost),
    ] {
        let (code, stdout) = check(binary, &planted);
        assert_eq!(code, Some(1), "{what} not caught:\n{stdout}");
        assert!(stdout.contains("FAIL"), "{stdout}");
    }
}
