//! The chaos harness's CI smoke run: `kvset-chaos run` on the process backend (the local
//! launcher) for 45 s with a fixed seed and every fault kind, which must pass — linearizable,
//! no acknowledged write lost, replicas converged, the cluster healed every time — and leave a
//! complete, re-checkable report behind.
//!
//! It takes about a minute (45 s of load, a few seconds to start, heal and check) and is bounded
//! at 150 s, after which the run is interrupted. A failing run keeps its directory (history,
//! report, every member's log) and prints where it is.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kvset_tests::chaos::testing::{run_dir, run_harness};
use kvset_tests::testkit::server_binary;

const SEED: &str = "20261126";
const DURATION_S: f64 = 45.0;

#[test]
fn a_seeded_process_run_with_every_fault_passes() {
    let (dir, out) = run_dir("kvset-chaos-smoke-");
    let args: Vec<String> = [
        "--backend",
        "process",
        "--duration",
        "45s",
        "--seed",
        SEED,
        "--clients",
        "5",
        "--faults",
        "all",
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
            "the smoke run did not pass (files kept in {}):\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();

    // The verdict and every check.
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["seed"].as_u64(), Some(SEED.parse().unwrap()));
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "linearizability",
            "lost_writes",
            "convergence",
            "liveness",
            "watch",
            "lock",
            "lease"
        ]
    );
    assert!(checks.iter().all(|c| c["status"] == "pass"), "{checks:?}");
    assert!(report["reproduce"]
        .as_str()
        .is_some_and(|r| r.contains(&format!("--seed {SEED}"))));

    // Real load: every kind of operation, and the final reads.
    let ops = report["ops"].as_array().expect("ops");
    let row = |name: &str| {
        ops.iter()
            .find(|r| r["operation"] == name)
            .unwrap_or_else(|| panic!("no {name} row in {ops:?}"))
    };
    for name in ["get", "put", "cas", "put (write-once)", "get (final)"] {
        assert!(row(name)["ok"].as_u64().unwrap_or(0) > 0, "{name}: {ops:?}");
    }
    let total: u64 = ops.iter().filter_map(|r| r["total"].as_u64()).sum();
    assert!(total > 2000, "only {total} operations");
    assert!(report["lost_writes"]["acknowledged"].as_u64().unwrap_or(0) > 100);

    // Faults: the process backend cannot partition and says so; the rest were injected, the
    // first round of the schedule covering at least four kinds.
    let unsupported = report["unsupported_faults"]
        .as_array()
        .expect("unsupported");
    assert_eq!(unsupported.len(), 1, "{unsupported:?}");
    assert_eq!(unsupported[0]["kind"], "partition");
    let mut kinds = finished.injected_kinds();
    kinds.sort();
    kinds.dedup();
    assert!(kinds.len() >= 4, "only {kinds:?} injected");
    assert!(!kinds.contains(&"partition".to_string()));
    for fault in report["faults"].as_array().expect("faults") {
        assert!(fault["error"].is_null(), "a fault failed: {fault}");
        // Every fault well inside the run was measured to the end.
        if fault["at_ms"].as_f64().unwrap_or(f64::MAX) < (DURATION_S - 15.0) * 1e3 {
            if fault["leader_lost"] == true {
                assert!(fault["leader_recovery_ms"].is_number(), "{fault}");
            }
            for m in fault["members"].as_array().expect("members") {
                assert!(m["caught_up_ms"].is_number(), "{fault}");
            }
        }
    }
    assert!(
        report["recovery"]["restart_to_caught_up"]["count"]
            .as_u64()
            .unwrap_or(0)
            >= 4
    );

    // The evidence: a history the checker accepts on its own, the members' logs, the report;
    // the data directories are removed after a pass.
    for file in [
        "history.jsonl",
        "report.md",
        "report.json",
        "report.html",
        "logs/kv-0.log",
        "logs/kv-1.log",
        "logs/kv-2.log",
        "logs/launcher.log",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    assert!(!out.join("data").exists(), "data kept after a pass");
    // The drawn report: every chart, and one label per fault.
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    for id in [
        "throughput",
        "latency",
        "leader-band",
        "lag-chart",
        "recovery",
    ] {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "no {id} in report.html"
        );
    }
    for fault in report["faults"].as_array().expect("faults") {
        let label = format!(
            "#{} {}",
            fault["index"],
            fault["kind"].as_str().unwrap_or("")
        );
        assert!(html.contains(&label), "no band for {label} in report.html");
    }
    let check = Command::new(binary)
        .arg("check")
        .arg(out.join("history.jsonl"))
        .output()
        .expect("run kvset-chaos check");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(finished.stdout.contains("# kvset-chaos run: PASS"));
}

/// `scripts/chaos-soak.sh` (the soak recorded in docs/CHAOS.md) runs a command the harness
/// accepts: every flag it passes exists, and it asks for namespace mode, every fault kind the
/// process backend has there and the fast restart back-off.
#[test]
fn the_soak_script_runs_a_command_the_harness_accepts() {
    use clap::Parser;
    use kvset_tests::chaos::cli::{NetworkArg, RunArgs};
    use kvset_tests::chaos::faults::FaultKind;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        run: RunArgs,
    }

    let root = kvset_tests::tooling::repo_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/chaos-soak.sh"))
        .arg("--dry-run")
        .output()
        .expect("run scripts/chaos-soak.sh --dry-run");
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).expect("utf-8");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words[0].ends_with("/kvset-chaos") && words[1] == "run",
        "{line}"
    );
    let args =
        Wrap::try_parse_from(std::iter::once("kvset-chaos").chain(words[2..].iter().copied()))
            .unwrap_or_else(|e| panic!("kvset-chaos refuses the soak's flags: {e}\n{line}"))
            .run;
    assert_eq!(args.network, NetworkArg::Netns);
    assert!(args.overlap);
    assert_eq!(args.duration, Duration::from_secs(70 * 60));
    assert_eq!(args.restart_backoff_max, Some(Duration::from_millis(500)));
    let kinds = FaultKind::parse_list(&args.faults).expect("the soak's fault kinds parse");
    for kind in [
        FaultKind::KillFollower,
        FaultKind::KillLeader,
        FaultKind::Restart,
        FaultKind::KillAll,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::PartitionLeader,
        FaultKind::PartitionOneWay,
        FaultKind::Wipe,
        FaultKind::PowerLoss,
        FaultKind::PowerLossAll,
        FaultKind::Scale,
    ] {
        assert!(
            kinds.contains(&kind),
            "{kind:?} missing from {}",
            args.faults
        );
    }
    kvset_tests::tooling::shellcheck(&["scripts/chaos-soak.sh"]);
}
