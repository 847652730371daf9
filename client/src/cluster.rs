//! A whole-cluster status: every member, reachable or not.
//!
//! [`crate::Client::status_all`] asks every known endpoint for its `Status` at once (one
//! attempt each, bounded by the request timeout). The answers carry the membership with each
//! member's own client address; members that are in the membership but have not answered yet
//! (for example because the client was given one Service address) are asked in a second wave.
//!
//! [`ClusterStatus::assemble`] then builds one row per member from those probes. It is a pure
//! function so that renderers and tests can feed it recorded probes:
//!
//! - the membership comes from the leader's answer (highest term), else from the answer with
//!   the highest term;
//! - a member that answered reports its own role, term, applied index and revision; its lag
//!   comes from the leader's answer when the leader answered;
//! - a member of the membership that did not answer gets role `unknown`, `healthy: false`, the
//!   probe's error, and the endpoint it was probed at (its advertised client address);
//! - a member answering from outside the membership (removed, or not yet added) is listed too;
//! - an endpoint that failed and cannot be matched to a member by address is listed without a
//!   name, so a dead endpoint in the user's list is visible;
//! - `healthy` is `reachable && ready`: the member answered, has joined, knows a leader and has
//!   applied close to the commit index;
//! - the leader is the member that answered as leader in the highest term, else the leader
//!   named by the answers of the highest term;
//! - the alarms, and the membership mode, are those of the answer the membership came from.

use std::collections::HashSet;

use futures::future::join_all;

use crate::client::Client;
use crate::endpoint::EndpointAddr;
use crate::error::Error;
use crate::types::{Alarm, Role, Status};

/// What one endpoint answered to a status request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The endpoint asked (`host:port`).
    pub endpoint: String,
    /// Its status, or a short description of why it did not answer.
    pub result: Result<Status, String>,
}

/// One member's row in a [`ClusterStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberHealth {
    /// Member name; `None` for an unreachable endpoint that matches no known member.
    pub name: Option<String>,
    /// Ordinal (Raft node id), when known.
    pub ordinal: Option<u64>,
    /// The endpoint the member answered at, or was probed at.
    pub endpoint: String,
    /// The member's role as it reported it; `Unknown` when it did not answer.
    pub role: Role,
    /// Its Raft term, when it answered.
    pub term: Option<u64>,
    /// Its applied log index, when it answered.
    pub applied: Option<u64>,
    /// Its store revision, when it answered.
    pub revision: Option<i64>,
    /// The hash of its key-value state, when it answered: equal on members at equal revisions,
    /// so it shows whether replicas hold the same data.
    pub state_hash: Option<String>,
    /// Replication lag (commit index minus matched index) as seen by the leader, when the
    /// leader answered.
    pub lag: Option<u64>,
    /// Voter (true) or learner (false), when it is in the membership.
    pub voter: Option<bool>,
    /// It answered the status request.
    pub reachable: bool,
    /// It reported itself ready (joined, knows a leader, caught up).
    pub ready: bool,
    /// `reachable && ready`.
    pub healthy: bool,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The cluster as seen from every member that answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The leader's name, when known.
    pub leader: Option<String>,
    /// One row per member, by ordinal (unnamed endpoints last).
    pub members: Vec<MemberHealth>,
    /// The alarms active in the cluster, as the answer the membership came from (the leader's,
    /// when it answered) reports them. A `NOSPACE` alarm refuses writes that grow the data.
    pub alarms: Vec<Alarm>,
    /// How the membership follows the set's size, per the answer the membership came from:
    /// `statefulset`, `file` or `manual`; None when nobody answered (or the server predates it).
    pub membership_mode: Option<String>,
    /// The set's desired size in that answer (None when manual or unknown).
    pub desired_replicas: Option<u64>,
    /// Authorization in that answer: `off`, or `on (…)`; None when nobody answered (or the
    /// server predates it).
    pub authorization: Option<String>,
    /// The compact revision in that answer (history at and below it is forgotten; 0: nothing
    /// compacted); None when nobody answered.
    pub compact_revision: Option<i64>,
}

