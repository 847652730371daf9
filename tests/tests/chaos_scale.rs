//! `kvset-chaos run --faults scale` on the process backend: a five-member cluster under load is
//! scaled down to a random smaller size (at least 1) and back, again and again, and the run must
//! pass: linearizable, no acknowledged write lost, every member converged (the five of the full
//! size, the ones scaled back up included), the cluster healed after every fault.
//!
//! About a minute (40 s of load); bounded at 240 s, after which the run is interrupted. A failing
//! run keeps its directory and prints where it is.

use std::path::Path;
use std::time::Duration;

use kvset_tests::chaos::testing::{run_dir, run_harness};
use kvset_tests::testkit::server_binary;

#[test]
fn scaling_down_and_back_under_load_passes_the_checker() {
    let (dir, out) = run_dir("kvset-chaos-scale-");
    let args: Vec<String> = [
        "--backend",
        "process",
        "--replicas",
        "5",
        "--duration",
        "40s",
        "--seed",
        "20261206",
        "--clients",
        "4",
        "--faults",
        "scale",
        "--server-bin",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([server_binary().display().to_string()])
    .collect();
    let binary = Path::new(env!("CARGO_BIN_EXE_kvset-chaos"));
    let finished = run_harness(binary, &args, &out, &[], Duration::from_secs(240));
    if finished.code != Some(0) {
        let kept = dir.keep();
        panic!(
            "the scale run did not pass (files kept in {}):\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    assert_eq!(report["verdict"], "pass");
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["status"] == "pass"), "{checks:?}");
    assert!(report["lost_writes"]["acknowledged"].as_u64().unwrap_or(0) > 100);

    let faults = report["faults"].as_array().expect("faults");
    assert!(faults.len() >= 3, "only {} scale faults", faults.len());
    let mut sizes = Vec::new();
    for fault in faults {
        assert_eq!(fault["kind"], "scale", "{fault}");
        assert!(fault["error"].is_null(), "a scale failed: {fault}");
        let targets = fault["targets"].as_array().expect("targets");
        // The members above the size, which is between 1 and 4: the highest ordinals, kv-4 always.
        assert!((1..=4).contains(&targets.len()), "{fault}");
        assert_eq!(targets.last().unwrap(), "kv-4", "{fault}");
        sizes.push(5 - targets.len());
    }
    sizes.sort_unstable();
    sizes.dedup();
    assert!(
        sizes.len() >= 2,
        "always scaled to the same size: {sizes:?}"
    );
    // Converged across all five: the members scaled back up are full members again.
    let convergence = checks
        .iter()
        .find(|c| c["name"] == "convergence")
        .expect("convergence check");
    assert!(
        convergence["summary"]
            .as_str()
            .unwrap_or("")
            .contains("every member"),
        "{convergence}"
    );
}
