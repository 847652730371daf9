//! The nemesis: injects the scheduled faults one at a time, heals them, and measures how the
//! cluster recovers.
//!
//! # Fault kinds
//!
//! | kind | target | what happens | healed by |
//! | --- | --- | --- | --- |
//! | `kill-follower` | a follower | kill -9 | its supervisor restarting it |
//! | `kill-leader` | the leader | kill -9 | its supervisor; a new leader is elected meanwhile |
//! | `restart` | any member | SIGTERM: graceful shutdown (a leader hands off first) | its supervisor |
//! | `kill-all` | every member at once | kill -9 | the supervisors; the cluster restarts from its volumes |
//! | `pause` | any member | SIGSTOP / cgroup freeze for the hold time | SIGCONT / thaw |
//! | `partition` | any member | cut off from the other members for the hold time | reconnecting it |
//! | `partition-leader` (opt-in) | the leader and a minority | cut off from the majority for the hold time (the old leader must neither serve a linearizable read nor acknowledge a write) | reconnecting them |
//! | `partition-one-way` (opt-in) | any member | what it sends to the other members is lost; what they send still arrives | reconnecting it |
//! | `latency` (opt-in) | any member | every packet it sends delayed (`tc netem`) for the hold time | removing the delay |
//! | `wipe` | any member | killed and its volume destroyed; down for the hold time | starting it empty: it must rejoin |
//! | `disk-full` (opt-in) | any member | its small filesystem filled; it stops on the storage failure | freeing the space at the end of the hold |
//! | `power-loss` (opt-in) | any member | kill -9, then its volume drops every write not yet durable; down for the hold time | starting it on what was durable |
//! | `power-loss-all` (opt-in) | every member | one member's power cut first (down for the hold time, its volume falls behind), then the others' | starting all on what was durable |
//!
//! Compound kinds (`--overlap`: `pause-wipe-kill-leader`, `kill-during-snapshot`,
//! `kill-all-wipe-one`, and `kill-all-wipe-kv0` on request) are scripts of the faults above
//! whose intervals overlap; `overlap` plans them, [`Nemesis`] runs the script step by step and
//! records each step and which steps were in force together (`FaultRecord::steps`,
//! `FaultRecord::overlaps`). A compound fault is still *one* fault of the schedule: it starts
//! only in a healthy cluster, and it wipes at most one member.
//!
//! # One fault at a time, into a healthy cluster
//!
//! Before each fault the nemesis waits (bounded by `--heal-timeout`) until the cluster is healthy
//! and caught up (see `monitor`). This is what makes `wipe` safe to include: a member's volume is
//! only destroyed while every other member holds every committed entry, so the wipe cannot
//! remove the last copy of an acknowledged write (which would be a data loss Raft does not
//! promise to survive, not a bug). If the cluster does not heal within the bound, that is a
//! liveness failure: the nemesis records it and injects nothing more.
//!
//! # Recovery measurements
//!
//! * **Leader loss → next successful write**: for a fault that takes the leader down (kill,
//!   graceful restart, pause or partition of the leader, kill-all, wipe of the leader), the time
//!   from when the fault is in force to the first acknowledged write the lost leader cannot have
//!   served: one in a *higher term* than the lost leader's, or one *invoked after* the fault
//!   took effect. Either keeps a write the old leader committed just before dying from counting
//!   as recovery; the second also covers a leader that restarts and leads again in its old term
//!   (openraft restores a leader whose vote is committed without a new election).
//! * **Restart → caught up**: for every member the fault took away, the time from when it could
//!   come back (for crashes and restarts: when it was seen to stop answering, or when the
//!   harness restarted it on docker; for the others: the thaw, reconnect or end of the hold)
//!   until it answers and has applied the leader's commit index as it was when it first
//!   answered again.
//!
//! After each fault the member(s) it touched are probed (see `Workload::probe`): bursts of reads
//! pinned to the returning member, recorded like any other operation.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::backend::{Backend, BackendError};
use super::monitor::{ClusterView, Monitor};
use super::overlap::{self, Op, Span};
use super::progress::LiveStatus;
use super::schedule::{PlannedFault, Schedule};
use super::workload::Workload;
use super::RunClock;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 a follower.
    KillFollower,
    /// kill -9 the leader.
    KillLeader,
    /// SIGTERM a member (graceful restart).
    Restart,
    /// kill -9 every member at once.
    KillAll,
    /// Freeze a member for a while.
    Pause,
    /// Cut a member off the network for a while.
    Partition,
    /// Destroy a member's volume; it rejoins empty.
    Wipe,
    /// Compound (`--overlap`): pause a follower, wipe the other, kill -9 the leader, all at
    /// once (see `overlap`).
    PauseWipeKillLeader,
    /// Compound: wipe a follower, then kill -9 it while it catches up (by a snapshot install).
    KillDuringSnapshot,
    /// Compound: kill -9 every member with one member's volume (never kv-0's) wiped.
    KillAllWipeOne,
    /// Compound, not in `--overlap`'s default set: kill -9 every member with kv-0's volume
    /// wiped.
    KillAllWipeKv0,
    /// Fill a member's (small) filesystem until it is full; free it at the end of the hold. The
    /// member must stop cleanly on the storage failure and come back once space returns.
    /// Opt-in: named in `--faults` (it needs a filesystem per member).
    DiskFull,
    /// Power cut of one member: kill -9, then every write its volume has not made durable is
    /// dropped; it stays down for the hold time. Opt-in (each volume on kvset-powerfs).
    PowerLoss,
    /// Power cut of the whole cluster with one volume behind: one member loses power first and
    /// stays down for the hold time while the others go on, then the others lose power too, and
    /// all come back together. Opt-in, like `PowerLoss`.
    PowerLossAll,
    /// Cut the leader, with a minority of the followers (none of three), off from the majority
    /// for a while. Opt-in (the process backend in namespace mode).
    PartitionLeader,
    /// Drop what one member sends to the other members (not what they send it) for a while.
    /// Opt-in (the process backend in namespace mode).
    PartitionOneWay,
    /// Delay every packet one member sends for a while (`tc netem`). Opt-in (the process
    /// backend in namespace mode, on a kernel with `sch_netem`).
    Latency,
    /// Scale the set down to a random smaller size (at least 1) and, after the hold, back up:
    /// the members above the size leave the cluster, then come back as new members. Opt-in
    /// (it needs a backend that can scale: the process launcher's `local scale`).
    Scale,
}