fn same_endpoint(a: &str, b: &str) -> bool {
    match (EndpointAddr::parse(a), EndpointAddr::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

impl ClusterStatus {
    /// How many members answered.
    pub fn reachable(&self) -> usize {
        self.members.iter().filter(|m| m.reachable).count()
    }

    /// Builds the rows from status probes; see the module docs for the rules.
    pub fn assemble(probes: &[Probe]) -> ClusterStatus {
        // Answers, one per member name (first one wins).
        let mut answers: Vec<&Status> = Vec::new();
        for probe in probes {
            if let Ok(status) = &probe.result {
                let name = &status.header.member;
                let dup = !name.is_empty() && answers.iter().any(|a| &a.header.member == name);
                if !dup {
                    answers.push(status);
                }
            }
        }
        let leader_answer = answers
            .iter()
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .copied();
        let view = leader_answer.or_else(|| {
            answers
                .iter()
                .max_by_key(|s| (s.term, s.members.len()))
                .copied()
        });
        let leader = match leader_answer {
            Some(l) => Some(l.header.member.clone()).filter(|n| !n.is_empty()),
            None => {
                let top = answers.iter().map(|s| s.term).max();
                answers
                    .iter()
                    .filter(|s| Some(s.term) == top)
                    .find_map(|s| s.leader_name.clone())
            }
        };
        let lag_of = |name: &str| {
            leader_answer.and_then(|l| {
                l.members
                    .iter()
                    .find(|m| m.member.name == name)
                    .map(|m| m.lag)
            })
        };
        let from_answer = |s: &Status| MemberHealth {
            name: Some(s.header.member.clone()).filter(|n| !n.is_empty()),
            ordinal: Some(s.header.ordinal),
            endpoint: s.endpoint.clone(),
            role: s.role,
            term: Some(s.term),
            applied: Some(s.applied_index),
            revision: Some(s.revision),
            state_hash: Some(s.state_hash.clone()),
            lag: lag_of(&s.header.member),
            voter: None,
            reachable: true,
            ready: s.ready,
            healthy: s.ready,
            error: None,
        };

        let mut rows: Vec<MemberHealth> = Vec::new();
        let mut used_answers: HashSet<usize> = HashSet::new();
        let mut membership: Vec<_> = view.map(|v| v.members.clone()).unwrap_or_default();
        membership.sort_by_key(|m| m.member.id);
        for ms in &membership {
            let m = &ms.member;
            let answered = answers.iter().position(|s| s.header.member == m.name);
            let row = match answered {
                Some(i) => {
                    used_answers.insert(i);
                    MemberHealth {
                        voter: Some(m.voter),
                        ..from_answer(answers[i])
                    }
                }
                None => {
                    let failed = probes
                        .iter()
                        .find(|p| p.result.is_err() && same_endpoint(&p.endpoint, &m.client_addr));
                    MemberHealth {
                        name: Some(m.name.clone()),
                        ordinal: Some(m.id),
                        endpoint: failed.map_or(m.client_addr.clone(), |p| p.endpoint.clone()),
                        lag: lag_of(&m.name),
                        voter: Some(m.voter),
                        error: Some(match failed.map(|p| &p.result) {
                            Some(Err(e)) => e.clone(),
                            _ => "not probed".to_string(),
                        }),
                        ..MemberHealth::default()
                    }
                }
            };
            rows.push(row);
        }
        for (i, s) in answers.iter().enumerate() {
            if !used_answers.contains(&i) {
                rows.push(from_answer(s));
            }
        }
        for probe in probes {
            let Err(error) = &probe.result else { continue };
            let covered = rows
                .iter()
                .any(|r| same_endpoint(&r.endpoint, &probe.endpoint))
                || membership
                    .iter()
                    .any(|m| same_endpoint(&m.member.client_addr, &probe.endpoint));
            if !covered {
                rows.push(MemberHealth {
                    endpoint: probe.endpoint.clone(),
                    error: Some(error.clone()),
                    ..MemberHealth::default()
                });
            }
        }
        rows.sort_by(|a, b| {
            (a.ordinal.is_none(), a.ordinal, &a.endpoint).cmp(&(
                b.ordinal.is_none(),
                b.ordinal,
                &b.endpoint,
            ))
        });
        ClusterStatus {
            leader,
            members: rows,
            alarms: view.map(|v| v.alarms.clone()).unwrap_or_default(),
            membership_mode: view
                .map(|v| v.membership_mode.clone())
                .filter(|m| !m.is_empty()),
            desired_replicas: view.map(|v| v.desired_replicas).filter(|n| *n > 0),
            authorization: view
                .map(|v| v.authorization.clone())
                .filter(|a| !a.is_empty()),
            compact_revision: view.map(|v| v.compact_revision),
        }
    }
}

/// A short reason for a failed probe: the cause, without the retry loop's advice.
pub(crate) fn probe_error(e: &Error) -> String {
    match e {
        Error::Unavailable { last_cause, .. } => last_cause.message.clone(),
        Error::Timeout {
            last_cause: Some(c),
            ..
        } => c.message.clone(),
        other => other.to_string(),
    }
}

impl Client {
    /// Asks every member for its status (every known endpoint, then members named by the
    /// answers that have not answered yet) and assembles one row per member. Never fails: an
    /// unreachable member is a row with `healthy: false`; check
    /// [`ClusterStatus::reachable`].
    pub async fn status_all(&self) -> ClusterStatus {
        let first: Vec<String> = self.endpoints();
        let mut probes = self.probe_all(first).await;
        let answered: HashSet<String> = probes
            .iter()
            .filter_map(|p| p.result.as_ref().ok())
            .map(|s| s.header.member.clone())
            .collect();
        let mut second: Vec<String> = Vec::new();
        for status in probes.iter().filter_map(|p| p.result.as_ref().ok()) {
            for ms in &status.members {
                let addr = &ms.member.client_addr;
                let probed = probes.iter().any(|p| same_endpoint(&p.endpoint, addr))
                    || second.iter().any(|e| same_endpoint(e, addr));
                if !answered.contains(&ms.member.name) && !probed && !addr.is_empty() {
                    second.push(addr.clone());
                }
            }
        }
        probes.extend(self.probe_all(second).await);
        ClusterStatus::assemble(&probes)
    }

    async fn probe_all(&self, endpoints: Vec<String>) -> Vec<Probe> {
        join_all(endpoints.into_iter().map(|endpoint| async move {
            let result = self.status_of(&endpoint).await.map_err(|e| probe_error(&e));
            Probe { endpoint, result }
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Header, Member, MemberStatus};

    fn member(id: u64) -> MemberStatus {
        MemberStatus {
            member: Member {
                id,
                name: format!("kv-{id}"),
                client_addr: format!("127.0.0.1:{}", 7379 + id),
                peer_addr: String::new(),
                voter: true,
            },
            role: Role::Follower,
            matched_index: 0,
            lag: id,
            healthy: true,
        }
    }

    fn status(id: u64, role: Role) -> Status {
        Status {
            endpoint: format!("127.0.0.1:{}", 7379 + id),
            header: Header {
                member: format!("kv-{id}"),
                ordinal: id,
                role,
                term: 2,
                ..Header::default()
            },
            role,
            term: 2,
            applied_index: 17,
            revision: 9,
            ready: true,
            leader_name: Some("kv-0".into()),
            members: (0..3).map(member).collect(),
            ..Status::default()
        }
    }

    #[test]
    fn assembles_rows_for_every_member() {
        let probes = vec![
            Probe {
                endpoint: "127.0.0.1:7379".into(),
                result: Ok(status(0, Role::Leader)),
            },
            Probe {
                endpoint: "127.0.0.1:7380".into(),
                result: Ok(status(1, Role::Follower)),
            },
            Probe {
                endpoint: "127.0.0.1:7381".into(),
                result: Err("connection refused".into()),
            },
            Probe {
                endpoint: "127.0.0.1:9999".into(),
                result: Err("connection refused".into()),
            },
        ];
        let cs = ClusterStatus::assemble(&probes);
        assert_eq!(cs.leader.as_deref(), Some("kv-0"));
        assert_eq!(cs.members.len(), 4);
        assert_eq!(cs.reachable(), 2);
        let kv2 = &cs.members[2];
        assert_eq!(kv2.name.as_deref(), Some("kv-2"));
        assert_eq!(kv2.role, Role::Unknown);
        assert!(!kv2.healthy);
        assert_eq!(kv2.lag, Some(2));
        assert_eq!(kv2.error.as_deref(), Some("connection refused"));
        assert_eq!(cs.members[1].lag, Some(1));
        assert!(cs.members[1].healthy);
        let stray = &cs.members[3];
        assert_eq!((stray.name.as_deref(), stray.ordinal), (None, None));
        assert_eq!(stray.endpoint, "127.0.0.1:9999");
    }

    #[test]
    fn leader_named_by_followers_when_leader_is_down() {
        let probes = vec![
            Probe {
                endpoint: "127.0.0.1:7379".into(),
                result: Err("connection refused".into()),
            },
            Probe {
                endpoint: "127.0.0.1:7380".into(),
                result: Ok(status(1, Role::Follower)),
            },
        ];
        let cs = ClusterStatus::assemble(&probes);
        assert_eq!(cs.leader.as_deref(), Some("kv-0"));
        assert_eq!(cs.members.len(), 3);
        assert_eq!(cs.members[0].endpoint, "127.0.0.1:7379");
        assert_eq!(cs.members[0].lag, None);
        assert_eq!(cs.members[2].error.as_deref(), Some("not probed"));
    }
}
