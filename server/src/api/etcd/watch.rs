//! etcd's `Watch` service over kvset's watch streams: requests are translated into kvset's,
//! served by the same stream task (`api/watch.rs`), and the responses translated back.

use kvset_proto::etcd::etcdserverpb as pb;
use kvset_proto::etcd::etcdserverpb::watch_create_request::FilterType;
use kvset_proto::etcd::etcdserverpb::watch_request::RequestUnion;
use kvset_proto::etcd::mvccpb;
use kvset_proto::v1::{self, watch_create_request::Filter, watch_request::Request as Op};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{errors, header, key_value};
use crate::api::watch::WatchService;

/// Serves `etcdserverpb.Watch` through kvset's watch streams.
#[derive(Clone)]
pub struct EtcdWatch {
    watch: WatchService,
}

impl EtcdWatch {
    pub fn new(watch: WatchService) -> Self {
        Self { watch }
    }
}

/// The response stream of one etcd Watch call.
pub type EtcdWatchStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>,
>;

/// kvset's watch request for etcd's.
fn request_of(r: pb::WatchRequest) -> Option<v1::WatchRequest> {
    let request = match r.request_union? {
        RequestUnion::CreateRequest(c) => {
            let filters = c
                .filters
                .iter()
                .map(|f| match FilterType::try_from(*f) {
                    Ok(FilterType::Nodelete) => Filter::Nodelete as i32,
                    _ => Filter::Noput as i32,
                })
                .collect();
            Op::CreateRequest(v1::WatchCreateRequest {
                key: c.key,
                // kvset reads "" as one key and "\0" as "from `key` on", like etcd
                range_end: c.range_end,
                prefix: false,
                start_revision: c.start_revision,
                progress_notify: c.progress_notify,
                filters,
                prev_kv: c.prev_kv,
                watch_id: c.watch_id,
            })
        }
        RequestUnion::CancelRequest(c) => Op::CancelRequest(v1::WatchCancelRequest {
            watch_id: c.watch_id,
        }),
        RequestUnion::ProgressRequest(_) => Op::ProgressRequest(v1::WatchProgressRequest {}),
    };
    Some(v1::WatchRequest {
        request: Some(request),
    })
}

/// etcd's watch response for kvset's.
fn response_of(r: v1::WatchResponse) -> pb::WatchResponse {
    let compacted = r.canceled && r.compact_revision > 0;
    pb::WatchResponse {
        header: header(r.header.as_ref()),
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        cancel_reason: if compacted {
            errors::COMPACTED.to_string()
        } else {
            r.cancel_reason
        },
        fragment: false,
        events: r
            .events
            .into_iter()
            .map(|e| mvccpb::Event {
                r#type: if e.r#type == v1::event::EventType::Delete as i32 {
                    mvccpb::event::EventType::Delete as i32
                } else {
                    mvccpb::event::EventType::Put as i32
                },
                kv: e.kv.map(key_value),
                prev_kv: e.prev_kv.map(key_value),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for EtcdWatch {
    type WatchStream = EtcdWatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<EtcdWatchStream>, Status> {
        let caller = request.extensions().get::<crate::auth::Caller>().cloned();
        let inbound = request.into_inner().filter_map(|r| match r {
            Ok(r) => request_of(r).map(Ok),
            Err(e) => Some(Err(e)),
        });
        let rx = self.watch.serve_stream(caller, Box::pin(inbound))?;
        let out = tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| r.map(response_of));
        Ok(Response::new(Box::pin(out)))
    }
}
