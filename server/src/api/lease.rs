//! The public `kvset.v1.Lease` service.
//!
//! Grant and Revoke are writes (the shared write path, `write.rs`: proposed on the leader,
//! forwarded from a follower). Keep-alives and TimeToLive need the leader's in-memory deadlines
//! (`node/lessor.rs`), so a follower forwards each of them to the leader as one unary
//! `KeepAliveOnce` / `TimeToLive` call; a KeepAlive stream on a follower is thus a stream of
//! forwarded renewals, and survives a leader change (the next renewal goes to the new leader).
//! Leases lists the applied lease table of whichever member is asked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kvset_proto::raft::{command_result, log_command};
use kvset_proto::v1::lease_client::LeaseClient;
use kvset_proto::v1::lease_server::Lease;
use kvset_proto::v1::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::authz;
use super::write::Writer;
use crate::auth::{Caller, Need};
use crate::node::{Node, NodeError, FORWARDED_KEY};
use crate::store::KeyRange;

/// How long a forwarded keep-alive or TimeToLive may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The response stream of one KeepAlive call.
pub type KeepAliveStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>,
>;

/// Serves `kvset.v1.Lease` on one member.
#[derive(Clone)]
pub struct LeaseService {
    node: Arc<Node>,
    writer: Writer,
}

fn lease_client(channel: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(channel)
}

