//! The public `kvset.v1.KV` service.
//!
//! Writes (Put, Delete, Txn, Compact) go through the shared write path (`write.rs`): validate
//! (limits; a rejected request writes nothing), propose through Raft or forward to the leader,
//! answer from the state machine's result once a majority has the entry durably. Reads: STALE
//! straight from the local state machine; LINEARIZABLE after a ReadIndex barrier (see
//! [`crate::node::Node::linearizable_barrier`]), on whichever member was called. A read may
//! name a past revision (served from the revision history, `store/history.rs`); a compacted or
//! future revision is OUT_OF_RANGE.

use std::sync::Arc;

use kvset_proto::raft::{command_result, log_command};
use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::kv_server::Kv;
use kvset_proto::v1::{
    CompactRequest, CompactResponse, DeleteRequest, DeleteResponse, GetRequest, GetResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::authz;
use super::write::Writer;
use crate::auth::Need;
use crate::node::Node;
use crate::store::{KeyRange, StoreError};

/// Serves `kvset.v1.KV` on one member.
#[derive(Clone)]
pub struct KvService {
    node: Arc<Node>,
    writer: Writer,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            writer: Writer::new(node.clone()),
            node,
        }
    }

    /// The status of a failed read: a revision outside the history is OUT_OF_RANGE, another
    /// deterministic error INVALID_ARGUMENT, anything else a storage failure.
    fn read_error(&self, e: StoreError) -> Status {
        if e.is_out_of_range() {
            Status::out_of_range(e.to_string())
        } else if e.is_deterministic() {
            Status::invalid_argument(e.to_string())
        } else {
            self.writer.storage_error(e)
        }
    }
}

/// A KV client on a channel to the leader, for forwarded writes.
fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// The handlers proper; the `Kv` impl below wraps each in metrics and a request span.
impl KvService {
    #[tracing::instrument(name = "kv.put", skip_all, fields(key_len = request.get_ref().key.len()))]
    async fn serve_put(
        &self,
        request: Request<PutRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        let req = request.get_ref();
        let mut needs = Vec::with_capacity(2);
        authz::put_needs(req, &mut needs);
        authz::authorize(&self.node, &request, &needs)?;
        self.node.config().limits.validate_put(req)?;
        let (request_id, command) = (req.request_id, log_command::Command::Put(req.clone()));
        self.writer
            .serve_write(
                request,
                request_id,
                command,
                |ch, r| async move { kv_client(ch).put(r).await },
                |r| match r {
                    command_result::Result::Put(answer) => Some(answer),
                    _ => None,
                },
            )
            .await
    }

    #[tracing::instrument(name = "kv.get", skip_all, fields(consistency = request.get_ref().consistency))]
    async fn serve_get(
        &self,
        request: Request<GetRequest>,
    ) -> Result<Response<GetResponse>, Status> {
        let need = Need::Read(KeyRange::single(&request.get_ref().key));
        authz::authorize(&self.node, &request, &[need])?;
        let req = request.into_inner();
        self.node.config().limits.validate_get(&req)?;
        self.writer.read_barrier(req.consistency).await?;
        let (kv, revision) = self
            .node
            .state_machine()
            .get_at(&req.key, req.revision)
            .map_err(|e| self.read_error(e))?;
        Ok(Response::new(GetResponse {
            header: Some(self.node.header(revision)),
            kv,
        }))
    }

