//! The chaos harness's `docker` backend, end to end: a real run against containers.
//!
//! Builds an image from the binaries under test (`docker/build-image.sh --offline --bin-dir`),
//! then runs `kvset-chaos run --backend docker --docker-prefix P` for 45 s: the StatefulSet
//! topology as plain containers with names of their own (`P-kv-N`, network `P-net`, volumes
//! `P-data-kv-N`), so the test cannot collide with a cluster started from docker/compose.yaml or
//! with another run. The faults include the one only this backend can do, a network partition
//! (`docker network disconnect` / `connect`), first in the seeded schedule.
//!
//! The harness removes its containers, network and volumes; a guard here removes anything left
//! with the run's label, and the image, also when the test fails.
//!
//! Another run does `scale` (the desired size on the shared volume, members above it stopped
//! highest first and started again in order). Another does `disk-full` on the same kind of containers (each volume a small ext4
//! filesystem on a loop device; root needed).
//!
//! Needs a Docker Engine. Without one the test is skipped with a message, except under `CI=true`,
//! where it fails. `KVSET_E2E_IMAGE=<image>` uses an existing image instead of building one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kvset_tests::chaos::testing::{run_dir, run_harness};
use kvset_tests::testkit::server_binary;
use kvset_tests::tooling::{docker, in_ci, root_or_skip};

