//! The public `kvset.v1.KV` service.
//!
//! Writes: validate (limits; a rejected request writes nothing), wrap into a `LogCommand`, propose
//! through Raft; the answer comes from the state machine once a majority has the entry durably.
//! On a follower the write is forwarded to the leader (default) or refused with the leader hint.
//! A forwarded request is marked so that it is never forwarded twice (no loops while leadership
//! moves). A forward whose answer is lost is answered as "outcome unknown", never as "not the
//! leader" (which means "not applied"; see `forward_failed`). Reads: STALE straight from the local state machine; LINEARIZABLE after a ReadIndex
//! barrier (see [`crate::node::Node::linearizable_barrier`]), on whichever member was called.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kvset_proto::raft::{command_result, log_command, CommandResult, LogCommand};
use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::kv_server::Kv;
use kvset_proto::v1::{
    Consistency, DeleteRequest, DeleteResponse, GetRequest, GetResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::node::NodeError;
use crate::node::{Node, WriteOutcome, FORWARDED_KEY};
use crate::raft::MemberNode;

/// How long a linearizable read may wait for the barrier.
const READ_BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a write came to on this member.
enum WriteAnswer<Resp> {
    /// Applied here (this member leads): the state machine's result, to be answered.
    Applied(CommandResult),
    /// Forwarded to the leader: the leader's answer (or why forwarding failed), passed on.
    Forwarded(Result<Response<Resp>, Status>),
}

/// A write's response: its header is filled in by [`KvService::serve_write`].
trait WriteResponse {
    fn set_header(&mut self, header: ResponseHeader);
}

macro_rules! write_response {
    ($($t:ty),*) => {$(
        impl WriteResponse for $t {
            fn set_header(&mut self, header: ResponseHeader) {
                self.header = Some(header);
            }
        }
    )*};
}
write_response!(PutResponse, DeleteResponse, TxnResponse);

/// Serves `kvset.v1.KV` on one member.
#[derive(Clone)]
pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// A storage error met while reading: a non-deterministic one (I/O, corruption) means this
    /// member's storage failed, so it fail-stops (see `node::failstop`).
    fn storage_error(&self, source: crate::store::StoreError) -> Status {
        if !source.is_deterministic() {
            self.node.fail_stop(format!("reading the store: {source}"));
        }
        NodeError::Storage {
            member: self.node.name(),
            source,
        }
        .into()
    }

    /// Proposes `command`; on a follower forwards the original request with `forward`.
    async fn write<Req, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        command: LogCommand,
        forward: F,
    ) -> Result<WriteAnswer<Resp>, Status>
    where
        F: FnOnce(KvClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarded = request.metadata().contains_key(FORWARDED_KEY);
        match self.node.write(command).await? {
            WriteOutcome::Applied(_) if self.node.faults().drop_this_write_response() => {
                tracing::warn!("injected fault: dropping the response of an applied write");
                Err(Status::unavailable("injected fault drop-write-responses: the write was applied but its response is dropped"))
            }
            WriteOutcome::Applied(result) => Ok(WriteAnswer::Applied(result)),
            WriteOutcome::NotLeader(leader) => {
                if !self.node.config().forward_writes || forwarded {
                    return Err(NodeError::NotLeader {
                        member: self.node.name(),
                        leader,
                    }
                    .into());
                }
                Ok(WriteAnswer::Forwarded(
                    self.forward(leader, request, forward).await,
                ))
            }
        }
    }

    /// The template of every write: validate first (a rejected request writes nothing), wrap it
    /// into a log command with its exactly-once token, write or forward, then answer with the
    /// result the state machine produced (`pick` takes the expected variant out of it) under a
    /// header at the write's revision.
    async fn serve_write<Req, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        request_id: Option<kvset_proto::v1::RequestId>,
        command: log_command::Command,
        forward: F,
        pick: impl FnOnce(command_result::Result) -> Option<Resp>,
    ) -> Result<Response<Resp>, Status>
    where
        Resp: WriteResponse,
        F: FnOnce(KvClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let command = LogCommand {
            request_id,
            command: Some(command),
        };
        let result = match self.write(request, command, forward).await? {
            WriteAnswer::Applied(result) => result,
            WriteAnswer::Forwarded(answer) => return answer,
        };
        let (revision, mut resp) = expect_result(result, pick)?;
        resp.set_header(self.node.header(revision));
        Ok(Response::new(resp))
    }

    async fn forward<Req, Resp, F, Fut>(
        &self,
        leader: MemberNode,
        request: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(KvClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let channel = self.node.client_channel(&leader.client_addr)?;
        let mut forwarded = Request::new(request.into_inner());
        forwarded.metadata_mut().insert(
            FORWARDED_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        forwarded.set_timeout(Duration::from_secs(30));
        tracing::debug!(leader = %leader.name, "forwarding write to the leader");
        let method = std::any::type_name::<Req>()
            .rsplit("::")
            .next()
            .unwrap_or("Write");
        self.node
            .telemetry()
            .forwarded(method.trim_end_matches("Request"));
        call(
            KvClient::new(channel).max_decoding_message_size(usize::MAX),
            forwarded,
        )
        .await
        .map_err(|status| self.forward_failed(leader, status))
    }

    /// What to answer when forwarding a write to `leader` failed with `status`.
    ///
    /// "Not the leader" tells a client the write was not applied, so it is answered only when
    /// that is certain: the connection to the leader could not be made (nothing was sent), or
    /// the leader itself refused and named another leader. A lost answer (the leader's
    /// `UNAVAILABLE` without a hint, `UNKNOWN`, a connection that broke mid-call) may follow an
    /// applied write: it becomes [`NodeError::OutcomeUnknown`]. Every other status (limits,
    /// deadlines, which already say "may still be applied") passes through unchanged.
    fn forward_failed(&self, leader: MemberNode, status: Status) -> Status {
        use kvset_proto::{LEADER_METADATA_KEY, OUTCOME_METADATA_KEY};
        let member = self.node.name();
        if never_sent(&status) {
            return NodeError::NotLeader { member, leader }.into();
        }
        let outcome_unknown = status.metadata().contains_key(OUTCOME_METADATA_KEY);
        let leader_refused = status.metadata().contains_key(LEADER_METADATA_KEY);
        match status.code() {
            tonic::Code::Unavailable if outcome_unknown || leader_refused => status,
            tonic::Code::Unavailable | tonic::Code::Unknown => NodeError::OutcomeUnknown {
                member,
                leader,
                reason: status.message().to_string(),
            }
            .into(),
            _ => status,
        }
    }

    async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        self.node.check_serving()?;
        if consistency == Consistency::Stale as i32 {
            return Ok(());
        }
        if consistency != Consistency::Linearizable as i32 {
            return Err(Status::invalid_argument(format!(
                "unknown consistency {consistency}: use 0 (LINEARIZABLE) or 1 (STALE)"
            )));
        }
        self.node
            .linearizable_barrier(READ_BARRIER_TIMEOUT)
            .await
            .map_err(Status::from)
    }
}

