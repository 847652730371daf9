//! kvset, two ways: raw generated gRPC clients ([`KvsetRaw`], the default, the same shape of
//! client etcd gets) and the SDK ([`KvsetSdk`], what applications use: leader following,
//! retries, exactly-once sessions). `docs/BENCHMARKS.md` compares the two.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures::StreamExt;
use kvset_client::{Client, ReadOptions, Role, Txn, TxnOp};
use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::lease_client::LeaseClient;
use kvset_proto::v1::watch_client::WatchClient;
use kvset_proto::v1::{
    compare, request_op, watch_request, Compare, Consistency, GetRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RequestId, RequestOp, StatusRequest,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use tonic::transport::Channel;

use super::{
    await_created, channel, round_robin, stable, until_ready, ConnectOptions, KeepAliveStream,
    OpResult, Streams, Target, WatchDelivery, WatchEvent, WatchFeed,
};

/// kvset through `kvset_proto`'s generated clients, one channel per endpoint.
pub struct KvsetRaw {
    endpoints: Vec<String>,
    kv: Vec<KvClient<Channel>>,
    cluster: Vec<ClusterClient<Channel>>,
    watch: Vec<WatchClient<Channel>>,
    lease: Vec<LeaseClient<Channel>>,
    leader: AtomicUsize,
    refreshing: AtomicBool,
    next_stale: AtomicUsize,
    /// None: writes carry no RequestId.
    sessions: Option<Sessions>,
    request_timeout: Duration,
}

impl KvsetRaw {
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
            cluster: channels.iter().cloned().map(ClusterClient::new).collect(),
            watch: channels
                .iter()
                .map(|c| WatchClient::new(c.clone()).max_decoding_message_size(64 << 20))
                .collect(),
            lease: channels.into_iter().map(LeaseClient::new).collect(),
            leader: AtomicUsize::new(0),
            refreshing: AtomicBool::new(false),
            next_stale: AtomicUsize::new(0),
            sessions: options.request_ids.then(Sessions::default),
            request_timeout: options.request_timeout,
        })
    }

    fn leader(&self) -> usize {
        self.leader.load(Ordering::Relaxed)
    }

    /// Asks every endpoint for its status: the index of the one that leads and its term, once
    /// every member answers, reports itself ready, and names that leader.
    async fn find_leader(&self) -> OpResult<(usize, u64)> {
        let mut leader = None;
        let mut problems = Vec::new();
        let mut leader_ids = Vec::new();
        for (i, client) in self.cluster.iter().enumerate() {
            let mut client = client.clone();
            let answer = tokio::time::timeout(
                self.request_timeout,
                client.status(StatusRequest::default()),
            )
            .await;
            match answer {
                Ok(Ok(status)) => {
                    let status = status.into_inner();
                    if status.role == kvset_proto::v1::Role::Leader as i32 {
                        leader = Some((i, status.term));
                    }
                    if !status.ready {
                        problems.push(format!("{}: not ready", self.endpoints[i]));
                    }
                    leader_ids.push(status.leader_id);
                }
                Ok(Err(s)) => problems.push(format!("{}: {}", self.endpoints[i], s.message())),
                Err(_) => problems.push(format!("{}: timed out", self.endpoints[i])),
            }
        }
        leader_ids.dedup();
        if leader_ids.len() > 1 {
            problems.push(format!("members disagree on the leader: {leader_ids:?}"));
        }
        match (leader, problems.is_empty()) {
            (Some(found), true) => Ok(found),
            (_, false) => bail!("{}", problems.join("; ")),
            (None, true) => bail!("no member is the leader yet"),
        }
    }

    /// After a failed request: re-find the leader (one worker at a time; the others go on).
    async fn after_error(&self) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok((i, _)) = self.find_leader().await {
            self.leader.store(i, Ordering::Relaxed);
        }
        self.refreshing.store(false, Ordering::Release);
    }

    async fn failed<T>(&self, endpoint: usize, status: tonic::Status) -> OpResult<T> {
        self.after_error().await;
        Err(anyhow!(
            "{}: {:?}: {}",
            self.endpoints[endpoint],
            status.code(),
            status.message()
        ))
    }

    async fn read(
        &self,
        endpoint: usize,
        key: Vec<u8>,
        consistency: Consistency,
    ) -> OpResult<Option<Vec<u8>>> {
        let request = GetRequest {
            key,
            consistency: consistency as i32,
            revision: 0,
        };
        match self.kv[endpoint].clone().get(request).await {
            Ok(r) => Ok(r.into_inner().kv.map(|kv| kv.value)),
            Err(s) => self.failed(endpoint, s).await,
        }
    }

    async fn txn(&self, mut request: TxnRequest) -> OpResult<bool> {
        let lease = self.sessions.as_ref().map(Sessions::lease);
        request.request_id = lease.as_ref().map(Lease::id);
        let i = self.leader();
        match self.kv[i].clone().txn(request).await {
            Ok(r) => Ok(r.into_inner().succeeded),
            Err(s) => self.failed(i, s).await,
        }
    }
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Put(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

impl Target for KvsetRaw {
    async fn ready(&self, timeout: Duration) -> OpResult<String> {
        let (i, _) = until_ready(timeout, || stable(|| self.find_leader())).await?;
        self.leader.store(i, Ordering::Relaxed);
        Ok(format!(
            "leader at {}, {} members answer (raw gRPC client, request ids {})",
            self.endpoints[i],
            self.endpoints.len(),
            if self.sessions.is_some() { "on" } else { "off" }
        ))
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> OpResult<()> {
        let lease = self.sessions.as_ref().map(Sessions::lease);
        let request = PutRequest {
            key,
            value,
            prev_kv: false,
            request_id: lease.as_ref().map(Lease::id),
            lease: 0,
            ignore_lease: Default::default(),
            ignore_value: Default::default(),
        };
        let i = self.leader();
        match self.kv[i].clone().put(request).await {
            Ok(_) => Ok(()),
            Err(s) => self.failed(i, s).await,
        }
    }

    async fn get(&self, key: Vec<u8>) -> OpResult<Option<Vec<u8>>> {
        self.read(self.leader(), key, Consistency::Linearizable)
            .await
    }

    async fn get_stale(&self, key: Vec<u8>) -> OpResult<Option<Vec<u8>>> {
        let i = round_robin(&self.next_stale, self.endpoints.len());
        self.read(i, key, Consistency::Stale).await
    }

    async fn cas(&self, key: Vec<u8>, expected: Vec<u8>, new: Vec<u8>) -> OpResult<bool> {
        let request = TxnRequest {
            compares: vec![Compare {
                key: key.clone(),
                target: compare::Target::Value as i32,
                op: compare::Op::Equal as i32,
                operand: Some(compare::Operand::Value(expected)),
            }],
            success: vec![put_op(key, new)],
            failure: Vec::new(),
            request_id: None,
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

impl Streams for KvsetRaw {
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
        // Every create is queued before the call, as for etcd (whose server answers the call
        // only with its first response).
        let (mut tx, rx) = futures::channel::mpsc::channel(watchers.max(1));
        for id in 1..=watchers {
            let create = WatchCreateRequest {
                key: prefix.clone(),
                prefix: true,
                watch_id: id as i64,
                ..Default::default()
            };
            tx.try_send(WatchRequest {
                request: Some(watch_request::Request::CreateRequest(create)),
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
            .grant(LeaseGrantRequest { ttl, id: 0 })
            .await
        {
            Ok(r) => Ok(r.into_inner().id),
            Err(s) => self.failed(i, s).await,
        }
    }

    async fn revoke_lease(&self, id: i64) -> OpResult<()> {
        let i = self.leader();
        match self.lease[i]
            .clone()
            .revoke(LeaseRevokeRequest { id })
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
            .keep_alive(rx.map(|id| LeaseKeepAliveRequest { id }))
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

/// Exactly-once sessions as the SDK keeps them: a write leases a client id for its lifetime, so
/// each id has at most one write in flight and its sequence numbers only grow.
#[derive(Default)]
struct Sessions {
    free: Mutex<Vec<(u64, u64)>>,
}

struct Lease<'a> {
    pool: &'a Sessions,
    client_id: u64,
    sequence: u64,
}

impl Sessions {
    fn lease(&self) -> Lease<'_> {
        let popped = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let (client_id, sequence) = popped.unwrap_or_else(|| (rand::random::<u64>() | 1, 0));
        Lease {
            pool: self,
            client_id,
            sequence: sequence + 1,
        }
    }
}

impl Lease<'_> {
    fn id(&self) -> RequestId {
        RequestId {
            client_id: self.client_id,
            sequence: self.sequence,
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((self.client_id, self.sequence));
    }
}

/// kvset through the SDK, `kvset_client::Client`.
pub struct KvsetSdk {
    client: Client,
    endpoints: Vec<String>,
    /// Pinned stale reads, one per endpoint, used round-robin.
    stale: Vec<ReadOptions>,
    next_stale: AtomicUsize,
}

impl KvsetSdk {
    pub fn connect(options: &ConnectOptions) -> anyhow::Result<Self> {
        let client = Client::builder()
            .endpoints(options.endpoints.iter())
            .connect_timeout(options.connect_timeout)
            .request_timeout(options.request_timeout)
            .retry_deadline(options.request_timeout)
            .max_inflight_writes(options.max_inflight_writes.max(1))
            .build()?;
        Ok(Self {
            client,
            endpoints: options.endpoints.clone(),
            stale: options
                .endpoints
                .iter()
                .map(|e| ReadOptions::stale().on_member(e.clone()))
                .collect(),
            next_stale: AtomicUsize::new(0),
        })
    }
}

impl Target for KvsetSdk {
    async fn ready(&self, timeout: Duration) -> OpResult<String> {
        let leader = until_ready(timeout, || async {
            let status = self.client.status().await?;
            if status.role != Role::Leader {
                bail!(
                    "no leader yet ({} answered as {:?})",
                    status.endpoint,
                    status.role
                );
            }
            for endpoint in &self.endpoints {
                self.client.status_of(endpoint).await?;
            }
            Ok(status.endpoint)
        })
        .await?;
        Ok(format!(
            "leader at {leader}, {} members answer (SDK client)",
            self.endpoints.len()
        ))
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> OpResult<()> {
        self.client.put(key, value).await?;
        Ok(())
    }

    async fn get(&self, key: Vec<u8>) -> OpResult<Option<Vec<u8>>> {
        Ok(self.client.get(key).await?.map(|kv| kv.value))
    }

    async fn get_stale(&self, key: Vec<u8>) -> OpResult<Option<Vec<u8>>> {
        let i = round_robin(&self.next_stale, self.stale.len());
        Ok(self
            .client
            .get_with(key, &self.stale[i])
            .await?
            .map(|kv| kv.value))
    }

    async fn cas(&self, key: Vec<u8>, expected: Vec<u8>, new: Vec<u8>) -> OpResult<bool> {
        Ok(self.client.cas(key, Some(&expected), new).await?)
    }

    async fn put_many(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> OpResult<()> {
        let txn = Txn::new().and_then(pairs.into_iter().map(|(k, v)| TxnOp::put(k, v)));
        self.client.txn(txn).await?;
        Ok(())
    }
}
