//! Watching the cluster from outside: every member's `Cluster.Status`, polled over its client
//! endpoint, turned into the few questions the harness asks.
//!
//! * **Who leads?** ([`ClusterView::leader`]) — for choosing fault targets and routing reads to
//!   followers.
//! * **Is it healthy?** ([`Monitor::wait_healthy`]) — every member answers and is ready, all
//!   agree on one leader, every member is a voter the leader hears from, and every member has
//!   applied at least the leader's commit index as it was when the rest held. Faults are only
//!   injected into a healthy cluster (so a wipe never removes the last copy of a committed
//!   entry), and the final checks start from one.
//! * **Is a returning member caught up?** ([`Monitor::wait_caught_up`]) — it answers again, and
//!   its applied index reaches the leader's commit index as it was when the member first
//!   answered. That is the "restart → caught up" recovery time.
//! * **Did the replicas converge?** ([`Monitor::wait_converged`]) — all at one revision with one
//!   `state_hash`. Two polls in a row showing equal revisions with different hashes are a
//!   divergence; not reaching equal revisions within the bound is a failure to converge.
//!
//! The monitor uses the raw generated gRPC client with short timeouts, not the SDK: it must see
//! each member exactly as it is, without retries or leader-following in between.

use std::time::{Duration, Instant};

use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::{Role, StatusRequest, StatusResponse};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::backend::MemberInfo;

/// How often the wait loops poll.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// One status request's timeout.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// One member as its own `Status` describes it (or why it did not answer).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemberView {
    /// `kv-N`.
    pub name: String,
    /// Its Raft node id (the ordinal), from its answer.
    pub id: Option<u64>,
    /// It answered.
    pub reachable: bool,
    /// Why it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `leader`, `follower`, `learner`, `candidate`, `shutdown` or `unknown`.
    pub role: String,
    /// Raft term.
    pub term: u64,
    /// The leader it knows.
    pub leader_id: Option<u64>,
    /// Highest index it knows committed.
    pub commit_index: u64,
    /// Highest index it applied.
    pub applied_index: u64,
    /// Index of its latest snapshot (0: none).
    pub snapshot_index: u64,
    /// First index still in its log (0: nothing purged yet; above 1: the log was compacted,
    /// so a member starting empty must catch up by a snapshot install).
    pub first_log_index: u64,
    /// Store revision of its applied state.
    pub revision: i64,
    /// Hash of its key-value state.
    pub state_hash: String,
    /// Its readiness.
    pub ready: bool,
    /// Deliberate faults it runs with.
    pub faults: Vec<String>,
    /// On a leader: every member of the membership as (id, voter, recently acknowledged).
    #[serde(skip)]
    pub membership: Vec<(u64, bool, bool)>,
}

impl MemberView {
    fn from_status(name: &str, s: StatusResponse) -> MemberView {
        let role = Role::try_from(s.role).unwrap_or(Role::Unspecified);
        MemberView {
            name: name.to_string(),
            id: s
                .header
                .as_ref()
                .and_then(|h| h.member.as_ref())
                .map(|m| m.ordinal),
            reachable: true,
            error: None,
            role: role_name(role).to_string(),
            term: s.term,
            leader_id: s.leader_id,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            snapshot_index: s.snapshot_index,
            first_log_index: s.first_log_index,
            revision: s.revision,
            state_hash: s.state_hash,
            ready: s.ready,
            faults: s.faults,
            membership: s
                .members
                .iter()
                .filter_map(|m| {
                    m.member
                        .as_ref()
                        .map(|member| (member.id, member.voter, m.healthy))
                })
                .collect(),
        }
    }

    fn unreachable(name: &str, error: String) -> MemberView {
        MemberView {
            name: name.to_string(),
            role: "unknown".into(),
            error: Some(error),
            ..MemberView::default()
        }
    }

    /// True for the leader role.
    pub fn is_leader(&self) -> bool {
        self.reachable && self.role == "leader"
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Learner => "learner",
        Role::Candidate => "candidate",
        Role::Shutdown => "shutdown",
        Role::Unspecified => "unknown",
    }
}

/// Every member's status at (about) one moment, by ordinal.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
    /// By ordinal.
    pub members: Vec<MemberView>,
}

