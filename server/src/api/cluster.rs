//! The public `kvset.v1.Cluster` service: status, membership, and the steps of the StatefulSet
//! lifecycle (join = AddLearner + Promote, scale-down = Remove).
//!
//! Membership changes run on the leader; any other member forwards them there, so a joining pod
//! can talk to kv-0's stable name whatever the current leader is. The rules that keep them safe
//! (ids are ordinals, a voter re-joining is demoted first, highest ordinal removed first, never
//! below a live quorum) are the node's: see `node::membership`. The handlers here only check the
//! request's shape, forward, and answer.

use super::authz;
use crate::auth::Need;
use std::collections::BTreeSet;
use std::sync::Arc;

use kvset_proto::v1::alarm_request::AlarmAction;
use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::cluster_server::Cluster;
use kvset_proto::v1::{
    AddLearnerRequest, AddLearnerResponse, AlarmRequest, AlarmResponse, AlarmType, Member,
    MemberStatus, MembersRequest, MembersResponse, PromoteRequest, PromoteResponse, RemoveRequest,
    RemoveResponse, Role, SnapshotChunk, SnapshotInfo, SnapshotRequest, StatusRequest,
    StatusResponse,
};
use openraft::ServerState;
use tonic::{Request, Response, Status};

use crate::node::NodeError;
use crate::node::{BackupSnapshot, Node};
use crate::raft::{NodeId, RaftMetrics};

/// Serves `kvset.v1.Cluster` on one member.
#[derive(Clone)]
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The leader's Cluster client when this member is not the leader.
    fn leader_client(&self) -> Result<Option<ClusterClient<tonic::transport::Channel>>, Status> {
        let m = self.node.metrics();
        if m.state == ServerState::Leader {
            return Ok(None);
        }
        let (_, leader) = self.node.leader().ok_or(NodeError::NoLeader {
            member: self.node.name(),
        })?;
        Ok(Some(ClusterClient::new(self.node.member_channel(&leader)?)))
    }

    fn members_of(m: &RaftMetrics) -> Vec<Member> {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                name: node.name.clone(),
                client_addr: node.client_addr.clone(),
                peer_addr: node.peer_addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    fn answer_members(&self) -> Vec<Member> {
        Self::members_of(&self.node.metrics())
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

/// The handlers proper; the `Cluster` impl below wraps each in metrics and a request span.
impl ClusterService {
    async fn serve_status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        // A member that stopped on a storage failure says so, rather than report a role and
        // indexes that no longer move.
        self.node.check_not_failed()?;
        let m = self.node.metrics();
        let commit_index = self.node.committed_index().await;
        let revision = self.node.state_machine().revision();
        let state_hash = self.node.state_machine().state_hash().map_err(|e| {
            Status::from(NodeError::Storage {
                member: self.node.name(),
                source: e,
            })
        })?;
        let role = Node::role_of(m.state);
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let members = Self::members_of(&m)
            .into_iter()
            .map(|member| {
                let id = member.id;
                let role = if id == self.node.id() {
                    role
                } else if m.current_leader == Some(id) {
                    Role::Leader
                } else if voters.contains(&id) {
                    Role::Follower
                } else {
                    Role::Learner
                };
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .map(|l| l.index);
                let last = m.last_log_index.unwrap_or(0);
                let (matched_index, lag, healthy) = match (&m.replication, matched) {
                    (Some(_), _) if id == self.node.id() => (last, 0, true),
                    (Some(_), Some(matched)) => {
                        let lag = last.saturating_sub(matched);
                        (matched, lag, lag <= self.node.config().ready_max_lag)
                    }
                    (Some(_), None) => (0, last, false),
                    (None, _) => (0, 0, id == self.node.id()),
                };
                MemberStatus {
                    member: Some(member),
                    role: role as i32,
                    matched_index,
                    lag,
                    healthy,
                }
            })
            .collect();
        tracing::trace!(role = role_name(role), "status");
        Ok(Response::new(StatusResponse {
            header: Some(self.node.header(revision)),
            role: role as i32,
            term: m.current_term,
            leader_id: m.current_leader,
            leader_name: self.node.leader().map(|(_, n)| n.name).unwrap_or_default(),
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            revision,
            members,
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            first_log_index: m.purged.map(|l| l.index + 1).unwrap_or(0),
            state_hash,
            ready: self.node.is_ready(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            faults: self
                .node
                .faults()
                .enabled()
                .iter()
                .map(|f| f.to_string())
                .collect(),
            alarms: self.node.state_machine().alarms(),
            store_usage_bytes: self.node.quota().usage(),
            quota_bytes: self.node.quota().bytes(),
            compact_revision: self.node.state_machine().compact_revision(),
            membership_mode: self.node.desired_replicas().mode().to_string(),
            desired_replicas: self.node.desired_replicas().current().unwrap_or(0),
            authorization: self.node.authorizer().describe(),
        }))
    }

    async fn serve_alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let forwarded = request.metadata().contains_key(crate::node::FORWARDED_KEY);
        if request.get_ref().action != AlarmAction::Get as i32 {
            authz::authorize(
                &self.node,
                &request,
                &[Need::Admin("raise or clear an alarm")],
            )?;
        }
        let req = request.into_inner();
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                self.node.check_serving()?;
                let revision = self.node.state_machine().revision();
                Ok(Response::new(AlarmResponse {
                    header: Some(self.node.header(revision)),
                    alarms: self.node.state_machine().alarms(),
                }))
            }
            Ok(AlarmAction::Activate)
                if AlarmType::try_from(req.alarm).unwrap_or_default() == AlarmType::None =>
            {
                Err(Status::invalid_argument(
                    "Alarm: ACTIVATE needs an alarm kind (ALARM_TYPE_NOSPACE)",
                ))
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {
                let answer = self.node.propose_alarm(req, forwarded).await?;
                Ok(Response::new(answer))
            }
            Err(_) => Err(Status::invalid_argument(format!(
                "Alarm: unknown action {}; use GET (0), ACTIVATE (1) or DEACTIVATE (2)",
                req.action
            ))),
        }
    }

    async fn serve_members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let revision = self.node.state_machine().revision();
        let m = self.node.metrics();
        // The commit index only grows: a membership entry at or below it, read after the
        // metrics, was committed when the metrics were taken.
        let membership_index = m.membership_config.log_id().map_or(0, |l| l.index);
        let authoritative = m.state == openraft::ServerState::Leader
            && membership_index <= self.node.committed_index().await;
        Ok(Response::new(MembersResponse {
            header: Some(self.node.header(revision)),
            members: Self::members_of(&m),
            authoritative,
        }))
    }

    async fn serve_add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<AddLearnerResponse>, Status> {
        authz::authorize(&self.node, &request, &[Need::Admin("add a member")])?;
        self.node.check_serving()?;
        if let Some(mut leader) = self.leader_client()? {
            return leader.add_learner(request.into_inner()).await;
        }
        let req = request.into_inner();
        let member = req
            .member
            .ok_or_else(|| Status::invalid_argument("AddLearner needs `member`"))?;
        let node = self.node.validate_member(&member)?;
        self.node
            .add_learner(member.id, node, req.wait_caught_up)
            .await?;
        let revision = self.node.state_machine().revision();
        Ok(Response::new(AddLearnerResponse {
            header: Some(self.node.header(revision)),
            members: self.answer_members(),
        }))
    }

    async fn serve_promote(
        &self,
        request: Request<PromoteRequest>,
    ) -> Result<Response<PromoteResponse>, Status> {
        authz::authorize(&self.node, &request, &[Need::Admin("promote a member")])?;
        self.node.check_serving()?;
        if let Some(mut leader) = self.leader_client()? {
            return leader.promote(request.into_inner()).await;
        }
        let membership_index = self.node.promote(request.into_inner().id).await?;
        let revision = self.node.state_machine().revision();
        Ok(Response::new(PromoteResponse {
            header: Some(self.node.header(revision)),
            members: self.answer_members(),
            membership_index,
        }))
    }

    async fn serve_remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        authz::authorize(&self.node, &request, &[Need::Admin("remove a member")])?;
        self.node.check_serving()?;
        if let Some(mut leader) = self.leader_client()? {
            return leader.remove(request.into_inner()).await;
        }
        let req = request.into_inner();
        self.node.remove_member(req.id, req.any_order).await?;
        let revision = self.node.state_machine().revision();
        Ok(Response::new(RemoveResponse {
            header: Some(self.node.header(revision)),
            members: self.answer_members(),
        }))
    }
}

