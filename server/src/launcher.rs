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
//! For fault injection (the chaos harness, or by hand) the launcher leaves a few files in the data
//! dir: `kv-N.pid` holds the replica's current pid, `logs/kv-N.log` its log, and while a file
//! `kv-N.hold` exists the launcher does not restart kv-N (a pod deleted and not yet recreated):
//! create it, kill the replica, wipe `kv-N/`, remove it, and kv-N comes back as a new member.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// Why the launcher failed.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("--replicas must be between 1 and 99, got {0}")]
    Replicas(u64),
    #[error("--base-port {0} leaves no room for {1} replicas (needs ports up to base+200+N)")]
    Ports(u16, u64),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot find this program to launch replicas: {0}")]
    SelfExe(std::io::Error),
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
}

impl LocalClusterSpec {
    /// The replicas' names, addresses and files.
    pub fn replica_specs(&self) -> Result<Vec<ReplicaSpec>, LauncherError> {
        if self.replicas == 0 || self.replicas > 99 {
            return Err(LauncherError::Replicas(self.replicas));
        }
        if u64::from(self.base_port) + 200 + self.replicas > u64::from(u16::MAX) {
            return Err(LauncherError::Ports(self.base_port, self.replicas));
        }
        Ok((0..self.replicas)
            .map(|n| {
                let name = format!("{}-{n}", self.set);
                let port = |offset: u64| {
                    SocketAddr::new(
                        self.bind_ip,
                        (u64::from(self.base_port) + offset + n) as u16,
                    )
                };
                ReplicaSpec {
                    client: port(0),
                    peer: port(100),
                    metrics: port(200),
                    data_dir: self.data_dir.join(&name),
                    log_file: self.data_dir.join("logs").join(format!("{name}.log")),
                    pid_file: self.data_dir.join(format!("{name}.pid")),
                    hold_file: self.data_dir.join(format!("{name}.hold")),
                    name,
                }
            })
            .collect())
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LauncherError + '_ {
    move |source| LauncherError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Runs the local cluster until `shutdown` resolves.
pub async fn run(
    spec: LocalClusterSpec,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LauncherError> {
    let replicas = spec.replica_specs()?;
    std::fs::create_dir_all(spec.data_dir.join("logs")).map_err(io_err(&spec.data_dir))?;
    let exe = std::env::current_exe().map_err(LauncherError::SelfExe)?;
    let peers = LocalClusterSpec::peers_flag(&replicas);
    let stopping = Arc::new(AtomicBool::new(false));

    println!(
        "kvset local cluster: {} replicas, data in {}",
        replicas.len(),
        spec.data_dir.display()
    );
    for r in &replicas {
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
    let endpoints = replicas
        .iter()
        .map(|r| r.client.to_string())
        .collect::<Vec<_>>()
        .join(",");

    let mut supervisors = Vec::new();
    let mut children: Vec<Arc<tokio::sync::Mutex<Option<Child>>>> = Vec::new();
    let startup = async {
        for r in &replicas {
            let slot = Arc::new(tokio::sync::Mutex::new(None));
            let args = replica_args(r, &peers, &spec);
            supervisors.push(tokio::spawn(supervise(
                exe.clone(),
                args,
                r.clone(),
                slot.clone(),
                stopping.clone(),
            )));
            children.push(slot);
            wait_ready(r).await;
            println!("  {} is ready", r.name);
        }
        println!("cluster ready. Try: kvsetctl --endpoints {endpoints} status");
    };
    tokio::pin!(shutdown);
    tokio::select! {
        _ = startup => { shutdown.as_mut().await; }
        _ = shutdown.as_mut() => {}
    }

    println!("stopping the local cluster");
    stopping.store(true, Ordering::SeqCst);
    for slot in children.iter().rev() {
        if let Some(child) = slot.lock().await.as_ref() {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) with a pid we spawned and SIGTERM has no memory-safety impact.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for slot in &children {
        let mut guard = slot.lock().await;
        if let Some(child) = guard.as_mut() {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
    for s in supervisors {
        s.abort();
    }
    for r in &replicas {
        let _ = std::fs::remove_file(&r.pid_file);
    }
    println!("stopped");
    Ok(())
}

fn replica_args(r: &ReplicaSpec, peers: &str, spec: &LocalClusterSpec) -> Vec<String> {
    let mut args = vec![
        "serve".to_string(),
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
async fn supervise(
    exe: PathBuf,
    args: Vec<String>,
    r: ReplicaSpec,
    slot: Arc<tokio::sync::Mutex<Option<Child>>>,
    stopping: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        while r.hold_file.exists() && !stopping.load(Ordering::SeqCst) {
            sleep(Duration::from_millis(100)).await;
        }
        if stopping.load(Ordering::SeqCst) {
            return;
        }
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
            backoff = Duration::from_millis(500);
        }
        let how = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown status".into());
        eprintln!(
            "  {} exited ({how}); restarting in {:?} with the same identity and data",
            r.name, backoff
        );
        sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn spawn_replica(exe: &Path, args: &[String], r: &ReplicaSpec) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&r.log_file)?;
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
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
            ..spec
        }
        .replica_specs()
        .is_err());
    }
}
