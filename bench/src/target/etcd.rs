//! etcd through its own gRPC API (`kvset_proto::etcd`, etcd's message and field numbers): linearizable get = a
//! default `Range`, stale get = `Range` with `serializable`, cas = `Txn` comparing the value.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail};
use tonic::transport::Channel;

use super::{channel, round_robin, stable, until_ready, ConnectOptions, OpResult, Target};

/// etcd's API as `kvset-proto` compiles it (kvset serves the same API, so one definition
/// serves both the server and this client).
use kvset_proto::etcd as pb;

use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::maintenance_client::MaintenanceClient;
use pb::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest,
};

/// An etcd cluster, one channel per endpoint.
pub struct Etcd {
    endpoints: Vec<String>,
    kv: Vec<KvClient<Channel>>,
    maintenance: Vec<MaintenanceClient<Channel>>,
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
            maintenance: channels.into_iter().map(MaintenanceClient::new).collect(),
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
