//! Deliberate faults, for proving that tests and the chaos checker catch real bugs.
//!
//! All are **off by default**, enabled only by `--fault NAME` (or `KVSET_FAULTS=a,b`), and a
//! member running with any of them logs a warning at start-up and reports them in `Status`. They
//! exist because a checker that never saw a bug proves nothing: the chaos harness runs a short
//! workload against a member with `stale-linearizable-reads` and must report a violation, and the
//! SDK's exactly-once test uses `drop-write-responses` to lose answers to committed writes, and
//! `stall-proposal` shows that a proposal openraft never answers cannot hang a member's writes.
//! `ack-uncommitted-puts` makes a leader acknowledge a put as soon as it has handed it to Raft,
//! before a majority holds it (a read after the acknowledgement can miss the write, and a
//! leader cut off from the majority acknowledges puts that the new leader's log replaces): the
//! chaos harness's namespace-mode test must report a violation.
//!
//! `skip-log-fsync` makes the Raft log's append report entries durable without the
//! `fdatasync` (`store/wal.rs`), so a member acknowledges writes that a power cut loses. The
//! power-loss tests (`tests/tests/cluster_power_loss.rs`, on the kvset-powerfs filesystem) must
//! catch it. The store sits below every other layer and has no `Faults` handle, so this one
//! fault is also a process-wide flag ([`skip_log_fsync`]), set when a [`Faults`] enabling it is
//! built; this module depends on nothing, so any layer may read it.
//!
//! [`failpoint`]s are the storage crash tests' counterpart: named places where a process stops
//! (enabled only by `KVSET_FAILPOINTS`) so that a test can SIGKILL it inside a precise window.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One injectable fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve LINEARIZABLE reads from local state without the ReadIndex barrier (a stale-read bug).
    StaleLinearizableReads,
    /// After every Nth write has been committed and applied, answer UNAVAILABLE instead of the
    /// result (a lost response: the client cannot know the write happened).
    DropWriteResponses { every: u64 },
    /// Report Raft log appends durable without `fdatasync`ing them (lost on power loss).
    SkipLogFsync,
    /// The Nth proposal this member makes goes to Raft, but its answer is never awaited (as
    /// when openraft never answers a proposal whose entry a snapshot install purged). Proves
    /// that a proposal is bounded by a deadline and that later writes still get through.
    StallProposal { nth: u64 },
    /// Once the file at this path exists, the next Raft log read panics (inside openraft's core
    /// task, as a bug in the core would) and removes the file. Proves that a member whose Raft
    /// core died stops and is restarted instead of staying up as a zombie (`node::failstop`).
    PanicRaftCoreWhen { trigger: std::path::PathBuf },
    /// Acknowledge a put (or a group-commit batch of puts) once it is handed to Raft, without
    /// waiting for a majority to commit it (an "old leader acknowledges a write" bug). The
    /// answer is made up: the revision one past the last this member saw committed.
    AckUncommittedPuts,
}

static SKIP_LOG_FSYNC: AtomicBool = AtomicBool::new(false);
static PANIC_TRIGGER: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The `panic-raft-core-when=PATH` fault: panics once `PATH` exists (removing it first, so one
/// trigger makes one panic). Called by the Raft log's reads, which run on openraft's core task.
/// Without the fault, one load of an unset cell.
pub fn panic_if_triggered(place: &str) {
    if let Some(trigger) = PANIC_TRIGGER.get() {
        if std::fs::remove_file(trigger).is_ok() {
            panic!(
                "injected fault panic-raft-core-when: {} appeared; panicking in {place}",
                trigger.display()
            );
        }
    }
}

/// True when this process runs with the `skip-log-fsync` fault: the Raft log must not
/// `fdatasync` its appends.
pub fn skip_log_fsync() -> bool {
    SKIP_LOG_FSYNC.load(Ordering::Relaxed)
}

/// Error for an unknown or malformed fault name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown fault {0:?}: known faults are stale-linearizable-reads, skip-log-fsync, \
     ack-uncommitted-puts, drop-write-responses=N (for example drop-write-responses=3), \
     stall-proposal=N (for example stall-proposal=5) and panic-raft-core-when=PATH"
)]
pub struct UnknownFault(String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            None if s == "stale-linearizable-reads" => Ok(Fault::StaleLinearizableReads),
            None if s == "skip-log-fsync" => Ok(Fault::SkipLogFsync),
            None if s == "ack-uncommitted-puts" => Ok(Fault::AckUncommittedPuts),
            Some(("drop-write-responses", n)) => match n.parse::<u64>() {
                Ok(every) if every > 0 => Ok(Fault::DropWriteResponses { every }),
                _ => Err(UnknownFault(s.to_string())),
            },
            Some(("panic-raft-core-when", path)) if !path.is_empty() => {
                Ok(Fault::PanicRaftCoreWhen {
                    trigger: path.into(),
                })
            }
            Some(("stall-proposal", n)) => match n.parse::<u64>() {
                Ok(nth) if nth > 0 => Ok(Fault::StallProposal { nth }),
                _ => Err(UnknownFault(s.to_string())),
            },
            _ => Err(UnknownFault(s.to_string())),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::StaleLinearizableReads => write!(f, "stale-linearizable-reads"),
            Fault::DropWriteResponses { every } => write!(f, "drop-write-responses={every}"),
            Fault::SkipLogFsync => write!(f, "skip-log-fsync"),
            Fault::StallProposal { nth } => write!(f, "stall-proposal={nth}"),
            Fault::AckUncommittedPuts => write!(f, "ack-uncommitted-puts"),
            Fault::PanicRaftCoreWhen { trigger } => {
                write!(f, "panic-raft-core-when={}", trigger.display())
            }
        }
    }
}

