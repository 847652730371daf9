//! The chaos harness's power-loss runs: `kvset-chaos run --faults power-loss` and
//! `power-loss-all` on the process backend, each member's data dir on a kvset-powerfs mount of
//! its own (a FUSE filesystem that drops every write not yet fsynced when the power is cut).
//!
//! - One member at a time (`power-loss`, 30 s, seed 11): the real build must pass every check.
//! - The whole cluster with one volume behind (`power-loss-all`, 30 s): on the real build no
//!   acknowledged write may be lost, the replicas must converge and the cluster must heal every
//!   time.
//! - The bite: the same whole-cluster cut with every member started with the test-only
//!   `--fault skip-log-fsync` (the Raft log reports appends durable without `fdatasync`) must
//!   fail one of exactly those checks: a lost acknowledged write, diverged replicas, or a
//!   member that cannot come back. The bite uses the whole-cluster cut because a one-member cut
//!   cannot be relied on: the two others still hold every entry, and the cut member sometimes
//!   comes back with a log that covers its state machine and simply catches up, losing nothing
//!   (see `cluster_power_loss.rs`).
//! - Linearizability across the whole-cluster cut. This test found a stale-read bug: a member
//!   whose vote was committed comes back as the leader of its old term with a commit index older
//!   than what it had acknowledged, and its ReadIndex answered below acknowledged writes. The
//!   server now makes such reads wait for the last entry it had at start-up
//!   (`server/src/node/read_index.rs`, "After a restart"); with that wait removed, this test
//!   fails (a linearizability violation on the contended keys).
//!
//! Needs root and `/dev/fuse`: without them the tests skip loudly, and fail under `CI=true`.
//! About 35 s each (the bite about 1.5 min: a member that cannot come back makes the run wait
//! out its heal timeouts), bounded at 150 s. A failing run keeps its directory and prints where
//! it is.

use std::path::Path;
use std::time::Duration;

use kvset_tests::chaos::testing::{run_dir, run_harness, Finished};
use kvset_tests::testkit::server_binary;
use kvset_tests::tooling::in_ci;

/// The checks a power cut that loses acknowledged data must fail (at least one of them).
const DURABILITY_CHECKS: [&str; 3] = ["lost_writes", "convergence", "liveness"];

/// Runs `kvset-chaos run` on the process backend for `duration` with these faults and extra
/// arguments; None (skipped) where FUSE cannot be mounted.
fn power_run(
    faults: &str,
    seed: &str,
    duration: &str,
    extra: &[&str],
) -> Option<(tempfile::TempDir, Finished)> {
    if let Some(why) = kvset_powerfs::unavailable_reason() {
        assert!(!in_ci(), "power-loss chaos runs need FUSE under CI: {why}");
        eprintln!("SKIPPED: {why}; under CI=true this fails");
        return None;
    }
    let (dir, out) = run_dir("kvset-chaos-power-loss-");
    let args: Vec<String> = [
        "--backend",
        "process",
        "--seed",
        seed,
        "--faults",
        faults,
        "--server-bin",
        &server_binary().display().to_string(),
    ]
    .iter()
    .chain(&["--duration", duration])
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let binary = Path::new(env!("CARGO_BIN_EXE_kvset-chaos"));
    let finished = run_harness(binary, &args, &out, &[], Duration::from_secs(150));
    Some((dir, finished))
}

/// The status of each check, by name.
fn check_status(finished: &Finished) -> Vec<(String, String)> {
    finished.report()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Panics with the run's output (its files kept) unless `ok`.
fn expect(ok: bool, what: &str, dir: tempfile::TempDir, finished: &Finished) {
    if !ok {
        let kept = dir.keep();
        panic!(
            "{what} (files kept in {}):\n{}",
            kept.display(),
            finished.output()
        );
    }
}

#[test]
fn one_member_at_a_time_loses_power_and_the_real_build_passes() {
    let Some((dir, finished)) = power_run("power-loss", "11", "30s", &[]) else {
        return;
    };
    let kinds = finished.injected_kinds();
    let passed = finished.code == Some(0)
        && kinds.len() >= 3
        && kinds.iter().all(|k| k == "power-loss")
        && check_status(&finished).iter().all(|(_, s)| s == "pass")
        && finished.report()["lost_writes"]["acknowledged"]
            .as_u64()
            .unwrap_or(0)
            > 100;
    expect(
        passed,
        "the one-member power-loss run did not pass with several power-loss faults",
        dir,
        &finished,
    );
}

#[test]
fn the_whole_cluster_loses_power_and_the_real_build_keeps_every_acknowledged_write() {
    let Some((dir, finished)) =
        power_run("power-loss-all", "12", "30s", &["--heal-timeout", "15s"])
    else {
        return;
    };
    let kinds = finished.injected_kinds();
    let statuses = check_status(&finished);
    let durable = DURABILITY_CHECKS
        .iter()
        .all(|name| statuses.iter().any(|(n, s)| n == name && s == "pass"));
    let ok = durable
        && kinds.len() >= 2
        && kinds.iter().all(|k| k == "power-loss-all")
        && finished.report()["lost_writes"]["acknowledged"]
            .as_u64()
            .unwrap_or(0)
            > 100;
    eprintln!("checks of the whole-cluster run: {statuses:?}");
    expect(
        ok,
        "the whole-cluster power-loss run lost data, diverged or did not heal",
        dir,
        &finished,
    );
}

#[test]
fn a_log_that_skips_its_fsync_is_caught_by_the_whole_cluster_power_cut() {
    let Some((dir, finished)) = power_run(
        "power-loss-all",
        "12",
        "15s",
        &[
            "--server-arg=--fault=skip-log-fsync",
            "--heal-timeout",
            "15s",
            // The durability checks are what must catch this bug; watchers and lock clients on
            // a cluster that lost acknowledged writes only wait out their own timeouts.
            "--watchers",
            "0",
            "--lock-clients",
            "0",
        ],
    ) else {
        return;
    };
    let report = finished.report();
    let on = report["server_faults"].as_array().is_some_and(|f| {
        f.iter()
            .any(|f| f.as_str().is_some_and(|f| f.starts_with("skip-log-fsync")))
    });
    let statuses = check_status(&finished);
    let caught = statuses
        .iter()
        .any(|(n, s)| DURABILITY_CHECKS.contains(&n.as_str()) && s == "fail");
    eprintln!("checks of the skip-log-fsync run: {statuses:?}");
    expect(
        on && finished.code == Some(1) && caught,
        "the whole-cluster power cut did not catch a log that never fsyncs (exit 1 with a \
         failed lost_writes, convergence or liveness check expected)",
        dir,
        &finished,
    );
}

/// The whole-cluster cut must also stay linearizable. It does not yet: see the module docs.
#[test]
fn the_whole_cluster_loses_power_and_the_real_build_stays_linearizable() {
    let Some((dir, finished)) = power_run("power-loss-all", "12", "30s", &[]) else {
        return;
    };
    let passed =
        finished.code == Some(0) && check_status(&finished).iter().all(|(_, s)| s == "pass");
    expect(
        passed,
        "the whole-cluster power-loss run did not pass",
        dir,
        &finished,
    );
}
