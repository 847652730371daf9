//! `docker/cluster.sh scale N`, end to end: the Compose topology taken 3 → 1 → 5 → 3 with a
//! client writing the whole time, no acknowledged write lost, and the membership equal to N after
//! every step (the script's own exit condition, checked again here from the host).
//!
//! The script runs as a user runs it, with one difference: `KVSET_NAME_PREFIX` gives every
//! container, network and volume a name of this run's own (`kvset-e2e-<pid>-<n>-kv-0`, …), so
//! the test cannot collide with a cluster a user started with `docker/cluster.sh up`, or with
//! another run; host ports are chosen free. The image is built from the binaries under test, as
//! `docker_e2e` builds it. A drop guard runs `cluster.sh down --volumes` and removes whatever
//! else carries the prefix, and the image, also when the test fails (printing the members' last
//! log lines first).
//!
//! Needs a Docker Engine and Compose (`docker compose` or `docker-compose`). Without them the
//! test is skipped with a message, except under `CI=true`, where it fails.
//! `KVSET_E2E_IMAGE=<image>` runs it against an existing image.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvset_tests::chaos::backend::free_local_ports;
use kvset_tests::tooling::{docker, in_ci, repo_root, runs};

const MAX_MEMBERS: usize = 5;

/// True when a Docker Engine and Compose answer. Without them: fails under CI, skips otherwise.
fn docker_and_compose() -> bool {
    let engine = docker(&["version", "--format", "{{.Server.Version}}"]);
    let compose = runs("docker", &["compose", "version"]) || runs("docker-compose", &["version"]);
    match (engine, compose) {
        (Ok(_), true) => true,
        (engine, compose) => {
            let why = format!("Docker Engine: {engine:?}, Compose installed: {compose}");
            assert!(
                !in_ci(),
                "docker_scale needs Docker and Compose in CI: {why}"
            );
            eprintln!("SKIPPED: {why}; under CI=true this fails");
            false
        }
    }
}

/// One run's topology: its prefix, ports and image; torn down on drop.
struct Run {
    prefix: String,
    ports: Vec<u16>,
    image: String,
    own_image: bool,
}

