//! The space quota and the `NOSPACE` alarm: kvset's answer to a volume that fills up.
//!
//! A member whose disk fills stops (see [`super::failstop`]): correct, but if every member's
//! store grows alike, they all stop together and the cluster is down until someone grows the
//! volumes. The quota turns that cliff into a slope with a railing, as etcd's `--quota-backend-bytes`
//! does: well before the disk is full, the cluster stops taking requests that grow the data and
//! keeps serving everything else, including what frees space.
//!
//! # What is counted
//!
//! A member's *store usage* is the sum of
//!
//! - the **live state**: the bytes of every key and value the state machine keeps in sled
//!   (key-values with their 25-byte headers, the dedup table, metadata), counted logically —
//!   not sled's file size. sled 0.34 keeps its file at its high-water mark after deletes (freed
//!   segments are reused, not returned), so a quota on the file size could never be left by
//!   deleting keys; the logical size drops the moment a delete is applied;
//! - the **Raft log**: the bytes of the entries above the purge point, with their framing. Not
//!   the segment files' size: a purge deletes only whole 64 MiB segments, so the files may hold
//!   up to one segment of purged entries more, which the margin below has to cover;
//! - the **snapshot file** (`snapshot/current`), a full copy of the state as of the last snapshot,
//!   replaced (not appended) by the next one.
//!
//! sled's overhead on top of the live state is not counted; the default quota leaves room for it
//! (see below) and `kvset_store_disk_bytes` shows the real figure next to
//! `kvset_store_usage_bytes`.
//!
//! # The quota
//!
//! `--quota-bytes` (`KVSET_QUOTA_BYTES`); by default [`DEFAULT_QUOTA_PERCENT`] % of the size of
//! the filesystem that holds the data directory (statvfs), re-read at every check, so it follows
//! the PVC's size when the volume is grown, online or not, without a restart; `0` turns the
//! quota off. The rest is for what is not counted, and it is not
//! small: sled is log-structured and its files hold several times the live data under a stream
//! of puts of large values, hardly shrink after deletes (freed segments are reused, the file is
//! cut only at its tail), and keep growing a little while deletes and compactions are written; a
//! compaction writes a whole new snapshot before the log can be purged; the log's last purged
//! segment stays until it is wholly purged; and writes keep arriving until the alarm is
//! committed. Larger shares let the small volumes of `server/tests/cluster_disk_full.rs` (64 KiB
//! values) fill up, or nearly, before or during the recovery; with an explicit `--quota-bytes`,
//! compare `kvset_store_disk_bytes` with `kvset_store_usage_bytes` under the real workload.
//!
//! # Who raises the alarm, and how everyone agrees
//!
//! Every member measures its own usage every `--quota-check-ms` ([`run`]). Over the quota it
//! proposes `AlarmRequest{ACTIVATE, NOSPACE, itself}` as a log command at once — through the
//! leader, like any write (a follower calls the leader's `Cluster.Alarm`). It does not compact
//! first: writing a snapshot takes time and a whole copy of the data in space, and writes keep
//! coming meanwhile (a first version did, and filled a test disk before the alarm went out).
//! Instead it *compacts early*: above 80 % of the quota, when the log holds over a tenth of it,
//! it builds a Raft snapshot and purges the whole log behind it (ignoring
//! `--keep-after-snapshot`), since the log holds a second copy of recent writes. Under its own
//! alarm it compacts again whenever its live state shrank since the last compaction (keys were
//! deleted), so the deletes reach the snapshot and the log that held the puts goes.
//! Once committed, every member has the alarm in its state machine (and in its snapshots), so
//! the write check gives the same answer wherever a request lands, and a member that restarts or
//! installs a snapshot knows at once.
//!
//! # What the alarm does
//!
//! While any `NOSPACE` alarm is active, [`check_writable`] refuses requests that add data — puts,
//! transactions with a put in either branch, and adding a member (`AddLearner`) — with
//! `RESOURCE_EXHAUSTED` and a message naming the member, its usage and quota, and the way out.
//! Reads, deletes, transactions without a put, snapshots and backups, status, and alarm commands
//! keep working. Lease grants are refused too (a lease is data); revokes, keep-alives and
//! compactions keep working (compacting is one way out).
//!
//! # The way out
//!
//! Delete keys and compact the revision history to the current revision (the history keeps
//! deleted values until it is compacted; the alarmed member then compacts its log itself once
//! its state shrank, so the deletes reach its snapshot and its log is purged), or grow the
//! volume; then
//! `kvsetctl alarm disarm` (a log command too). Disarming never checks the usage itself: if the
//! member is still over its quota, its next check raises the alarm again — as etcd does — and the
//! message says so. `docs/OPERATIONS.md` ("Space quota and the NOSPACE alarm") has the procedure.
//!
//! # Left out
//!
//! - No hysteresis: a member just under its quota after a disarm may trip again after a few
//!   writes. Delete well below the quota.
//! - The check is periodic, so writes that arrive within one interval may pass the quota by up
//!   to what they add (bounded by the write rate times the interval).
//! - A member's usage counts its own store only; members differ slightly (log positions,
//!   snapshot times), so usually one member trips first and stops writes for all.
//! - Measuring reads the whole state (O(data) every check), so `--quota-check-ms` should grow
//!   with the data; with the quota off nothing is measured.
//! - The quota is fixed at start-up: after a volume is grown, the default quota follows at the
//!   member's next restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvset_proto::raft::log_command::Command;
use kvset_proto::raft::LogCommand;
use kvset_proto::v1::alarm_request::AlarmAction;
use kvset_proto::v1::{request_op, AlarmMember, AlarmRequest, AlarmType};

