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
//! | `wipe` | any member | killed and its volume destroyed; down for the hold time | starting it empty: it must rejoin |
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
        }
    }

    /// Parses `all`, `none`, or a comma-separated list of kinds.
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        match s.trim() {
            "all" => return Ok(FaultKind::ALL.to_vec()),
            "none" | "" => return Ok(Vec::new()),
            _ => {}
        }
        let mut kinds = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let kind: FaultKind = part.parse()?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
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
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fault {s:?}; known: {}, or all / none",
                    FaultKind::ALL.map(FaultKind::as_str).join(", ")
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
        }
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
            let record = self.inject(&planned, &view, &mut stop).await;
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
        let members = self.monitor.members();
        let all: Vec<usize> = (0..members.len()).collect();
        let leader = view.leader();
        let followers: Vec<usize> = all.iter().copied().filter(|m| Some(*m) != leader).collect();
        let targets: Vec<usize> = match planned.kind {
            FaultKind::KillFollower => planned.choose(&followers).into_iter().collect(),
            FaultKind::KillLeader => leader.into_iter().collect(),
            FaultKind::KillAll => all.clone(),
            FaultKind::Restart | FaultKind::Pause | FaultKind::Partition | FaultKind::Wipe => {
                planned.choose(&all).into_iter().collect()
            }
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
        };
        if targets.is_empty() {
            record.error = Some("no member to target".into());
            return record;
        }
        tracing::info!(fault = %planned.kind, targets = ?record.targets, "injecting");
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
                FaultKind::Pause | FaultKind::Partition | FaultKind::Wipe => {
                    let t = targets[0];
                    let kind = planned.kind;
                    let begun = self
                        .blocking(move |b| match kind {
                            FaultKind::Pause => b.pause(t),
                            FaultKind::Partition => b.partition(t),
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
            };
        record.healed_ms = Some(self.clock.ms(healed_at));
        if let Err(e) = result {
            record.error = Some(e);
            return record;
        }

        // Probe the returning members, and measure recovery, concurrently.
        let deadline = healed_at + self.heal_timeout;
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
        let immediate = matches!(planned.kind, FaultKind::Pause | FaultKind::Partition);
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
        record
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
        let err = FaultKind::parse_list("pause,nap").unwrap_err();
        assert!(err.contains("unknown fault \"nap\""), "{err}");
    }
}