impl ClusterView {
    /// The ordinal of the reachable member that says it leads, in the highest term.
    pub fn leader(&self) -> Option<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_leader())
            .max_by_key(|(_, m)| m.term)
            .map(|(i, _)| i)
    }

    /// Reasons the cluster is not healthy, catch-up aside (empty: healthy but maybe lagging).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for m in &self.members {
            if !m.reachable {
                problems.push(format!(
                    "{} does not answer ({})",
                    m.name,
                    m.error.as_deref().unwrap_or("?")
                ));
            } else if !m.ready {
                problems.push(format!("{} is not ready", m.name));
            } else if m.role != "leader" && m.role != "follower" {
                problems.push(format!("{} is a {}", m.name, m.role));
            }
        }
        let Some(l) = self.leader() else {
            problems.push("no leader".into());
            return problems;
        };
        let leader = &self.members[l];
        let leader_id = leader.id;
        for m in &self.members {
            if m.reachable && m.leader_id != leader_id {
                problems.push(format!(
                    "{} follows {:?}, not {} ({:?})",
                    m.name, m.leader_id, leader.name, leader_id
                ));
            }
        }
        for (i, m) in self.members.iter().enumerate() {
            let id = m.id.unwrap_or(i as u64);
            match leader.membership.iter().find(|(mid, _, _)| *mid == id) {
                None => problems.push(format!("{} is not in the membership", m.name)),
                Some((_, false, _)) => problems.push(format!("{} is not a voter", m.name)),
                Some((_, true, false)) => problems.push(format!(
                    "{} has not acknowledged the leader recently",
                    m.name
                )),
                Some(_) => {}
            }
        }
        problems
    }

    /// One line per member: `kv-0 leader t3 commit 120 applied 120 rev 80`.
    pub fn summary(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                if m.reachable {
                    format!(
                        "{} {} t{} commit {} applied {} rev {}{}",
                        m.name,
                        m.role,
                        m.term,
                        m.commit_index,
                        m.applied_index,
                        m.revision,
                        if m.ready { "" } else { " (not ready)" }
                    )
                } else {
                    format!(
                        "{} unreachable ({})",
                        m.name,
                        m.error.as_deref().unwrap_or("?")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The cluster never became healthy within the bound.
#[derive(Debug, Clone)]
pub struct NotHealthy {
    /// The last view.
    pub last: ClusterView,
    /// What was still wrong.
    pub problems: Vec<String>,
}

impl std::fmt::Display for NotHealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (last status: {})",
            self.problems.join("; "),
            self.last.summary()
        )
    }
}

/// How a returning member came back.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchUp {
    /// When it was first seen down (when the wait was asked to look for that).
    pub down_at: Option<Instant>,
    /// When it first answered.
    pub back_at: Option<Instant>,
    /// The leader's commit index when it first answered (with a leader known).
    pub target: Option<u64>,
    /// When its applied index reached `target`.
    pub caught_up_at: Option<Instant>,
}

/// The end state of the replicas.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Convergence {
    /// Every member at one revision with one state hash.
    Converged {
        /// The revision.
        revision: i64,
        /// The hash.
        state_hash: String,
        /// How long it took to get there (ms).
        waited_ms: f64,
    },
    /// Members at equal revisions with different hashes, twice in a row.
    Diverged {
        /// The two views.
        views: Vec<ClusterView>,
    },
    /// No moment with every member at one revision within the bound.
    NotConverged {
        /// The last view.
        last: ClusterView,
    },
}

/// Polls members' status.
pub struct Monitor {
    members: Vec<MemberInfo>,
    clients: Vec<ClusterClient<Channel>>,
}

