//! The `process` backend: the local launcher (`kvset-server local`) as a child of the harness.
//!
//! The launcher runs kv-0..kv-(N-1) on one loopback address, restarts a replica that dies (with
//! the same identity and data, after a back-off of 0.5 s that doubles while it keeps dying), and
//! documents three files per replica in its data dir that this backend injects faults through:
//!
//! * `kv-N.pid`: the replica's current pid. Signals go to that pid, and only after checking
//!   (on Linux, through `/proc`) that the process is a child of *our* launcher, so a stale pid
//!   file can never make the harness signal an unrelated process.
//! * `kv-N.hold`: while it exists the launcher does not restart kv-N (a deleted pod not yet
//!   recreated). A wipe is: create the hold, kill -9, wait until the process is gone, delete
//!   `kv-N/`, and (after the planned down time) remove the hold: kv-N comes back with an empty
//!   volume and must rejoin.
//! * `logs/kv-N.log`: the replica's log, copied into the run's `logs/` at the end.
//!
//! With `small_disks_mb` set (the `disk-full` fault asks for it), each `kv-N/` is a tmpfs of
//! that size, mounted before the launcher starts and unmounted at teardown (root needed). A
//! disk-full fault writes a filler file into it until the filesystem is full; the member then
//! fails its next write, stops on the storage failure and is restarted by the launcher, failing
//! again until the filler is removed at the end of the hold, when it comes back and catches up.
//!
//! With `power_disks` set (the `power-loss` faults ask for it), each `kv-N/` is a kvset-powerfs
//! mount of its own (`tests/powerfs`: a FUSE filesystem served by this process that keeps every
//! write not yet fsynced in memory), its durable state in `kv-N.powerfs/` beside it; mounted
//! before the launcher starts, unmounted at teardown after the replicas are gone (root and
//! `/dev/fuse` needed). A power cut is the wipe's sequence with `cut_power()` in place of the
//! `rm -rf`: hold, kill -9, wait until the process is gone (so nothing it wrote can land after
//! the cut), drop what was not durable, and, once the fault says so, remove the hold: the member
//! starts on exactly what it had made durable. The two kinds of small filesystems exclude each
//! other (a filler file on kvset-powerfs would fill the disk under its backing directory).
//!
//! # Two network modes
//!
//! * **loopback** (the default, and the fallback of `--network auto`): every member listens on
//!   the run's own loopback address. Nothing sits between two members, so a partition cannot be
//!   made: the backend says so and the schedule leaves partitions out. Needs nothing.
//! * **namespaces** (`--network netns`, or `auto` where it works; root): the harness builds a
//!   network of its own ([`super::netns`]: one network namespace per member, veth pairs to a
//!   bridge, addresses in 10.213.X.0/24) before the launcher starts, and passes it
//!   `--netns-prefix`/`--netns-first-ip`, so kv-N runs in its namespace bound to its own address.
//!   A partition is then firewall rules inside members' namespaces: `partition` isolates one
//!   member from its peers (clients, on the bridge's address, still reach it),
//!   `partition-leader` cuts the leader and a minority from the majority, `partition-one-way`
//!   drops only what one member sends to its peers, and `latency` delays what one member sends
//!   (`tc netem`, when the kernel has `sch_netem`; otherwise reported unsupported). Teardown
//!   (and drop) removes the network after the replicas are gone.
//!
//! [`Backend::network`] says which mode ran, for the report. Pause is SIGSTOP/SIGCONT in both.
//!
//! The backend never leaves processes behind: teardown (and drop, for a panicking or interrupted
//! run) holds every replica, kills it, and stops the launcher. The launcher leads a process
//! group of its own (its pid is written to `<data>/launcher.pid`), so a Ctrl-C at the terminal
//! reaches only the harness, and an emergency stop is one `kill -9 -<pgid>`.

use std::collections::HashMap;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvset_powerfs::PowerFs;

use super::netns::{LinkCut, Netns};
use super::{
    fill_until_full, is_mount_point, is_root, unsupported, Backend, BackendError, MemberInfo,
    WaitReady,
};
use crate::chaos::faults::FaultKind;

/// Why loopback mode cannot cut links.
const LOOPBACK_CANNOT_CUT: &str = "in loopback mode every member of the local launcher listens \
     on one loopback address and nothing sits between them, so links cannot be cut (run as root \
     with --network netns, or use --backend docker)";

