//! `kvset-server local`: a StatefulSet on loopback.
//!
//! Runs kv-0 … kv-(N-1) as child processes of this binary with StatefulSet identities, one data
//! dir each (`<data-dir>/kv-N`, kept across launcher restarts like a PersistentVolume), started in
//! ordinal order, each only once the previous one is Ready (`podManagementPolicy: OrderedReady`).
//! A replica that dies is restarted with the same identity and data after a short back-off, as the
//! kubelet restarts a crashed container in place. Ctrl-C / SIGTERM stops them all gracefully.
//!
//! Ports are predictable: with `--base-port P`, kv-N serves clients on `P+N`, peers on `P+100+N`
//! and metrics on `P+200+N`.
//!
//! The cluster record (see [`crate::cluster_record`]) is `<data-dir>/cluster-record.json`, beside
//! the replicas' data dirs rather than inside kv-0's: wiping `kv-0/` alone leaves it, so kv-0
//! waits to be re-admitted instead of minting a second cluster. Deleting the whole data dir
//! starts over, record included.
//!
//! Scaling: the desired replica count lives in `<data-dir>/replicas` (the launcher's
//! `spec.replicas`; `--replicas` writes it at start). `kvset-server local scale N --data-dir DIR`
//! rewrites it; the launcher, which watches it, then stops the highest ordinals one at a time
//! (SIGTERM; waiting for each to exit) or starts the missing ones in ordinal order, each once the
//! previous is Ready — what the StatefulSet controller does. Every replica reads the same file
//! (`--replicas-from=file:…`), so a replica stopped because its ordinal is at or above the count
//! leaves the cluster before it exits (see `node::scale`), and `scale` returns once the cluster's
//! membership equals N. The running launcher describes itself in `<data-dir>/launcher.json`
//! (pid, addresses, how many replicas run), which is how `scale` finds it.
//!
//! Network namespaces (`--netns-prefix P --netns-first-ip A`, hidden: for the chaos harness):
//! kv-N is started inside the existing network namespace `P<N>` (`/run/netns/P<N>`, as `ip netns
//! add` makes it) and binds address `A+N` there instead of `--bind-ip`, its ports unchanged. Who
//! made the namespaces (veths to a bridge the launcher can reach) also removes them; the
//! launcher only enters them (`setns(2)` in the child before `exec`, so the replica's pid is
//! still the launcher's child and nothing else of its environment changes). Each replica then
//! has a network stack of its own, which is what lets a harness cut the links between members
//! (firewall rules inside one namespace) while clients outside still reach every member.
//!
//! For fault injection (the chaos harness, or by hand) the launcher leaves a few files in the data
//! dir: `kv-N.pid` holds the replica's current pid, `logs/kv-N.log` its log, and while a file
//! `kv-N.hold` exists the launcher does not restart kv-N (a pod deleted and not yet recreated):
//! create it, kill the replica, wipe `kv-N/`, remove it, and kv-N comes back as a new member.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::api::health::READINESS;
use crate::tls::{Dialer, Port};

/// The cluster record's file name in the launcher's data dir.
pub const CLUSTER_RECORD_FILE: &str = "cluster-record.json";
/// The desired replica count's file name in the launcher's data dir.
pub const REPLICAS_FILE: &str = "replicas";
/// The running launcher's description, in its data dir.
pub const LAUNCHER_FILE: &str = "launcher.json";
/// The most replicas a local cluster can have (ports are base + 200 + ordinal).
pub const MAX_REPLICAS: u64 = 99;
/// How long a stopped replica may take to leave and exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to launch.
#[derive(Clone, Debug)]
pub struct LocalClusterSpec {
    pub replicas: u64,
    pub data_dir: PathBuf,
    pub base_port: u16,
    pub bind_ip: IpAddr,
    pub set: String,
    /// Extra flags for every replica.
    pub server_args: Vec<String>,
    pub json_logs: bool,
    /// Run each replica in a network namespace of its own (see the module docs).
    pub netns: Option<LocalNetns>,
    /// The longest wait before restarting a replica that keeps exiting (see [`supervise`]).
    pub restart_backoff_max: Duration,
}