impl Run {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let prefix = format!(
            "kvset-e2e-{}-{}-",
            std::process::id(),
            nanos % 1_000_000_000
        );
        Self {
            ports: free_local_ports(MAX_MEMBERS).expect("free ports"),
            image: String::new(),
            own_image: false,
            prefix,
        }
    }

    /// Builds the image from the binaries this test was built with, or takes KVSET_E2E_IMAGE.
    fn image(&mut self) {
        if let Ok(image) = std::env::var("KVSET_E2E_IMAGE") {
            docker(&["image", "inspect", &image]).expect("KVSET_E2E_IMAGE exists");
            self.image = image;
            return;
        }
        let server = kvset_tests::testkit::server_binary();
        let bin_dir = server.parent().expect("binary dir").to_path_buf();
        let tag = format!("kvset-e2e:{}", self.prefix.trim_end_matches('-'));
        let tag = tag.replacen("kvset-e2e:kvset-e2e-", "kvset-e2e:", 1);
        let out = Command::new(repo_root().join("docker/build-image.sh"))
            .args(["--offline", "--quiet", "--tag", &tag, "--bin-dir"])
            .arg(&bin_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run docker/build-image.sh");
        self.image = tag;
        self.own_image = true;
        assert!(
            out.status.success(),
            "docker/build-image.sh --offline failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker/cluster.sh ARGS` with this run's names, ports and image: (exit code, stdout,
    /// stderr).
    fn cluster_sh(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(repo_root().join("docker/cluster.sh"));
        cmd.args(args)
            .env("KVSET_NAME_PREFIX", &self.prefix)
            .env("KVSET_IMAGE", &self.image)
            .env("KVSET_SCALE_TIMEOUT", "150")
            .stdin(Stdio::null());
        for (m, port) in self.ports.iter().enumerate() {
            cmd.env(format!("KVSET_PORT_KV{m}"), port.to_string());
        }
        let out = cmd.output().expect("run docker/cluster.sh");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn endpoints(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for m in 0..MAX_MEMBERS {
            let name = format!("{}kv-{m}", self.prefix);
            if let Ok(out) = Command::new("docker")
                .args(["logs", "--tail", "30", &name])
                .output()
            {
                all.push_str(&format!("----- {name}\n"));
                all.push_str(&String::from_utf8_lossy(&out.stdout));
                all.push_str(&String::from_utf8_lossy(&out.stderr));
            }
        }
        all
    }

    /// Member ids as the first member that answers on the host reports them.
    async fn member_ids(&self) -> Vec<u64> {
        for endpoint in self.endpoints() {
            let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
                .expect("endpoint")
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(3))
                .connect()
                .await
            else {
                continue;
            };
            let mut c = kvset_proto::v1::cluster_client::ClusterClient::new(channel);
            if let Ok(resp) = c.members(kvset_proto::v1::MembersRequest {}).await {
                let mut ids: Vec<u64> = resp.into_inner().members.iter().map(|m| m.id).collect();
                ids.sort_unstable();
                return ids;
            }
        }
        Vec::new()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if !self.image.is_empty() {
            let _ = self.cluster_sh(&["down", "--volumes"]);
        }
        // Whatever a half-finished step left behind under the prefix.
        let filter = format!("name={}", self.prefix);
        if let Ok(ids) = docker(&["ps", "--all", "--quiet", "--filter", &filter]) {
            for id in ids.lines() {
                let _ = docker(&["rm", "--force", "--volumes", id]);
            }
        }
        if let Ok(names) = docker(&["volume", "ls", "--quiet", "--filter", &filter]) {
            for name in names.lines().filter(|n| n.starts_with(&self.prefix)) {
                let _ = docker(&["volume", "rm", "--force", name]);
            }
        }
        let _ = docker(&["network", "rm", &format!("{}kvset", self.prefix)]);
        if self.own_image {
            let _ = docker(&["image", "rm", "--force", &self.image]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_sh_scale_takes_a_writing_cluster_3_1_5_3() {
    if !docker_and_compose() {
        return;
    }
    let mut run = Run::new();
    run.image();

    // Nothing to scale yet, and sizes outside 1..5: refused, saying why.
    let (code, _, err) = run.cluster_sh(&["scale", "2"]);
    assert_ne!(code, 0);
    assert!(err.contains("no cluster to scale"), "{err}");

    let (code, out, err) = run.cluster_sh(&["up"]);
    assert_eq!(code, 0, "cluster.sh up failed:\n{out}{err}\n{}", run.logs());
    assert_eq!(run.member_ids().await, [0, 1, 2]);
    for bad in ["0", "6", "two"] {
        let (code, _, err) = run.cluster_sh(&["scale", bad]);
        assert_ne!(code, 0, "scale {bad}");
        assert!(
            err.contains("scale needs a member count between 1 and 5"),
            "{err}"
        );
    }

    // A client writes unique keys the whole time; acknowledged ones are remembered.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let client = kvset_client::Client::connect(run.endpoints())
        .await
        .expect("client");
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            for seq in 0..50_000u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (key, value) = (format!("k{seq:06}"), format!("v{seq}"));
                match client.put(&key, &value).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(key, value);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    for (n, want) in [
        (1u64, "scaled to 1: members kv-0"),
        (5, "scaled to 5: members kv-0, kv-1, kv-2, kv-3, kv-4"),
        (3, "scaled to 3: members kv-0, kv-1, kv-2"),
    ] {
        let before = acked.lock().unwrap().len();
        let (code, out, err) =
            tokio::task::block_in_place(|| run.cluster_sh(&["scale", &n.to_string()]));
        assert_eq!(code, 0, "scale {n}:\n{out}{err}\n{}", run.logs());
        assert!(out.contains(want), "scale {n}: {out}");
        let ids = run.member_ids().await;
        assert_eq!(ids, (0..n).collect::<Vec<u64>>(), "after scale {n}");
        // Writes go on at the new size.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < before + 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            acked.lock().unwrap().len() >= before + 10,
            "writes stalled after scale {n}\n{}",
            run.logs()
        );
        if n == 1 {
            // kv-1 and kv-2 left as they stopped (they did not wait for the leader to remove
            // them): the desired size reached them first.
            for m in [1, 2] {
                let name = format!("{}kv-{m}", run.prefix);
                assert!(
                    err.contains(&format!("stopping kv-{m} (ordinal at or above 1")),
                    "{err}"
                );
                assert!(
                    !err.contains(&format!("kv-{m} stopped without confirming")),
                    "{name} did not leave by itself:\n{err}"
                );
            }
        }
    }

    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    let client = kvset_client::Client::connect(run.endpoints())
        .await
        .expect("client");
    let mut lost = Vec::new();
    for (key, value) in &acked {
        let got = client.get(key).await.expect("read back");
        if got.map(|kv| kv.value) != Some(value.as_bytes().to_vec()) {
            lost.push(key.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}