use super::error::NodeError;
use super::Node;
use crate::store::QuotaUsage;

/// The default quota as a percentage of the data directory's filesystem size.
pub const DEFAULT_QUOTA_PERCENT: u64 = 30;

/// A member's quota and its last measured usage.
#[derive(Debug, Default)]
pub struct Quota {
    /// The quota in bytes; 0: off.
    bytes: AtomicU64,
    /// Where the default quota comes from: the filesystem holding this directory, re-read at
    /// every check so that a volume grown online raises the quota without a restart. None: the
    /// quota was set explicitly (`--quota-bytes`) and never changes.
    follows: Option<PathBuf>,
    /// The usage of the last check, bytes (0 before the first).
    usage: AtomicU64,
    /// The logical state size at the last compaction (or when the alarm was raised): under
    /// the alarm, a smaller state means keys were deleted and compacting pays.
    compacted_state: AtomicU64,
    /// Set while a compaction runs (one at a time).
    compacting: AtomicBool,
}

impl Quota {
    /// The quota for `configured` (`--quota-bytes`; `None`: the default share of the filesystem
    /// holding `data_dir`). A filesystem whose size cannot be read gives no quota, with a warning.
    pub fn resolve(configured: Option<u64>, data_dir: &Path) -> Self {
        let (bytes, follows) = match configured {
            Some(bytes) => (bytes, None),
            None => match filesystem_bytes(data_dir) {
                Ok(total) => (default_quota(total), Some(data_dir.to_path_buf())),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        dir = %data_dir.display(),
                        "cannot read the data directory's filesystem size; the space quota is off \
                         (set --quota-bytes)"
                    );
                    (0, None)
                }
            },
        };
        Self {
            bytes: AtomicU64::new(bytes),
            follows,
            usage: AtomicU64::new(0),
            compacted_state: AtomicU64::new(u64::MAX),
            compacting: AtomicBool::new(false),
        }
    }

    /// Re-reads the filesystem size for a default quota, so that a volume grown (or shrunk)
    /// while the member runs moves the quota with it. Returns the quota now.
    pub fn follow_filesystem(&self) -> u64 {
        let Some(dir) = &self.follows else {
            return self.bytes();
        };
        match filesystem_bytes(dir) {
            Ok(total) => {
                let new = default_quota(total);
                let old = self.bytes.swap(new, Ordering::Relaxed);
                if old != new {
                    tracing::info!(
                        old = %human_bytes(old),
                        new = %human_bytes(new),
                        filesystem = %human_bytes(total),
                        "the data volume changed size; the space quota follows it"
                    );
                }
                new
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the data volume's size; the quota stays");
                self.bytes()
            }
        }
    }

    /// The quota in bytes; 0 when off.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The usage measured by the last check, in bytes.
    pub fn usage(&self) -> u64 {
        self.usage.load(Ordering::Relaxed)
    }

    fn exceeded_by(&self, usage: u64) -> bool {
        let bytes = self.bytes();
        bytes > 0 && usage > bytes
    }
}