/// The default of `--restart-backoff-max-ms`: a kubelet's cap is 5 minutes, but a laptop
/// cluster should come back within seconds of what ended its crash loop.
pub const DEFAULT_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where the replicas of a namespaced local cluster run: kv-N in the network namespace
/// `<prefix><N>` (`/run/netns/<prefix><N>`), bound to `first_ip + N`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LocalNetns {
    pub prefix: String,
    pub first_ip: Ipv4Addr,
}

impl LocalNetns {
    /// The namespace of replica `n`.
    pub fn name(&self, n: u64) -> String {
        format!("{}{n}", self.prefix)
    }

    /// The address replica `n` binds in its namespace.
    pub fn ip(&self, n: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first_ip).wrapping_add(n as u32))
    }
}

/// Why the launcher failed.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("the number of replicas (--replicas, or N of `local scale N`) must be between 1 and 99, got {0}")]
    Replicas(u64),
    #[error("--base-port {0} leaves no room for {1} replicas (needs ports up to base+200+N)")]
    Ports(u16, u64),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "--netns-first-ip {first} leaves no room for {replicas} replicas in its /24 (the last \
         address would be past .254)"
    )]
    NetnsAddresses { first: Ipv4Addr, replicas: u64 },
    #[error("cannot find this program to launch replicas: {0}")]
    SelfExe(std::io::Error),
    #[error(
        "no `kvset-server local` is running on {dir} ({why}); start one with \
         `kvset-server local --data-dir {dir}`"
    )]
    NoLauncher { dir: String, why: String },
    #[error(
        "the cluster did not reach {wanted} members within {waited:?}: {state}. See the replicas' \
         logs in {logs}"
    )]
    ScaleTimeout {
        wanted: u64,
        waited: Duration,
        state: String,
        logs: String,
    },
}

/// What a running launcher says about itself in [`LAUNCHER_FILE`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LauncherState {
    pub pid: u32,
    pub set: String,
    pub bind_ip: IpAddr,
    pub base_port: u16,
    /// Replicas running now (kv-0 … kv-(running-1)).
    pub running: u64,
    /// Set when each replica runs in a network namespace of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<LocalNetns>,
}

/// One replica's fixed parameters.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
    pub hold_file: PathBuf,
    /// The network namespace it runs in (`/run/netns/…`), if any.
    pub netns: Option<PathBuf>,
}

impl LocalClusterSpec {
    /// The replicas' names, addresses and files.
    pub fn replica_specs(&self) -> Result<Vec<ReplicaSpec>, LauncherError> {
        check_replicas(self.replicas)?;
        if u64::from(self.base_port) + 200 + self.replicas > u64::from(u16::MAX) {
            return Err(LauncherError::Ports(self.base_port, self.replicas));
        }
        if let Some(ns) = &self.netns {
            if u64::from(ns.first_ip.octets()[3]) + self.replicas > 255 {
                return Err(LauncherError::NetnsAddresses {
                    first: ns.first_ip,
                    replicas: self.replicas,
                });
            }
        }
        Ok((0..self.replicas).map(|n| self.replica_spec(n)).collect())
    }

    /// Replica `n`'s name, addresses and files.
    pub fn replica_spec(&self, n: u64) -> ReplicaSpec {
        let name = format!("{}-{n}", self.set);
        let ip = match &self.netns {
            Some(ns) => IpAddr::V4(ns.ip(n)),
            None => self.bind_ip,
        };
        let port =
            |offset: u64| SocketAddr::new(ip, (u64::from(self.base_port) + offset + n) as u16);
        ReplicaSpec {
            client: port(0),
            peer: port(100),
            metrics: port(200),
            data_dir: self.data_dir.join(&name),
            log_file: self.data_dir.join("logs").join(format!("{name}.log")),
            pid_file: self.data_dir.join(format!("{name}.pid")),
            hold_file: self.data_dir.join(format!("{name}.hold")),
            netns: self
                .netns
                .as_ref()
                .map(|ns| Path::new("/run/netns").join(ns.name(n))),
            name,
        }
    }