macro_rules! instrumented {
    ($self:ident, $method:literal, $call:expr) => {{
        use tracing::Instrument;
        let started = std::time::Instant::now();
        let result = $call
            .instrument(super::kv::request_span($method, None))
            .await;
        $self.node.telemetry().observe($method, started, &result);
        result
    }};
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        instrumented!(self, "Status", self.serve_status(request))
    }

    async fn members(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        instrumented!(self, "Members", self.serve_members(request))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<AddLearnerResponse>, Status> {
        instrumented!(self, "AddLearner", self.serve_add_learner(request))
    }

    async fn promote(
        &self,
        request: Request<PromoteRequest>,
    ) -> Result<Response<PromoteResponse>, Status> {
        instrumented!(self, "Promote", self.serve_promote(request))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        instrumented!(self, "Remove", self.serve_remove(request))
    }

    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        instrumented!(self, "Alarm", self.serve_alarm(request))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        instrumented!(self, "Snapshot", self.serve_snapshot(request))
    }
}

/// The chunks of a Snapshot answer.
pub type SnapshotStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<SnapshotChunk, Status>> + Send + 'static>,
>;

/// Bytes per Snapshot chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

impl ClusterService {
    /// Builds a snapshot covering everything applied now and streams it with its checksum.
    async fn serve_snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        authz::authorize(
            &self.node,
            &request,
            &[Need::Admin("take a backup snapshot")],
        )?;
        self.node.check_serving()?;
        let BackupSnapshot {
            last_log_index,
            last_log_term,
            data,
            summary,
        } = self.node.backup_snapshot().await?;
        let info = SnapshotInfo {
            header: Some(self.node.header(summary.revision)),
            last_log_index,
            last_log_term,
            revision: summary.revision,
            size_bytes: data.len() as u64,
            format: summary.format,
            sha256: String::new(),
            keys: summary.keys,
        };
        tracing::info!(
            index = last_log_index,
            bytes = data.len(),
            "streaming a backup snapshot"
        );
        let sha256 = kvset_proto::backup::sha256_hex(&data);
        let mut chunks: Vec<Result<SnapshotChunk, Status>> = data
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .map(|c| {
                Ok(SnapshotChunk {
                    info: None,
                    data: c.to_vec(),
                    sha256: String::new(),
                })
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(Ok(SnapshotChunk::default()));
        }
        if let Some(Ok(first)) = chunks.first_mut() {
            first.info = Some(info);
        }
        if let Some(Ok(last)) = chunks.last_mut() {
            last.sha256 = sha256;
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
