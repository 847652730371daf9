//! Inbound Raft transport: the internal `kvset.raft.v1.Raft` gRPC service.
//!
//! Decodes openraft messages, hands them to the local `Raft`, and sends its result back inside
//! the payload (errors included, so the sender sees a `RemoteError`). Before anything reaches
//! openraft, two fences keep strangers out:
//! - **cluster id**: a message stamped with another cluster's id is refused, as is any message
//!   while this member does not know its cluster yet (a fresh joiner learns it before it asks to
//!   join, so a legitimate leader never meets that case);
//! - **membership for votes**: a vote request from a node that is not in this member's current
//!   membership is refused. A member removed by scale-down that comes back with its old volume
//!   still believes it is a voter and campaigns with ever higher terms; without this fence its
//!   higher term would depose the healthy leader every election timeout;
//! - **nothing before the start plan**: until the member has decided how it starts (and, if it
//!   must re-join, written its durable re-join marker), every Raft message is refused;
//! - **re-joining** (see [`crate::node::rejoin`]): a member that started on an empty volume has
//!   forgotten any vote it cast and any entry it acknowledged. Until the leader has re-admitted it
//!   (AddLearner demotes a voter that asks to join), it grants no vote, takes no election steering,
//!   and refuses appends and snapshots from leaders of terms below its fence (the term it learned
//!   when it asked to be re-admitted): a deposed leader must not complete a quorum with it. Appends
//!   from the current leader are accepted: entries it stores are really durable.

use std::sync::Arc;

use kvset_proto::raft::raft_server::Raft as RaftService;
use kvset_proto::raft::{election_request::Action, ElectionRequest, ElectionResponse, RaftMessage};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};

use crate::node::leadership::ElectionSteering;
use crate::node::{Node, RaftInbox};
use crate::raft::network::{decode, encode, ClusterIdCell};
use crate::raft::{NodeId, Raft, TypeConfig};

/// Serves the internal Raft RPCs of one member.
#[derive(Clone)]
pub struct PeerService {
    node: Arc<Node>,
    raft: Raft,
    cluster_id: ClusterIdCell,
    steering: Arc<ElectionSteering>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        let RaftInbox {
            raft,
            cluster_id,
            steering,
        } = node.raft_inbox();
        Self {
            raft,
            cluster_id,
            steering,
            node,
        }
    }

    fn check_cluster(&self, sender_cluster: &str, from: NodeId) -> Result<(), Status> {
        if !self.node.raft_traffic_open() {
            return Err(Status::unavailable(format!(
                "member is starting; refusing Raft traffic from node {from} until its start plan is decided"
            )));
        }
        match self.cluster_id.get() {
            None => Err(Status::failed_precondition(format!(
                "member has not joined a cluster yet; refusing Raft traffic from node {from}"
            ))),
            Some(mine) if mine != sender_cluster => Err(Status::permission_denied(format!(
                "node {from} belongs to cluster {sender_cluster:?}, this member to {mine:?}"
            ))),
            Some(_) => Ok(()),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(message: &RaftMessage) -> Result<T, Status> {
        decode(&message.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable Raft payload: {e}")))
    }
}

fn reply<T: serde::Serialize>(
    from: NodeId,
    cluster: &ClusterIdCell,
    value: &T,
) -> Response<RaftMessage> {
    Response::new(RaftMessage {
        cluster_id: cluster.get().cloned().unwrap_or_default(),
        from,
        payload: encode(value),
    })
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check_cluster(&msg.cluster_id, msg.from)?;
        let rpc: AppendEntriesRequest<TypeConfig> = Self::decode(&msg)?;
        self.check_fence(rpc.vote.leader_id().term, msg.from)?;
        let result = self.raft.append_entries(rpc).await;
        Ok(reply(self.raft_id(), &self.cluster_id, &result))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check_cluster(&msg.cluster_id, msg.from)?;
        let rpc: VoteRequest<NodeId> = Self::decode(&msg)?;
        if self.node.is_joining() || self.node.is_rejoining() {
            return Err(Status::failed_precondition(
                "this member started on an empty volume and is re-joining; it casts no votes until re-admitted",
            ));
        }
        let is_member = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&rpc.vote.leader_id.node_id)
            .is_some();
        if !is_member {
            return Err(Status::failed_precondition(format!(
                "node {} is not a member of this cluster (it was removed, or never joined); its vote request is ignored",
                rpc.vote.leader_id.node_id
            )));
        }
        let result = self.raft.vote(rpc).await;
        Ok(reply(self.raft_id(), &self.cluster_id, &result))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check_cluster(&msg.cluster_id, msg.from)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = Self::decode(&msg)?;
        self.check_fence(rpc.vote.leader_id().term, msg.from)?;
        let result = self.raft.install_snapshot(rpc).await;
        Ok(reply(self.raft_id(), &self.cluster_id, &result))
    }

    async fn read_index(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check_cluster(&msg.cluster_id, msg.from)?;
        let result = self.node.read_index().await;
        Ok(reply(self.raft_id(), &self.cluster_id, &result))
    }

    async fn election(
        &self,
        request: Request<ElectionRequest>,
    ) -> Result<Response<ElectionResponse>, Status> {
        let req = request.into_inner();
        self.check_cluster(&req.cluster_id, req.from)?;
        if self.node.is_rejoining() {
            return Err(Status::failed_precondition(
                "this member is re-joining after losing its volume; it takes part in no election until re-admitted",
            ));
        }
        match req.action() {
            Action::Suppress => self.steering.suppress(std::time::Duration::from_millis(
                req.duration_ms.min(30_000),
            )),
            Action::Resume => self.steering.resume(),
            Action::ElectNow => self
                .steering
                .elect_now()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?,
            Action::Transfer => {
                tracing::info!(
                    target = req.target,
                    from = req.from,
                    "asked to transfer leadership"
                );
                crate::node::leadership::transfer_to(&self.node, req.target)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?
            }
        }
        Ok(Response::new(ElectionResponse {}))
    }
}

impl PeerService {
    /// Refuses appends and snapshots from a leader whose term predates this member's
    /// re-admission (see [`crate::node::rejoin`]).
    fn check_fence(&self, term: u64, from: NodeId) -> Result<(), Status> {
        let state = self.node.rejoin_state();
        if crate::node::rejoin::admits(state.as_ref(), term) {
            return Ok(());
        }
        let fence = state.map_or(0, |s| s.fence_term);
        Err(Status::failed_precondition(format!(
            "this member is re-joining and refuses Raft traffic from terms before {fence}; node {from} leads term {term}, which predates its re-admission"
        )))
    }

    fn raft_id(&self) -> NodeId {
        self.raft.metrics().borrow().id
    }
}
