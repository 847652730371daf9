//! Real-process clusters for tests: `kvset-server serve` children on loopback.
//!
//! Each [`ProcessCluster`] takes its own 127.0.0.x address (picked from the process id and a
//! counter) and free ports on it, and a temporary directory with one data dir and one log file
//! per member, so tests can run in parallel without sharing anything. Members are killed when the
//! cluster is dropped; a failing test keeps its logs (the directory path is printed) so the
//! failure can be read.
//!
//! The helpers talk to members with the raw generated gRPC clients, on purpose: server tests
//! must not depend on the SDK's retry logic hiding a server bug.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::{Role, StatusRequest, StatusResponse};
use tonic::transport::{Channel, Endpoint};

/// Where a workspace binary is: the path in `env_var` if set, else next to the test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`). Panics with what to do when it
/// is missing (the test command builds the binaries first: `cargo build --bins`).
pub fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> dir");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{name} binary not found at {}: build it first (cargo build --bins) or set {env_var}",
        bin.display()
    );
    bin
}

/// The `kvset-server` binary (`KVSET_SERVER_BIN` overrides).
pub fn server_binary() -> PathBuf {
    workspace_binary("kvset-server", "KVSET_SERVER_BIN")
}

/// The `kvsetctl` binary (`KVSETCTL_BIN` overrides).
pub fn kvsetctl_binary() -> PathBuf {
    workspace_binary("kvsetctl", "KVSETCTL_BIN")
}