/// The default quota for a filesystem of `total` bytes.
fn default_quota(total: u64) -> u64 {
    total / 100 * DEFAULT_QUOTA_PERCENT
}

/// Total size of the filesystem that holds `dir`, in bytes.
pub fn filesystem_bytes(dir: &Path) -> std::io::Result<u64> {
    crate::volume::filesystem_space(dir).map(|s| s.total)
}

/// `61.2 MiB` (IEC units, one decimal; `512 B` below a KiB).
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// True when `command` would add data: a put, a transaction with a put in either branch, or a
/// batch holding one, or a lease grant. Deletes, compactions, revokes and alarm commands never do.
pub fn grows_data(command: &LogCommand) -> bool {
    match &command.command {
        Some(Command::Put(_)) => true,
        Some(Command::Txn(txn)) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .any(|op| matches!(op.request, Some(request_op::Request::Put(_)))),
        Some(Command::Batch(batch)) => batch.commands.iter().any(grows_data),
        Some(Command::LeaseGrant(_)) => true,
        Some(Command::Delete(_))
        | Some(Command::Alarm(_))
        | Some(Command::Compact(_))
        | Some(Command::LeaseRevoke(_))
        | None => false,
    }
}

/// Refuses a request that grows the data while a `NOSPACE` alarm is active in `alarms`.
pub fn check_writable(alarms: &[AlarmMember], what: &str) -> Result<(), NodeError> {
    match alarms.iter().find(|a| a.alarm == AlarmType::Nospace as i32) {
        Some(a) => Err(NodeError::NoSpace(nospace_message(a, what))),
        None => Ok(()),
    }
}

/// The RESOURCE_EXHAUSTED message: who, how much, and the way out.
pub fn nospace_message(alarm: &AlarmMember, what: &str) -> String {
    let name = if alarm.member_name.is_empty() {
        format!("member {}", alarm.member_id)
    } else {
        alarm.member_name.clone()
    };
    format!(
        "{what} refused: NOSPACE alarm raised by {name}: its store used {} of a {} quota. Reads \
         and deletes still work. Delete keys and compact the history to the current revision \
         ('kvsetctl compact REV'; {name} compacts its log into a snapshot by itself), or grow \
         {name}'s volume, then run 'kvsetctl alarm disarm'; the alarm is raised again \
         at {name}'s next check while it is still over its quota",
        human_bytes(alarm.usage_bytes),
        human_bytes(alarm.quota_bytes)
    )
}

/// Measures this member's usage every `interval`; compacts and raises the `NOSPACE` alarm when
/// over the quota (see the module docs). Runs until the process ends.
pub async fn run(node: Arc<Node>, interval: Duration) {
    if node.quota.bytes() == 0 {
        // Measuring reads the whole state: with the quota off, not at all.
        tracing::info!("space quota off (--quota-bytes=0)");
        return;
    } else {
        tracing::info!(
            quota = %human_bytes(node.quota.bytes()),
            quota_bytes = node.quota.bytes(),
            "space quota"
        );
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.is_shutting_down() || node.failure().is_some() {
            return;
        }
        if let Err(e) = check_once(&node).await {
            tracing::warn!(error = %e, "space quota check failed; retrying at the next check");
        }
    }
}