impl LeaseService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            writer: Writer::new(node.clone()),
            node,
        }
    }

    /// Runs `local` here if this member leads; otherwise forwards `request` to the leader with
    /// `call` (once: a forwarded request is never forwarded again).
    async fn on_leader<Req, Resp, L, F, Fut>(
        &self,
        request: Request<Req>,
        local: L,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        L: FnOnce(&Req) -> Result<Resp, NodeError>,
        F: FnOnce(LeaseClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarded = request.metadata().contains_key(FORWARDED_KEY);
        match local(request.get_ref()) {
            Ok(resp) => Ok(Response::new(resp)),
            Err(NodeError::NotLeader { leader, .. }) if !forwarded => {
                let channel = self.node.member_channel(&leader)?;
                let mut out = Request::new(());
                crate::auth::carry_identity(&request, &mut out);
                let mut out = out.map(|()| request.into_inner());
                out.metadata_mut().insert(
                    FORWARDED_KEY,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                out.set_timeout(FORWARD_TIMEOUT);
                call(lease_client(channel), out).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The keys attached to lease `id` in this member's applied state, one range each.
    fn attached_keys(&self, id: i64) -> Result<Vec<KeyRange>, Status> {
        let lease = self
            .node
            .state_machine()
            .lease(id)
            .map_err(|e| self.writer.storage_error(e))?;
        Ok(lease
            .map(|info| info.keys.iter().map(|k| KeyRange::single(k)).collect())
            .unwrap_or_default())
    }

    /// Revoking deletes the lease's keys: admin may, and so may a caller that may write every
    /// one of them (with no keys, any caller that may write some key).
    fn authorize_revoke(
        &self,
        request: &Request<LeaseRevokeRequest>,
        id: i64,
    ) -> Result<(), Status> {
        let caller = request.extensions().get::<Caller>();
        let authorizer = self.node.authorizer();
        if authorizer
            .check(caller, &[Need::Admin("revoke a lease")])
            .is_ok()
        {
            return Ok(());
        }
        let mut needs: Vec<Need> = self
            .attached_keys(id)?
            .into_iter()
            .map(Need::Write)
            .collect();
        if needs.is_empty() {
            needs.push(Need::SomeWrite("revoke a lease"));
        }
        authz::authorize(&self.node, request, &needs)
    }

    async fn keep_alive_once_here(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let node = self.node.clone();
        self.on_leader(
            request,
            |req| {
                let ttl = node.lease_keep_alive(req.id)?;
                Ok(LeaseKeepAliveResponse {
                    header: Some(node.header(node.state_machine().revision())),
                    id: req.id,
                    ttl,
                })
            },
            |mut c, r| async move { c.keep_alive_once(r).await },
        )
        .await
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        authz::authorize(&self.node, &request, &[Need::SomeWrite("grant a lease")])?;
        let limits = self.node.config().lease_ttl;
        let req = request.get_ref();
        if req.ttl <= 0 {
            return Err(Status::invalid_argument(format!(
                "lease grant: ttl is {}; give a positive number of seconds",
                req.ttl
            )));
        }
        if req.ttl > limits.max {
            return Err(Status::invalid_argument(format!(
                "lease grant: ttl {} s is above the maximum {} s (--max-lease-ttl)",
                req.ttl, limits.max
            )));
        }
        if req.id < 0 {
            return Err(Status::invalid_argument(format!(
                "lease grant: id {} is negative; use a positive id, or 0 to get a fresh one",
                req.id
            )));
        }
        let command = log_command::Command::LeaseGrant(LeaseGrantRequest {
            ttl: req.ttl.max(limits.min),
            id: req.id,
        });
        self.writer
            .serve_write(
                request,
                None,
                command,
                |ch, r| async move { lease_client(ch).grant(r).await },
                |r| match r {
                    command_result::Result::LeaseGrant(answer) => Some(answer),
                    _ => None,
                },
            )
            .await
    }

    async fn revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = request.get_ref().id;
        if id <= 0 {
            return Err(Status::invalid_argument(format!(
                "lease revoke: id {id} is not a lease id (ids are positive)"
            )));
        }
        self.authorize_revoke(&request, id)?;
        let command = log_command::Command::LeaseRevoke(*request.get_ref());
        self.writer
            .serve_write(
                request,
                None,
                command,
                |ch, r| async move { lease_client(ch).revoke(r).await },
                |r| match r {
                    command_result::Result::LeaseRevoke(answer) => Some(answer),
                    _ => None,
                },
            )
            .await
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        authz::authorize(
            &self.node,
            &request,
            &[Need::SomeWrite("keep a lease alive")],
        )?;
        self.node.check_serving()?;
        let caller = request.extensions().get::<Caller>().cloned();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let mut one = Request::new(req);
                if let Some(caller) = &caller {
                    one.extensions_mut().insert(caller.clone());
                }
                let answer = service
                    .keep_alive_once_here(one)
                    .await
                    .map(Response::into_inner);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn keep_alive_once(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        authz::authorize(
            &self.node,
            &request,
            &[Need::SomeWrite("keep a lease alive")],
        )?;
        self.keep_alive_once_here(request).await
    }

    async fn time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let mut needs = vec![Need::SomeWrite("ask a lease's time to live")];
        if request.get_ref().keys {
            needs.extend(
                self.attached_keys(request.get_ref().id)?
                    .into_iter()
                    .map(Need::Read),
            );
        }
        authz::authorize(&self.node, &request, &needs)?;
        let node = self.node.clone();
        self.on_leader(
            request,
            |req| {
                let header = Some(node.header(node.state_machine().revision()));
                Ok(match node.lease_time_to_live(req.id)? {
                    Some(t) => LeaseTimeToLiveResponse {
                        header,
                        id: req.id,
                        ttl: t.remaining,
                        granted_ttl: t.granted,
                        keys: if req.keys { t.keys } else { Vec::new() },
                    },
                    None => LeaseTimeToLiveResponse {
                        header,
                        id: req.id,
                        ttl: -1,
                        ..Default::default()
                    },
                })
            },
            |mut c, r| async move { c.time_to_live(r).await },
        )
        .await
    }

    async fn leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        authz::authorize(&self.node, &request, &[Need::Admin("list every lease")])?;
        self.node.check_serving()?;
        let sm = self.node.state_machine();
        let revision = sm.revision();
        let mut leases = Vec::new();
        for (id, ttl) in sm.leases().map_err(|e| self.writer.storage_error(e))? {
            let keys = sm
                .lease(id)
                .map_err(|e| self.writer.storage_error(e))?
                .map_or(0, |info| info.keys.len() as i64);
            leases.push(LeaseStatus {
                id,
                granted_ttl: ttl,
                keys,
            });
        }
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.node.header(revision)),
            leases,
        }))
    }
}