/// Runs the `kvsetctl` binary with `args` against `endpoints` (comma-separated), with none of the
/// caller's KVSET_* TLS settings or RUST_LOG leaking in; returns (exit code, stdout, stderr).
/// `limit` only keeps a bug from hanging the test: kvsetctl bounds itself with `--timeout`.
pub async fn run_kvsetctl<S: AsRef<std::ffi::OsStr>>(
    endpoints: &str,
    args: &[S],
    limit: Duration,
) -> (i32, String, String) {
    let mut cmd = Command::new(kvsetctl_binary());
    cmd.args(args)
        .env("KVSET_ENDPOINTS", endpoints)
        .env_remove("KVSET_CACERT")
        .env_remove("KVSET_CERT")
        .env_remove("KVSET_KEY")
        .env_remove("KVSET_TOKEN")
        .env_remove("RUST_LOG");
    let shown = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let out = tokio::time::timeout(limit, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .unwrap_or_else(|_| panic!("kvsetctl {shown:?} did not finish within {limit:?}"))
        .expect("join")
        .expect("run kvsetctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

static CLUSTER_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A loopback address of its own for each cluster in this process.
fn pick_loopback_ip() -> Ipv4Addr {
    let n = std::process::id()
        .wrapping_mul(31)
        .wrapping_add(CLUSTER_COUNTER.fetch_add(1, Ordering::SeqCst) * 7);
    Ipv4Addr::new(127, 0, ((n / 250) % 250 + 1) as u8, (n % 250 + 2) as u8)
}

fn pick_loopback_ip_addr() -> std::net::IpAddr {
    pick_loopback_ip().into()
}

/// Hands out distinct free ports on one address: each port's listener is kept open until the
/// allocator is dropped, so the kernel cannot hand the same port out twice in the meantime.
struct PortAllocator {
    ip: Ipv4Addr,
    held: Vec<TcpListener>,
}

impl PortAllocator {
    fn new(ip: Ipv4Addr) -> Self {
        Self {
            ip,
            held: Vec::new(),
        }
    }

    fn next(&mut self) -> u16 {
        let listener = TcpListener::bind((self.ip, 0)).expect("a free loopback port");
        let port = listener.local_addr().expect("bound address").port();
        self.held.push(listener);
        port
    }
}

/// One member's fixed parameters.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub ordinal: u64,
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
}

/// A member process and how it was started.
pub struct Member {
    pub spec: MemberSpec,
    child: Option<Child>,
}

impl Member {
    /// The running process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True when the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// A cluster of real `kvset-server` processes.
pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    binary: PathBuf,
    peers_flag: String,
    extra_args: Vec<String>,
    keep: bool,
}

/// Fast Raft timing for tests: failover within about a second.
pub const FAST_TIMING: &[&str] = &[
    "--heartbeat-ms=100",
    "--election-timeout-min-ms=400",
    "--election-timeout-max-ms=600",
];

impl ProcessCluster {
    /// Lays out `size` members (kv-0 …) without starting any. `extra_args` go to every member.
    pub fn new(size: u64, extra_args: &[&str]) -> Self {
        Self::new_on(pick_loopback_ip_addr(), size, extra_args)
    }

    /// Like [`ProcessCluster::new`], on a given loopback address (e.g. one a test certificate
    /// names).
    pub fn new_on(ip: std::net::IpAddr, size: u64, extra_args: &[&str]) -> Self {
        let binary = server_binary();
        let dir = tempfile::Builder::new()
            .prefix("kvset-test-")
            .tempdir()
            .expect("temp dir");
        let ip = match ip {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => panic!("test clusters use IPv4 loopback addresses"),
        };
        let mut ports = PortAllocator::new(ip);
        let members: Vec<Member> = (0..size)
            .map(|ordinal| {
                let name = format!("kv-{ordinal}");
                Member {
                    spec: MemberSpec {
                        ordinal,
                        client: SocketAddr::new(ip.into(), ports.next()),
                        peer: SocketAddr::new(ip.into(), ports.next()),
                        metrics: SocketAddr::new(ip.into(), ports.next()),
                        data_dir: dir.path().join(&name),
                        log_file: dir.path().join(format!("{name}.log")),
                        name,
                    },
                    child: None,
                }
            })
            .collect();
        let peers_flag = members
            .iter()
            .map(|m| format!("{}={}/{}", m.spec.name, m.spec.client, m.spec.peer))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            dir,
            members,
            binary,
            peers_flag,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            keep: false,
        }
    }

    /// Starts every member in ordinal order, each once the previous is ready (OrderedReady).
    pub async fn start_all_ordered(&mut self) {
        for i in 0..self.members.len() {
            self.start(i);
            self.wait_ready(i, Duration::from_secs(60)).await;
        }
    }

    /// The command line member `i` runs with (`subcommand` = serve, restore FILE, …).
    fn command(&self, i: usize, subcommand: &[&str], extra: &[&str]) -> Command {
        let spec = &self.members[i].spec;
        let mut cmd = Command::new(&self.binary);
        cmd.args(subcommand)
            .arg(format!("--pod-name={}", spec.name))
            .arg(format!("--data-dir={}", spec.data_dir.display()))
            .arg(format!("--client-listen={}", spec.client))
            .arg(format!("--peer-listen={}", spec.peer))
            .arg(format!("--metrics-listen={}", spec.metrics))
            .arg(format!("--peers={}", self.peers_flag))
            .arg(format!(
                "--cluster-record=file:{}",
                self.cluster_record_path().display()
            ))
            .args(&self.extra_args)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("KVSET_TEST_LOG").unwrap_or_else(|_| "info,openraft=info".into()),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// The cluster record every member is given (`--cluster-record=file:…`): outside every
    /// member's data dir, as the launcher keeps it, so wiping a member leaves it. A test may
    /// override it with its own `--cluster-record` in the extra flags.
    pub fn cluster_record_path(&self) -> PathBuf {
        self.dir.path().join("cluster-record.json")
    }

    /// Starts member `i` with the cluster's flags plus `extra`.
    pub fn start_with(&mut self, i: usize, extra: &[&str]) {
        let spec = self.members[i].spec.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .expect("log file");
        let child = self
            .command(i, &["serve"], extra)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn kvset-server");
        self.members[i].child = Some(child);
    }

    /// Runs `kvset-server <args…>` with member `i`'s flags to completion (e.g. `restore FILE`);
    /// returns the exit code and the combined output.
    pub fn run_tool(&self, i: usize, args: &[&str]) -> (i32, String) {
        let out = self
            .command(i, args, &[])
            .output()
            .expect("run kvset-server");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Starts member `i`.
    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the process to exit (up to `timeout`). Returns how long it took.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Duration {
        let started = Instant::now();
        if let Some(mut c) = self.members[i].child.take() {
            // SAFETY: kill(2) on a child we spawned.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            while started.elapsed() < timeout {
                if let Ok(Some(_)) = c.try_wait() {
                    return started.elapsed();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        started.elapsed()
    }

    /// Waits for the process of member `i` to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<i32> {
        let started = Instant::now();
        let child = self.members[i].child.as_mut()?;
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                self.members[i].child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Deletes member `i`'s data dir (it must be stopped).
    pub fn wipe(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "stop {} before wiping it",
            self.members[i].spec.name
        );
        let _ = std::fs::remove_dir_all(&self.members[i].spec.data_dir);
    }

    /// The member's log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].spec.log_file).unwrap_or_default()
    }

    /// Keep the directory (logs, data) after the test.
    pub fn keep_files(&mut self) {
        self.keep = true;
    }

    /// Client endpoint of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].spec.client.to_string()
    }

    /// All client endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    fn channel(&self, i: usize) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.members[i].spec.client))
            .expect("valid endpoint")
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// A raw KV client to member `i`.
    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i))
    }

    /// A raw Watch client to member `i`, on a channel without a request timeout (a watch
    /// stream lives as long as the test wants it).
    pub fn watch(&self, i: usize) -> kvset_proto::v1::watch_client::WatchClient<Channel> {
        let channel = Endpoint::from_shared(format!("http://{}", self.members[i].spec.client))
            .expect("valid endpoint")
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        kvset_proto::v1::watch_client::WatchClient::new(channel)
    }

    /// A raw Lease client to member `i`.
    pub fn lease(&self, i: usize) -> kvset_proto::v1::lease_client::LeaseClient<Channel> {
        kvset_proto::v1::lease_client::LeaseClient::new(self.channel(i))
    }

    /// A raw Cluster client to member `i`.
    pub fn cluster(&self, i: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(i))
    }

    /// Member `i`'s status, if it answers.
    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        let mut c = self.cluster(i);
        tokio::time::timeout(Duration::from_secs(2), c.status(StatusRequest {}))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until member `i` reports ready.
    pub async fn wait_ready(&mut self, i: usize, timeout: Duration) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(s) = self.status(i).await {
                if s.ready && s.leader_id.is_some() {
                    return;
                }
            }
            assert!(
                self.members[i].is_running(),
                "{} exited while starting:\n{}",
                self.members[i].spec.name,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.keep_files();
        panic!(
            "{} not ready after {timeout:?}; logs in {}",
            self.members[i].spec.name,
            self.dir.path().display()
        );
    }

    /// Waits until some running member reports itself leader and returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let started = Instant::now();
        while started.elapsed() < timeout {
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                if let Some(s) = self.status(i).await {
                    if s.role == Role::Leader as i32 {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no leader after {timeout:?}; logs in {}",
            self.dir.path().display()
        );
    }

    /// Waits until member `i` is the leader.
    /// Starts the members in ordinal order, each once the previous one is ready (OrderedReady),
    /// checking readiness through `client` (for clusters the kit's own plain-text helpers cannot
    /// reach: TLS, authorization); then waits until every member is a healthy voter.
    pub async fn start_ordered_through(&mut self, client: &kvset_client::Client) {
        for i in 0..self.members.len() {
            self.start(i);
            let started = Instant::now();
            loop {
                let health = client
                    .health_of(&self.endpoint(i), kvset_client::READINESS)
                    .await
                    .expect("a valid endpoint");
                if health.is_serving() {
                    break;
                }
                assert!(
                    self.members[i].is_running(),
                    "kv-{i} exited:\n{}",
                    self.log(i)
                );
                if started.elapsed() > Duration::from_secs(60) {
                    self.keep_files();
                    panic!(
                        "kv-{i} not ready within 60 s ({health:?}); logs in {}",
                        self.dir.path().display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.wait_healthy_through(client).await;
    }

    /// Waits (asking through `client`) until every member is a healthy voter under a leader.
    pub async fn wait_healthy_through(&mut self, client: &kvset_client::Client) {
        let started = Instant::now();
        let size = self.members.len();
        loop {
            let status = client.status_all().await;
            let healthy = status
                .members
                .iter()
                .filter(|m| m.healthy && m.voter == Some(true))
                .count();
            if healthy == size && status.leader.is_some() {
                return;
            }
            for i in 0..size {
                assert!(
                    self.members[i].is_running(),
                    "kv-{i} exited:\n{}",
                    self.log(i)
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                self.keep_files();
                panic!(
                    "the cluster did not become healthy within 60 s: {status:?}; logs in {}",
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_leader_is(&self, i: usize, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(s) = self.status(i).await {
                if s.role == Role::Leader as i32 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if self.keep || std::thread::panicking() {
            let path = self.dir.path().to_path_buf();
            eprintln!(
                "kept cluster files (data dirs and logs) in {}",
                path.display()
            );
            // Leak the TempDir so its files stay.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            let _ = dir.keep();
        }
    }
}
