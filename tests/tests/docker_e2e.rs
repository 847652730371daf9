//! The container image and the StatefulSet topology, end to end in Docker.
//!
//! Builds the image from the binaries under test (`docker/build-image.sh --offline --bin-dir`),
//! then lays out what Kubernetes would: a private network, containers `kv-0`..`kv-2` with
//! hostnames `kv-N` and the headless-Service DNS names `kv-N.kv.default.svc.cluster.local` as
//! network aliases (so the server's default address template works unchanged), one volume each at
//! `/data`, the pod's hardening (read-only root, no capabilities, the image's non-root user), and
//! client ports published on 127.0.0.1 only. Members start in ordinal order, each one ready
//! before the next, judged by the `readiness` gRPC health service exactly as the kubelet asks it.
//!
//! Then: a write through kv-0; `docker kill kv-0`; a write through kv-1 succeeds (kv-1 forwards it
//! to the new leader); `docker start kv-0` brings it back with the same identity, cluster and data,
//! and it takes the primary role back.
//!
//! Everything it creates carries a unique prefix and the label `kvset.e2e=<prefix>`, and a drop
//! guard removes it (containers, volumes, network, image), also when the test fails; a failing
//! run prints every member's last log lines first.
//!
//! Needs a Docker Engine. Without one the test is skipped with a message, except under `CI=true`,
//! where it fails. `KVSET_E2E_IMAGE=<image>` runs it against an existing image (for example the
//! release image from `docker/build-image.sh`) instead of building one.

use std::future::poll_fn;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::{Consistency, GetRequest, PutRequest, Role, StatusRequest, StatusResponse};
use kvset_tests::tooling::{docker, in_ci, repo_root};
use tonic::codegen::http;
use tonic::codegen::{Body as _, Service as _};
use tonic::transport::{Channel, Endpoint};

/// grpc.health.v1 `ServingStatus::SERVING`.
const SERVING: i32 = 1;
const MEMBERS: usize = 3;

fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// True when a Docker Engine answers. Without one: fails under CI, skips otherwise.
fn docker_engine() -> bool {
    match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Ok(version) => {
            eprintln!("Docker Engine {version}");
            true
        }
        Err(e) => {
            assert!(
                !in_ci(),
                "the Docker e2e test needs a Docker Engine in CI, and none answers: {e}"
            );
            eprintln!("SKIPPED: no Docker Engine ({e}); under CI=true this fails");
            false
        }
    }
}

/// Everything one run creates, removed on drop.
struct Topology {
    prefix: String,
    image: String,
    own_image: bool,
    network: String,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Topology {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let prefix = format!("kvset-e2e-{}-{}", std::process::id(), nanos % 1_000_000_000);
        Self {
            network: format!("{prefix}-net"),
            image: String::new(),
            own_image: false,
            containers: Vec::new(),
            volumes: Vec::new(),
            prefix,
        }
    }

    fn label(&self) -> String {
        format!("kvset.e2e={}", self.prefix)
    }

    fn name(&self, i: usize) -> String {
        format!("{}-kv-{i}", self.prefix)
    }

    /// Builds the image from the binaries this test was built with, or takes KVSET_E2E_IMAGE.
    fn image(&mut self) {
        if let Ok(image) = std::env::var("KVSET_E2E_IMAGE") {
            must(&["image", "inspect", &image]);
            self.image = image;
            return;
        }
        let server = kvset_tests::testkit::server_binary();
        let bin_dir = server.parent().expect("binary dir").to_path_buf();
        assert!(
            bin_dir.join("kvsetctl").exists(),
            "kvsetctl not found next to {}: cargo build --bins",
            server.display()
        );
        let tag = format!("kvset-e2e:{}", self.prefix.trim_start_matches("kvset-e2e-"));
        let started = Instant::now();
        let out = Command::new(repo_root().join("docker/build-image.sh"))
            .args(["--offline", "--quiet", "--tag", &tag, "--bin-dir"])
            .arg(&bin_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run docker/build-image.sh");
        // From here on the image is ours to remove, even if the build's smoke test failed.
        self.image = tag;
        self.own_image = true;
        assert!(
            out.status.success(),
            "docker/build-image.sh --offline failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "built {} from {} in {:.1?}",
            self.image,
            bin_dir.display(),
            started.elapsed()
        );
    }

    fn network(&mut self) {
        must(&["network", "create", "--label", &self.label(), &self.network]);
    }

    /// `docker run` of member `i`, as the StatefulSet's pod template describes it.
    fn run_member(&mut self, i: usize) {
        let name = self.name(i);
        let volume = format!("{}-data-kv-{i}", self.prefix);
        if !self.volumes.contains(&volume) {
            must(&["volume", "create", "--label", &self.label(), &volume]);
            self.volumes.push(volume.clone());
        }
        let hostname = format!("kv-{i}");
        let alias = format!("kv-{i}.kv.default.svc.cluster.local");
        let pod_name = format!("POD_NAME=kv-{i}");
        let mount = format!("{volume}:/data");
        self.containers.push(name.clone());
        let label = self.label();
        let args = [
            "run",
            "--detach",
            "--name",
            &name,
            "--label",
            &label,
            "--hostname",
            &hostname,
            "--network",
            &self.network,
            "--network-alias",
            &alias,
            "--env",
            &pod_name,
            "--env",
            "POD_NAMESPACE=default",
            "--env",
            "KVSET_SERVICE=kv",
            "--env",
            "NO_COLOR=1",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--stop-timeout",
            "30",
            "--volume",
            &mount,
            "--publish",
            "127.0.0.1::7379",
            &self.image,
        ];
        must(&args);
    }

    /// The published client address of member `i` (it changes when the container restarts).
    fn client_addr(&self, i: usize) -> String {
        let out = must(&["port", &self.name(i), "7379/tcp"]);
        let addr = out
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| {
                panic!(
                    "{}: client port not published on 127.0.0.1: {out:?}",
                    self.name(i)
                )
            });
        addr.to_string()
    }

