//! etcd through its own gRPC API (`kvset_proto::etcd`, etcd's message and field numbers): linearizable get = a
//! default `Range`, stale get = `Range` with `serializable`, cas = `Txn` comparing the value.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail};
use tonic::transport::Channel;

use super::{
    await_created, channel, prefix_end, round_robin, stable, until_ready, ConnectOptions,
    KeepAliveStream, OpResult, Streams, Target, WatchDelivery, WatchEvent, WatchFeed,
};

/// etcd's API as `kvset-proto` compiles it (kvset serves the same API, so one definition
/// serves both the server and this client).
use kvset_proto::etcd as pb;

use futures::StreamExt;
use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::lease_client::LeaseClient;
use pb::etcdserverpb::maintenance_client::MaintenanceClient;
use pb::etcdserverpb::watch_client::WatchClient;
use pb::etcdserverpb::{
    compare, request_op, watch_request, Compare, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest,
    WatchCreateRequest, WatchRequest,
};

/// An etcd cluster, one channel per endpoint.
pub struct Etcd {
    endpoints: Vec<String>,
    kv: Vec<KvClient<Channel>>,
    maintenance: Vec<MaintenanceClient<Channel>>,
    watch: Vec<WatchClient<Channel>>,
    lease: Vec<LeaseClient<Channel>>,
    leader: AtomicUsize,
    refreshing: AtomicBool,
    next_stale: AtomicUsize,
    request_timeout: Duration,
}

impl Etcd {
    pub fn connect(options: &ConnectOptions) -> anyhow::Result<Self> {
        let channels = options
            .endpoints
            .iter()
            .map(|e| channel(e, options))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            endpoints: options.endpoints.clone(),
            kv: channels
                .iter()
                .map(|c| KvClient::new(c.clone()).max_decoding_message_size(64 << 20))
                .collect(),
            maintenance: channels
                .iter()
                .cloned()
                .map(MaintenanceClient::new)
                .collect(),
            watch: channels
                .iter()
                .map(|c| WatchClient::new(c.clone()).max_decoding_message_size(64 << 20))
                .collect(),
            lease: channels.into_iter().map(LeaseClient::new).collect(),
            leader: AtomicUsize::new(0),
            refreshing: AtomicBool::new(false),
            next_stale: AtomicUsize::new(0),
            request_timeout: options.request_timeout,
        })
    }

    fn leader(&self) -> usize {
        self.leader.load(Ordering::Relaxed)
    }

    /// The endpoint whose member id is the leader id every member reports, and its term.
    async fn find_leader(&self) -> OpResult<(usize, u64)> {
        let mut leader = None;
        let mut failures = Vec::new();
        let mut leader_ids = Vec::new();
        for (i, client) in self.maintenance.iter().enumerate() {
            let mut client = client.clone();
            let answer =
                tokio::time::timeout(self.request_timeout, client.status(StatusRequest {})).await;
            match answer {
                Ok(Ok(status)) => {
                    let status = status.into_inner();
                    let me = status.header.map(|h| h.member_id).unwrap_or(0);
                    if status.leader != 0 && status.leader == me {
                        leader = Some((i, status.raft_term));
                    }
                    leader_ids.push(status.leader);
                }
                Ok(Err(s)) => failures.push(format!("{}: {}", self.endpoints[i], s.message())),
                Err(_) => failures.push(format!("{}: timed out", self.endpoints[i])),
            }
        }
        leader_ids.dedup();
        if leader_ids.len() > 1 {
            failures.push(format!("members disagree on the leader: {leader_ids:?}"));
        }
        match (leader, failures.is_empty()) {
            (Some(found), true) => Ok(found),
            (_, false) => bail!("not every member answered: {}", failures.join("; ")),
            (None, true) => bail!("no member is the leader yet"),
        }
    }

    async fn failed<T>(&self, endpoint: usize, status: tonic::Status) -> OpResult<T> {
        if !self.refreshing.swap(true, Ordering::AcqRel) {
            if let Ok((i, _)) = self.find_leader().await {
                self.leader.store(i, Ordering::Relaxed);
            }
            self.refreshing.store(false, Ordering::Release);
        }
        Err(anyhow!(
            "{}: {:?}: {}",
            self.endpoints[endpoint],
            status.code(),
            status.message()
        ))
    }

    async fn range(
        &self,
        endpoint: usize,
        key: Vec<u8>,
        serializable: bool,
    ) -> OpResult<Option<Vec<u8>>> {
        let request = RangeRequest {
            key,
            serializable,
            ..Default::default()
        };
        match self.kv[endpoint].clone().range(request).await {
            Ok(r) => Ok(r.into_inner().kvs.into_iter().next().map(|kv| kv.value)),
            Err(s) => self.failed(endpoint, s).await,
        }
    }

    async fn txn(&self, request: TxnRequest) -> OpResult<bool> {
        let i = self.leader();
        match self.kv[i].clone().txn(request).await {
            Ok(r) => Ok(r.into_inner().succeeded),
            Err(s) => self.failed(i, s).await,
        }
    }
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