/// Flags every replica gets unless the user overrides them (a later flag wins): Raft timing
/// that fails over within about a second, and a short shutdown grace so graceful restarts do
/// not stall the schedule.
pub const DEFAULT_SERVER_ARGS: &[&str] = &[
    "--heartbeat-ms=100",
    "--election-timeout-min-ms=400",
    "--election-timeout-max-ms=600",
    "--shutdown-grace-secs=5",
];

/// How to launch the local cluster.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The `kvset-server` binary.
    pub server_bin: PathBuf,
    /// The launcher's `--data-dir` (one `kv-N/` per replica, plus pid, hold and log files).
    pub data_dir: PathBuf,
    /// Where the launcher's own output goes.
    pub launcher_log: PathBuf,
    /// Number of replicas.
    pub replicas: usize,
    /// Loopback address every replica binds.
    pub bind_ip: Ipv4Addr,
    /// kv-N serves clients on `base_port + N` and peers on `base_port + 100 + N`.
    pub base_port: u16,
    /// Flags for every replica (after [`DEFAULT_SERVER_ARGS`]).
    pub server_args: Vec<String>,
    /// Put each replica's data dir on a tmpfs of this many MiB (for `disk-full`; needs root).
    pub small_disks_mb: Option<u64>,
    /// Put each replica's data dir on a kvset-powerfs mount of its own (for `power-loss`;
    /// needs root and `/dev/fuse`). Not together with `small_disks_mb`.
    pub power_disks: bool,
    /// The launcher's cap on its restart back-off (None: the launcher's default).
    pub restart_backoff_max: Option<Duration>,
    /// How the members are networked.
    pub network: ProcessNetwork,
}

/// How the process backend's members are networked (see the module docs).
#[derive(Debug, Clone)]
pub enum ProcessNetwork {
    /// One loopback address for every member; no partitions.
    Loopback {
        /// Why namespaces were not used, when they were asked for (`--network auto`).
        why: Option<String>,
    },
    /// A network namespace per member, on a bridge; removed when the last clone is dropped
    /// (and at teardown).
    Namespaces(Arc<Netns>),
}

impl Default for ProcessNetwork {
    fn default() -> Self {
        ProcessNetwork::Loopback { why: None }
    }
}

impl ProcessNetwork {
    /// The member network, in namespace mode.
    pub fn namespaces(&self) -> Option<&Netns> {
        match self {
            ProcessNetwork::Namespaces(n) => Some(n),
            ProcessNetwork::Loopback { .. } => None,
        }
    }
}

/// How long `latency` delays every packet a member sends.
pub const LATENCY_MS: u64 = 200;

/// The file a disk-full fault fills a member's filesystem with.
const DISK_FILLER: &str = "chaos-disk-filler";

/// The local launcher and its replicas.
pub struct ProcessBackend {
    config: ProcessConfig,
    launcher: Mutex<Option<Child>>,
    /// Pids frozen by `pause`, by ordinal, so `resume` thaws the process it froze.
    paused: Mutex<HashMap<usize, i32>>,
    /// The members' kvset-powerfs mounts, by ordinal (with `power_disks`).
    power: Mutex<HashMap<usize, PowerFs>>,
}

impl ProcessBackend {
    /// A backend for `config`; nothing is started yet.
    pub fn new(config: ProcessConfig) -> ProcessBackend {
        ProcessBackend {
            config,
            launcher: Mutex::new(None),
            paused: Mutex::new(HashMap::new()),
            power: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    fn name_of(&self, member: usize) -> String {
        format!("kv-{member}")
    }

    fn pid_file(&self, member: usize) -> PathBuf {
        self.config.data_dir.join(format!("kv-{member}.pid"))
    }

    fn hold_file(&self, member: usize) -> PathBuf {
        self.config.data_dir.join(format!("kv-{member}.hold"))
    }

    fn member_dir(&self, member: usize) -> PathBuf {
        self.config.data_dir.join(format!("kv-{member}"))
    }

    fn launcher_pid(&self) -> Option<i32> {
        let guard = self.launcher.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|c| c.id() as i32)
    }

    /// The member's current pid, checked to be a live child of our launcher.
    fn pid_of(&self, member: usize) -> Result<i32, BackendError> {
        let path = self.pid_file(member);
        let no_process = |detail: String| BackendError::NoProcess {
            member: self.name_of(member),
            detail,
        };
        let text = fs::read_to_string(&path)
            .map_err(|e| no_process(format!("cannot read {}: {e}", path.display())))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| no_process(format!("{} holds {text:?}", path.display())))?;
        let launcher = self
            .launcher_pid()
            .ok_or_else(|| no_process("the launcher is not running".into()))?;
        match proc_state(pid) {
            ProcState::Running { ppid } if ppid == launcher => Ok(pid),
            ProcState::Running { ppid } => Err(no_process(format!(
                "pid {pid} belongs to parent {ppid}, not to our launcher {launcher}"
            ))),
            ProcState::Gone => Err(no_process(format!(
                "pid {pid} has exited (the launcher is restarting it)"
            ))),
            ProcState::Unknown => Ok(pid),
        }
    }

