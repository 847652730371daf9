//! The refusals of the Deployment counterfactual (docs/STATEFULSET.md, "Without a
//! StatefulSet"; `k8s/examples/as-deployment/`, `docker/demo-deployment.sh`), checked on the
//! server binary:
//!
//! - a pod named the way a Deployment's ReplicaSet names it (`kv-<hash>-<random>`) is refused by
//!   the identity check before it touches its data dir;
//! - two replicas that both call themselves kv-0, started at once on empty storage with one
//!   cluster record, make one cluster: one bootstraps, the other is refused (the record names the
//!   winner's cluster) or waits to be re-admitted into it — never a second cluster;
//! - and, where Docker runs, `docker/demo-deployment.sh` itself, which plays those scenarios and
//!   the "stranger" one (a replica whose storage died with its pod rejoins empty) in containers
//!   and exits non-zero when kvset does not refuse what it should.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvset_proto::v1::Role;
use kvset_tests::testkit::{server_binary, ProcessCluster, FAST_TIMING};
use kvset_tests::tooling::{docker, in_ci, repo_root};

#[test]
fn a_replicaset_pod_name_is_refused_by_the_identity_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    for name in ["kv-5d8f7c9b4-x2kqp", "kv-5d8f7c9b4-7hjwm"] {
        let out = Command::new(server_binary())
            .arg("serve")
            .arg(format!("--pod-name={name}"))
            .arg(format!("--data-dir={}", data.display()))
            .args(["--client-listen=127.0.0.1:0", "--peer-listen=127.0.0.1:0"])
            .args(["--metrics-listen=127.0.0.1:0", "--cluster-record=none"])
            .env_remove("POD_NAME")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .expect("run kvset-server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{name} was accepted:\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "pod name \"{name}\" has no ordinal: expected <set>-<ordinal> such as kv-0"
            )),
            "{stderr}"
        );
        assert!(
            !data.exists(),
            "{name} touched its data dir before refusing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kv0s_racing_to_bootstrap_make_one_cluster() {
    let shared = tempfile::tempdir().expect("temp dir");
    let record = format!(
        "--cluster-record=file:{}",
        shared.path().join("cluster-record.json").display()
    );
    let mut args: Vec<&str> = FAST_TIMING.to_vec();
    args.push(&record);
    let mut a = ProcessCluster::new(1, &args);
    let mut b = ProcessCluster::new(1, &args);
    // At once, each on its own empty data dir (an emptyDir per pod).
    a.start(0);
    b.start(0);

    let refused =
        |log: &str| log.contains("names cluster") || log.contains("waits for the existing cluster");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (log_a, log_b) = loop {
        let (log_a, log_b) = (a.log(0), b.log(0));
        if refused(&log_a) || refused(&log_b) || Instant::now() >= deadline {
            break (log_a, log_b);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        refused(&log_a) != refused(&log_b),
        "expected exactly one of the two to be refused:\n--- a\n{log_a}\n--- b\n{log_b}"
    );
    let (winner, loser) = if refused(&log_b) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // The winner leads its cluster; the loser serves no cluster of its own.
    assert!(
        winner.wait_leader_is(0, Duration::from_secs(20)).await,
        "{}",
        winner.log(0)
    );
    let loser_status = loser.status(0).await;
    assert!(
        loser_status
            .as_ref()
            .is_none_or(|s| s.role != Role::Leader as i32),
        "the refused kv-0 leads a cluster of its own: {loser_status:?}\n{}",
        loser.log(0)
    );
}

#[test]
fn the_docker_demonstration_prints_the_refusals() {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        assert!(!in_ci(), "the demonstration needs Docker in CI: {e}");
        eprintln!("SKIPPED: no Docker Engine ({e}); under CI=true this fails");
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let suffix = format!("{}-{}", std::process::id(), nanos % 1_000_000_000);
    let tag = format!("kvset-e2e:demo-{suffix}");
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            let _ = docker(&["image", "rm", "--force", &self.0]);
        }
    }
    let bin_dir = server_binary().parent().expect("bin dir").to_path_buf();
    let built = Command::new(repo_root().join("docker/build-image.sh"))
        .args(["--offline", "--quiet", "--tag", &tag, "--bin-dir"])
        .arg(&bin_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run docker/build-image.sh");
    let _image = Image(tag.clone());
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let out = Command::new(repo_root().join("docker/demo-deployment.sh"))
        .env("KVSET_IMAGE", &tag)
        .env("KVSET_NAME_PREFIX", format!("kvset-e2e-{suffix}-"))
        .stdin(Stdio::null())
        .output()
        .expect("run docker/demo-deployment.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    for expected in [
        "pod name \"kv-5d8f7c9b4-x2kqp\" has no ordinal",
        "a voter asked to join again (volume lost?)",
        "\"cluster_id\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?}:\n{text}");
    }
    assert!(
        text.contains("names cluster") || text.contains("waits for the existing cluster"),
        "{text}"
    );
    println!("{text}");
}