impl Monitor {
    /// A monitor of `members` (channels connect lazily).
    pub fn new(members: &[MemberInfo]) -> Result<Monitor, String> {
        let clients = members
            .iter()
            .map(|m| {
                Endpoint::from_shared(format!("http://{}", m.endpoint))
                    .map(|e| {
                        ClusterClient::new(
                            e.connect_timeout(Duration::from_millis(500))
                                .timeout(STATUS_TIMEOUT)
                                .connect_lazy(),
                        )
                    })
                    .map_err(|e| format!("bad endpoint {} for {}: {e}", m.endpoint, m.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Monitor {
            members: members.to_vec(),
            clients,
        })
    }

    /// The members.
    pub fn members(&self) -> &[MemberInfo] {
        &self.members
    }

    /// Member `m`'s status.
    pub async fn status(&self, m: usize) -> MemberView {
        let name = &self.members[m].name;
        let mut client = self.clients[m].clone();
        match tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {})).await {
            Ok(Ok(resp)) => MemberView::from_status(name, resp.into_inner()),
            Ok(Err(status)) => MemberView::unreachable(name, status.message().to_string()),
            Err(_) => MemberView::unreachable(name, "no answer in time".into()),
        }
    }

    /// Every member's status, asked at once.
    pub async fn poll(&self) -> ClusterView {
        let members =
            futures::future::join_all((0..self.members.len()).map(|m| self.status(m))).await;
        ClusterView { members }
    }

    /// Waits until the cluster is healthy and every member has applied the leader's commit
    /// index (as it was when everything else held); returns that view.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<ClusterView, NotHealthy> {
        let deadline = Instant::now() + timeout;
        let mut target: Option<u64> = None;
        loop {
            let view = self.poll().await;
            let mut problems = view.problems();
            if problems.is_empty() {
                let leader = &view.members[view.leader().unwrap_or(0)];
                let goal = *target.get_or_insert(leader.commit_index);
                let behind: Vec<String> = view
                    .members
                    .iter()
                    .filter(|m| m.applied_index < goal)
                    .map(|m| format!("{} applied {} < {goal}", m.name, m.applied_index))
                    .collect();
                if behind.is_empty() {
                    return Ok(view);
                }
                problems = behind;
            } else {
                target = None;
            }
            if Instant::now() >= deadline {
                return Err(NotHealthy {
                    last: view,
                    problems,
                });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Waits until member `m` answers and has applied the leader's commit index as it was when
    /// `m` first answered (see [`CatchUp`]); gives up at `deadline`.
    ///
    /// With `expect_down`, the member is still on its way down (a graceful shutdown, or a
    /// supervisor that restarts it asynchronously): first wait (at most that long) until it stops
    /// answering, so that the old process is not mistaken for the returned one.
    pub async fn wait_caught_up(
        &self,
        m: usize,
        deadline: Instant,
        expect_down: Option<Duration>,
    ) -> CatchUp {
        let mut out = CatchUp::default();
        if let Some(bound) = expect_down {
            out.down_at = self
                .wait_down(m, (Instant::now() + bound).min(deadline))
                .await;
        }
        loop {
            let view = self.poll().await;
            let me = &view.members[m];
            if me.reachable {
                let now = Instant::now();
                out.back_at.get_or_insert(now);
                if out.target.is_none() {
                    if let Some(l) = view.leader() {
                        out.target = Some(view.members[l].commit_index);
                    }
                }
                if let Some(target) = out.target {
                    if me.applied_index >= target {
                        out.caught_up_at = Some(now);
                        return out;
                    }
                }
            }
            if Instant::now() >= deadline {
                return out;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Waits until member `m` answers, reports itself ready and knows a leader.
    pub async fn wait_member_ready(&self, m: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.status(m).await;
            if view.reachable && view.ready && view.leader_id.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(if view.reachable {
                    format!(
                        "not ready after {timeout:?} (ready: {}, leader: {:?})",
                        view.ready, view.leader_id
                    )
                } else {
                    format!(
                        "no answer after {timeout:?}: {}",
                        view.error.unwrap_or_default()
                    )
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until member `m` stops answering; returns when, or `None` at `until`.
    pub async fn wait_down(&self, m: usize, until: Instant) -> Option<Instant> {
        loop {
            if !self.status(m).await.reachable {
                return Some(Instant::now());
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until member `m` answers a status request; returns when, or `None` at `deadline`.
    pub async fn wait_answers(&self, m: usize, deadline: Instant) -> Option<Instant> {
        loop {
            if self.status(m).await.reachable {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every member is at one revision with one state hash (see [`Convergence`]).
    pub async fn wait_converged(&self, timeout: Duration) -> Convergence {
        let started = Instant::now();
        let mut mismatch: Option<ClusterView> = None;
        loop {
            let view = self.poll().await;
            let all_answer = view.members.iter().all(|m| m.reachable);
            let first = &view.members[0];
            let same_revision =
                all_answer && view.members.iter().all(|m| m.revision == first.revision);
            if same_revision {
                if view
                    .members
                    .iter()
                    .all(|m| m.state_hash == first.state_hash)
                {
                    return Convergence::Converged {
                        revision: first.revision,
                        state_hash: first.state_hash.clone(),
                        waited_ms: started.elapsed().as_secs_f64() * 1e3,
                    };
                }
                match mismatch.take() {
                    Some(previous)
                        if previous
                            .members
                            .iter()
                            .zip(&view.members)
                            .all(|(a, b)| a.revision == b.revision) =>
                    {
                        return Convergence::Diverged {
                            views: vec![previous, view],
                        };
                    }
                    _ => mismatch = Some(view.clone()),
                }
            } else {
                mismatch = None;
            }
            if started.elapsed() >= timeout {
                return Convergence::NotConverged { last: view };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
