//! Lease expiry: the leader's clock decides, the log carries the decision.
//!
//! The lease table (which leases exist, their TTL, their keys) is replicated state
//! (`store/lease.rs`). *When* a lease expires is not: it depends on keep-alives, which are not
//! logged one by one (a keep-alive every few seconds per lease would flood the log). So, as in
//! etcd, only the leader keeps deadlines, in memory:
//!
//! - A keep-alive reaches the leader (a follower forwards it, `api/lease.rs`) and moves the
//!   lease's deadline to now + TTL.
//! - Every tick the leader revokes the leases whose deadline passed, each through a revoke
//!   command in the log, so every member deletes the lease's keys at the same revision.
//!   Followers never act on their own clocks.
//! - When a member becomes leader (a new term) it does not know the old leader's deadlines, so
//!   it gives every lease a full TTL from now. A failover can therefore extend a lease by up to
//!   one TTL, but never expire one whose owner kept it alive: its keep-alives resume against
//!   the new leader well within that TTL. (etcd additionally checkpoints remaining TTLs so long
//!   leases are not extended by a whole TTL; kvset does not, yet.)
//! - A lease granted while this member leads gets its deadline at the next tick (or at its
//!   first keep-alive), also now + TTL.
//!
//! The deadlines belong to one leadership term; a tick that finds a different term (or this
//! member not leading) throws them away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kvset_proto::raft::{log_command, LogCommand};
use kvset_proto::v1::LeaseRevokeRequest;
use openraft::ServerState;
use tokio::time::Instant;

use super::{Node, NodeError, WriteOutcome};

/// How often the leader looks for expired leases.
pub const LESSOR_TICK: Duration = Duration::from_millis(250);

/// The leader's lease deadlines; see the module docs.
#[derive(Default)]
pub struct Lessor {
    state: Mutex<Deadlines>,
}

#[derive(Default)]
struct Deadlines {
    /// The leadership term the deadlines belong to (None: not leading).
    term: Option<u64>,
    deadlines: HashMap<i64, Instant>,
}

/// What the leader knows of one lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// Seconds left, rounded up.
    pub remaining: i64,
    /// The TTL it was granted with.
    pub granted: i64,
    /// The attached keys.
    pub keys: Vec<Vec<u8>>,
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Node {
    /// The current term if this member is the leader.
    fn leading_term(&self) -> Option<u64> {
        let m = self.metrics();
        (m.state == ServerState::Leader && m.current_leader == Some(self.id()))
            .then_some(m.current_term)
    }

    /// The leader's answer to "who leads", as a NotLeader error for forwarding.
    fn not_leader(&self) -> NodeError {
        match self.leader() {
            Some((id, node)) if id != self.id() => NodeError::NotLeader {
                member: self.name(),
                leader: node,
            },
            _ => NodeError::NoLeader {
                member: self.name(),
            },
        }
    }

    /// Renews lease `id` to its full TTL. Only the leader can: elsewhere NotLeader (forward).
    /// Returns the TTL renewed for, or 0 when the lease does not exist.
    pub fn lease_keep_alive(&self, id: i64) -> Result<i64, NodeError> {
        self.check_serving()?;
        let Some(term) = self.leading_term() else {
            return Err(self.not_leader());
        };
        let Some((ttl, _)) = self.lease_record(id)? else {
            return Ok(0);
        };
        let mut state = self.lessor.lock();
        if state.term == Some(term) {
            state
                .deadlines
                .insert(id, Instant::now() + ttl_duration(ttl));
        }
        // Another term: the next tick gives every lease a full TTL anyway.
        Ok(ttl)
    }

    /// Lease `id`'s remaining time, as only the leader knows it (elsewhere NotLeader), or None
    /// when it does not exist.
    pub fn lease_time_to_live(&self, id: i64) -> Result<Option<LeaseTimeToLive>, NodeError> {
        self.check_serving()?;
        let Some(term) = self.leading_term() else {
            return Err(self.not_leader());
        };
        let Some((granted, keys)) = self.lease_record(id)? else {
            return Ok(None);
        };
        let state = self.lessor.lock();
        let remaining = match state.deadlines.get(&id) {
            Some(deadline) if state.term == Some(term) => {
                let left = deadline.saturating_duration_since(Instant::now());
                (left.as_millis() as i64 + 999) / 1000
            }
            // Not tracked yet (granted a moment ago, or leadership is new): a full TTL.
            _ => granted,
        };
        Ok(Some(LeaseTimeToLive {
            remaining,
            granted,
            keys,
        }))
    }

    fn lease_record(&self, id: i64) -> Result<Option<(i64, Vec<Vec<u8>>)>, NodeError> {
        self.state_machine()
            .lease(id)
            .map_err(|source| NodeError::Storage {
                member: self.name(),
                source,
            })
    }

    /// The leader's expiry loop; runs for the life of the member (see the module docs).
    pub async fn run_lessor(self: Arc<Self>) {
        let mut tick = tokio::time::interval(LESSOR_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.is_shutting_down() {
                return;
            }
            for id in self.expired_leases() {
                self.revoke_expired(id).await;
            }
        }
    }

    /// Brings the deadlines in step with the applied lease table and this member's leadership,
    /// and returns the leases past their deadline.
    fn expired_leases(&self) -> Vec<i64> {
        let term = self.leading_term();
        let leases = match term {
            Some(_) => match self.state_machine().leases() {
                Ok(leases) => leases,
                Err(e) => {
                    tracing::warn!(error = %e, "lessor: cannot read the lease table");
                    return Vec::new();
                }
            },
            None => Vec::new(),
        };
        let now = Instant::now();
        let mut state = self.lessor.lock();
        if state.term != term {
            if let Some(t) = term {
                tracing::info!(
                    term = t,
                    leases = leases.len(),
                    "leading: every lease gets a full TTL from now"
                );
            }
            state.term = term;
            state.deadlines.clear();
        }
        let live: HashMap<i64, i64> = leases.into_iter().collect();
        state.deadlines.retain(|id, _| live.contains_key(id));
        for (&id, &ttl) in &live {
            state
                .deadlines
                .entry(id)
                .or_insert_with(|| now + ttl_duration(ttl));
        }
        let mut expired: Vec<i64> = state
            .deadlines
            .iter()
            .filter(|(_, &deadline)| deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        expired.sort_unstable();
        expired
    }

    /// Proposes the revoke of an expired lease. A failure (leadership lost, the lease revoked
    /// meanwhile) is logged: the next leader, or the next tick, decides again.
    async fn revoke_expired(&self, id: i64) {
        let command = LogCommand {
            request_id: None,
            command: Some(log_command::Command::LeaseRevoke(LeaseRevokeRequest { id })),
        };
        match self.write(command).await {
            Ok(WriteOutcome::Applied(_)) => {
                tracing::info!(lease = id, "lease expired: revoked it and deleted its keys");
                self.lessor.lock().deadlines.remove(&id);
            }
            Ok(WriteOutcome::NotLeader(_)) => {}
            Err(e) => tracing::warn!(lease = id, error = %e, "could not revoke an expired lease"),
        }
    }
}

/// A TTL in seconds as a duration (a non-positive TTL expires at once).
fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}
