//! The coordination workloads of a run — watchers ([`super::watchers`]), lock clients
//! ([`super::locks`]) and lease keepers ([`super::leases`]) — started and finished as one, and
//! their checks run over a run directory.
//!
//! They live beside the KV workload rather than inside it because their evidence is not a
//! per-key register history: a watch is a stream of revisions, a lock is a counter and a queue,
//! a lease is a deadline. Each records its own JSON Lines file next to `history.jsonl`, and each
//! check reads only files, so that `kvset-chaos check <run dir>` re-judges a run exactly as the
//! run judged itself ([`judge_dir`]). A check whose file is absent (a run with `--watchers 0`,
//! or a history from before these workloads existed) is simply not run.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::backend::MemberInfo;
use super::checks::{CheckResult, CheckStatus};
use super::jsonl::{read_jsonl, JsonlLog};
use super::lease_check::check_leases;
use super::leases::{LeaseKeepers, LeaseRecord};
use super::lock_check::check_locks;
use super::locks::{LockClients, LockRecord};
use super::watch_check::{check_watch, WatchRecord};
use super::watchers::{current_revision, Watchers};
use crate::history::Event;

/// The watchers' evidence.
pub const WATCH_FILE: &str = "watch.jsonl";
/// The lock clients' evidence.
pub const LOCKS_FILE: &str = "locks.jsonl";
/// The lease keepers' evidence.
pub const LEASES_FILE: &str = "leases.jsonl";

/// How many of each coordination client a run has (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CoordConfig {
    /// Watchers on the contended keys.
    pub watchers: usize,
    /// Lock clients (each with a lease keeper beside it).
    pub lock_clients: usize,
}

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig {
            watchers: 2,
            lock_clients: 2,
        }
    }
}

/// The `kvset-chaos run` flags of the coordination workloads.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordArgs {
    /// Watchers on the contended keys, each resuming across every fault (0: none). Checked
    /// against the history: every acknowledged write delivered once, in order, nothing extra.
    #[arg(long, default_value_t = 2)]
    pub watchers: usize,
    /// Clients incrementing a shared counter under a lease-based lock, each also keeping a
    /// leased key alive (0: none). Checked: the counter equals the acknowledged increments;
    /// kept leases' keys survive, revoked and expired ones' are gone.
    #[arg(long, default_value_t = 2)]
    pub lock_clients: usize,
}

impl CoordArgs {
    /// The configuration these flags ask for.
    pub fn config(&self) -> CoordConfig {
        CoordConfig {
            watchers: self.watchers,
            lock_clients: self.lock_clients,
        }
    }

    /// The flags, for the reproduce line.
    pub fn reproduce(&self) -> Vec<String> {
        vec![
            format!("--watchers {}", self.watchers),
            format!("--lock-clients {}", self.lock_clients),
        ]
    }
}

/// The running coordination clients.
#[derive(Default)]
pub struct Coordination {
    members: Vec<MemberInfo>,
    watchers: Mutex<Option<Watchers>>,
    locks: Mutex<Option<LockClients>>,
    leases: Mutex<Option<LeaseKeepers>>,
}

fn log_in(out: &Path, file: &str) -> Result<JsonlLog, String> {
    JsonlLog::create(&out.join(file)).map_err(|e| format!("create {file}: {e}"))
}

impl Coordination {
    /// Starts what `config` asks for, recording into `out`. The watchers start from the
    /// cluster's current revision, so call this before the KV workload writes anything. Lock
    /// clients and lease keepers stop with `stop`; everything stops after `lifetime`.
    pub async fn start(
        config: CoordConfig,
        members: &[MemberInfo],
        out: &Path,
        stop: watch::Receiver<bool>,
        lifetime: Duration,
    ) -> Result<Coordination, String> {
        let c = Coordination {
            members: members.to_vec(),
            ..Coordination::default()
        };
        if config.watchers > 0 {
            let start = current_revision(members, Duration::from_secs(30))
                .await
                .ok_or("the watchers' start revision could not be read")?;
            let log = log_in(out, WATCH_FILE)?;
            let w = Watchers::start(members, config.watchers, start + 1, log, lifetime)?;
            *c.watchers.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        }
        if config.lock_clients > 0 {
            let log = log_in(out, LOCKS_FILE)?;
            let l = LockClients::start(members, config.lock_clients, log, stop.clone(), lifetime)?;
            *c.locks.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
            let log = log_in(out, LEASES_FILE)?;
            let k = LeaseKeepers::start(members, config.lock_clients, log, stop, lifetime)?;
            *c.leases.lock().unwrap_or_else(|p| p.into_inner()) = Some(k);
        }
        Ok(c)
    }

    /// After the faults are healed: stops the lock clients and reads the counter, reads the
    /// lease keys back, then lets every watcher catch up with the final revision. Returns the
    /// harness errors. Call once; later calls do nothing.
    pub async fn finish(&self, timeout: Duration) -> Vec<String> {
        let mut errors = Vec::new();
        let locks = self.locks.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(l) = locks {
            errors.extend(l.finish(timeout).await);
        }
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(k) = leases {
            errors.extend(k.finish(timeout).await);
        }
        let watchers = self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = watchers {
            match current_revision(&self.members, timeout).await {
                Some(rev) => errors.extend(w.finish(rev, timeout).await),
                None => {
                    errors.push("the final revision for the watchers could not be read".into());
                    errors.extend(w.finish(i64::MAX, Duration::ZERO).await);
                }
            }
        }
        errors
    }
}

fn unreadable(name: &'static str, error: impl std::fmt::Display) -> CheckResult {
    CheckResult {
        name,
        status: CheckStatus::Inconclusive,
        summary: format!("cannot read the evidence: {error}"),
    }
}

/// The coordination checks of the run directory `dir`, for the files it holds, against the
/// history's `events` (see the module docs).
pub fn judge_dir(dir: &Path, events: &[Event]) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    let path = dir.join(WATCH_FILE);
    if path.exists() {
        checks.push(match read_jsonl::<WatchRecord>(&path) {
            Ok(records) => check_watch(events, &records).result(),
            Err(e) => unreadable("watch", e),
        });
    }
    let path = dir.join(LOCKS_FILE);
    if path.exists() {
        checks.push(match read_jsonl::<LockRecord>(&path) {
            Ok(records) => check_locks(&records).result(),
            Err(e) => unreadable("lock", e),
        });
    }
    let path = dir.join(LEASES_FILE);
    if path.exists() {
        checks.push(match read_jsonl::<LeaseRecord>(&path) {
            Ok(records) => check_leases(&records).result(),
            Err(e) => unreadable("lease", e),
        });
    }
    checks
}
