//! `kvset-server local scale N` takes a writing cluster 3 → 1 → 3 → 5 → 3 with no acknowledged
//! write lost, the membership equal to N after every step, and the replicas converged at the
//! end; a member below the size that restarts stays a member (it is not scaled away).
//!
//! The launcher runs as a child process on its own loopback address; clients write unique keys
//! the whole time (bounded: they stop when the scaling is done, or after a fixed number of
//! writes) and remember which writes were acknowledged. Every acknowledged key is read back
//! (linearizable) at the end.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::{MembersRequest, StatusRequest};
use kvset_tests::chaos::backend::process::pick_base_port;
use kvset_tests::testkit::server_binary;

/// Most writes one client makes (a bound on the load loop besides the stop flag).
const MAX_WRITES_PER_CLIENT: u64 = 20_000;
const CLIENTS: usize = 3;

struct Launcher {
    child: Child,
    dir: tempfile::TempDir,
    ip: Ipv4Addr,
    base: u16,
}

impl Launcher {
    fn start(replicas: u64) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kvset-scale-")
            .tempdir()
            .expect("temp dir");
        let n = std::process::id();
        let ip = Ipv4Addr::new(127, 3, (n % 200 + 1) as u8, (n / 200 % 200 + 2) as u8);
        let base = pick_base_port(ip, 5, 15).expect("free ports");
        let child = Command::new(server_binary())
            .args(["local", "--replicas", &replicas.to_string()])
            .arg(format!("--data-dir={}", dir.path().join("d").display()))
            .arg(format!("--base-port={base}"))
            .arg(format!("--bind-ip={ip}"))
            .args([
                "--server-arg=--heartbeat-ms=100",
                "--server-arg=--election-timeout-min-ms=400",
                "--server-arg=--election-timeout-max-ms=600",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kvset-server local");
        Self {
            child,
            dir,
            ip,
            base,
        }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("d")
    }

    fn endpoint(&self, n: u16) -> String {
        format!("{}:{}", self.ip, self.base + n)
    }

    /// `kvset-server local scale N`: its exit code and output.
    fn scale(&self, n: u64) -> (i32, String) {
        let out = Command::new(server_binary())
            .args(["local", "scale", &n.to_string()])
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .args(["--timeout-secs", "120"])
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run kvset-server local scale");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for n in 0..5 {
            let path = self.data_dir().join(format!("logs/kv-{n}.log"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                all.push_str(&format!("--- kv-{n} (last lines, newest first)\n"));
                all.push_str(&tail.join("\n"));
                all.push('\n');
            }
        }
        all
    }

    async fn cluster(&self, n: u16) -> Option<ClusterClient<tonic::transport::Channel>> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.endpoint(n)))
                .ok()?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(3))
                .connect()
                .await
                .ok()?;
        Some(ClusterClient::new(channel))
    }

    /// Member ids as kv-0 reports them.
    async fn member_ids(&self) -> Vec<u64> {
        let Some(mut c) = self.cluster(0).await else {
            return Vec::new();
        };
        let Ok(resp) = c.members(MembersRequest {}).await else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = resp.into_inner().members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to our own child; the launcher stops its replicas.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

async fn wait_members(launcher: &Launcher, want: &[u64], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if launcher.member_ids().await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_a_writing_cluster_loses_no_acknowledged_write() {
    let launcher = Launcher::start(3);
    assert!(
        wait_members(&launcher, &[0, 1, 2], Duration::from_secs(90)).await,
        "the cluster did not form:\n{}",
        launcher.logs()
    );

    // Writers: unique keys, acknowledged ones remembered.
    let endpoints: Vec<String> = (0..5).map(|n| launcher.endpoint(n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..CLIENTS {
        let client = kvset_client::Client::connect(endpoints.clone())
            .await
            .expect("client");
        let (stop, acked) = (stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut failed = 0u64;
            for seq in 0..MAX_WRITES_PER_CLIENT {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (key, value) = (format!("w{w}/{seq:06}"), format!("v{seq}"));
                match client.put(&key, &value).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(key, value);
                    }
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed
        }));
    }

    let steps: [(u64, &[u64]); 4] = [
        (1, &[0]),
        (3, &[0, 1, 2]),
        (5, &[0, 1, 2, 3, 4]),
        (3, &[0, 1, 2]),
    ];
    for (n, want) in steps {
        let before = acked.lock().unwrap().len();
        let scale = {
            let l = &launcher;
            tokio::task::block_in_place(|| l.scale(n))
        };
        assert_eq!(
            scale.0,
            0,
            "scale {n} failed:\n{}\n{}",
            scale.1,
            launcher.logs()
        );
        assert!(scale.1.contains(&format!("scaled to {n}")), "{}", scale.1);
        assert_eq!(launcher.member_ids().await, want, "after scale {n}");
        // Writes keep being acknowledged at the new size.
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.lock().unwrap().len() < before + 20 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            acked.lock().unwrap().len() >= before + 20,
            "writes stalled after scale {n}:\n{}",
            launcher.logs()
        );
    }

    // A restart of a member below the size (SIGTERM, the launcher restarts it) keeps it a member.
    let pid_file = launcher.data_dir().join("kv-2.pid");
    let pid = read_pid(&pid_file).expect("kv-2 pid");
    // SAFETY: SIGTERM to a replica our launcher started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_pid(&pid_file) == Some(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(read_pid(&pid_file), Some(pid), "kv-2 was not restarted");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        launcher.member_ids().await,
        [0, 1, 2],
        "a restarted member below the size must stay a member:\n{}",
        launcher.logs()
    );

    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 200,
        "only {} writes acknowledged",
        acked.len()
    );

    // Every acknowledged write is there (linearizable reads).
    let client = kvset_client::Client::connect(endpoints.clone())
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
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    // Converged: the three members report the same state at the same applied index.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for n in 0..3 {
            if let Some(mut c) = launcher.cluster(n).await {
                if let Ok(s) = c.status(StatusRequest {}).await {
                    let s = s.into_inner();
                    seen.push((s.applied_index, s.state_hash));
                }
            }
        }
        if seen.len() == 3 && seen.iter().all(|s| *s == seen[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[test]
fn scale_without_a_launcher_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(server_binary())
        .args(["local", "scale", "2"])
        .arg(format!("--data-dir={}", dir.path().display()))
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("no `kvset-server local` is running on"),
        "{stderr}"
    );
    let out = Command::new(server_binary())
        .args(["local", "scale", "0"])
        .arg(format!("--data-dir={}", dir.path().display()))
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("between 1 and 99, got 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A member scaled away that could not finish its leave (killed while leaving, or down when the
/// set shrank) is removed by the leader, so its volume never got the departed marker. When the
/// set grows again it must come back as a new member, not refuse to start ("removed from the
/// cluster") until someone deletes its data by hand. Found by the chaos soak: a kill right
/// before a scale-down left kv-2 in a crash loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_removed_while_it_was_down_comes_back_on_scale_up() {
    let launcher = Launcher::start(3);
    assert!(
        wait_members(&launcher, &[0, 1, 2], Duration::from_secs(60)).await,
        "the cluster did not form:\n{}",
        launcher.logs()
    );
    let data = launcher.data_dir();
    // kv-2 goes down for good (a pod force-deleted): held, then killed without a chance to leave.
    std::fs::write(data.join("kv-2.hold"), b"").expect("hold kv-2");
    let pid = read_pid(&data.join("kv-2.pid")).expect("kv-2's pid");
    // SAFETY: SIGKILL to a replica of our own launcher.
    unsafe { libc::kill(pid, libc::SIGKILL) };

    let (code, out) = launcher.scale(2);
    assert_eq!(code, 0, "scale 2: {out}\n{}", launcher.logs());
    assert!(
        wait_members(&launcher, &[0, 1], Duration::from_secs(30)).await,
        "the leader did not remove the silent kv-2:\n{}",
        launcher.logs()
    );
    assert!(
        !data.join("kv-2").join("kvset-departed.json").exists(),
        "kv-2 never left by itself, so its volume has no departed marker"
    );

    std::fs::remove_file(data.join("kv-2.hold")).expect("release kv-2");
    let (code, out) = launcher.scale(3);
    assert_eq!(
        code,
        0,
        "scale 3: kv-2 did not come back: {out}\n{}",
        launcher.logs()
    );
    assert!(
        wait_members(&launcher, &[0, 1, 2], Duration::from_secs(30)).await,
        "kv-2 is not a member again:\n{}",
        launcher.logs()
    );
    // It caught up as a new member: a write through kv-0 is readable on kv-2 (ReadIndex).
    let client = kvset_client::Client::connect(vec![launcher.endpoint(0)])
        .await
        .expect("client");
    client.put("after-scale-up", "v").await.expect("put");
    let on_kv2 = kvset_client::ReadOptions {
        member: Some("kv-2".into()),
        ..Default::default()
    };
    assert_eq!(
        client
            .get_with("after-scale-up", &on_kv2)
            .await
            .expect("read on kv-2")
            .map(|kv| kv.value),
        Some(b"v".to_vec())
    );
}