impl FaultKind {
    /// Every kind, in documentation order.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillFollower,
        FaultKind::KillLeader,
        FaultKind::Restart,
        FaultKind::KillAll,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Wipe,
    ];

    /// Every compound kind (see `overlap`), in documentation order.
    pub const COMPOUND: [FaultKind; 4] = [
        FaultKind::PauseWipeKillLeader,
        FaultKind::KillDuringSnapshot,
        FaultKind::KillAllWipeOne,
        FaultKind::KillAllWipeKv0,
    ];

    /// The compound kinds `--overlap` adds: all of them. `kill-all-wipe-kv0` needs the cluster
    /// record, which every backend has (the process launcher's file, the docker topology's
    /// shared volume, the ConfigMap in Kubernetes).
    pub const OVERLAP: [FaultKind; 4] = FaultKind::COMPOUND;

    /// Single kinds that run only when named in `--faults` (not part of `all`): they need
    /// something of the machine that a plain run does not set up.
    pub const OPT_IN: [FaultKind; 7] = [
        FaultKind::DiskFull,
        FaultKind::PowerLoss,
        FaultKind::PowerLossAll,
        FaultKind::Scale,
        FaultKind::PartitionLeader,
        FaultKind::PartitionOneWay,
        FaultKind::Latency,
    ];

    /// True for a kind that shapes the network beyond isolating one member (a group split, a
    /// one-way cut, latency): only backends that say so (`Backend::shaped_network_unsupported`)
    /// can do them.
    pub fn is_shaped_network(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionLeader | FaultKind::PartitionOneWay | FaultKind::Latency
        )
    }

    /// True for a power-loss kind (the members' volumes must be on kvset-powerfs).
    pub fn is_power_loss(self) -> bool {
        matches!(self, FaultKind::PowerLoss | FaultKind::PowerLossAll)
    }

    /// True for a compound kind (several faults in force at once).
    pub fn is_compound(self) -> bool {
        FaultKind::COMPOUND.contains(&self)
    }

    /// The single kinds a backend must support for this kind (itself for a single kind).
    pub fn components(self) -> Vec<FaultKind> {
        match self {
            FaultKind::PauseWipeKillLeader => {
                vec![FaultKind::Pause, FaultKind::Wipe, FaultKind::KillLeader]
            }
            FaultKind::KillDuringSnapshot => vec![FaultKind::Wipe, FaultKind::KillFollower],
            FaultKind::KillAllWipeOne | FaultKind::KillAllWipeKv0 => {
                vec![FaultKind::Wipe, FaultKind::KillAll]
            }
            single => vec![single],
        }
    }

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::Restart => "restart",
            FaultKind::KillAll => "kill-all",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Wipe => "wipe",
            FaultKind::PauseWipeKillLeader => "pause-wipe-kill-leader",
            FaultKind::KillDuringSnapshot => "kill-during-snapshot",
            FaultKind::KillAllWipeOne => "kill-all-wipe-one",
            FaultKind::KillAllWipeKv0 => "kill-all-wipe-kv0",
            FaultKind::DiskFull => "disk-full",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::PowerLossAll => "power-loss-all",
            FaultKind::Scale => "scale",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::Latency => "latency",
        }
    }

    /// Parses `all` (every single kind), `none`, or a comma-separated list of kinds (single or
    /// compound).
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        match s.trim() {
            "all" => return Ok(FaultKind::ALL.to_vec()),
            "none" | "" => return Ok(Vec::new()),
            _ => {}
        }
        let mut kinds = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            // `all` inside a list is every default kind, so `all,latency` adds opt-in kinds to
            // them (the form docs/CHAOS.md shows).
            let named = match part {
                "all" => FaultKind::ALL.to_vec(),
                "none" => Vec::new(),
                _ => vec![part.parse()?],
            };
            for kind in named {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
        }
        Ok(kinds)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .chain(FaultKind::COMPOUND)
            .chain(FaultKind::OPT_IN)
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fault {s:?}; known: {}, or all / none; opt-in: {}; compound: {}",
                    FaultKind::ALL.map(FaultKind::as_str).join(", "),
                    FaultKind::OPT_IN.map(FaultKind::as_str).join(", "),
                    FaultKind::COMPOUND.map(FaultKind::as_str).join(", ")
                )
            })
    }
}