    fn signal(&self, member: usize, signal: i32) -> Result<i32, BackendError> {
        let pid = self.pid_of(member)?;
        send_signal(pid, signal).map_err(|e| BackendError::NoProcess {
            member: self.name_of(member),
            detail: format!("kill({pid}, {signal}): {e}"),
        })?;
        Ok(pid)
    }

    fn launcher_log_tail(&self) -> String {
        let text = fs::read_to_string(&self.config.launcher_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Holds every replica, kills it, and stops the launcher; then removes the member network.
    /// Idempotent.
    fn shutdown(&self) {
        self.stop_launcher();
        if let Some(net) = self.config.network.namespaces() {
            net.teardown();
        }
        self.unmount_small_disks();
        // After the replicas are gone (they hold files there); dropping a mount unmounts it.
        self.power.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn stop_launcher(&self) {
        let Some(launcher_pid) = self.launcher_pid() else {
            return;
        };
        for m in 0..self.config.replicas {
            let _ = fs::write(self.hold_file(m), b"teardown\n");
        }
        // One supervisor loop (100 ms) so that no replica is being spawned right now.
        std::thread::sleep(Duration::from_millis(250));
        for m in 0..self.config.replicas {
            if let Ok(pid) = self.pid_of(m) {
                let _ = send_signal(pid, libc::SIGCONT);
                let _ = send_signal(pid, libc::SIGKILL);
            }
        }
        let _ = send_signal(launcher_pid, libc::SIGTERM);
        let mut guard = self.launcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(child) = guard.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        *guard = None;
        // Anything left in the group (a replica spawned at the last moment) goes too.
        let _ = send_signal_group(launcher_pid, libc::SIGKILL);
        unregister_group(launcher_pid);
        let _ = fs::remove_file(self.config.data_dir.join("launcher.pid"));
        for m in 0..self.config.replicas {
            let _ = fs::remove_file(self.hold_file(m));
        }
    }
}

/// Process groups of launchers this process started and has not torn down yet.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn register_group(pgid: i32) {
    GROUPS.lock().unwrap_or_else(|p| p.into_inner()).push(pgid);
}

fn unregister_group(pgid: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|g| *g != pgid);
}

/// Emergency stop: kill -9 every launcher this process started, with all its replicas (each
/// launcher leads a process group of its own). For an exit that cannot tear down in order
/// (a second Ctrl-C).
pub fn kill_all_launchers() {
    let groups: Vec<i32> = GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for pgid in groups {
        let _ = send_signal_group(pgid, libc::SIGCONT);
        let _ = send_signal_group(pgid, libc::SIGKILL);
    }
}

/// kill -9 a launcher's whole process group, given the group id (its pid, as written to
/// `<data>/launcher.pid`). For tests that had to kill the harness itself.
pub fn kill_launcher_group(pgid: i32) -> std::io::Result<()> {
    send_signal_group(pgid, libc::SIGKILL)
}

fn send_signal_group(pgid: i32, signal: i32) -> std::io::Result<()> {
    if pgid <= 1 {
        return Err(std::io::Error::other(format!(
            "refusing to signal process group {pgid}"
        )));
    }
    // SAFETY: kill(2) with a negative pid signals a process group; pgid > 1 is the group of a
    // launcher this harness started (it leads its own group).
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn members(&self) -> Vec<MemberInfo> {
        (0..self.config.replicas)
            .map(|n| MemberInfo {
                name: format!("kv-{n}"),
                endpoint: format!(
                    "{}:{}",
                    self.member_ip(n),
                    usize::from(self.config.base_port) + n
                ),
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "{} local --replicas {} --data-dir {} --bind-ip {} --base-port {} {}{}",
            self.config.server_bin.display(),
            self.config.replicas,
            self.config.data_dir.display(),
            self.config.bind_ip,
            self.config.base_port,
            self.netns_flags()
                .iter()
                .chain(&self.backoff_flag())
                .map(|f| format!("{f} "))
                .collect::<String>(),
            self.server_args()
                .iter()
                .map(|a| format!("--server-arg={a}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    fn scale(&self, replicas: usize) -> Result<(), BackendError> {
        let mut cmd = Command::new(&self.config.server_bin);
        cmd.args(["local", "scale", &replicas.to_string()])
            .arg(format!("--data-dir={}", self.config.data_dir.display()))
            .args(["--timeout-secs", "120"])
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        let out = cmd.output().map_err(|e| BackendError::Command {
            command: format!("kvset-server local scale {replicas}"),
            detail: e.to_string(),
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(BackendError::Command {
            command: format!("kvset-server local scale {replicas}"),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }

    fn network(&self) -> Option<String> {
        Some(match &self.config.network {
            ProcessNetwork::Namespaces(net) => format!("namespaces: {}", net.describe()),
            ProcessNetwork::Loopback { why: None } => {
                format!("loopback: every member on {}", self.config.bind_ip)
            }
            ProcessNetwork::Loopback { why: Some(why) } => format!(
                "loopback: every member on {} (namespaces unavailable: {why})",
                self.config.bind_ip
            ),
        })
    }

    fn shaped_network_unsupported(&self) -> Option<String> {
        match self.config.network.namespaces() {
            Some(_) => None,
            None => Some(LOOPBACK_CANNOT_CUT.into()),
        }
    }

    fn unsupported(&self, kind: FaultKind) -> Option<String> {
        let net = self.config.network.namespaces();
        match kind {
            FaultKind::Partition | FaultKind::PartitionLeader | FaultKind::PartitionOneWay
                if net.is_none() =>
            {
                Some(LOOPBACK_CANNOT_CUT.into())
            }
            FaultKind::Latency => match net {
                None => Some(LOOPBACK_CANNOT_CUT.into()),
                Some(n) if !n.has_netem() => Some(
                    "latency: unsupported (no sch_netem): this kernel cannot add delay with tc \
                     netem"
                        .into(),
                ),
                Some(_) => None,
            },
            FaultKind::DiskFull if self.config.small_disks_mb.is_none() => {
                Some("the members' data dirs are not on small filesystems".into())
            }
            FaultKind::DiskFull if !is_root() => {
                Some("a small filesystem per member is a tmpfs mount, which needs root".into())
            }
            FaultKind::PowerLoss | FaultKind::PowerLossAll if !self.config.power_disks => {
                Some("the members' data dirs are not on kvset-powerfs".into())
            }
            FaultKind::PowerLoss | FaultKind::PowerLossAll => kvset_powerfs::unavailable_reason()
                .map(|why| format!("kvset-powerfs cannot be mounted here: {why}")),
            _ => None,
        }
    }

    fn start(&self, _wait_ready: &WaitReady<'_>) -> Result<(), BackendError> {
        let bin = &self.config.server_bin;
        if !bin.exists() {
            return Err(BackendError::Setup(format!(
                "kvset-server not found at {}: build it (cargo build --bins) or pass --server-bin \
                 / set KVSET_SERVER_BIN",
                bin.display()
            )));
        }
        let data = &self.config.data_dir;
        fs::create_dir_all(data.join("logs"))
            .map_err(|e| BackendError::io(format!("create {}", data.display()), e))?;
        for m in 0..self.config.replicas {
            let _ = fs::remove_file(self.hold_file(m));
            let _ = fs::remove_file(self.pid_file(m));
        }
        if let Some(mb) = self.config.small_disks_mb.filter(|_| is_root()) {
            for m in 0..self.config.replicas {
                self.mount_small_disk(m, mb)?;
            }
        }
        if self.config.power_disks && kvset_powerfs::unavailable_reason().is_none() {
            for m in 0..self.config.replicas {
                self.mount_power_disk(m)?;
            }
        }
        if let Some(parent) = self.config.launcher_log.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| BackendError::io(format!("create {}", parent.display()), e))?;
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.config.launcher_log)
            .map_err(|e| {
                BackendError::io(format!("open {}", self.config.launcher_log.display()), e)
            })?;
        let log_err = log
            .try_clone()
            .map_err(|e| BackendError::io("duplicate the launcher log handle", e))?;
        let mut cmd = Command::new(bin);
        cmd.arg("local")
            .arg(format!("--replicas={}", self.config.replicas))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--bind-ip={}", self.config.bind_ip))
            .arg(format!("--base-port={}", self.config.base_port))
            .args(self.netns_flags())
            .args(self.backoff_flag())
            .args(
                self.server_args()
                    .iter()
                    .map(|a| format!("--server-arg={a}")),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,openraft=warn");
        }
        // A process group of its own: a Ctrl-C at the terminal reaches only the harness (which
        // then heals, checks and tears down in order), and the whole cluster can be killed with
        // one signal to the group in an emergency.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| BackendError::Command {
            command: format!("{} local", bin.display()),
            detail: e.to_string(),
        })?;
        let pgid = child.id() as i32;
        register_group(pgid);
        let _ = fs::write(data.join("launcher.pid"), format!("{pgid}\n"));
        *self.launcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);

        // The launcher starts the replicas in order, each once the previous is ready; wait until
        // it has started them all (the harness then waits for the cluster to be healthy).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            {
                let mut guard = self.launcher.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(Ok(Some(status))) = guard.as_mut().map(|c| c.try_wait()) {
                    *guard = None;
                    return Err(BackendError::Setup(format!(
                        "the launcher exited ({status}) while starting the cluster; its output:\n{}",
                        self.launcher_log_tail()
                    )));
                }
            }
            if (0..self.config.replicas).all(|m| self.pid_file(m).exists()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BackendError::Setup(format!(
                    "the launcher did not start every replica within 120 s; its output:\n{}",
                    self.launcher_log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn crash(&self, members: &[usize]) -> Result<(), BackendError> {
        // Resolve every pid first so that "kill all" is one burst of signals.
        let pids = members
            .iter()
            .map(|&m| self.pid_of(m).map(|pid| (m, pid)))
            .collect::<Result<Vec<_>, _>>()?;
        for (m, pid) in pids {
            send_signal(pid, libc::SIGKILL).map_err(|e| BackendError::NoProcess {
                member: self.name_of(m),
                detail: format!("kill -9 {pid}: {e}"),
            })?;
        }
        Ok(())
    }

    fn restart(&self, member: usize) -> Result<(), BackendError> {
        self.signal(member, libc::SIGTERM).map(|_| ())
    }

    fn pause(&self, member: usize) -> Result<(), BackendError> {
        let pid = self.signal(member, libc::SIGSTOP)?;
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member, pid);
        Ok(())
    }

    fn resume(&self, member: usize) -> Result<(), BackendError> {
        let pid = self
            .paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&member);
        match pid {
            Some(pid) => send_signal(pid, libc::SIGCONT).map_err(|e| BackendError::NoProcess {
                member: self.name_of(member),
                detail: format!("kill -CONT {pid}: {e}"),
            }),
            None => self.signal(member, libc::SIGCONT).map(|_| ()),
        }
    }

    fn partition(&self, member: usize) -> Result<(), BackendError> {
        self.cut_links(FaultKind::Partition, &LinkCut::Split { side: vec![member] })
    }

    fn heal_partition(&self, member: usize) -> Result<(), BackendError> {
        self.heal_links(FaultKind::Partition, &[member])
    }

    fn partition_shaped(&self, kind: FaultKind, side: &[usize]) -> Result<(), BackendError> {
        let cut = match kind {
            FaultKind::PartitionOneWay if side.len() == 1 => LinkCut::OneWay { member: side[0] },
            FaultKind::PartitionLeader => LinkCut::Split {
                side: side.to_vec(),
            },
            _ => return Err(unsupported(self, kind)),
        };
        self.cut_links(kind, &cut)
    }

    fn heal_partition_shaped(&self, kind: FaultKind, side: &[usize]) -> Result<(), BackendError> {
        self.heal_links(kind, side)
    }

    fn add_latency(&self, member: usize) -> Result<(), BackendError> {
        let net = self.netns_for(FaultKind::Latency)?;
        net.run(&net.layout().delay(member, LATENCY_MS))
    }

    fn remove_latency(&self, member: usize) -> Result<(), BackendError> {
        let net = self.netns_for(FaultKind::Latency)?;
        net.run(&net.layout().undelay(member))
    }

    fn wipe_begin(&self, member: usize) -> Result<(), BackendError> {
        self.hold_and_kill(&[member], "wipe")?;
        let dir = self.member_dir(member);
        if (self.config.small_disks_mb.is_some() || self.config.power_disks) && is_mount_point(&dir)
        {
            // The mount point stays; its contents go. On kvset-powerfs the removal is made
            // durable (a later power cut must not bring the wiped files back).
            return remove_contents(&dir)
                .and_then(|()| fs::File::open(&dir)?.sync_all())
                .map_err(|e| BackendError::io(format!("empty {}", dir.display()), e));
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(format!("remove {}", dir.display()), e)),
        }
    }

    fn fill_disk(&self, member: usize) -> Result<(), BackendError> {
        let dir = self.member_dir(member);
        if !is_mount_point(&dir) {
            return Err(BackendError::Setup(format!(
                "{} is not a small filesystem of its own; refusing to fill the disk it is on",
                dir.display()
            )));
        }
        let path = dir.join(DISK_FILLER);
        fill_until_full(&path).map_err(|e| BackendError::io(format!("fill {}", path.display()), e))
    }

    fn free_disk(&self, member: usize) -> Result<(), BackendError> {
        let path = self.member_dir(member).join(DISK_FILLER);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(format!("remove {}", path.display()), e)),
        }
    }

    fn power_cut(&self, members: &[usize]) -> Result<(), BackendError> {
        self.hold_and_kill(members, "power cut")?;
        let power = self.power.lock().unwrap_or_else(|p| p.into_inner());
        for &m in members {
            let fs = power.get(&m).ok_or_else(|| BackendError::PowerFs {
                member: self.name_of(m),
                detail: format!("{} is not on kvset-powerfs", self.member_dir(m).display()),
            })?;
            let report = fs.cut_power().map_err(|e| BackendError::PowerFs {
                member: self.name_of(m),
                detail: format!("cut power: {e}"),
            })?;
            tracing::info!(member = m, ?report, "power cut");
        }
        Ok(())
    }

    fn power_on(&self, members: &[usize]) -> Result<(), BackendError> {
        members.iter().try_for_each(|&m| self.release_hold(m))
    }

    fn wipe_end(&self, member: usize) -> Result<(), BackendError> {
        self.release_hold(member)
    }

    fn heal_all(&self) -> Result<(), BackendError> {
        if let Some(net) = self.config.network.namespaces() {
            for m in 0..self.config.replicas {
                net.run_all(&net.layout().heal(m));
                net.run_all(&net.layout().undelay(m));
            }
        }
        let paused: Vec<i32> = self
            .paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, pid)| pid)
            .collect();
        for pid in paused {
            let _ = send_signal(pid, libc::SIGCONT);
        }
        for m in 0..self.config.replicas {
            if let Ok(pid) = self.pid_of(m) {
                let _ = send_signal(pid, libc::SIGCONT);
            }
            let _ = fs::remove_file(self.hold_file(m));
        }
        Ok(())
    }

