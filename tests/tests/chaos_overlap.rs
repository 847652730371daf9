//! The chaos harness's compound-fault smoke run: `kvset-chaos run --overlap --faults none` on
//! the process backend for 35 s with a fixed seed, so that only compound faults are injected —
//! a follower frozen while the other is wiped and the leader killed, a wiped member killed
//! while it catches up by a snapshot, every member killed with one volume wiped (kv-0's too:
//! the split brain of a lost kv-0 volume, which the cluster record prevents).
//! The run must pass (linearizable, no acknowledged write lost, replicas converged, healed every
//! time), and its report must say which faults overlapped with which.
//!
//! About a minute in all, bounded at 150 s (then interrupted). A failing run keeps its directory
//! (history, report, every member's log and data) and prints where it is.

use std::path::Path;
use std::time::Duration;

use kvset_tests::chaos::testing::{run_dir, run_harness};
use kvset_tests::testkit::server_binary;

const SEED: &str = "7";

#[test]
fn a_seeded_process_run_with_overlapping_faults_passes() {
    let (dir, out) = run_dir("kvset-chaos-overlap-");
    let args: Vec<String> = [
        "--backend",
        "process",
        "--duration",
        "35s",
        "--seed",
        SEED,
        "--overlap",
        "--faults",
        "none",
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
            "the overlap smoke run did not pass (files kept in {}):\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    assert_eq!(report["verdict"], "pass");
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["status"] == "pass"), "{checks:?}");
    assert!(report["reproduce"]
        .as_str()
        .is_some_and(|r| r.contains("--overlap") && r.contains(&format!("--seed {SEED}"))));
    // Members snapshot often, so a wiped member catches up by a snapshot install.
    assert!(report["cluster"]
        .as_str()
        .is_some_and(|c| c.contains("--snapshot-every=400")));
    assert!(report["lost_writes"]["acknowledged"].as_u64().unwrap_or(0) > 100);

    // Only compound faults, each of the four kinds at least once, none failed.
    let mut kinds = finished.injected_kinds();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "kill-all-wipe-kv0",
            "kill-all-wipe-one",
            "kill-during-snapshot",
            "pause-wipe-kill-leader"
        ],
        "{}",
        finished.output()
    );
    for fault in report["faults"].as_array().expect("faults") {
        assert!(fault["error"].is_null(), "a fault failed: {fault}");
        if fault["cut_short"] == true {
            // The run ended while it was in force: its script stopped early (healed, checked
            // like every fault by the run's verdict above), so its steps are not all there.
            continue;
        }
        let steps = fault["steps"]
            .as_array()
            .expect("steps of a compound fault");
        let overlaps = fault["overlaps"].as_array().map(Vec::len).unwrap_or(0);
        let step = |i: usize| steps[i]["step"].as_str().unwrap_or_default().to_string();
        match fault["kind"].as_str() {
            Some("pause-wipe-kill-leader") => {
                // Frozen, wiped and killed at once: every pair overlapped.
                assert_eq!(steps.len(), 3, "{fault}");
                assert!(step(0).starts_with("pause "), "{fault}");
                assert!(step(1).starts_with("wipe "), "{fault}");
                assert!(step(2).starts_with("kill -9 "), "{fault}");
                assert_eq!(overlaps, 3, "{fault}");
                assert_eq!(fault["leader_lost"], true);
            }
            Some("kill-all-wipe-one") => {
                assert_eq!(steps.len(), 2, "{fault}");
                assert!(step(0).starts_with("wipe kv-"), "{fault}");
                assert_ne!(step(0), "wipe kv-0", "{fault}");
                assert_eq!(overlaps, 1, "{fault}");
            }
            Some("kill-all-wipe-kv0") => {
                assert_eq!(steps.len(), 2, "{fault}");
                assert_eq!(step(0), "wipe kv-0", "{fault}");
                assert_eq!(overlaps, 1, "{fault}");
            }
            Some("kill-during-snapshot") => {
                assert_eq!(steps.len(), 2, "{fault}");
                assert!(step(1).ends_with("while catching up"), "{fault}");
                assert!(
                    steps[1]["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("snapshot index")),
                    "{fault}"
                );
            }
            other => panic!("unexpected fault kind {other:?}: {fault}"),
        }
    }
    assert!(finished.stdout.contains("### Overlapping faults"));
    assert!(finished.stdout.contains(" overlapped "));
}
