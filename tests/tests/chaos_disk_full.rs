//! The chaos harness's disk-full run: `kvset-chaos run --faults disk-full` on the process
//! backend for 30 s with a fixed seed. Each member's data dir is a small tmpfs of its own; the
//! fault fills one member's filesystem for a while, and that member must stop cleanly on the
//! storage failure (exit code 74), be restarted by the launcher, and come back and catch up once
//! the space returns — with the run passing: linearizable, no acknowledged write lost, replicas
//! converged, every fault healed.
//!
//! Needs root (tmpfs mounts): without it the test skips loudly, and fails under `CI=true`.
//! About 45 s, bounded at 150 s. A failing run keeps its directory and prints where it is.

use std::path::Path;
use std::time::Duration;

use kvset_tests::chaos::testing::{run_dir, run_harness};
use kvset_tests::testkit::server_binary;
use kvset_tests::tooling::root_or_skip;

const SEED: &str = "3";

#[test]
fn a_seeded_process_run_with_full_disks_passes_and_members_stop_cleanly() {
    if !root_or_skip("the disk-full chaos run (tmpfs mounts)") {
        return;
    }
    let (dir, out) = run_dir("kvset-chaos-disk-full-");
    let args: Vec<String> = [
        "--backend",
        "process",
        "--duration",
        "30s",
        "--seed",
        SEED,
        "--faults",
        "disk-full",
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
            "the disk-full chaos run did not pass (files kept in {}):\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    assert_eq!(report["verdict"], "pass");
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["status"] == "pass"), "{checks:?}");
    assert!(report["lost_writes"]["acknowledged"].as_u64().unwrap_or(0) > 100);
    let kinds = finished.injected_kinds();
    assert!(
        kinds.len() >= 3 && kinds.iter().all(|k| k == "disk-full"),
        "disk-full faults only, several: {kinds:?}"
    );

    // Every member hit stopped on the storage failure, as the launcher saw it (exit 74), and
    // said why in its log.
    let launcher =
        std::fs::read_to_string(out.join("logs").join("launcher.log")).expect("launcher log");
    assert!(
        launcher.contains("exited (exit status: 74)"),
        "a member on a full disk exits 74:\n{launcher}"
    );
    let logs: String = (0..3)
        .map(|m| {
            std::fs::read_to_string(out.join("logs").join(format!("kv-{m}.log")))
                .unwrap_or_default()
        })
        .collect();
    assert!(logs.contains("stopping: storage failure"));
    assert!(logs.contains("No space left on device"));
}