/// Measures the store usage now and records its total for metrics and Status.
pub async fn measure(node: &Node) -> Result<QuotaUsage, NodeError> {
    let store = node.store.clone();
    let usage = tokio::task::spawn_blocking(move || store.quota_usage())
        .await
        .map_err(|e| NodeError::Internal(format!("measuring the store: {e}")))?
        .map_err(|source| NodeError::Storage {
            member: node.name(),
            source,
        })?;
    node.quota.usage.store(usage.total(), Ordering::Relaxed);
    Ok(usage)
}

/// One check; see [`run`].
async fn check_once(node: &Arc<Node>) -> Result<(), NodeError> {
    let quota = node.quota.follow_filesystem();
    let usage = measure(node).await?;
    let own_alarm = node
        .state_machine
        .alarms()
        .into_iter()
        .any(|a| a.member_id == node.id() && a.alarm == AlarmType::Nospace as i32);
    if !own_alarm && node.quota.exceeded_by(usage.total()) {
        return raise(node, usage).await;
    }
    // Compact early, before the log's copy of recent writes trips the alarm: above 80 % of the
    // quota when the log holds a tenth of it. Under the alarm, compact once something was
    // deleted since the last compaction, so the deletes reach the snapshot and the log goes.
    let early = !own_alarm && usage.total() > quota / 10 * 8 && usage.log > quota / 10;
    let deleted = own_alarm && usage.state < node.quota.compacted_state.load(Ordering::Relaxed);
    if !(early || deleted) || node.quota.compacting.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    // In the background: building a snapshot takes a while, and the checks (which raise the
    // alarm) must go on meanwhile — writes keep coming.
    let node = node.clone();
    tokio::spawn(async move {
        let result = compact(&node).await;
        node.quota
            .compacted_state
            .store(usage.state, Ordering::Relaxed);
        match (result, measure(&node).await) {
            (Ok(()), Ok(after)) => tracing::info!(
                before_bytes = usage.total(),
                after_bytes = after.total(),
                quota_bytes = quota,
                state_bytes = after.state,
                log_bytes = after.log,
                snapshot_bytes = after.snapshot,
                "compacted the store for the space quota (snapshot + log purge)"
            ),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "compacting the store for the space quota failed")
            }
        }
        node.quota.compacting.store(false, Ordering::SeqCst);
    });
    Ok(())
}

/// Raises this member's NOSPACE alarm through the leader.
async fn raise(node: &Node, measured: QuotaUsage) -> Result<(), NodeError> {
    let usage = measured.total();
    tracing::warn!(
        usage = %human_bytes(usage),
        quota = %human_bytes(node.quota.bytes()),
        usage_bytes = usage,
        quota_bytes = node.quota.bytes(),
        "store over its space quota; raising the NOSPACE alarm"
    );
    // From now on, compact once the state shrinks below what it is now.
    node.quota
        .compacted_state
        .store(measured.state, Ordering::Relaxed);
    let request = AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: node.id(),
        alarm: AlarmType::Nospace as i32,
        member_name: node.name(),
        usage_bytes: usage,
        quota_bytes: node.quota.bytes(),
        all_members: false,
    };
    node.propose_alarm(request, false).await.map(|_| ())
}