    fn running(&self, i: usize) -> bool {
        docker(&["inspect", "--format", "{{.State.Running}}", &self.name(i)])
            .is_ok_and(|s| s == "true")
    }

    /// Waits until member `i` is ready as the kubelet sees it (`readiness` SERVING) and reports a
    /// leader; returns its client address.
    async fn wait_ready(&self, i: usize, timeout: Duration) -> String {
        let started = Instant::now();
        let mut last = String::from("nothing yet");
        while started.elapsed() < timeout {
            assert!(
                self.running(i),
                "{} exited while starting:\n{}",
                self.name(i),
                self.logs(i)
            );
            let addr = self.client_addr(i);
            match health_check(&addr, "readiness").await {
                Ok(SERVING) => match status(&addr).await {
                    Some(s) if s.ready && s.leader_id.is_some() => {
                        eprintln!("kv-{i} ready after {:.1?} ({addr})", started.elapsed());
                        return addr;
                    }
                    other => last = format!("readiness SERVING, status {other:?}"),
                },
                other => last = format!("readiness {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("kv-{i} not ready after {timeout:?}; last: {last}");
    }

    fn logs(&self, i: usize) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "60", &self.name(i)])
            .output();
        out.map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.containers.len() {
                eprintln!(
                    "----- last log lines of {}:\n{}",
                    self.name(i),
                    self.logs(i)
                );
            }
        }
        // Whatever carries our label, also what a half-finished step left behind.
        let label = format!("label={}", self.label());
        let mut containers = self.containers.clone();
        if let Ok(ids) = docker(&["ps", "--all", "--quiet", "--filter", &label]) {
            containers.extend(ids.lines().map(str::to_string));
        }
        for c in &containers {
            let _ = docker(&["rm", "--force", "--volumes", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "--force", v]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        if self.own_image {
            let _ = docker(&["image", "rm", "--force", &self.image]);
        }
    }
}

fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

async fn status(addr: &str) -> Option<StatusResponse> {
    let mut c = ClusterClient::new(channel(addr));
    c.status(StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn put(addr: &str, key: &str, value: &str) -> Result<(), tonic::Status> {
    let mut kv = KvClient::new(channel(addr));
    let req = PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    kv.put(req).await.map(|_| ())
}

async fn get(addr: &str, key: &str) -> Option<String> {
    let mut kv = KvClient::new(channel(addr));
    let req = GetRequest {
        key: key.into(),
        consistency: Consistency::Linearizable as i32,
        revision: 0,
    };
    let resp = kv
        .get(req)
        .await
        .unwrap_or_else(|e| panic!("get {key} on {addr}: {e}"))
        .into_inner();
    resp.kv
        .map(|kv| String::from_utf8(kv.value).expect("UTF-8 value"))
}

/// `grpc.health.v1.Health/Check` for `service`, as the kubelet's gRPC probe sends it; returns
/// the serving status (1 = SERVING). Spoken by hand on a tonic channel because this crate has no
/// generated health client: the request message `{service: 1}` is ASCII for an ASCII name, so a
/// `String` carries the whole gRPC frame.
async fn health_check(addr: &str, service: &str) -> Result<i32, String> {
    assert!(
        service.is_ascii() && service.len() < 0x70,
        "service name must be short ASCII"
    );
    let message_len = 2 + service.len();
    let mut frame = String::from("\0\0\0\0"); // uncompressed, length (big-endian u32) ...
    frame.push(char::from(message_len as u8)); // ... below 0x80
    frame.push('\u{0a}'); // field 1, length-delimited
    frame.push(char::from(service.len() as u8));
    frame.push_str(service);
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(frame))
        .map_err(|e| e.to_string())?;
    let mut channel = channel(addr);
    poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(3), channel.call(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, mut body) = response.into_parts();
    let header = |map: &http::HeaderMap| {
        map.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut grpc_status = header(&parts.headers);
    let mut data = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame.map_err(|e| e.to_string())?.into_data() {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    grpc_status = header(&trailers).or(grpc_status);
                }
            }
        }
    }
    if grpc_status.as_deref() != Some("0") {
        return Err(format!("grpc-status {grpc_status:?}"));
    }
    // 5-byte frame header, then HealthCheckResponse { status: 1 (varint) }; empty means 0.
    match data.get(5..) {
        Some([]) => Ok(0),
        Some([0x08, s, ..]) if *s < 0x80 => Ok(i32::from(*s)),
        other => Err(format!("unexpected health response {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_fail_over_and_kv0_returns_with_its_identity_and_data() {
    if !docker_engine() {
        return;
    }
    let t0 = Instant::now();
    let mut topo = Topology::new();
    topo.image();
    assert_eq!(
        must(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            &topo.image
        ]),
        "65532:65532"
    );
    topo.network();

    // OrderedReady: kv-N+1 is created only once kv-N is Ready.
    let mut addrs = Vec::new();
    for i in 0..MEMBERS {
        topo.run_member(i);
        addrs.push(topo.wait_ready(i, Duration::from_secs(90)).await);
    }
    let before = status(&addrs[0]).await.expect("kv-0 answers");
    assert_eq!(
        before.role,
        Role::Leader as i32,
        "kv-0 bootstraps the cluster and leads"
    );
    let header = before.header.clone().expect("header");
    let cluster_id = header.cluster_id.clone();
    let names: Vec<(String, String, bool)> = before
        .members
        .iter()
        .map(|m| m.member.as_ref().expect("member"))
        .map(|m| (m.name.clone(), m.client_addr.clone(), m.voter))
        .collect();
    let expected: Vec<(String, String, bool)> = (0..MEMBERS)
        .map(|i| {
            (
                format!("kv-{i}"),
                format!("kv-{i}.kv.default.svc.cluster.local:7379"),
                true,
            )
        })
        .collect();
    assert_eq!(
        names, expected,
        "members are addressed by their headless-Service DNS names"
    );
    assert_eq!(
        health_check(&addrs[0], "liveness").await,
        Ok(SERVING),
        "liveness health service"
    );
    let unknown = health_check(&addrs[0], "no-such-service").await;
    assert!(
        matches!(&unknown, Err(e) if e.contains("\"5\"")),
        "an unknown health service is NOT_FOUND: {unknown:?}"
    );
    eprintln!("cluster {cluster_id} up after {:.1?}", t0.elapsed());

    put(&addrs[0], "e2e/before", "written-through-kv-0")
        .await
        .expect("put through kv-0");

    // Lose the primary without warning.
    must(&["kill", &topo.name(0)]);
    let killed = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match put(&addrs[1], "e2e/failover", "written-through-kv-1").await {
            Ok(()) => break,
            Err(e) if killed.elapsed() < Duration::from_secs(30) => {
                if attempts % 10 == 1 {
                    eprintln!("write through kv-1 not yet accepted: {}", e.message());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no write through kv-1 within 30 s of killing kv-0: {e}"),
        }
    }
    eprintln!(
        "failover: a write through kv-1 succeeded {:.1?} after docker kill kv-0",
        killed.elapsed()
    );
    let during = status(&addrs[1]).await.expect("kv-1 answers");
    assert!(
        matches!(during.leader_id, Some(1) | Some(2)),
        "a survivor leads: {:?}",
        during.leader_name
    );
    assert_eq!(
        get(&addrs[2], "e2e/before").await.as_deref(),
        Some("written-through-kv-0")
    );

    // Back with the same name, volume and cluster; it catches up and takes the primary role back.
    must(&["start", &topo.name(0)]);
    let restarted = Instant::now();
    let addr0 = topo.wait_ready(0, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let s = status(&addr0).await;
        if let Some(s) = s.filter(|s| s.role == Role::Leader as i32) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "kv-0 did not regain leadership within 30 s of being ready"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "kv-0 leads again {:.1?} after docker start",
        restarted.elapsed()
    );
    let header = after.header.expect("header");
    assert_eq!(
        header.cluster_id, cluster_id,
        "kv-0 came back into the same cluster (its volume)"
    );
    assert_eq!(
        header.member.as_ref().map(|m| (m.name.as_str(), m.ordinal)),
        Some(("kv-0", 0))
    );
    assert_eq!(
        get(&addr0, "e2e/before").await.as_deref(),
        Some("written-through-kv-0"),
        "kv-0 kept its data"
    );
    assert_eq!(
        get(&addr0, "e2e/failover").await.as_deref(),
        Some("written-through-kv-1"),
        "kv-0 caught up"
    );
    put(&addr0, "e2e/after", "written-through-kv-0-again")
        .await
        .expect("put through kv-0 after its return");
    assert_eq!(
        get(&addrs[2], "e2e/after").await.as_deref(),
        Some("written-through-kv-0-again")
    );
    eprintln!("docker e2e passed in {:.1?}", t0.elapsed());
}
