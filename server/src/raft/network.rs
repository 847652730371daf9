//! Outbound Raft transport: openraft's `RaftNetwork` over the internal gRPC service.
//!
//! One lazily connected tonic `Channel` per peer address, shared by every openraft replication
//! stream to that peer and re-resolved through DNS on reconnect (a restarted pod keeps its name
//! but not its IP). openraft's messages travel as postcard payloads inside
//! `kvset.raft.v1.RaftMessage`, stamped with the cluster id and the sender's id so the receiver
//! can refuse strangers (see [`super::service`]).
//!
//! Error mapping matters to openraft's back-off: a peer that cannot be reached, or that refuses
//! us, is `Unreachable` (openraft backs off); an RPC that outlives its TTL is `Timeout`; an error
//! the peer's Raft returned travels back inside the payload and becomes `RemoteError`; an append
//! over the peer's byte budget (`append_budget.rs`) is `PayloadTooLarge` so openraft sends fewer
//! entries.

use std::error::Error;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kvset_proto::raft::raft_client::RaftClient;
use kvset_proto::raft::RaftMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::RPCTypes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::append_budget::AppendBudget;
use super::{MemberNode, NodeId, TypeConfig};
use crate::tls::{Dialer, Port, TlsError};

/// Largest message peers exchange (a snapshot chunk, one huge entry). Appends are held to a far
/// smaller byte budget (`append_budget.rs`).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The cluster id, known from start-up on an existing member and learned while joining on a
/// new one. Shared by the transport (to stamp messages) and the service (to check them).
pub type ClusterIdCell = Arc<OnceLock<String>>;

/// Encodes an openraft message for the wire.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("openraft messages always serialize with postcard")
}

/// Decodes an openraft message from the wire.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Creates one [`PeerClient`] per replication target; caches channels by address.
#[derive(Clone)]
pub struct PeerNetwork {
    me: NodeId,
    cluster_id: ClusterIdCell,
    dialer: Arc<Dialer>,
}

impl PeerNetwork {
    pub fn new(me: NodeId, cluster_id: ClusterIdCell, dialer: Arc<Dialer>) -> Self {
        Self {
            me,
            cluster_id,
            dialer,
        }
    }

    /// The dialer behind this network (also used for members' client ports).
    pub fn dialer(&self) -> &Arc<Dialer> {
        &self.dialer
    }

    /// The shared channel to a peer address.
    pub fn channel(&self, addr: &str) -> Result<Channel, TlsError> {
        self.dialer.channel(Port::Peer, addr)
    }

    /// A client for an ad-hoc call to a peer (read index, election steering).
    pub fn client_for(&self, target: NodeId, node: &MemberNode) -> PeerClient {
        PeerClient {
            me: self.me,
            target,
            node: node.clone(),
            cluster_id: self.cluster_id.clone(),
            channel: self.channel(&node.peer_addr).map_err(|e| e.to_string()),
            budget: AppendBudget::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerClient {
        self.client_for(target, node)
    }
}

/// The transport to one peer.
pub struct PeerClient {
    me: NodeId,
    target: NodeId,
    node: MemberNode,
    cluster_id: ClusterIdCell,
    /// An invalid address is reported on every call rather than at creation, as openraft wants.
    channel: Result<Channel, String>,
    /// Bytes of entries one AppendEntries may carry (see `append_budget.rs`).
    budget: AppendBudget,
}

/// Which internal RPC to call.
#[derive(Clone, Copy, Debug)]
pub enum PeerRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    ReadIndex,
}

/// Why a peer call failed below the Raft layer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer {peer} at {addr} is unreachable: {reason}")]
    Unreachable {
        peer: String,
        addr: String,
        reason: String,
    },
    #[error("peer {peer} did not answer within {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
    #[error("peer {peer} sent an undecodable reply: {reason}")]
    BadReply { peer: String, reason: String },
}

impl PeerClient {
    /// Sends one message and returns the decoded reply payload.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: PeerRpc,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            peer: self.node.name.clone(),
            addr: self.node.peer_addr.clone(),
            reason,
        };
        let channel = self.channel.clone().map_err(unreachable)?;
        let message = RaftMessage {
            cluster_id: self.cluster_id.get().cloned().unwrap_or_default(),
            from: self.me,
            payload: encode(request),
        };
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let fut = async move {
            match rpc {
                PeerRpc::AppendEntries => client.append_entries(message).await,
                PeerRpc::Vote => client.vote(message).await,
                PeerRpc::InstallSnapshot => client.install_snapshot(message).await,
                PeerRpc::ReadIndex => client.read_index(message).await,
            }
        };
        let reply = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| TransportError::Timeout {
                peer: self.node.name.clone(),
                timeout,
            })?
            .map_err(|status| unreachable(format!("{}: {}", status.code(), status.message())))?;
        decode(&reply.into_inner().payload).map_err(|e| TransportError::BadReply {
            peer: self.node.name.clone(),
            reason: e.to_string(),
        })
    }

    /// Sends a Raft RPC whose reply is the peer Raft's `Result<Resp, RaftError<E>>`.
    async fn raft_call<Req, Resp, E>(
        &mut self,
        rpc: PeerRpc,
        action: RPCTypes,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let reply: Result<Resp, RaftError<NodeId, E>> = self
            .call(rpc, request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                TransportError::Timeout { timeout, .. } => RPCError::Timeout(Timeout {
                    action,
                    id: self.me,
                    target: self.target,
                    timeout,
                }),
                TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::BadReply { .. } => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
        let n = rpc.entries.len() as u64;
        if n > 1 {
            let sizes = rpc.entries.iter().map(entry_size_hint);
            if let Some(fitting) = self.budget.fit(sizes) {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(fitting),
                ));
            }
        }
        // openraft drops this future when its heartbeat-long timeout fires; the guard then
        // shrinks the budget so that the retry carries less.
        let in_flight = (n > 1).then(|| self.budget.start());
        let reply = self
            .raft_call(
                PeerRpc::AppendEntries,
                RPCTypes::AppendEntries,
                &rpc,
                &option,
            )
            .await;
        if let Some(in_flight) = in_flight {
            match &reply {
                Err(RPCError::Timeout(_)) => drop(in_flight),
                _ => in_flight.answered(),
            }
        }
        reply
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MemberNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.raft_call(
            PeerRpc::InstallSnapshot,
            RPCTypes::InstallSnapshot,
            &rpc,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>> {
        self.raft_call(PeerRpc::Vote, RPCTypes::Vote, &rpc, &option)
            .await
    }
}

/// Rough wire size of an entry, to split oversized appends before encoding them.
fn entry_size_hint(entry: &super::Entry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(cmd) => prost::Message::encoded_len(&cmd.0) + 32,
        _ => 256,
    }
}