/// How a member came back after a fault.
#[derive(Debug, Clone, Serialize)]
pub struct MemberRecovery {
    /// The member.
    pub member: String,
    /// From when it could come back to when it answered again (ms).
    pub back_ms: Option<f64>,
    /// From when it could come back to when it had caught up (ms): the "restart → caught up"
    /// recovery time.
    pub caught_up_ms: Option<f64>,
    /// The leader commit index it had to reach.
    pub target_index: Option<u64>,
}

/// One injected fault, as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Position in the schedule.
    pub index: usize,
    /// The kind.
    pub kind: FaultKind,
    /// The members it hit.
    pub targets: Vec<String>,
    /// The leader just before.
    pub leader_before: Option<String>,
    /// The leader's term just before.
    pub term_before: u64,
    /// Injected at (ms since the run started).
    pub at_ms: f64,
    /// When the members could come back (ms since the run started).
    pub healed_ms: Option<f64>,
    /// Did it take the leader down?
    pub leader_lost: bool,
    /// Leader loss → first acknowledged write the lost leader cannot have served (ms).
    pub leader_recovery_ms: Option<f64>,
    /// Per member hit.
    pub members: Vec<MemberRecovery>,
    /// Reads pinned to the returning member(s).
    pub probe_reads: usize,
    /// Why the injection failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Compound faults: each fault of the script as it happened.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// Compound faults: which steps were in force together, and when.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overlaps: Vec<OverlapRecord>,
    /// The run's duration ran out while the fault was in force: it was healed early, and a
    /// compound fault's script may have stopped before its last step. (Field added only then.)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut_short: bool,
}

/// One fault of a compound fault's script, as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// `pause kv-1`, `wipe kv-2`, `kill -9 kv-0`, `kill -9 kv-2 while catching up`.
    pub step: String,
    /// In force from (ms since the run started).
    pub from_ms: f64,
    /// Undone at (ms; equal to `from_ms` for a kill, which its supervisor undoes); `None` when
    /// it was never undone.
    pub to_ms: Option<f64>,
    /// What the harness observed (for a kill while catching up: the member's and the leader's
    /// snapshot and applied indexes at the kill).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Two steps of a compound fault in force at once.
#[derive(Debug, Clone, Serialize)]
pub struct OverlapRecord {
    /// The two steps' labels.
    pub steps: [String; 2],
    /// The common interval (ms since the run started; equal ends for a kill).
    pub from_ms: f64,
    /// End of the common interval.
    pub to_ms: f64,
}

/// What the nemesis did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NemesisReport {
    /// The faults, in order.
    pub faults: Vec<FaultRecord>,
    /// Set when the cluster did not heal before a fault within the bound.
    pub liveness_failure: Option<String>,
}

/// Injects faults until told to stop.
pub struct Nemesis {
    backend: Arc<dyn Backend>,
    monitor: Arc<Monitor>,
    workload: Arc<Workload>,
    clock: RunClock,
    heal_timeout: Duration,
    live: Arc<LiveStatus>,
}

impl Nemesis {
    /// A nemesis over `backend`.
    pub fn new(
        backend: Arc<dyn Backend>,
        monitor: Arc<Monitor>,
        workload: Arc<Workload>,
        clock: RunClock,
        heal_timeout: Duration,
    ) -> Nemesis {
        Nemesis {
            backend,
            monitor,
            workload,
            clock,
            heal_timeout,
            live: Arc::new(LiveStatus::default()),
        }
    }

    /// Reports the fault in force to `live` (for the progress line) as it goes.
    pub fn with_live_status(mut self, live: Arc<LiveStatus>) -> Nemesis {
        self.live = live;
        self
    }

    /// Says which fault is in force now, and on whom.
    fn announce(&self, kind: FaultKind, targets: &[String]) {
        self.live
            .set_fault(Some(format!("{kind} {}", targets.join(", "))));
    }

    /// Runs the schedule until `stop` turns true. A fault in progress is healed before this
    /// returns (its hold cut short).
    pub async fn run(self, schedule: Schedule, mut stop: watch::Receiver<bool>) -> NemesisReport {
        let mut report = NemesisReport::default();
        for planned in schedule {
            if sleep_or_stop(planned.gap, &mut stop).await {
                break;
            }
            let healthy = tokio::select! {
                r = self.monitor.wait_healthy(self.heal_timeout) => r,
                _ = stopped(&mut stop) => break,
            };
            let view = match healthy {
                Ok(view) => view,
                Err(not) => {
                    report.liveness_failure = Some(format!(
                        "before fault #{} ({}), the cluster did not heal within {:?}: {not}",
                        planned.index, planned.kind, self.heal_timeout
                    ));
                    break;
                }
            };
            let mut record = self.inject(&planned, &view, &mut stop).await;
            self.live.set_fault(None);
            record.cut_short = *stop.borrow();
            tracing::info!(
                fault = %planned.kind,
                targets = ?record.targets,
                error = ?record.error,
                "fault done"
            );
            report.faults.push(record);
            if *stop.borrow() {
                break;
            }
        }
        report
    }

