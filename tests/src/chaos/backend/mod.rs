//! Where the cluster runs, and how a fault is done to it there.
//!
//! A backend owns one thing: the mapping from a fault *intent* ("kill -9 kv-1 and let its
//! supervisor bring it back", "freeze kv-2", "cut kv-0 off the network", "lose kv-1's volume")
//! to the commands that carry it out on one kind of deployment. Everything that decides *which*
//! fault, *when* and *to whom*, and everything that observes the cluster, is backend-agnostic
//! and lives elsewhere (`schedule`, `faults`, `monitor`): the harness talks to members only
//! through their client endpoints (gRPC), so the same checks run unchanged on every backend.
//!
//! | fault intent | `process` (local launcher) | `docker` | `kubectl` |
//! | --- | --- | --- | --- |
//! | crash (kill -9, supervisor restarts) | `kill -9 $(cat kv-N.pid)`; the launcher restarts it | `docker kill`, then `docker start` (the harness plays the kubelet) | `kubectl delete pod --grace-period=0 --force`; the StatefulSet recreates it |
//! | graceful restart | `kill -TERM`; the launcher restarts it | `docker stop -t 30`, then `docker start` | `kubectl delete pod` |
//! | pause / resume | `SIGSTOP` / `SIGCONT` | `docker pause` / `unpause` | unsupported (distroless: no `kill` to exec) |
//! | partition / heal | namespace mode: `iptables DROP` of the peers' addresses inside the member's network namespace, flushed to heal; loopback mode: unsupported | `docker network disconnect` / `connect` | unsupported (needs an enforcing NetworkPolicy CNI) |
//! | partition-leader, partition-one-way (opt-in) | namespace mode: the same rules for the leader's side both ways, or for one member's outbound traffic only | unsupported | unsupported |
//! | latency (opt-in) | namespace mode with `sch_netem`: `tc qdisc add … netem delay` on the member's veth | unsupported | unsupported |
//! | wipe (lose the volume, rejoin) | `kv-N.hold`, kill, `rm -rf kv-N/`, remove the hold | kill, `docker rm`, `docker volume rm`, recreate | `kubectl delete pvc` + `delete pod` |
//! | disk full (fill the member's small filesystem, free it) | a tmpfs per `kv-N/`, a filler file written into it | an ext4 image on a loop device per volume (`--docker-prefix` only), the filler written through the volume's mount point on the host | unsupported |
//! | scale down and back up | `kvset-server local scale N`, then back | the desired size written to the shared `/record` volume (`docker cp`), then `docker stop -t 30` highest ordinal first, or `docker start` in ordinal order | `kubectl scale statefulset kv --replicas=N` |
//! | power cut (lose what was not fsynced) | `kv-N.hold`, kill, `cut_power()` on the member's kvset-powerfs mount, remove the hold | unsupported | unsupported |
//!
//! Backend operations are synchronous (they run commands or send signals and return once the
//! intent is carried out); the harness calls them on tokio's blocking pool. That keeps the trait
//! object-safe (`Arc<dyn Backend>`) and each backend a straight list of commands.
//!
//! A backend must never leave a cluster behind: [`Backend::teardown`] stops it, and the process
//! and docker backends also clean up on drop (a panicking or interrupted run).

pub mod docker;
pub mod kubectl;
pub mod netns;
pub mod process;

use std::fmt;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::faults::FaultKind;

/// One member as the harness sees it: its name and the client endpoint it can be reached at
/// from where the harness runs (which may differ from the address inside the cluster).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    /// `kv-N`; the index in [`Backend::members`] is the ordinal N.
    pub name: String,
    /// `host:port` for clients, reachable from the harness.
    pub endpoint: String,
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot do this kind of fault at all.
    #[error("the {backend} backend cannot inject {kind}: {reason}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The fault asked for.
        kind: FaultKind,
        /// Why.
        reason: String,
    },
    /// A command ran and failed (or could not be run).
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and stderr, or why it could not start.
        detail: String,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// A member has no process to signal (no pid file, or its pid is not our child).
    #[error("{member} has no running process to signal: {detail}")]
    NoProcess {
        /// The member.
        member: String,
        /// What was found instead.
        detail: String,
    },
    /// A member's power-loss filesystem (kvset-powerfs) failed to mount or to cut the power.
    #[error("kvset-powerfs of {member}: {detail}")]
    PowerFs {
        /// The member.
        member: String,
        /// What failed.
        detail: String,
    },
    /// The backend could not be set up (missing binary, image, port, ...).
    #[error("{0}")]
    Setup(String),
}

