//! etcd's `Lease` service over kvset's (`api/lease.rs`): the same grants, revokes, leader-held
//! deadlines and forwarded keep-alives.

use crate::auth::same_caller;
use kvset_proto::etcd::etcdserverpb as pb;
use kvset_proto::v1::{self, lease_server::Lease};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::{etcd_status, header};
use crate::api::lease::LeaseService;

/// Serves `etcdserverpb.Lease` through kvset's Lease service.
#[derive(Clone)]
pub struct EtcdLease {
    lease: LeaseService,
}

impl EtcdLease {
    pub fn new(lease: LeaseService) -> Self {
        Self { lease }
    }
}

/// The response stream of one etcd LeaseKeepAlive call.
pub type EtcdKeepAliveStream = std::pin::Pin<
    Box<
        dyn tokio_stream::Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>>
            + Send
            + 'static,
    >,
>;

#[tonic::async_trait]
impl pb::lease_server::Lease for EtcdLease {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = request.get_ref();
        let resp = self
            .lease
            .grant(same_caller(
                &request,
                Request::new(v1::LeaseGrantRequest {
                    ttl: r.ttl,
                    id: r.id,
                }),
            ))
            .await
            .map_err(etcd_status)?
            .into_inner();
        Ok(Response::new(pb::LeaseGrantResponse {
            header: header(resp.header.as_ref()),
            id: resp.id,
            ttl: resp.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let resp = self
            .lease
            .revoke(same_caller(
                &request,
                Request::new(v1::LeaseRevokeRequest {
                    id: request.get_ref().id,
                }),
            ))
            .await
            .map_err(etcd_status)?
            .into_inner();
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: header(resp.header.as_ref()),
        }))
    }

    type LeaseKeepAliveStream = EtcdKeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<EtcdKeepAliveStream>, Status> {
        let mut opened = Request::new(());
        if let Some(caller) = request.extensions().get::<crate::auth::Caller>() {
            opened.extensions_mut().insert(caller.clone());
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let lease = self.lease.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let answer = lease
                    .keep_alive_once(same_caller(
                        &opened,
                        Request::new(v1::LeaseKeepAliveRequest { id: req.id }),
                    ))
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        pb::LeaseKeepAliveResponse {
                            header: header(r.header.as_ref()),
                            id: r.id,
                            ttl: r.ttl,
                        }
                    })
                    .map_err(etcd_status);
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

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = request.get_ref();
        let resp = self
            .lease
            .time_to_live(same_caller(
                &request,
                Request::new(v1::LeaseTimeToLiveRequest {
                    id: r.id,
                    keys: r.keys,
                }),
            ))
            .await
            .map_err(etcd_status)?
            .into_inner();
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: header(resp.header.as_ref()),
            id: resp.id,
            ttl: resp.ttl,
            granted_ttl: resp.granted_ttl,
            keys: resp.keys,
        }))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let resp = self
            .lease
            .leases(same_caller(
                &request,
                Request::new(v1::LeaseLeasesRequest {}),
            ))
            .await
            .map_err(etcd_status)?
            .into_inner();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: header(resp.header.as_ref()),
            leases: resp
                .leases
                .into_iter()
                .map(|l| pb::LeaseStatus { id: l.id })
                .collect(),
        }))
    }
}