/// Removes what a run may have left: containers, volumes and network with its label, and the
/// image when the test built it.
struct Cleanup {
    prefix: String,
    image: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label=kvset.chaos={}", self.prefix);
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &label]) {
            for id in ids.lines() {
                let _ = docker(&["rm", "-f", "-v", id]);
            }
        }
        if let Ok(names) = docker(&["volume", "ls", "-q", "--filter", &label]) {
            for name in names.lines() {
                let _ = docker(&["volume", "rm", "-f", name]);
            }
        }
        let _ = docker(&["network", "rm", &format!("{}-net", self.prefix)]);
        // Small disks (disk-full) the harness could not detach: loop devices over its images.
        for device in small_disk_devices(&self.prefix) {
            let _ = Command::new("losetup").args(["--detach", &device]).status();
        }
        if let Some(image) = &self.image {
            let _ = docker(&["image", "rm", "-f", image]);
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A Docker Engine to run on, a prefix of the test's own, and the image (built from the
/// binaries under test unless `KVSET_E2E_IMAGE` names one); None (skipped) without an engine.
fn setup() -> Option<(String, String, Cleanup)> {
    match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Ok(v) => eprintln!("Docker Engine {v}"),
        Err(e) => {
            assert!(
                !in_ci(),
                "the docker chaos test needs a Docker Engine in CI: {e}"
            );
            eprintln!("SKIPPED: no Docker Engine ({e}); under CI=true this fails");
            return None;
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let prefix = format!("kvset-chaos-{}-{}", std::process::id(), nanos % 1_000_000);
    let mut cleanup = Cleanup {
        prefix: prefix.clone(),
        image: None,
    };
    let image = match std::env::var("KVSET_E2E_IMAGE") {
        Ok(image) => image,
        Err(_) => {
            let bin_dir = server_binary().parent().expect("binary dir").to_path_buf();
            let tag = format!("kvset-chaos:{}", prefix.trim_start_matches("kvset-chaos-"));
            cleanup.image = Some(tag.clone());
            let out = Command::new(repo_root().join("docker/build-image.sh"))
                .args(["--offline", "--quiet", "--tag", &tag, "--bin-dir"])
                .arg(&bin_dir)
                .stdin(Stdio::null())
                .output()
                .expect("run docker/build-image.sh");
            assert!(
                out.status.success(),
                "docker/build-image.sh --offline failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            tag
        }
    };
    Some((prefix, image, cleanup))
}

/// Runs the harness on plain containers named with `prefix`, from `image`, with `faults`.
fn docker_run(
    prefix: &str,
    image: &str,
    out: &Path,
    timing: &[&str],
    faults: &str,
) -> kvset_tests::chaos::testing::Finished {
    let args: Vec<String> = [
        "--backend",
        "docker",
        "--docker-prefix",
        prefix,
        "--image",
        image,
    ]
    .iter()
    .chain(timing)
    .chain(&["--faults", faults])
    .map(|s| s.to_string())
    .collect();
    run_harness(
        Path::new(env!("CARGO_BIN_EXE_kvset-chaos")),
        &args,
        out,
        &[],
        Duration::from_secs(200),
    )
}

#[test]
fn a_docker_run_with_partitions_passes() {
    let Some((prefix, image, _cleanup)) = setup() else {
        return;
    };

    let (dir, out) = run_dir("kvset-chaos-docker-");
    // Seed 9 puts partition, then kill-leader, first in this schedule.
    let finished = docker_run(
        &prefix,
        &image,
        &out,
        &["--duration", "45s", "--seed", "9"],
        "partition,kill-leader,restart,wipe,pause",
    );
    if finished.code != Some(0) {
        let kept = dir.keep();
        panic!(
            "expected exit 0, files kept in {}:\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["backend"], "docker");
    assert!(report["unsupported_faults"]
        .as_array()
        .is_some_and(|u| u.is_empty()));
    let kinds = finished.injected_kinds();
    assert!(
        kinds.iter().any(|k| k == "partition"),
        "no partition in {kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "kill-leader"), "{kinds:?}");
    for fault in report["faults"].as_array().unwrap() {
        assert!(fault["error"].is_null(), "{fault}");
    }
    // The partitioned member came back: reachable and caught up.
    let partition = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "partition")
        .unwrap();
    assert!(
        partition["members"][0]["caught_up_ms"].is_number(),
        "{partition}"
    );
    for m in 0..3 {
        let log = std::fs::read_to_string(out.join(format!("logs/kv-{m}.log"))).unwrap();
        assert!(!log.is_empty(), "logs/kv-{m}.log is empty");
    }
    // The harness removed its containers.
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=kvset.chaos={prefix}"),
    ])
    .unwrap_or_default();
    assert!(left.is_empty(), "containers left behind: {left}");
}

/// `--faults scale` on containers: the desired size goes to the shared `/record` volume, the
/// containers above it are stopped highest first (each leaves the cluster as it stops) and
/// started again in order; the run must pass the checker with every scale done.
#[test]
fn a_docker_run_with_scale_passes() {
    let Some((prefix, image, _cleanup)) = setup() else {
        return;
    };
    let (dir, out) = run_dir("kvset-chaos-docker-scale-");
    let finished = docker_run(
        &prefix,
        &image,
        &out,
        &["--duration", "40s", "--seed", "20261206"],
        "scale",
    );
    if finished.code != Some(0) {
        let kept = dir.keep();
        panic!(
            "expected exit 0, files kept in {}:\n{}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    assert_eq!(report["verdict"], "pass");
    let faults = report["faults"].as_array().expect("faults");
    assert!(!faults.is_empty(), "no scale injected");
    for fault in faults {
        assert_eq!(fault["kind"], "scale", "{fault}");
        assert!(fault["error"].is_null(), "a scale failed: {fault}");
        assert_eq!(
            fault["targets"].as_array().and_then(|t| t.last()),
            Some(&serde_json::Value::from("kv-2")),
            "{fault}"
        );
    }
    // kv-2 is above every smaller size: it left the cluster by itself each time it was stopped.
    let log = std::fs::read_to_string(out.join("logs/kv-2.log")).unwrap();
    assert!(
        log.contains("left the cluster (scale-down): removal committed"),
        "kv-2 never left by itself:\n{log}"
    );
}

/// Loop devices attached to a run's small-disk images (`<temp>/<prefix>-disks/kv-N.ext4`).
fn small_disk_devices(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("losetup")
        .arg("--list")
        .arg("--noheadings")
        .arg("--output")
        .arg("NAME,BACK-FILE")
        .output()
    else {
        return Vec::new();
    };
    let marker = format!("{prefix}-disks/");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&marker))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `disk-full` on plain containers: each member's volume an ext4 image on a loop device, filled
/// from the host; the member must stop on the storage failure (exit 74) and come back once the
/// space returns, with the run passing. Needs root (loop devices): skipped without, failing under
/// `CI=true`.
#[test]
fn a_docker_run_with_full_disks_passes() {
    if !root_or_skip("the docker disk-full run (loop devices)") {
        return;
    }
    let Some((prefix, image, _cleanup)) = setup() else {
        return;
    };
    let (dir, out) = run_dir("kvset-chaos-docker-disk-full-");
    let finished = docker_run(
        &prefix,
        &image,
        &out,
        &["--duration", "30s", "--seed", "3"],
        "disk-full",
    );
    let kinds = finished.injected_kinds();
    let logs: String = (0..3)
        .map(|m| std::fs::read_to_string(out.join(format!("logs/kv-{m}.log"))).unwrap_or_default())
        .collect();
    let passed = finished.code == Some(0)
        && finished.report()["verdict"] == "pass"
        && kinds.len() >= 2
        && kinds.iter().all(|k| k == "disk-full")
        // Every member hit stopped on the full disk, and said why.
        && logs.matches("stopped on a storage failure").count() >= kinds.len()
        && logs.contains("No space left on device");
    if !passed {
        let kept = dir.keep();
        panic!(
            "the docker disk-full run did not pass with members stopping on full disks (files \
             kept in {}; injected: {kinds:?}):\n{}",
            kept.display(),
            finished.output()
        );
    }
    // The harness removed its containers, volumes and loop devices.
    let label = format!("label=kvset.chaos={prefix}");
    let left = docker(&["ps", "-aq", "--filter", &label]).unwrap_or_default();
    assert!(left.is_empty(), "containers left behind: {left}");
    let volumes = docker(&["volume", "ls", "-q", "--filter", &label]).unwrap_or_default();
    assert!(volumes.is_empty(), "volumes left behind: {volumes}");
    let devices = small_disk_devices(&prefix);
    assert!(devices.is_empty(), "loop devices left behind: {devices:?}");
}