impl Target for Etcd {
    async fn ready(&self, timeout: Duration) -> OpResult<String> {
        let (i, _) = until_ready(timeout, || stable(|| self.find_leader())).await?;
        self.leader.store(i, Ordering::Relaxed);
        Ok(format!(
            "leader at {}, {} members answer",
            self.endpoints[i],
            self.endpoints.len()
        ))
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> OpResult<()> {
        let i = self.leader();
        let request = PutRequest {
            key,
            value,
            ..Default::default()
        };
        match self.kv[i].clone().put(request).await {
            Ok(_) => Ok(()),
            Err(s) => self.failed(i, s).await,
        }
    }

    async fn get(&self, key: Vec<u8>) -> OpResult<Option<Vec<u8>>> {
        self.range(self.leader(), key, false).await
    }

    async fn get_stale(&self, key: Vec<u8>) -> OpResult<Option<Vec<u8>>> {
        let i = round_robin(&self.next_stale, self.endpoints.len());
        self.range(i, key, true).await
    }

    async fn cas(&self, key: Vec<u8>, expected: Vec<u8>, new: Vec<u8>) -> OpResult<bool> {
        let request = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Value as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::Value(expected)),
                range_end: Vec::new(),
            }],
            success: vec![put_op(key, new)],
            failure: Vec::new(),
        };
        self.txn(request).await
    }

    async fn put_many(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> OpResult<()> {
        let request = TxnRequest {
            success: pairs.into_iter().map(|(k, v)| put_op(k, v)).collect(),
            ..Default::default()
        };
        self.txn(request).await.map(drop)
    }
}

impl Streams for Etcd {
    fn members(&self) -> usize {
        self.endpoints.len()
    }

    fn leader_index(&self) -> usize {
        self.leader()
    }

    async fn watch_prefix(
        &self,
        member: usize,
        prefix: Vec<u8>,
        watchers: usize,
    ) -> OpResult<WatchFeed> {
        // Every create is queued before the call: the server answers the call only with its
        // first response, the first `created`.
        let (mut tx, rx) = futures::channel::mpsc::channel(watchers.max(1));
        for id in 1..=watchers {
            let create = WatchCreateRequest {
                key: prefix.clone(),
                range_end: prefix_end(&prefix),
                watch_id: id as i64,
                ..Default::default()
            };
            tx.try_send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
            })
            .map_err(|e| anyhow!("queueing a watch create: {e}"))?;
        }
        let endpoint = self.endpoints[member].clone();
        let mut responses = self.watch[member]
            .clone()
            .watch(rx)
            .await
            .map_err(|s| anyhow!("{endpoint}: watch: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        await_created(&mut responses, watchers, |r| {
            (r.watch_id, r.created, r.canceled, r.cancel_reason.clone())
        })
        .await
        .map_err(|e| anyhow!("{endpoint}: {e:#}"))?;
        let feed = responses.filter_map(move |response| {
            // The request stream stays open as long as the feed: closing it ends the watchers.
            let _requests = &tx;
            let item = match response {
                Err(s) => Some(Err(anyhow!(
                    "{endpoint}: watch stream: {:?}: {}",
                    s.code(),
                    s.message()
                ))),
                Ok(r) if r.canceled => Some(Err(anyhow!(
                    "{endpoint}: watcher {} cancelled: {}",
                    r.watch_id,
                    r.cancel_reason
                ))),
                Ok(r) if r.events.is_empty() => None,
                Ok(r) => Some(Ok(WatchDelivery {
                    watcher: (r.watch_id - 1).max(0) as usize,
                    events: r
                        .events
                        .into_iter()
                        .filter_map(|e| e.kv)
                        .map(|kv| WatchEvent {
                            key: kv.key,
                            value: kv.value,
                            mod_revision: kv.mod_revision,
                        })
                        .collect(),
                })),
            };
            std::future::ready(item)
        });
        Ok(feed.boxed())
    }

    async fn grant_lease(&self, ttl: i64) -> OpResult<i64> {
        let i = self.leader();
        match self.lease[i]
            .clone()
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                if !r.error.is_empty() {
                    bail!("{}: lease grant: {}", self.endpoints[i], r.error);
                }
                Ok(r.id)
            }
            Err(s) => self.failed(i, s).await,
        }
    }

    async fn revoke_lease(&self, id: i64) -> OpResult<()> {
        let i = self.leader();
        match self.lease[i]
            .clone()
            .lease_revoke(LeaseRevokeRequest { id })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) => self.failed(i, s).await,
        }
    }

    async fn keep_alive_stream(&self, first: i64) -> OpResult<KeepAliveStream> {
        let i = self.leader();
        let (tx, rx) = KeepAliveStream::requests(first);
        let call = self.lease[i]
            .clone()
            .lease_keep_alive(rx.map(|id| LeaseKeepAliveRequest { id }))
            .await;
        let responses = match call {
            Ok(r) => r.into_inner(),
            Err(s) => return self.failed(i, s).await,
        };
        let endpoint = self.endpoints[i].clone();
        let answers = responses
            .map(move |r| match r {
                Ok(r) => Ok((r.id, r.ttl)),
                Err(s) => Err(anyhow!(
                    "{endpoint}: keep-alive: {:?}: {}",
                    s.code(),
                    s.message()
                )),
            })
            .boxed();
        KeepAliveStream::open(tx, answers, first).await
    }
}