    #[tracing::instrument(name = "kv.delete", skip_all)]
    async fn serve_delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.get_ref();
        let mut needs = Vec::with_capacity(2);
        authz::delete_needs(req, &mut needs);
        authz::authorize(&self.node, &request, &needs)?;
        self.node.config().limits.validate_delete(req)?;
        let (request_id, command) = (req.request_id, log_command::Command::Delete(req.clone()));
        self.writer
            .serve_write(
                request,
                request_id,
                command,
                |ch, r| async move { kv_client(ch).delete(r).await },
                |r| match r {
                    command_result::Result::Delete(answer) => Some(answer),
                    _ => None,
                },
            )
            .await
    }

    #[tracing::instrument(name = "kv.range", skip_all, fields(consistency = request.get_ref().consistency))]
    async fn serve_range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        authz::authorize(
            &self.node,
            &request,
            &[authz::range_needs(request.get_ref())],
        )?;
        let req = request.into_inner();
        self.node.config().limits.validate_range(&req)?;
        self.writer.read_barrier(req.consistency).await?;
        let max = self.node.config().limits.max_range_limit;
        let (mut resp, revision) = self
            .node
            .state_machine()
            .range_with_revision(&req, max)
            .map_err(|e| self.read_error(e))?;
        resp.header = Some(self.node.header(revision));
        Ok(Response::new(resp))
    }

    #[tracing::instrument(name = "kv.txn", skip_all, fields(compares = request.get_ref().compares.len()))]
    async fn serve_txn(
        &self,
        request: Request<TxnRequest>,
    ) -> Result<Response<TxnResponse>, Status> {
        let req = request.get_ref();
        authz::authorize(&self.node, &request, &authz::txn_needs(req))?;
        self.node.config().limits.validate_txn(req)?;
        let (request_id, command) = (req.request_id, log_command::Command::Txn(req.clone()));
        self.writer
            .serve_write(
                request,
                request_id,
                command,
                |ch, r| async move { kv_client(ch).txn(r).await },
                |r| match r {
                    command_result::Result::Txn(answer) => Some(answer),
                    _ => None,
                },
            )
            .await
    }
}

impl KvService {
    #[tracing::instrument(name = "kv.compact", skip_all, fields(revision = request.get_ref().revision))]
    async fn serve_compact(
        &self,
        request: Request<CompactRequest>,
    ) -> Result<Response<CompactResponse>, Status> {
        authz::authorize(&self.node, &request, &[Need::Admin("compact the history")])?;
        let revision = request.get_ref().revision;
        if revision <= 0 {
            return Err(Status::invalid_argument(format!(
                "compact: revision is {revision}; it must be positive (at most the current revision)"
            )));
        }
        let command = log_command::Command::Compact(*request.get_ref());
        self.writer
            .serve_write(
                request,
                None,
                command,
                |ch, r| async move { kv_client(ch).compact(r).await },
                |r| match r {
                    command_result::Result::Compact(answer) => Some(answer),
                    _ => None,
                },
            )
            .await
    }
}

/// A request id for logs: the client's exactly-once token when it has one, else a fresh random id.
pub(crate) fn request_span(
    method: &'static str,
    token: Option<&kvset_proto::v1::RequestId>,
) -> tracing::Span {
    match token {
        Some(t) if t.client_id != 0 => {
            tracing::info_span!("grpc", method, request_id = %format!("{:x}/{}", t.client_id, t.sequence))
        }
        _ => {
            tracing::info_span!("grpc", method, request_id = %format!("{:016x}", rand::random::<u64>()))
        }
    }
}

macro_rules! instrumented {
    ($self:ident, $method:literal, $token:expr, $call:expr) => {{
        use tracing::Instrument;
        let started = std::time::Instant::now();
        let span = request_span($method, $token);
        let result = $call.instrument(span).await;
        $self.node.telemetry().observe($method, started, &result);
        result
    }};
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let token = request.get_ref().request_id;
        instrumented!(self, "Put", token.as_ref(), self.serve_put(request))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        instrumented!(self, "Get", None, self.serve_get(request))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let token = request.get_ref().request_id;
        instrumented!(self, "Delete", token.as_ref(), self.serve_delete(request))
    }

    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        instrumented!(self, "Range", None, self.serve_range(request))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let token = request.get_ref().request_id;
        instrumented!(self, "Txn", token.as_ref(), self.serve_txn(request))
    }

    async fn compact(
        &self,
        request: Request<CompactRequest>,
    ) -> Result<Response<CompactResponse>, Status> {
        instrumented!(self, "Compact", None, self.serve_compact(request))
    }
}