    async fn blocking(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<(), BackendError> + Send + 'static,
    ) -> Result<(), String> {
        let backend = Arc::clone(&self.backend);
        match tokio::task::spawn_blocking(move || f(backend.as_ref())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("backend task failed: {e}")),
        }
    }

    async fn inject(
        &self,
        planned: &PlannedFault,
        view: &ClusterView,
        stop: &mut watch::Receiver<bool>,
    ) -> FaultRecord {
        if planned.kind.is_compound() {
            return self.inject_compound(planned, view, stop).await;
        }
        let members = self.monitor.members();
        let all: Vec<usize> = (0..members.len()).collect();
        let leader = view.leader();
        let followers: Vec<usize> = all.iter().copied().filter(|m| Some(*m) != leader).collect();
        let targets: Vec<usize> = match planned.kind {
            FaultKind::KillFollower => planned.choose(&followers).into_iter().collect(),
            FaultKind::KillLeader => leader.into_iter().collect(),
            FaultKind::KillAll => all.clone(),
            FaultKind::Restart
            | FaultKind::Pause
            | FaultKind::Partition
            | FaultKind::PartitionOneWay
            | FaultKind::Latency
            | FaultKind::Wipe
            | FaultKind::DiskFull
            | FaultKind::PowerLoss => planned.choose(&all).into_iter().collect(),
            // The leader in the largest minority (alone of three, with one follower of five):
            // the majority left behind can elect a new leader.
            FaultKind::PartitionLeader => match leader {
                Some(l) => {
                    let minority = all.len().saturating_sub(1) / 2;
                    let mut pool = followers.clone();
                    let mut side = vec![l];
                    while side.len() < minority {
                        match planned.choose(&pool) {
                            Some(f) => {
                                pool.retain(|&m| m != f);
                                side.push(f);
                            }
                            None => break,
                        }
                    }
                    side
                }
                None => Vec::new(),
            },
            // The member whose volume falls behind first, then the others.
            FaultKind::PowerLossAll => match planned.choose(&all) {
                Some(behind) => std::iter::once(behind)
                    .chain(all.iter().copied().filter(|&m| m != behind))
                    .collect(),
                None => Vec::new(),
            },
            // The members above a random smaller size (at least 1).
            FaultKind::Scale => {
                let sizes: Vec<usize> = (1..all.len()).collect();
                match planned.choose(&sizes) {
                    Some(size) => (size..all.len()).collect(),
                    None => Vec::new(),
                }
            }
            // Scripted by `inject_compound`.
            FaultKind::PauseWipeKillLeader
            | FaultKind::KillDuringSnapshot
            | FaultKind::KillAllWipeOne
            | FaultKind::KillAllWipeKv0 => Vec::new(),
        };
        let term_before = leader.map(|l| view.members[l].term).unwrap_or(0);
        let mut record = FaultRecord {
            index: planned.index,
            kind: planned.kind,
            targets: targets.iter().map(|&m| members[m].name.clone()).collect(),
            leader_before: leader.map(|l| members[l].name.clone()),
            term_before,
            at_ms: self.clock.ms(Instant::now()),
            healed_ms: None,
            leader_lost: leader.is_some_and(|l| targets.contains(&l)),
            leader_recovery_ms: None,
            members: Vec::new(),
            probe_reads: 0,
            error: None,
            steps: Vec::new(),
            overlaps: Vec::new(),
            cut_short: false,
        };
        if targets.is_empty() {
            record.error = Some("no member to target".into());
            return record;
        }
        tracing::info!(fault = %planned.kind, targets = ?record.targets, "injecting");
        self.announce(planned.kind, &record.targets);
        let started = Instant::now();
        record.at_ms = self.clock.ms(started);
        let revives = self.backend.revives_on_its_own();

        // Inject, hold, heal. `effective`: from when the fault is in force (a lost leader can no
        // longer serve; recovery is timed from here). `healed_at`: from when the members may
        // come back.
        let (result, effective, healed_at): (Result<(), String>, Instant, Instant) =
            match planned.kind {
                FaultKind::KillFollower | FaultKind::KillLeader | FaultKind::KillAll => {
                    let t = targets.clone();
                    let crashed = self.blocking(move |b| b.crash(&t)).await;
                    let effective = Instant::now();
                    let result = match crashed {
                        Ok(()) if !revives => {
                            let t = targets.clone();
                            self.blocking(move |b| b.revive(&t))
                                .await
                                .map_err(|e| format!("restarting failed: {e}"))
                        }
                        other => other,
                    };
                    (result, effective, effective)
                }
                FaultKind::Restart => {
                    // SIGTERM: the leader hands off and stops serving at once, so recovery is
                    // timed from the signal.
                    let t = targets[0];
                    let stopped = self.blocking(move |b| b.restart(t)).await;
                    let healed_at = Instant::now();
                    let result = match stopped {
                        Ok(()) if !revives => self
                            .blocking(move |b| b.revive(&[t]))
                            .await
                            .map_err(|e| format!("restarting failed: {e}")),
                        other => other,
                    };
                    (result, started, healed_at)
                }
                FaultKind::Pause
                | FaultKind::Partition
                | FaultKind::PartitionLeader
                | FaultKind::PartitionOneWay
                | FaultKind::Latency
                | FaultKind::Wipe
                | FaultKind::DiskFull => {
                    let t = targets[0];
                    let kind = planned.kind;
                    let side = targets.clone();
                    let heal_side = targets.clone();
                    let begun = self
                        .blocking(move |b| match kind {
                            FaultKind::Pause => b.pause(t),
                            FaultKind::Partition => b.partition(t),
                            FaultKind::PartitionLeader | FaultKind::PartitionOneWay => {
                                b.partition_shaped(kind, &side)
                            }
                            FaultKind::Latency => b.add_latency(t),
                            FaultKind::DiskFull => b.fill_disk(t),
                            _ => b.wipe_begin(t),
                        })
                        .await;
                    let effective = Instant::now();
                    if begun.is_ok() {
                        sleep_or_stop(planned.hold, stop).await;
                    }
                    // Heal even when beginning failed half-way (e.g. the hold file was created).
                    let healed = self
                        .blocking(move |b| match kind {
                            FaultKind::Pause => b.resume(t),
                            FaultKind::Partition => b.heal_partition(t),
                            FaultKind::PartitionLeader | FaultKind::PartitionOneWay => {
                                b.heal_partition_shaped(kind, &heal_side)
                            }
                            FaultKind::Latency => b.remove_latency(t),
                            FaultKind::DiskFull => b.free_disk(t),
                            _ => b.wipe_end(t),
                        })
                        .await;
                    let healed_at = Instant::now();
                    let result = match (begun, healed) {
                        (Err(e), _) => Err(e),
                        (Ok(()), Err(e)) => Err(format!("healing failed: {e}")),
                        (Ok(()), Ok(())) => Ok(()),
                    };
                    (result, effective, healed_at)
                }
                FaultKind::Scale => {
                    // Down to the lowest target's ordinal (the members above leave), hold, back
                    // to the full size (they return as new members).
                    let (down, full) = (targets[0], all.len());
                    let begun = self.blocking(move |b| b.scale(down)).await;
                    let effective = Instant::now();
                    if begun.is_ok() {
                        sleep_or_stop(planned.hold, stop).await;
                    }
                    let healed = self.blocking(move |b| b.scale(full)).await;
                    let healed_at = Instant::now();
                    let result = match (begun, healed) {
                        (Err(e), _) => Err(e),
                        (Ok(()), Err(e)) => Err(format!("scaling back up failed: {e}")),
                        (Ok(()), Ok(())) => Ok(()),
                    };
                    (result, effective, healed_at)
                }
                FaultKind::PowerLoss | FaultKind::PowerLossAll => {
                    let (result, effective, healed_at, steps) =
                        self.power_cut(planned, &targets, leader, stop).await;
                    record.steps = steps;
                    (result, effective, healed_at)
                }
                FaultKind::PauseWipeKillLeader
                | FaultKind::KillDuringSnapshot
                | FaultKind::KillAllWipeOne
                | FaultKind::KillAllWipeKv0 => (Err("a compound fault".into()), started, started),
            };
        record.healed_ms = Some(self.clock.ms(healed_at));
        record.overlaps = self.overlaps_of(&record.steps, record.healed_ms);
        if let Err(e) = result {
            record.error = Some(e);
            return record;
        }

        // Probe the returning members, and measure recovery, concurrently.
        // A member restarted by its supervisor later (or shutting down gracefully) is first
        // seen going down; a paused, partitioned or wiped one is already back by now.
        let expect_down = match planned.kind {
            FaultKind::KillFollower
            | FaultKind::KillLeader
            | FaultKind::KillAll
            | FaultKind::Restart
                if revives =>
            {
                Some(self.heal_timeout)
            }
            _ => None,
        };
        let immediate = matches!(
            planned.kind,
            FaultKind::Pause
                | FaultKind::Partition
                | FaultKind::PartitionLeader
                | FaultKind::PartitionOneWay
                | FaultKind::Latency
        );
        self.measure(
            &mut record,
            &targets,
            expect_down,
            immediate,
            effective,
            healed_at,
            stop,
        )
        .await;
        record
    }

    /// A power cut (see `Backend::power_cut`). `power-loss`: `targets[0]` loses power and
    /// stays down for the hold. `power-loss-all`: `targets[0]` loses power first and stays down
    /// for the hold while the others take writes (its volume falls behind theirs), then the
    /// others lose power too; all come back together. Returns the result, when the leader was
    /// lost (for the recovery time; the last cut when the leader was none of them), when the
    /// members could come back, and the steps.
    async fn power_cut(
        &self,
        planned: &PlannedFault,
        targets: &[usize],
        leader: Option<usize>,
        stop: &mut watch::Receiver<bool>,
    ) -> (Result<(), String>, Instant, Instant, Vec<StepRecord>) {
        let names = |ms: &[usize]| {
            ms.iter()
                .map(|&m| format!("kv-{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (first, rest) = match planned.kind {
            FaultKind::PowerLossAll => (vec![targets[0]], targets[1..].to_vec()),
            _ => (targets.to_vec(), Vec::new()),
        };
        let mut steps = Vec::new();
        let mut effective = None;
        let mut result = Ok(());
        for (i, group) in [first, rest].into_iter().enumerate() {
            if group.is_empty() || (i > 0 && (result.is_err() || *stop.borrow())) {
                continue;
            }
            let g = group.clone();
            let cut = self.blocking(move |b| b.power_cut(&g)).await;
            let now = Instant::now();
            if effective.is_none() && leader.is_some_and(|l| group.contains(&l)) {
                effective = Some(now);
            }
            let label = if i == 0 && planned.kind == FaultKind::PowerLossAll {
                format!("power cut {} (its volume falls behind)", names(&group))
            } else {
                format!("power cut {}", names(&group))
            };
            steps.push(StepRecord {
                step: label,
                from_ms: self.clock.ms(now),
                to_ms: None,
                note: None,
                error: cut.as_ref().err().cloned(),
            });
            if let Err(e) = cut {
                result = Err(e);
                continue;
            }
            if i == 0 {
                sleep_or_stop(planned.hold, stop).await;
            }
        }
        // Power back for everyone the fault touched, even after a failure half-way.
        let all = targets.to_vec();
        let on = self.blocking(move |b| b.power_on(&all)).await;
        let healed_at = Instant::now();
        for step in &mut steps {
            step.to_ms = Some(self.clock.ms(healed_at));
        }
        let result = match (result, on) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(format!("restoring power failed: {e}")),
            (Ok(()), Ok(())) => Ok(()),
        };
        // No leader among the cut members: no leader recovery is timed from it.
        let effective = effective.unwrap_or(healed_at);
        // A single-step power loss reads as a plain fault in the reports.
        if planned.kind == FaultKind::PowerLoss {
            steps.clear();
        }
        (result, effective, healed_at, steps)
    }

    /// The pairs of successful steps in force together (steps never undone count until
    /// `healed_ms`).
    fn overlaps_of(&self, steps: &[StepRecord], healed_ms: Option<f64>) -> Vec<OverlapRecord> {
        let spans: Vec<Span> = steps
            .iter()
            .filter(|s| s.error.is_none())
            .map(|s| Span {
                label: s.step.clone(),
                from: s.from_ms,
                to: s.to_ms.unwrap_or(healed_ms.unwrap_or(s.from_ms)),
            })
            .collect();
        overlap::overlapping(&spans)
            .into_iter()
            .map(|(i, j, from, to)| OverlapRecord {
                steps: [spans[i].label.clone(), spans[j].label.clone()],
                from_ms: from,
                to_ms: to,
            })
            .collect()
    }

    /// Runs a compound fault's script (see `overlap`): each operation after its delay, the
    /// faults it puts in force left in force while the next ones begin. Once an operation fails
    /// or the run is told to stop, no further fault begins, but every fault already in force is
    /// still undone, in the script's order and without waiting.
    async fn inject_compound(
        &self,
        planned: &PlannedFault,
        view: &ClusterView,
        stop: &mut watch::Receiver<bool>,
    ) -> FaultRecord {
        let members = self.monitor.members();
        let leader = view.leader();
        let mut record = FaultRecord {
            index: planned.index,
            kind: planned.kind,
            targets: Vec::new(),
            leader_before: leader.map(|l| members[l].name.clone()),
            term_before: leader.map(|l| view.members[l].term).unwrap_or(0),
            at_ms: self.clock.ms(Instant::now()),
            healed_ms: None,
            leader_lost: false,
            leader_recovery_ms: None,
            members: Vec::new(),
            probe_reads: 0,
            error: None,
            steps: Vec::new(),
            overlaps: Vec::new(),
            cut_short: false,
        };
        let plan = match overlap::plan(planned, members.len(), leader) {
            Ok(plan) => plan,
            Err(e) => {
                record.error = Some(e);
                return record;
            }
        };
        // Never destroy more volumes than a majority can spare (the plans are built so; this
        // keeps a future plan honest).
        if plan.wiped().len() > overlap::max_wipes(members.len()) {
            record.error = Some(format!(
                "refusing {}: it would wipe {:?}, more than {} of {} members",
                planned.kind,
                plan.wiped(),
                overlap::max_wipes(members.len()),
                members.len()
            ));
            return record;
        }
        let targets = plan.targets();
        record.targets = targets.iter().map(|&m| members[m].name.clone()).collect();
        record.leader_lost = leader.is_some_and(|l| targets.contains(&l));
        tracing::info!(fault = %planned.kind, targets = ?record.targets, script = ?plan.events, "injecting");
        self.announce(planned.kind, &record.targets);
        let started = Instant::now();
        record.at_ms = self.clock.ms(started);
        let revives = self.backend.revives_on_its_own();

        let mut effective: Option<Instant> = None;
        let mut error: Option<String> = None;
        // Faults in force: (member, index of its step) for pauses and wipes; crashed members.
        let mut paused: Vec<(usize, usize)> = Vec::new();
        let mut wiped: Vec<(usize, usize)> = Vec::new();
        let mut crashed: Vec<usize> = Vec::new();
        let mut steps: Vec<StepRecord> = Vec::new();
        for event in &plan.events {
            let halted = error.is_some() || *stop.borrow();
            if halted && event.op.begins() {
                continue;
            }
            if !halted && sleep_or_stop(event.after, stop).await && event.op.begins() {
                continue;
            }
            let label = overlap::span_label(&event.op, &event.op.members());
            let mut note = None;
            let result = match &event.op {
                Op::Pause(m) => {
                    let m = *m;
                    let r = self.blocking(move |b| b.pause(m)).await;
                    if r.is_ok() {
                        paused.push((m, steps.len()));
                    }
                    r
                }
                Op::WipeBegin(m) => {
                    let m = *m;
                    // Undone even when it fails half-way (the hold file may exist).
                    wiped.push((m, steps.len()));
                    self.blocking(move |b| b.wipe_begin(m)).await
                }
                Op::Crash(ms) => {
                    let t = ms.clone();
                    let r = self.blocking(move |b| b.crash(&t)).await;
                    crashed.extend(ms.iter().copied());
                    r
                }
                Op::KillWhileCatchingUp { member, delay } => {
                    let m = *member;
                    match self.kill_while_catching_up(m, *delay, stop).await {
                        Ok(observed) => {
                            note = Some(observed);
                            crashed.push(m);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Op::Resume(m) => {
                    let m = *m;
                    if let Some(i) = paused.iter().position(|(p, _)| *p == m) {
                        let (_, step) = paused.remove(i);
                        let r = self.blocking(move |b| b.resume(m)).await;
                        steps[step].to_ms = Some(self.clock.ms(Instant::now()));
                        if let Err(e) = r {
                            error.get_or_insert(format!("thawing kv-{m} failed: {e}"));
                        }
                    }
                    continue;
                }
                Op::WipeEnd(m) => {
                    let m = *m;
                    if let Some(i) = wiped.iter().position(|(w, _)| *w == m) {
                        let (_, step) = wiped.remove(i);
                        let r = self.blocking(move |b| b.wipe_end(m)).await;
                        steps[step].to_ms = Some(self.clock.ms(Instant::now()));
                        if let Err(e) = r {
                            error.get_or_insert(format!("restarting wiped kv-{m} failed: {e}"));
                        }
                    }
                    continue;
                }
                Op::Revive(ms) => {
                    let t: Vec<usize> =
                        ms.iter().copied().filter(|m| crashed.contains(m)).collect();
                    crashed.retain(|m| !t.contains(m));
                    if !revives && !t.is_empty() {
                        if let Err(e) = self.blocking(move |b| b.revive(&t)).await {
                            error.get_or_insert(format!("restarting failed: {e}"));
                        }
                    }
                    continue;
                }
            };
            let now = Instant::now();
            let at = self.clock.ms(now);
            let instant = matches!(event.op, Op::Crash(_) | Op::KillWhileCatchingUp { .. });
            if let Err(e) = &result {
                error.get_or_insert_with(|| format!("{label}: {e}"));
            } else if effective.is_none() && leader.is_some_and(|l| event.op.members().contains(&l))
            {
                effective = Some(now);
            }
            steps.push(StepRecord {
                step: label,
                from_ms: at,
                to_ms: instant.then_some(at),
                note,
                error: result.err(),
            });
        }
        let healed_at = Instant::now();
        record.healed_ms = Some(self.clock.ms(healed_at));
        record.overlaps = self.overlaps_of(&steps, record.healed_ms);
        record.steps = steps;
        if let Some(e) = error {
            record.error = Some(e);
            return record;
        }
        self.measure(
            &mut record,
            &targets,
            None,
            false,
            effective.unwrap_or(started),
            healed_at,
            stop,
        )
        .await;
        record
    }

    /// Waits until `member` answers after its wipe, then `delay`, then kills it with -9, and
    /// says what it and the leader held at that moment (was it installing a snapshot?).
    async fn kill_while_catching_up(
        &self,
        member: usize,
        delay: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<String, String> {
        let since = Instant::now();
        let name = self.monitor.members()[member].name.clone();
        let Some(answered) = self
            .monitor
            .wait_answers(member, since + self.heal_timeout)
            .await
        else {
            return Err(format!(
                "{name} did not answer within {:?} of its restart",
                self.heal_timeout
            ));
        };
        if sleep_or_stop(delay, stop).await {
            return Err("stopped before the kill".into());
        }
        let view = self.monitor.poll().await;
        self.blocking(move |b| b.crash(&[member])).await?;
        let me = &view.members[member];
        let leader = view.leader().map(|l| &view.members[l]);
        let (l_snapshot, l_first, l_commit) = leader
            .map(|l| (l.snapshot_index, l.first_log_index, l.commit_index))
            .unwrap_or_default();
        let phase = if !me.reachable {
            "it did not answer at that moment"
        } else if l_first <= 1 {
            "the leader still had its whole log, so the catch-up was by log replication, not a \
             snapshot"
        } else if me.snapshot_index == 0 {
            "killed before a snapshot was installed (during the snapshot transfer or before it)"
        } else if me.applied_index < l_commit {
            "killed after installing a snapshot, while replaying the log after it"
        } else {
            "killed after it had caught up"
        };
        Ok(format!(
            "{name} answered {:.0} ms after its restart; killed {:.0} ms later at applied index \
             {}, snapshot index {} (leader: commit {l_commit}, snapshot {l_snapshot}, first log \
             index {l_first}): {phase}",
            answered.duration_since(since).as_secs_f64() * 1e3,
            answered.elapsed().as_secs_f64() * 1e3,
            me.applied_index,
            me.snapshot_index,
        ))
    }

    /// Probes the members a fault touched and measures recovery, concurrently: the leader loss
    /// (timed from `effective`) and each member's return and catch-up (from `healed_at`).
    #[allow(clippy::too_many_arguments)]
    async fn measure(
        &self,
        record: &mut FaultRecord,
        targets: &[usize],
        expect_down: Option<Duration>,
        immediate: bool,
        effective: Instant,
        healed_at: Instant,
        stop: &watch::Receiver<bool>,
    ) {
        let members = self.monitor.members();
        let term_before = record.term_before;
        let deadline = healed_at + self.heal_timeout;
        let probes = futures::future::join_all(targets.iter().map(|&m| async move {
            if !immediate {
                if let Some(bound) = expect_down {
                    self.monitor.wait_down(m, Instant::now() + bound).await;
                }
                if self.monitor.wait_answers(m, deadline).await.is_none() {
                    return 0;
                }
            }
            self.workload.probe(m).await
        }));
        let catch_ups = futures::future::join_all(
            targets
                .iter()
                .map(|&m| self.monitor.wait_caught_up(m, deadline, expect_down)),
        );
        let leader_recovery = async {
            if !record.leader_lost {
                return None;
            }
            let observations = self.workload.observations();
            loop {
                if let Some(at) = observations.first_ack_after(effective, term_before) {
                    return Some(at);
                }
                if Instant::now() >= deadline || *stop.borrow() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (probe_counts, catch_ups, recovered) = tokio::join!(probes, catch_ups, leader_recovery);
        record.probe_reads = probe_counts.iter().sum();
        record.leader_recovery_ms =
            recovered.map(|at| at.duration_since(effective).as_secs_f64() * 1e3);
        record.members = targets
            .iter()
            .zip(catch_ups)
            .map(|(&m, c)| {
                let from = c.down_at.unwrap_or(healed_at);
                MemberRecovery {
                    member: members[m].name.clone(),
                    back_ms: c
                        .back_at
                        .map(|t| t.saturating_duration_since(from).as_secs_f64() * 1e3),
                    caught_up_ms: c
                        .caught_up_at
                        .map(|t| t.saturating_duration_since(from).as_secs_f64() * 1e3),
                    target_index: c.target,
                }
            })
            .collect();
    }
}

/// Sleeps for `d` unless `stop` turns true first; returns true when stopped.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stopped(stop) => true,
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for k in FaultKind::ALL {
            assert_eq!(k.as_str().parse::<FaultKind>().unwrap(), k);
        }
        assert_eq!(
            FaultKind::parse_list("all").unwrap(),
            FaultKind::ALL.to_vec()
        );
        assert!(FaultKind::parse_list("none").unwrap().is_empty());
        assert_eq!(
            FaultKind::parse_list("pause, kill-leader,pause").unwrap(),
            vec![FaultKind::Pause, FaultKind::KillLeader]
        );
        let mut all_and_more = FaultKind::ALL.to_vec();
        all_and_more.extend([FaultKind::PartitionLeader, FaultKind::Latency]);
        assert_eq!(
            FaultKind::parse_list("all,partition-leader, latency,pause").unwrap(),
            all_and_more
        );
        let err = FaultKind::parse_list("pause,nap").unwrap_err();
        assert!(err.contains("unknown fault \"nap\""), "{err}");
        // Compound kinds parse by name, but `all` stays every single kind.
        for k in FaultKind::COMPOUND {
            assert!(k.is_compound());
            assert_eq!(k.as_str().parse::<FaultKind>().unwrap(), k);
            assert!(!FaultKind::ALL.contains(&k));
            assert!(k.components().iter().all(|c| !c.is_compound()));
        }
        assert!(FaultKind::OVERLAP.iter().all(|k| k.is_compound()));
        assert!(FaultKind::OVERLAP.contains(&FaultKind::KillAllWipeKv0));
        assert_eq!(
            FaultKind::parse_list("kill-all-wipe-kv0").unwrap(),
            vec![FaultKind::KillAllWipeKv0]
        );
        // Opt-in single kinds parse by name and stay out of `all`.
        for k in FaultKind::OPT_IN {
            assert!(!k.is_compound());
            assert!(!FaultKind::ALL.contains(&k));
            assert_eq!(FaultKind::parse_list(k.as_str()).unwrap(), vec![k]);
        }
        assert_eq!(FaultKind::DiskFull.as_str(), "disk-full");
        assert_eq!(FaultKind::parse_list("scale").unwrap(), [FaultKind::Scale]);
        assert_eq!(
            FaultKind::parse_list("power-loss,power-loss-all").unwrap(),
            vec![FaultKind::PowerLoss, FaultKind::PowerLossAll]
        );
        let power: Vec<FaultKind> = FaultKind::OPT_IN
            .into_iter()
            .filter(|k| k.is_power_loss())
            .collect();
        assert_eq!(power, [FaultKind::PowerLoss, FaultKind::PowerLossAll]);
        assert!(!FaultKind::ALL.iter().any(|k| k.is_power_loss()));
    }
}