/// The faults a member runs with, and their counters.
#[derive(Debug, Default)]
pub struct Faults {
    enabled: Vec<Fault>,
    writes: AtomicU64,
}

impl Faults {
    pub fn new(enabled: Vec<Fault>) -> Self {
        if enabled.contains(&Fault::SkipLogFsync) {
            SKIP_LOG_FSYNC.store(true, Ordering::Relaxed);
        }
        for fault in &enabled {
            if let Fault::PanicRaftCoreWhen { trigger } = fault {
                let _ = PANIC_TRIGGER.set(trigger.clone());
            }
        }
        Self {
            enabled,
            writes: AtomicU64::new(0),
        }
    }

    /// The enabled faults.
    pub fn enabled(&self) -> &[Fault] {
        &self.enabled
    }

    /// True when linearizable reads must skip their barrier.
    pub fn stale_linearizable_reads(&self) -> bool {
        self.enabled.contains(&Fault::StaleLinearizableReads)
    }

    /// Counts an applied write; true when its response must be dropped.
    pub fn drop_this_write_response(&self) -> bool {
        self.enabled.iter().any(|f| match f {
            Fault::DropWriteResponses { every } => {
                (self.writes.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(*every)
            }
            Fault::StaleLinearizableReads
            | Fault::SkipLogFsync
            | Fault::StallProposal { .. }
            | Fault::AckUncommittedPuts
            | Fault::PanicRaftCoreWhen { .. } => false,
        })
    }

    /// True when puts are acknowledged before they are committed.
    pub fn ack_uncommitted_puts(&self) -> bool {
        self.enabled.contains(&Fault::AckUncommittedPuts)
    }

    /// Which proposal of this member, counted from 1, is never answered, if any.
    pub fn stall_proposal(&self) -> Option<u64> {
        self.enabled.iter().find_map(|f| match f {
            Fault::StallProposal { nth } => Some(*nth),
            _ => None,
        })
    }
}

/// Environment variable naming the failpoints to stop at (comma-separated), for crash tests.
pub const FAILPOINTS_ENV: &str = "KVSET_FAILPOINTS";

/// A failpoint: a place where a crash test stops a process to SIGKILL it in a precise window
/// (for example between a log purge and the snapshot save it depends on). Off unless `name` is
/// listed in `KVSET_FAILPOINTS`, which is read once; then the calling thread prints
/// `failpoint <name> reached` on stdout and sleeps forever, and the test kills the process.
/// Costs one atomic load when no failpoint is set.
pub fn failpoint(name: &str) {
    static ENABLED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let enabled = ENABLED.get_or_init(|| {
        std::env::var(FAILPOINTS_ENV)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    });
    if enabled.iter().any(|e| e == name) {
        tracing::warn!(failpoint = name, "stopping at a failpoint (testing only)");
        println!("failpoint {name} reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_faults_and_rejects_others() {
        assert_eq!(
            "stale-linearizable-reads".parse::<Fault>().unwrap(),
            Fault::StaleLinearizableReads
        );
        assert_eq!(
            "drop-write-responses=3".parse::<Fault>().unwrap(),
            Fault::DropWriteResponses { every: 3 }
        );
        assert_eq!(
            "skip-log-fsync".parse::<Fault>().unwrap(),
            Fault::SkipLogFsync
        );
        assert_eq!(Fault::SkipLogFsync.to_string(), "skip-log-fsync");
        assert_eq!(
            "ack-uncommitted-puts".parse::<Fault>().unwrap(),
            Fault::AckUncommittedPuts
        );
        assert_eq!(
            Fault::AckUncommittedPuts.to_string(),
            "ack-uncommitted-puts"
        );
        assert_eq!(
            "stall-proposal=5".parse::<Fault>().unwrap(),
            Fault::StallProposal { nth: 5 }
        );
        assert_eq!(
            Fault::StallProposal { nth: 5 }.to_string(),
            "stall-proposal=5"
        );
        for bad in [
            "",
            "drop-write-responses",
            "drop-write-responses=0",
            "stall-proposal=0",
            "nope",
        ] {
            let err = bad.parse::<Fault>().unwrap_err().to_string();
            assert!(err.contains("known faults"), "{err}");
        }
    }

    #[test]
    fn drops_every_nth_write_response() {
        let f = Faults::new(vec![Fault::DropWriteResponses { every: 3 }]);
        let dropped: Vec<bool> = (0..6).map(|_| f.drop_this_write_response()).collect();
        assert_eq!(dropped, [false, false, true, false, false, true]);
        assert!(!Faults::default().drop_this_write_response());
    }
}