    /// The `--peers` list every replica gets.
    pub fn peers_flag(replicas: &[ReplicaSpec]) -> String {
        replicas
            .iter()
            .map(|r| format!("{}={}/{}", r.name, r.client, r.peer))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn check_replicas(n: u64) -> Result<(), LauncherError> {
    if n == 0 || n > MAX_REPLICAS {
        return Err(LauncherError::Replicas(n));
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LauncherError + '_ {
    move |source| LauncherError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One started replica: its supervisor and how to stop it.
struct Started {
    spec: ReplicaSpec,
    slot: Arc<tokio::sync::Mutex<Option<Child>>>,
    /// Set when this replica is to stay down (scaled away, or the launcher stops).
    stopping: Arc<AtomicBool>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Started {
    /// Sends SIGTERM to the replica's current process, if any.
    async fn terminate(&self) {
        if let Some(child) = self.slot.lock().await.as_ref() {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) with a pid we spawned and SIGTERM has no memory-safety impact.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
    }

    /// Waits until the process exited, killing it once `deadline` passes.
    async fn wait_exit(&self, deadline: Instant) {
        let mut guard = self.slot.lock().await;
        if let Some(child) = guard.as_mut() {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, child.wait()).await.is_err() {
                eprintln!("  {} did not stop in time; killing it", self.spec.name);
                let _ = child.kill().await;
            }
        }
    }
}

/// Runs the local cluster until `shutdown` resolves.
pub async fn run(
    spec: LocalClusterSpec,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LauncherError> {
    let initial = spec.replica_specs()?;
    std::fs::create_dir_all(spec.data_dir.join("logs")).map_err(io_err(&spec.data_dir))?;
    let exe = std::env::current_exe().map_err(LauncherError::SelfExe)?;
    let replicas_file = spec.data_dir.join(REPLICAS_FILE);
    crate::volume::write_atomically(&replicas_file, format!("{}\n", spec.replicas).as_bytes())
        .map_err(io_err(&replicas_file))?;
    let mut state = LauncherState {
        pid: std::process::id(),
        set: spec.set.clone(),
        bind_ip: spec.bind_ip,
        base_port: spec.base_port,
        running: 0,
        netns: spec.netns.clone(),
    };
    write_state(&spec, &state)?;
    // The `--peers` list covers every ordinal that ran or is wanted (see `replica_args`).
    let width = Arc::new(AtomicU64::new(spec.replicas));

    println!(
        "kvset local cluster: {} replicas, data in {}",
        initial.len(),
        spec.data_dir.display()
    );
    for r in &initial {
        println!(
            "  {:<6} client {:<21} peer {:<21} metrics http://{}/metrics  data {}  log {}",
            r.name,
            r.client,
            r.peer,
            r.metrics,
            r.data_dir.display(),
            r.log_file.display()
        );
    }

    let mut started: Vec<Started> = Vec::new();
    let scaler = async {
        let mut announced = false;
        loop {
            let desired = match crate::replicas::read_file(&replicas_file) {
                Ok(n) if (1..=MAX_REPLICAS).contains(&n) => n,
                Ok(n) => {
                    eprintln!(
                        "  {}: {n} replicas is out of range (1..={MAX_REPLICAS}); ignored",
                        replicas_file.display()
                    );
                    started.len() as u64
                }
                Err(_) => started.len() as u64,
            };
            let running = started.len() as u64;
            if desired > running {
                width.fetch_max(desired, Ordering::SeqCst);
                let r = spec.replica_spec(running);
                if running >= spec.replicas || announced {
                    println!("  scaling up: starting {}", r.name);
                }
                let slot = Arc::new(tokio::sync::Mutex::new(None));
                let stopping = Arc::new(AtomicBool::new(false));
                let supervisor = tokio::spawn(supervise(
                    exe.clone(),
                    spec.clone(),
                    width.clone(),
                    r.clone(),
                    slot.clone(),
                    stopping.clone(),
                ));
                started.push(Started {
                    spec: r.clone(),
                    slot,
                    stopping,
                    supervisor,
                });
                wait_ready(&r).await;
                println!("  {} is ready", r.name);
                state.running = started.len() as u64;
                let _ = write_state(&spec, &state);
            } else if desired < running {
                let last = started.pop().expect("running > desired >= 1");
                println!(
                    "  scaling down: stopping {} (it leaves the cluster)",
                    last.spec.name
                );
                last.stopping.store(true, Ordering::SeqCst);
                last.terminate().await;
                last.wait_exit(Instant::now() + STOP_TIMEOUT).await;
                last.supervisor.abort();
                let _ = std::fs::remove_file(&last.spec.pid_file);
                println!("  {} stopped", last.spec.name);
                state.running = started.len() as u64;
                let _ = write_state(&spec, &state);
            } else {
                if !announced {
                    let endpoints = started
                        .iter()
                        .map(|r| r.spec.client.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    println!("cluster ready. Try: kvsetctl --endpoints {endpoints} status");
                    announced = true;
                }
                sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::pin!(shutdown);
    tokio::select! {
        _ = scaler => {}
        _ = shutdown.as_mut() => {}
    }

    println!("stopping the local cluster");
    let _ = std::fs::remove_file(spec.data_dir.join(LAUNCHER_FILE));
    for r in &started {
        r.stopping.store(true, Ordering::SeqCst);
    }
    for r in started.iter().rev() {
        r.terminate().await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for r in &started {
        r.wait_exit(deadline).await;
    }
    for r in &started {
        r.supervisor.abort();
        let _ = std::fs::remove_file(&r.spec.pid_file);
    }
    println!("stopped");
    Ok(())
}

fn write_state(spec: &LocalClusterSpec, state: &LauncherState) -> Result<(), LauncherError> {
    let path = spec.data_dir.join(LAUNCHER_FILE);
    let json = serde_json::to_vec_pretty(state).expect("launcher state serializes");
    crate::volume::write_atomically(&path, &json).map_err(io_err(&path))
}

/// Reads the state of the launcher running on `data_dir`, checking that it still runs.
pub fn running_launcher(data_dir: &Path) -> Result<LauncherState, LauncherError> {
    let dir = data_dir.display().to_string();
    let path = data_dir.join(LAUNCHER_FILE);
    let text = std::fs::read(&path).map_err(|e| LauncherError::NoLauncher {
        dir: dir.clone(),
        why: format!("{}: {e}", path.display()),
    })?;
    let state: LauncherState =
        serde_json::from_slice(&text).map_err(|e| LauncherError::NoLauncher {
            dir: dir.clone(),
            why: format!("{} is unreadable: {e}", path.display()),
        })?;
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(state.pid as i32, 0) } == 0;
    if !alive {
        return Err(LauncherError::NoLauncher {
            dir,
            why: format!("its launcher, pid {}, is gone", state.pid),
        });
    }
    Ok(state)
}

/// `kvset-server local scale N`: sets the desired count of the launcher running on `data_dir`
/// and waits, up to `timeout`, until it runs N replicas and the cluster's membership is exactly
/// kv-0 … kv-(N-1), all voters. Returns a summary line.
pub async fn scale(
    data_dir: &Path,
    replicas: u64,
    timeout: Duration,
) -> Result<String, LauncherError> {
    check_replicas(replicas)?;
    let state = running_launcher(data_dir)?;
    if u64::from(state.base_port) + 200 + replicas > u64::from(u16::MAX) {
        return Err(LauncherError::Ports(state.base_port, replicas));
    }
    let path = data_dir.join(REPLICAS_FILE);
    crate::volume::write_atomically(&path, format!("{replicas}\n").as_bytes())
        .map_err(io_err(&path))?;
    println!(
        "scaling the local cluster on {} from {} to {replicas} replicas",
        data_dir.display(),
        state.running
    );
    let spec = LocalClusterSpec {
        replicas,
        data_dir: data_dir.to_path_buf(),
        base_port: state.base_port,
        bind_ip: state.bind_ip,
        set: state.set.clone(),
        server_args: Vec::new(),
        json_logs: false,
        netns: state.netns.clone(),
        restart_backoff_max: DEFAULT_RESTART_BACKOFF_MAX,
    };
    let wanted: Vec<u64> = (0..replicas).collect();
    let started = Instant::now();
    let mut last_seen = String::from("no member answered yet");
    loop {
        let running = running_launcher(data_dir)?.running;
        let members = membership(&spec, running.max(replicas)).await;
        if let Some(members) = &members {
            let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
            let all_voters = members.iter().all(|m| m.voter);
            let names = members
                .iter()
                .map(|m| format!("{}{}", m.name, if m.voter { "" } else { " (learner)" }))
                .collect::<Vec<_>>()
                .join(", ");
            last_seen = format!("the launcher runs {running}, the membership is [{names}]");
            if ids == wanted && all_voters && running == replicas {
                return Ok(format!(
                    "scaled to {replicas}: members {names} (took {:.1} s)",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        if started.elapsed() >= timeout {
            return Err(LauncherError::ScaleTimeout {
                wanted: replicas,
                waited: timeout,
                state: last_seen,
                logs: data_dir.join("logs").display().to_string(),
            });
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// The membership as the leader reports it (asking kv-0 … kv-(upto-1) who leads), sorted by id.
async fn membership(spec: &LocalClusterSpec, upto: u64) -> Option<Vec<kvset_proto::v1::Member>> {
    use kvset_proto::v1::cluster_client::ClusterClient;
    use kvset_proto::v1::{MembersRequest, StatusRequest};
    let dialer = Dialer::plain();
    let client = |n: u64| {
        dialer
            .connect_lazy(
                Port::Client,
                &spec.replica_spec(n).client.to_string(),
                Duration::from_millis(500),
            )
            .ok()
            .map(ClusterClient::new)
    };
    let call = Duration::from_secs(2);
    for n in 0..upto {
        let Some(mut c) = client(n) else { continue };
        let Ok(Ok(status)) = tokio::time::timeout(call, c.status(StatusRequest {})).await else {
            continue;
        };
        let Some(leader) = status.into_inner().leader_id else {
            continue;
        };
        let mut c = client(leader)?;
        let resp = tokio::time::timeout(call, c.members(MembersRequest {}))
            .await
            .ok()?
            .ok()?;
        let mut members = resp.into_inner().members;
        members.sort_by_key(|m| m.id);
        return Some(members);
    }
    None
}

fn replica_args(r: &ReplicaSpec, peers: &str, spec: &LocalClusterSpec) -> Vec<String> {
    let mut args = vec![
        "serve".to_string(),
        format!(
            "--replicas-from=file:{}",
            spec.data_dir.join(REPLICAS_FILE).display()
        ),
        format!("--pod-name={}", r.name),
        format!("--data-dir={}", r.data_dir.display()),
        format!("--client-listen={}", r.client),
        format!("--peer-listen={}", r.peer),
        format!("--metrics-listen={}", r.metrics),
        format!("--peers={peers}"),
        format!(
            "--cluster-record=file:{}",
            spec.data_dir.join(CLUSTER_RECORD_FILE).display()
        ),
        format!(
            "--log-format={}",
            if spec.json_logs { "json" } else { "text" }
        ),
    ];
    args.extend(spec.server_args.iter().cloned());
    args
}

/// Keeps one replica running: start, wait for exit, back off, restart (unless held or stopping).
/// Its `--peers` list is made at every start, over the `width` ordinals that ran or are wanted.
///
/// The back-off is a kubelet's CrashLoopBackOff in miniature: 500 ms, doubling for a replica
/// that exits again within 30 s of its start, up to `spec.restart_backoff_max` (10 s by
/// default). A soak that kills members every few seconds lowers the cap to fit more faults in
/// an hour.
async fn supervise(
    exe: PathBuf,
    spec: LocalClusterSpec,
    width: Arc<AtomicU64>,
    r: ReplicaSpec,
    slot: Arc<tokio::sync::Mutex<Option<Child>>>,
    stopping: Arc<AtomicBool>,
) {
    let first_backoff = Duration::from_millis(500).min(spec.restart_backoff_max);
    let mut backoff = first_backoff;
    loop {
        while r.hold_file.exists() && !stopping.load(Ordering::SeqCst) {
            sleep(Duration::from_millis(100)).await;
        }
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let peers: Vec<ReplicaSpec> = (0..width.load(Ordering::SeqCst))
            .map(|n| spec.replica_spec(n))
            .collect();
        let args = replica_args(&r, &LocalClusterSpec::peers_flag(&peers), &spec);
        let started = Instant::now();
        match spawn_replica(&exe, &args, &r) {
            Ok(child) => {
                if let Some(pid) = child.id() {
                    let _ = std::fs::write(&r.pid_file, format!("{pid}\n"));
                }
                *slot.lock().await = Some(child);
            }
            Err(e) => {
                eprintln!("  {}: cannot start: {e}", r.name);
                sleep(backoff).await;
                continue;
            }
        }
        // Wait for the exit without holding the lock, so shutdown can signal the child.
        let status = loop {
            let mut guard = slot.lock().await;
            match guard.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => break Some(status),
                Some(Ok(None)) => {}
                _ => break None,
            }
            drop(guard);
            sleep(Duration::from_millis(100)).await;
        };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = first_backoff;
        }
        let how = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown status".into());
        eprintln!(
            "  {} exited ({how}); restarting in {:?} with the same identity and data",
            r.name, backoff
        );
        sleep(backoff).await;
        backoff = (backoff * 2).min(spec.restart_backoff_max);
    }
}

/// Starts one replica; with `r.netns`, inside that network namespace (entered by the child
/// between fork and exec, so the replica is still our child and keeps our mount namespace).
fn spawn_replica(exe: &Path, args: &[String], r: &ReplicaSpec) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&r.log_file)?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    // Opened here, in the parent, so that a missing namespace is an error with its path; the
    // descriptor lives until the spawn returns (the child enters it before exec).
    let ns = r
        .netns
        .as_deref()
        .map(|path| {
            std::fs::File::open(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("network namespace {}: {e}", path.display()),
                )
            })
        })
        .transpose()?;
    if let Some(ns) = &ns {
        use std::os::fd::AsRawFd as _;
        let fd = ns.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
        // which is async-signal-safe, on a descriptor that stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    cmd.spawn()
}

/// Polls the replica's readiness health check until it serves.
pub async fn wait_ready(r: &ReplicaSpec) {
    let dialer = Dialer::plain();
    let Ok(channel) = dialer.connect_lazy(
        Port::Client,
        &r.client.to_string(),
        Duration::from_millis(500),
    ) else {
        return;
    };
    let mut client = HealthClient::new(channel);
    loop {
        let req = HealthCheckRequest {
            service: READINESS.to_string(),
        };
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(1), client.check(req)).await
        {
            if resp.into_inner().status == ServingStatus::Serving as i32 {
                return;
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_paths_follow_the_base_port() {
        let spec = LocalClusterSpec {
            replicas: 3,
            data_dir: "/tmp/d".into(),
            base_port: 7379,
            bind_ip: "127.0.0.1".parse().unwrap(),
            set: "kv".into(),
            server_args: vec![],
            json_logs: false,
            netns: None,
            restart_backoff_max: DEFAULT_RESTART_BACKOFF_MAX,
        };
        let r = spec.replica_specs().unwrap();
        assert_eq!(r[2].name, "kv-2");
        assert_eq!(r[2].client.to_string(), "127.0.0.1:7381");
        assert_eq!(r[2].peer.to_string(), "127.0.0.1:7481");
        assert_eq!(r[1].data_dir, PathBuf::from("/tmp/d/kv-1"));
        assert_eq!(
            LocalClusterSpec::peers_flag(&r[..2]),
            "kv-0=127.0.0.1:7379/127.0.0.1:7479,kv-1=127.0.0.1:7380/127.0.0.1:7480"
        );
        // The cluster record lives beside the replicas' data dirs, not inside kv-0's.
        let args = replica_args(&r[0], "", &spec);
        assert!(
            args.contains(&"--cluster-record=file:/tmp/d/cluster-record.json".to_string()),
            "{args:?}"
        );
        assert!(!Path::new("/tmp/d/cluster-record.json").starts_with(&r[0].data_dir));
        assert!(LocalClusterSpec {
            replicas: 0,
            ..spec.clone()
        }
        .replica_specs()
        .is_err());
        assert!(LocalClusterSpec {
            base_port: 65400,
            ..spec.clone()
        }
        .replica_specs()
        .is_err());
        assert_eq!(r[1].netns, None);
    }

    #[test]
    fn namespaced_replicas_bind_their_own_address_in_their_own_namespace() {
        let spec = LocalClusterSpec {
            replicas: 3,
            data_dir: "/tmp/d".into(),
            base_port: 7379,
            bind_ip: "127.0.0.1".parse().unwrap(),
            set: "kv".into(),
            server_args: vec![],
            json_logs: false,
            netns: Some(LocalNetns {
                prefix: "kvsnt7n".into(),
                first_ip: "10.213.7.10".parse().unwrap(),
            }),
            restart_backoff_max: DEFAULT_RESTART_BACKOFF_MAX,
        };
        let r = spec.replica_specs().unwrap();
        assert_eq!(r[2].client.to_string(), "10.213.7.12:7381");
        assert_eq!(r[2].peer.to_string(), "10.213.7.12:7481");
        assert_eq!(r[0].metrics.to_string(), "10.213.7.10:7579");
        assert_eq!(r[1].netns, Some(PathBuf::from("/run/netns/kvsnt7n1")));
        assert_eq!(
            LocalClusterSpec::peers_flag(&r[..2]),
            "kv-0=10.213.7.10:7379/10.213.7.10:7479,kv-1=10.213.7.11:7380/10.213.7.11:7480"
        );
        // The last replica's address must stay inside the /24.
        let mut tight = spec.clone();
        tight.netns = Some(LocalNetns {
            prefix: "p".into(),
            first_ip: "10.213.7.253".parse().unwrap(),
        });
        assert!(matches!(
            tight.replica_specs(),
            Err(LauncherError::NetnsAddresses { .. })
        ));
        // The launcher's state names the namespaces, so `local scale` reaches the members.
        let state = LauncherState {
            pid: 1,
            set: "kv".into(),
            bind_ip: spec.bind_ip,
            base_port: 7379,
            running: 3,
            netns: spec.netns.clone(),
        };
        let back: LauncherState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
        let old: LauncherState = serde_json::from_str(
            r#"{"pid":1,"set":"kv","bind_ip":"127.0.0.1","base_port":7379,"running":3}"#,
        )
        .unwrap();
        assert_eq!(old.netns, None);
    }
}