impl BackendError {
    /// An [`BackendError::Io`] with context.
    pub fn io(what: impl fmt::Display, source: io::Error) -> BackendError {
        BackendError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// A deployment the harness can inject faults into. Every method is synchronous and returns
/// once the intent is carried out (for crash and restart: once the member was stopped and its
/// supervisor was told or left to bring it back; the harness then watches it come back).
///
/// Members are addressed by ordinal (their index in [`Backend::members`]).
pub trait Backend: Send + Sync {
    /// `process`, `docker` or `kubectl`.
    fn name(&self) -> &'static str;

    /// The members, by ordinal.
    fn members(&self) -> Vec<MemberInfo>;

    /// One line on how the cluster runs (for the report).
    fn describe(&self) -> String;

    /// `Some(reason)` when this backend cannot inject `kind`; the schedule then leaves it out
    /// and the report says why.
    fn unsupported(&self, kind: FaultKind) -> Option<String>;

    /// Starts the cluster (or checks that the one it was pointed at exists). Returns once every
    /// member was started; the harness then waits for the cluster to be healthy. A backend that
    /// starts members one by one (`OrderedReady`) calls `wait_ready(ordinal)` after each; it
    /// returns an error message when the member did not become ready in time.
    fn start(&self, wait_ready: &WaitReady<'_>) -> Result<(), BackendError>;

    /// kill -9 these members at once. Returns once the kill is done (or, for kubectl, accepted).
    fn crash(&self, members: &[usize]) -> Result<(), BackendError>;

    /// Graceful stop: SIGTERM (a leader hands leadership off, then the member stops). May
    /// return before the member has stopped.
    fn restart(&self, member: usize) -> Result<(), BackendError>;

    /// True when a supervisor brings crashed and stopped members back by itself (the launcher,
    /// a StatefulSet): the harness then watches them go down and come back. False (docker):
    /// the harness calls [`Backend::revive`], playing the supervisor.
    fn revives_on_its_own(&self) -> bool {
        true
    }

    /// Starts members stopped by [`Backend::crash`] or [`Backend::restart`] again, with their
    /// identity and data (only called when [`Backend::revives_on_its_own`] is false).
    fn revive(&self, _members: &[usize]) -> Result<(), BackendError> {
        Ok(())
    }

    /// Freezes the member's process (SIGSTOP or the cgroup freezer).
    fn pause(&self, member: usize) -> Result<(), BackendError>;

    /// Thaws a member frozen by [`Backend::pause`].
    fn resume(&self, member: usize) -> Result<(), BackendError>;

    /// Cuts the member off from the other members (and, on docker, from clients).
    fn partition(&self, member: usize) -> Result<(), BackendError>;

    /// Undoes [`Backend::partition`].
    fn heal_partition(&self, member: usize) -> Result<(), BackendError>;

    /// How the members are networked, for the report (`None`: nothing to say beyond
    /// [`Backend::describe`]). The process backend names its mode (namespaces or loopback).
    fn network(&self) -> Option<String> {
        None
    }

    /// `Some(reason)` unless this backend can shape the network beyond [`Backend::partition`]
    /// (the kinds of [`FaultKind::is_shaped_network`]). Asked before [`Backend::unsupported`]
    /// for those kinds, so that a backend written before they existed never claims them.
    fn shaped_network_unsupported(&self) -> Option<String> {
        Some(format!(
            "the {} backend cannot split groups, cut one way or add latency (the process \
             backend in namespace mode can)",
            self.name()
        ))
    }

    /// Cuts links for a shaped partition: `partition-leader` cuts `side` (the leader and a
    /// minority) off from the other members both ways; `partition-one-way` drops only what
    /// `side[0]` sends to the others.
    fn partition_shaped(&self, kind: FaultKind, _side: &[usize]) -> Result<(), BackendError> {
        Err(unsupported(self, kind))
    }

    /// Undoes [`Backend::partition_shaped`] with the same arguments.
    fn heal_partition_shaped(&self, kind: FaultKind, _side: &[usize]) -> Result<(), BackendError> {
        Err(unsupported(self, kind))
    }

    /// Delays every packet the member sends.
    fn add_latency(&self, _member: usize) -> Result<(), BackendError> {
        Err(unsupported(self, FaultKind::Latency))
    }

    /// Undoes [`Backend::add_latency`].
    fn remove_latency(&self, _member: usize) -> Result<(), BackendError> {
        Err(unsupported(self, FaultKind::Latency))
    }

    /// Stops the member and destroys its volume; it stays down until [`Backend::wipe_end`].
    fn wipe_begin(&self, member: usize) -> Result<(), BackendError>;

    /// Lets a wiped member start again, with an empty volume (it must rejoin the cluster).
    fn wipe_end(&self, member: usize) -> Result<(), BackendError>;

    /// Fills the member's filesystem until no byte is left (its next write fails with
    /// `ENOSPC`); the member should stop on the storage failure and be restarted, failing again
    /// until [`Backend::free_disk`].
    fn fill_disk(&self, _member: usize) -> Result<(), BackendError> {
        Err(self.disk_full_unsupported())
    }

    /// Gives back the space [`Backend::fill_disk`] took.
    fn free_disk(&self, _member: usize) -> Result<(), BackendError> {
        Err(self.disk_full_unsupported())
    }

    /// Power cut: kill -9 these members at once, then drop every write their volumes have not
    /// made durable (`fsync`); they stay down until [`Backend::power_on`]. Returns once the
    /// volumes show only their durable state.
    fn power_cut(&self, _members: &[usize]) -> Result<(), BackendError> {
        Err(self.power_loss_unsupported())
    }

    /// Lets members stopped by [`Backend::power_cut`] start again, on their durable state.
    fn power_on(&self, _members: &[usize]) -> Result<(), BackendError> {
        Err(self.power_loss_unsupported())
    }

    /// Changes the number of replicas to `replicas`, as `kubectl scale statefulset` does: the
    /// members with an ordinal at or above it leave the cluster and stop, or the missing ones
    /// start in ordinal order. Returns once the cluster's membership is kv-0 … kv-(replicas-1).
    fn scale(&self, _replicas: usize) -> Result<(), BackendError> {
        Err(BackendError::Unsupported {
            backend: self.name(),
            kind: FaultKind::Scale,
            reason: self
                .unsupported(FaultKind::Scale)
                .unwrap_or_else(|| "not implemented".to_string()),
        })
    }

    /// The error of the default [`Backend::power_cut`] / [`Backend::power_on`].
    fn power_loss_unsupported(&self) -> BackendError {
        BackendError::Unsupported {
            backend: self.name(),
            kind: FaultKind::PowerLoss,
            reason: self
                .unsupported(FaultKind::PowerLoss)
                .unwrap_or_else(|| "not implemented".to_string()),
        }
    }

    /// The error of the default [`Backend::fill_disk`] / [`Backend::free_disk`].
    fn disk_full_unsupported(&self) -> BackendError {
        BackendError::Unsupported {
            backend: self.name(),
            kind: FaultKind::DiskFull,
            reason: self
                .unsupported(FaultKind::DiskFull)
                .unwrap_or_else(|| "not implemented".to_string()),
        }
    }

    /// Best effort: undo every fault that may still be in effect (thaw, reconnect, release
    /// holds). Called before the final checks and on teardown.
    fn heal_all(&self) -> Result<(), BackendError>;

    /// Copies every member's log into `dir` (as `kv-N.log`, plus backend extras); returns the
    /// files written.
    fn collect_logs(&self, dir: &Path) -> Result<Vec<PathBuf>, BackendError>;

    /// Stops the cluster the backend started (a cluster it was only pointed at is left alone).
    fn teardown(&self) -> Result<(), BackendError>;
}

/// Blocks until member `ordinal` is ready (or fails with why not); see [`Backend::start`].
pub type WaitReady<'a> = dyn Fn(usize) -> Result<(), String> + Sync + 'a;

/// Why `backend` cannot inject `kind` (a single kind), if it cannot: the shaped-network check
/// first for those kinds, then [`Backend::unsupported`].
pub fn why_unsupported(backend: &dyn Backend, kind: FaultKind) -> Option<String> {
    if kind.is_shaped_network() {
        if let Some(why) = backend.shaped_network_unsupported() {
            return Some(why);
        }
    }
    backend.unsupported(kind)
}

/// The error for a fault a backend does not do.
pub(crate) fn unsupported<B: Backend + ?Sized>(backend: &B, kind: FaultKind) -> BackendError {
    BackendError::Unsupported {
        backend: backend.name(),
        kind,
        reason: backend
            .unsupported(kind)
            .unwrap_or_else(|| "not implemented".to_string()),
    }
}

/// Runs a command to completion with stdin closed; an error names the command line and carries
/// its stderr. `program` is the first element of `argv`.
pub(crate) fn run_command(
    argv: &[String],
    envs: &[(String, String)],
) -> Result<Output, BackendError> {
    let line = argv.join(" ");
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| BackendError::Setup("empty command".into()))?;
    let output = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BackendError::Command {
            command: line.clone(),
            detail: format!("cannot run {program}: {e}"),
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(BackendError::Command {
            command: line,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// The member ids in `kvsetctl -o json members list` output (`{"members":[{"id":…},…]}`), ascending.
pub(crate) fn member_ids_from_json(text: &str) -> Option<Vec<u64>> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut ids = value["members"]
        .as_array()?
        .iter()
        .map(|m| m["id"].as_u64())
        .collect::<Option<Vec<u64>>>()?;
    ids.sort_unstable();
    Some(ids)
}

/// How long a scale may take to show in the membership (each member leaving or joining takes
/// seconds; a joiner may need a snapshot).
pub(crate) const SCALE_TIMEOUT: Duration = Duration::from_secs(180);

/// Polls `read` (the membership as some member reports it, None when none answered) until it is
/// exactly kv-0 … kv-(replicas-1), for at most `timeout`.
pub(crate) fn wait_for_membership(
    backend: &str,
    replicas: usize,
    timeout: Duration,
    mut read: impl FnMut() -> Option<Vec<u64>>,
) -> Result<(), BackendError> {
    let want: Vec<u64> = (0..replicas as u64).collect();
    let deadline = Instant::now() + timeout;
    let mut seen = None;
    loop {
        if let Some(ids) = read() {
            if ids == want {
                return Ok(());
            }
            seen = Some(ids);
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Command {
                command: format!("{backend}: scale to {replicas}"),
                detail: format!(
                    "the membership is {}, not {want:?}, after {timeout:?}",
                    seen.map_or("unknown (no member answered)".to_string(), |s| format!(
                        "{s:?}"
                    ))
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `argv` from string slices.
pub(crate) fn argv<S: AsRef<str>>(parts: &[S]) -> Vec<String> {
    parts.iter().map(|s| s.as_ref().to_string()).collect()
}

/// `n` distinct free TCP ports on 127.0.0.1 (for published container ports and port-forwards).
pub fn free_local_ports(n: usize) -> Result<Vec<u16>, BackendError> {
    // Hold every listener until all ports are chosen, so that they differ.
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BackendError::io("find a free port on 127.0.0.1", e))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| BackendError::io("find a free port on 127.0.0.1", e))
        })
        .collect()
}

/// True when this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when `dir` is a mount point (its device differs from its parent's).
pub(crate) fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(here), Some(Ok(parent))) = (fs::metadata(dir), dir.parent().map(fs::metadata)) else {
        return false;
    };
    here.dev() != parent.dev()
}

/// Writes zeros to `path` until the filesystem has no room left (`ENOSPC`). Bounded by the
/// filesystem's size, which the caller made small.
pub(crate) fn fill_until_full(path: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_come_from_kvsetctl_json() {
        let text = r#"{"members":[{"id":2,"name":"kv-2","voter":true},{"id":0,"name":"kv-0"}]}"#;
        assert_eq!(member_ids_from_json(text), Some(vec![0, 2]));
        assert_eq!(member_ids_from_json("{}"), None);
        assert_eq!(member_ids_from_json("not json"), None);
        let mut answers = vec![None, Some(vec![0, 1, 2]), Some(vec![0, 1])].into_iter();
        wait_for_membership("test", 2, Duration::from_secs(10), || {
            answers.next().flatten()
        })
        .expect("reaches [0, 1]");
        let err = wait_for_membership("test", 1, Duration::ZERO, || Some(vec![0, 1])).unwrap_err();
        assert!(
            err.to_string()
                .contains("the membership is [0, 1], not [0]"),
            "{err}"
        );
    }
}