/// True when a failed call provably never reached the peer: the connection could not be made.
fn never_sent(status: &Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Takes the expected variant out of a command result.
fn expect_result<T>(
    result: CommandResult,
    pick: impl FnOnce(command_result::Result) -> Option<T>,
) -> Result<(i64, T), Status> {
    let revision = result.revision;
    match result.result.and_then(pick) {
        Some(r) => Ok((revision, r)),
        None => Err(Status::failed_precondition(
            "this request id (client_id, sequence) was already used by an earlier write whose result \
             is no longer remembered, or by a different kind of write; use a new sequence number",
        )),
    }
}

/// The handlers proper; the `Kv` impl below wraps each in metrics and a request span.
impl KvService {
    #[tracing::instrument(name = "kv.put", skip_all, fields(key_len = request.get_ref().key.len()))]
    async fn serve_put(
        &self,
        request: Request<PutRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        let req = request.get_ref();
        self.node.config().limits.validate_put(req)?;
        let (request_id, command) = (req.request_id, log_command::Command::Put(req.clone()));
        self.serve_write(
            request,
            request_id,
            command,
            |mut c, r| async move { c.put(r).await },
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
        let req = request.into_inner();
        self.node.config().limits.validate_get(&req)?;
        self.read_barrier(req.consistency).await?;
        let (kv, revision) = self
            .node
            .state_machine()
            .get_with_revision(&req.key)
            .map_err(|e| self.storage_error(e))?;
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
        self.node.config().limits.validate_delete(req)?;
        let (request_id, command) = (req.request_id, log_command::Command::Delete(req.clone()));
        self.serve_write(
            request,
            request_id,
            command,
            |mut c, r| async move { c.delete(r).await },
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
        let req = request.into_inner();
        self.node.config().limits.validate_range(&req)?;
        self.read_barrier(req.consistency).await?;
        let max = self.node.config().limits.max_range_limit;
        let (mut resp, revision) = self
            .node
            .state_machine()
            .range_with_revision(&req, max)
            .map_err(|e| {
                if e.is_deterministic() {
                    Status::invalid_argument(e.to_string())
                } else {
                    self.storage_error(e)
                }
            })?;
        resp.header = Some(self.node.header(revision));
        Ok(Response::new(resp))
    }

    #[tracing::instrument(name = "kv.txn", skip_all, fields(compares = request.get_ref().compares.len()))]
    async fn serve_txn(
        &self,
        request: Request<TxnRequest>,
    ) -> Result<Response<TxnResponse>, Status> {
        let req = request.get_ref();
        self.node.config().limits.validate_txn(req)?;
        let (request_id, command) = (req.request_id, log_command::Command::Txn(req.clone()));
        self.serve_write(
            request,
            request_id,
            command,
            |mut c, r| async move { c.txn(r).await },
            |r| match r {
                command_result::Result::Txn(answer) => Some(answer),
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
        _request: Request<kvset_proto::v1::CompactRequest>,
    ) -> Result<Response<kvset_proto::v1::CompactResponse>, Status> {
        Err(Status::unimplemented(
            "compaction arrives with the revision history",
        ))
    }
}