    fn collect_logs(&self, dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
        fs::create_dir_all(dir)
            .map_err(|e| BackendError::io(format!("create {}", dir.display()), e))?;
        let mut written = Vec::new();
        for m in 0..self.config.replicas {
            let from = self
                .config
                .data_dir
                .join("logs")
                .join(format!("kv-{m}.log"));
            let to = dir.join(format!("kv-{m}.log"));
            if from.exists() {
                fs::copy(&from, &to).map_err(|e| {
                    BackendError::io(format!("copy {} to {}", from.display(), to.display()), e)
                })?;
                written.push(to);
            }
        }
        if self.config.launcher_log.exists() {
            written.push(self.config.launcher_log.clone());
        }
        Ok(written)
    }

    fn teardown(&self) -> Result<(), BackendError> {
        self.shutdown();
        Ok(())
    }
}

impl ProcessBackend {
    /// Holds these members (the launcher does not restart them), kills them with -9 at once,
    /// and returns once every one of their processes is gone: nothing they wrote can reach
    /// their volumes afterwards.
    fn hold_and_kill(&self, members: &[usize], why: &str) -> Result<(), BackendError> {
        for &m in members {
            let hold = self.hold_file(m);
            fs::write(&hold, format!("{why}\n"))
                .map_err(|e| BackendError::io(format!("create {}", hold.display()), e))?;
        }
        // Twice: a replica the launcher was starting as the hold appeared shows up in its pid
        // file within one supervisor loop (100 ms), and goes too.
        for round in 0..2 {
            let pids: Vec<(usize, i32)> = members
                .iter()
                .filter_map(|&m| self.pid_of(m).ok().map(|pid| (m, pid)))
                .collect();
            for &(_, pid) in &pids {
                let _ = send_signal(pid, libc::SIGCONT);
                let _ = send_signal(pid, libc::SIGKILL);
            }
            if pids
                .iter()
                .any(|&(_, pid)| matches!(proc_state(pid), ProcState::Unknown))
            {
                // No /proc to watch the exit: give the launcher time to reap it.
                std::thread::sleep(Duration::from_secs(1));
            }
            let launcher = self.launcher_pid().unwrap_or(-1);
            let deadline = Instant::now() + Duration::from_secs(10);
            for (m, pid) in pids {
                while matches!(proc_state(pid), ProcState::Running { ppid } if ppid == launcher) {
                    if Instant::now() >= deadline {
                        return Err(BackendError::NoProcess {
                            member: self.name_of(m),
                            detail: format!("pid {pid} did not exit within 10 s of kill -9"),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            if round == 0 {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Ok(())
    }

    /// Removes a member's hold file: the launcher starts it again.
    fn release_hold(&self, member: usize) -> Result<(), BackendError> {
        let hold = self.hold_file(member);
        match fs::remove_file(&hold) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(format!("remove {}", hold.display()), e)),
        }
    }

    /// Mounts kvset-powerfs on kv-`member`'s data dir, its durable state in `kv-N.powerfs/`.
    fn mount_power_disk(&self, member: usize) -> Result<(), BackendError> {
        let dir = self.member_dir(member);
        fs::create_dir_all(&dir)
            .map_err(|e| BackendError::io(format!("create {}", dir.display()), e))?;
        let backing = self
            .config
            .data_dir
            .join(format!("{}.powerfs", self.name_of(member)));
        let fs = PowerFs::mount(&dir, &backing).map_err(|e| BackendError::PowerFs {
            member: self.name_of(member),
            detail: e.to_string(),
        })?;
        self.power
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member, fs);
        Ok(())
    }

    /// Mounts a tmpfs of `mb` MiB on kv-`member`'s data dir (kept if one is mounted already).
    fn mount_small_disk(&self, member: usize, mb: u64) -> Result<(), BackendError> {
        let dir = self.member_dir(member);
        fs::create_dir_all(&dir)
            .map_err(|e| BackendError::io(format!("create {}", dir.display()), e))?;
        if is_mount_point(&dir) {
            return Ok(());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "kvset-chaos"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| BackendError::Command {
                command: "mount -t tmpfs".into(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(BackendError::Setup(format!(
                "cannot mount a {mb} MiB tmpfs on {} for the disk-full fault: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Unmounts the small filesystems (their contents go with them; the run's logs are kept
    /// elsewhere).
    fn unmount_small_disks(&self) {
        if self.config.small_disks_mb.is_none() {
            return;
        }
        for m in 0..self.config.replicas {
            let dir = self.member_dir(m);
            if is_mount_point(&dir) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&dir)
                    .stdin(Stdio::null())
                    .status();
            }
        }
    }

    /// The member's address: its namespace's, or the shared loopback one.
    fn member_ip(&self, member: usize) -> Ipv4Addr {
        match self.config.network.namespaces() {
            Some(net) => net.layout().member_ip(member),
            None => self.config.bind_ip,
        }
    }

    /// The launcher's flag capping its restart back-off, when the run sets one.
    fn backoff_flag(&self) -> Vec<String> {
        self.config
            .restart_backoff_max
            .map(|max| format!("--restart-backoff-max-ms={}", max.as_millis().max(1)))
            .into_iter()
            .collect()
    }

    /// The launcher's flags that put each replica into its namespace (none on loopback).
    fn netns_flags(&self) -> Vec<String> {
        match self.config.network.namespaces() {
            Some(net) => vec![
                format!("--netns-prefix={}", net.layout().namespace_prefix()),
                format!("--netns-first-ip={}", net.layout().member_ip(0)),
            ],
            None => Vec::new(),
        }
    }

    fn netns_for(&self, kind: FaultKind) -> Result<&Netns, BackendError> {
        self.config
            .network
            .namespaces()
            .ok_or_else(|| unsupported(self, kind))
    }

    /// Drops the links `cut` names (rules in its side's namespaces).
    fn cut_links(&self, kind: FaultKind, cut: &LinkCut) -> Result<(), BackendError> {
        let net = self.netns_for(kind)?;
        let cmds = net.layout().cut(cut);
        net.run(&cmds).inspect_err(|_| {
            // A cut made half-way is undone: it must not outlive the fault.
            for m in cut.side() {
                net.run_all(&net.layout().heal(m));
            }
        })
    }

    /// Removes every cut rule from the namespaces of `side`.
    fn heal_links(&self, kind: FaultKind, side: &[usize]) -> Result<(), BackendError> {
        let net = self.netns_for(kind)?;
        side.iter()
            .try_for_each(|&m| net.run(&net.layout().heal(m)))
    }

    fn server_args(&self) -> Vec<String> {
        DEFAULT_SERVER_ARGS
            .iter()
            .map(|s| s.to_string())
            .chain(self.config.server_args.iter().cloned())
            .collect()
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What `/proc` says about a pid.
enum ProcState {
    /// Alive (not a zombie), with this parent.
    Running { ppid: i32 },
    /// Exited (gone or a zombie waiting to be reaped).
    Gone,
    /// No `/proc` (not Linux): cannot tell.
    Unknown,
}

fn proc_state(pid: i32) -> ProcState {
    if !Path::new("/proc/self/stat").exists() {
        return ProcState::Unknown;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcState::Gone;
    };
    // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcState::Gone;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("X");
    let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(-1);
    if state == "Z" || state == "X" {
        ProcState::Gone
    } else {
        ProcState::Running { ppid }
    }
}

fn send_signal(pid: i32, signal: i32) -> std::io::Result<()> {
    if pid <= 0 {
        return Err(std::io::Error::other(format!(
            "refusing to signal pid {pid}"
        )));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the pid was checked to be positive
    // (never a process group) and, on Linux, to be a child of our launcher.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A loopback address for this run: on Linux a 127.x.y.z of its own (every 127/8 address is
/// local there), so parallel runs and tests never collide; elsewhere 127.0.0.1.
pub fn pick_bind_ip(seed: u64) -> Ipv4Addr {
    if !cfg!(target_os = "linux") {
        return Ipv4Addr::LOCALHOST;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = u64::from(std::process::id())
        .wrapping_mul(2_654_435_761)
        .wrapping_add(seed.wrapping_mul(40_503))
        .wrapping_add(u64::from(nanos));
    Ipv4Addr::new(
        127,
        (1 + (n >> 16) % 250) as u8,
        ((n >> 8) % 256) as u8,
        (2 + n % 250) as u8,
    )
}

/// A base port P such that P+N, P+100+N and P+200+N (N < replicas: client, peer and metrics
/// ports) are all free on `ip`.
pub fn pick_base_port(ip: Ipv4Addr, replicas: usize, seed: u64) -> Result<u16, BackendError> {
    let free = |port: usize| -> bool {
        u16::try_from(port)
            .ok()
            .is_some_and(|p| TcpListener::bind((ip, p)).is_ok())
    };
    let mut candidate =
        20_000 + (seed.wrapping_add(u64::from(std::process::id())) % 20_000) as usize;
    for _ in 0..200 {
        let ok = (0..replicas)
            .all(|n| free(candidate + n) && free(candidate + 100 + n) && free(candidate + 200 + n));
        if ok {
            return u16::try_from(candidate)
                .map_err(|_| BackendError::Setup("port out of range".into()));
        }
        candidate = 20_000 + (candidate + 337) % 20_000;
    }
    Err(BackendError::Setup(format!(
        "no free base port found on {ip} (tried 200 candidates); pass --base-port"
    )))
}

/// The `kvset-server` binary: `KVSET_SERVER_BIN`, else next to this executable (the harness
/// binary is in `target/<profile>/`, a test executable in `target/<profile>/deps/`).
pub fn find_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KVSET_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("kvset-server"), dir.parent()?.join("kvset-server")]
        .into_iter()
        .find(|p| p.exists())
}

/// Removes everything inside `dir`, keeping `dir`.
fn remove_contents(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}