/// Builds a snapshot of everything applied (if anything is newer than the last one) and purges
/// the whole log behind it.
async fn compact(node: &Node) -> Result<(), NodeError> {
    let stopped = |e: openraft::error::Fatal<crate::raft::NodeId>| NodeError::RaftStopped {
        member: node.name(),
        reason: e.to_string(),
    };
    let m = node.metrics();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let snapshot = m.snapshot.map(|l| l.index).unwrap_or(0);
    if applied > snapshot {
        node.raft.trigger().snapshot().await.map_err(stopped)?;
        node.raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(
                |m| m.snapshot.map(|s| s.index).unwrap_or(0) >= applied,
                "quota compaction snapshot",
            )
            .await
            .map_err(|e| NodeError::Timeout(format!("compacting for the space quota: {e}")))?;
    }
    let upto = node.metrics().snapshot.map(|l| l.index).unwrap_or(0);
    let purged = |m: &crate::raft::RaftMetrics| m.purged.map(|l| l.index).unwrap_or(0);
    if upto > 0 && purged(&node.metrics()) < upto {
        node.raft.trigger().purge_log(upto).await.map_err(stopped)?;
        // openraft purges in the background (a leader waits for replication reading those
        // entries); measuring before it did would count the log that is about to go.
        let done = node
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| purged(m) >= upto, "quota compaction purge")
            .await;
        if let Err(e) = done {
            tracing::info!(error = %e, upto, "the log purge for the space quota is still pending");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvset_proto::v1::{PutRequest, RequestOp, TxnRequest};

    #[test]
    fn what_grows_the_data() {
        let put = LogCommand {
            request_id: None,
            command: Some(Command::Put(PutRequest::default())),
        };
        assert!(grows_data(&put));
        let txn = |ops: Vec<RequestOp>| LogCommand {
            request_id: None,
            command: Some(Command::Txn(TxnRequest {
                failure: ops,
                ..Default::default()
            })),
        };
        let put_op = RequestOp {
            request: Some(request_op::Request::Put(PutRequest::default())),
        };
        assert!(grows_data(&txn(vec![put_op])));
        assert!(!grows_data(&txn(vec![])));
        let delete = LogCommand {
            request_id: None,
            command: Some(Command::Delete(Default::default())),
        };
        assert!(!grows_data(&delete));
    }

    /// Mounts a tmpfs of `size` at `dir`; None where mounting is not allowed (not root).
    fn mount_tmpfs(dir: &Path, size: &str) -> Option<()> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then_some(())
    }

    #[test]
    fn a_default_quota_follows_a_volume_grown_online_and_an_explicit_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        if mount_tmpfs(dir.path(), "10m").is_none() {
            assert!(
                std::env::var("CI").is_err(),
                "this test mounts a tmpfs and needs root under CI"
            );
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return;
        }
        let unmount = scopeguard(dir.path());
        let quota = Quota::resolve(None, dir.path());
        let before = quota.bytes();
        assert_eq!(before, default_quota(10 * 1024 * 1024));
        let explicit = Quota::resolve(Some(12345), dir.path());

        // Grow the filesystem under the running member, as an online PVC expansion does.
        let grown = std::process::Command::new("mount")
            .args(["-o", "remount,size=20m"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(grown.success());
        assert_eq!(quota.follow_filesystem(), default_quota(20 * 1024 * 1024));
        assert_eq!(quota.bytes(), default_quota(20 * 1024 * 1024));
        assert_eq!(explicit.follow_filesystem(), 12345);
        drop(unmount);
    }

    /// Unmounts `dir` when dropped.
    fn scopeguard(dir: &Path) -> impl Drop + '_ {
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        Unmount(dir)
    }

    #[test]
    fn the_message_names_usage_quota_and_the_way_out() {
        let alarm = AlarmMember {
            member_id: 1,
            alarm: AlarmType::Nospace as i32,
            member_name: "kv-1".into(),
            usage_bytes: 64_172_851,
            quota_bytes: 60 * 1024 * 1024,
        };
        let e = check_writable(&[alarm], "put").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("NOSPACE alarm raised by kv-1"), "{text}");
        assert!(text.contains("61.2 MiB of a 60.0 MiB quota"), "{text}");
        assert!(text.contains("kvsetctl alarm disarm"), "{text}");
        assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::ResourceExhausted
        );
        assert!(check_writable(&[], "put").is_ok());
    }

    #[test]
    fn default_quota_follows_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let total = filesystem_bytes(dir.path()).unwrap();
        assert!(total > 0);
        let q = Quota::resolve(None, dir.path());
        assert_eq!(q.bytes(), total / 100 * DEFAULT_QUOTA_PERCENT);
        assert_eq!(Quota::resolve(Some(0), dir.path()).bytes(), 0);
        assert!(!Quota::resolve(Some(0), dir.path()).exceeded_by(u64::MAX));
    }
}
