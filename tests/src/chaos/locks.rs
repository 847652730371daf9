//! The lock clients: `--lock-clients N` tasks that increment one shared counter under an
//! etcd-style mutex while faults happen, recording every attempt into `locks.jsonl` for the
//! lock check ([`super::lock_check`]).
//!
//! # The mutex (etcd's recipe, on raw RPCs)
//!
//! 1. A lease (TTL [`LOCK_TTL_S`]), kept alive by a side task that renews it every second.
//! 2. The lock key `lock/<lease id>` created by a Txn that succeeds only if it does not exist
//!    (`create_revision == 0`), attached to the lease; its create revision is the client's place
//!    in the queue. (If the key exists already, the failure branch reads it back: same place.)
//! 3. Wait until no key under `lock/` has a lower create revision.
//! 4. Holding the lock: a plain linearizable get of `counter`, then a Txn that writes
//!    `counter + 1` only if the lock key still has the create revision of step 2 — the fence:
//!    a client whose lease expired while it was frozen (its key deleted) cannot write.
//! 5. Release: delete the lock key.
//!
//! The counter is only ever written by step 4, so with a correct lock the final counter is
//! the number of increments that took effect: every acknowledged one, and some of those whose
//! outcome is unknown. Two acknowledged increments that both wrote `n` are a lost update — two
//! holders at once, or a fence that did not hold.
//!
//! # Outcomes
//!
//! An increment's fenced Txn that answers `succeeded` is `ok`; one that answers not succeeded
//! is `lost_lock` (the fence refused it: no effect); any error is `info` (may have happened: the
//! raw RPC has no request id, so the harness never retries it). Every loop here stops when the
//! load phase ends or at the client's deadline; each RPC has a deadline of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvset_proto::v1::compare::{Op, Operand, Target};
use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::lease_client::LeaseClient;
use kvset_proto::v1::{
    request_op, response_op, Compare, Consistency, DeleteRequest, GetRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::backend::MemberInfo;
use super::jsonl::JsonlLog;
use super::watchers::channel;

/// The lock keys' prefix.
pub const LOCK_PREFIX: &str = "lock/";
/// The shared counter.
pub const COUNTER_KEY: &str = "counter";
/// The lock leases' TTL, seconds.
pub const LOCK_TTL_S: i64 = 5;
/// Deadline of one RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a client waits for the lock before giving its place up.
const MAX_WAIT: Duration = Duration::from_secs(15);

/// One line of `locks.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LockRecord {
    /// One increment attempted while holding the lock.
    Increment {
        /// The lock client.
        client: u64,
        /// The lock key.
        lock_key: String,
        /// Its create revision (the fence).
        lock_revision: i64,
        /// The counter read under the lock (absent: 0).
        read: i64,
        /// The value written (`read + 1`).
        value: i64,
        /// `ok`, `lost_lock` (fence refused: no effect) or `info` (unknown).
        outcome: String,
        /// The revision the write produced (`ok` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<i64>,
    },
    /// The counter read back after the run (`null`: could not be read).
    Final {
        /// The value (absent key: 0).
        value: Option<i64>,
    },
}

/// The running lock clients.
pub struct LockClients {
    log: JsonlLog,
    tasks: Vec<JoinHandle<()>>,
    members: Vec<MemberInfo>,
}

impl LockClients {
    /// Starts `count` lock clients; they stop when `stop` turns true or after `lifetime`.
    pub fn start(
        members: &[MemberInfo],
        count: usize,
        log: JsonlLog,
        stop: watch::Receiver<bool>,
        lifetime: Duration,
    ) -> Result<LockClients, String> {
        let channels = members.iter().map(channel).collect::<Result<Vec<_>, _>>()?;
        let deadline = Instant::now() + lifetime;
        let tasks = (0..count)
            .map(|id| {
                let c = LockClient {
                    id: id as u64,
                    channels: channels.clone(),
                    member: id,
                    log: log.clone(),
                    stop: stop.clone(),
                    deadline,
                };
                tokio::spawn(c.run())
            })
            .collect();
        Ok(LockClients {
            log,
            tasks,
            members: members.to_vec(),
        })
    }

    /// Waits for the clients to stop (they were told by `stop`), reads the counter back
    /// (retrying until `timeout`), records it, and flushes. Returns harness errors.
    pub async fn finish(self, timeout: Duration) -> Vec<String> {
        let mut errors = Vec::new();
        let deadline = tokio::time::Instant::now() + RPC_TIMEOUT * 4;
        for (i, task) in self.tasks.into_iter().enumerate() {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                errors.push(format!("lock client {i} did not stop in time"));
            }
        }
        let value = read_counter(&self.members, timeout).await;
        if value.is_none() {
            errors.push(format!("the counter could not be read within {timeout:?}"));
        }
        self.log.append(&LockRecord::Final { value });
        if let Err(e) = self.log.flush() {
            errors.push(format!("writing locks.jsonl: {e}"));
        }
        errors
    }
}

async fn read_counter(members: &[MemberInfo], timeout: Duration) -> Option<i64> {
    let deadline = Instant::now() + timeout;
    let channels: Vec<Channel> = members.iter().filter_map(|m| channel(m).ok()).collect();
    let mut i = 0;
    while Instant::now() < deadline && !channels.is_empty() {
        let mut kv = KvClient::new(channels[i % channels.len()].clone());
        if let Ok(Ok(r)) = tokio::time::timeout(RPC_TIMEOUT, kv.get(get(COUNTER_KEY))).await {
            return Some(parse_counter(r.into_inner().kv.map(|kv| kv.value)));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.into(),
        consistency: Consistency::Linearizable as i32,
        revision: 0,
    }
}

fn parse_counter(value: Option<Vec<u8>>) -> i64 {
    value
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(0)
}

fn compare_create(key: &str, revision: i64) -> Compare {
    Compare {
        key: key.into(),
        target: Target::CreateRevision as i32,
        op: Op::Equal as i32,
        operand: Some(Operand::CreateRevision(revision)),
    }
}

struct LockClient {
    id: u64,
    channels: Vec<Channel>,
    member: usize,
    log: JsonlLog,
    stop: watch::Receiver<bool>,
    deadline: Instant,
}

/// A lease kept alive by a side task until dropped.
struct HeldLease {
    id: i64,
    alive: Arc<AtomicBool>,
    keeper: JoinHandle<()>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl LockClient {
    fn stopped(&self) -> bool {
        *self.stop.borrow() || Instant::now() >= self.deadline
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channels[self.member % self.channels.len()].clone())
    }

    fn next_member(&mut self) {
        self.member = (self.member + 1) % self.channels.len();
    }

    async fn pause(&self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn run(mut self) {
        let mut lease: Option<HeldLease> = None;
        while !self.stopped() {
            if lease
                .as_ref()
                .is_none_or(|l| !l.alive.load(Ordering::Relaxed))
            {
                lease = self.grant().await;
                if lease.is_none() {
                    self.next_member();
                    self.pause().await;
                    continue;
                }
            }
            let Some(l) = lease.as_ref() else { continue };
            let key = format!("{LOCK_PREFIX}{:x}", l.id);
            let Some(mine) = self.acquire(&key, l.id).await else {
                self.next_member();
                self.pause().await;
                continue;
            };
            if self.wait_turn(&key, mine).await {
                self.increment(&key, mine).await;
            }
            self.release(&key).await;
        }
        if let Some(l) = lease.take() {
            let mut lc = LeaseClient::new(self.channels[self.member].clone());
            let _ =
                tokio::time::timeout(RPC_TIMEOUT, lc.revoke(LeaseRevokeRequest { id: l.id })).await;
        }
    }

    async fn grant(&self) -> Option<HeldLease> {
        let mut lc = LeaseClient::new(self.channels[self.member].clone());
        let granted = tokio::time::timeout(
            RPC_TIMEOUT,
            lc.grant(LeaseGrantRequest {
                ttl: LOCK_TTL_S,
                id: 0,
            }),
        )
        .await
        .ok()?
        .ok()?
        .into_inner();
        let alive = Arc::new(AtomicBool::new(true));
        let keeper = tokio::spawn(keep_alive(
            self.channels.clone(),
            granted.id,
            Arc::clone(&alive),
            self.deadline,
        ));
        Some(HeldLease {
            id: granted.id,
            alive,
            keeper,
        })
    }

    /// Creates (or finds) the lock key; its create revision.
    async fn acquire(&self, key: &str, lease: i64) -> Option<i64> {
        let txn = TxnRequest {
            compares: vec![compare_create(key, 0)],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: key.into(),
                    value: Vec::new(),
                    lease,
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::Range(RangeRequest {
                    start: key.into(),
                    consistency: Consistency::Linearizable as i32,
                    ..Default::default()
                })),
            }],
            request_id: None,
        };
        let resp = tokio::time::timeout(RPC_TIMEOUT, self.kv().txn(txn))
            .await
            .ok()?
            .ok()?
            .into_inner();
        if resp.succeeded {
            return resp.header.map(|h| h.revision);
        }
        resp.responses.into_iter().find_map(|r| match r.response {
            Some(response_op::Response::Range(range)) => {
                range.kvs.first().map(|kv| kv.create_revision)
            }
            _ => None,
        })
    }

    /// Waits until no lock key has a lower create revision than `mine`; false when the wait
    /// was given up (run over, own key gone, too long).
    async fn wait_turn(&mut self, key: &str, mine: i64) -> bool {
        let started = Instant::now();
        while !self.stopped() && started.elapsed() < MAX_WAIT {
            let range = RangeRequest {
                start: LOCK_PREFIX.into(),
                prefix: true,
                consistency: Consistency::Linearizable as i32,
                ..Default::default()
            };
            match tokio::time::timeout(RPC_TIMEOUT, self.kv().range(range)).await {
                Ok(Ok(r)) => {
                    let kvs = r.into_inner().kvs;
                    if !kvs.iter().any(|kv| kv.key == key.as_bytes()) {
                        return false;
                    }
                    if !kvs
                        .iter()
                        .any(|kv| kv.create_revision != 0 && kv.create_revision < mine)
                    {
                        return true;
                    }
                }
                _ => self.next_member(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// One get + fenced put of the counter, recorded.
    async fn increment(&mut self, key: &str, mine: i64) {
        let read = match tokio::time::timeout(RPC_TIMEOUT, self.kv().get(get(COUNTER_KEY))).await {
            Ok(Ok(r)) => parse_counter(r.into_inner().kv.map(|kv| kv.value)),
            _ => {
                self.next_member();
                return;
            }
        };
        let value = read + 1;
        let txn = TxnRequest {
            compares: vec![compare_create(key, mine)],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: COUNTER_KEY.into(),
                    value: value.to_string().into_bytes(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
            request_id: None,
        };
        let (outcome, revision) = match tokio::time::timeout(RPC_TIMEOUT, self.kv().txn(txn)).await
        {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                if r.succeeded {
                    ("ok", r.header.map(|h| h.revision))
                } else {
                    ("lost_lock", None)
                }
            }
            _ => {
                self.next_member();
                ("info", None)
            }
        };
        self.log.append(&LockRecord::Increment {
            client: self.id,
            lock_key: key.into(),
            lock_revision: mine,
            read,
            value,
            outcome: outcome.into(),
            revision,
        });
    }

    async fn release(&mut self, key: &str) {
        let delete = DeleteRequest {
            key: key.into(),
            ..Default::default()
        };
        if !matches!(
            tokio::time::timeout(RPC_TIMEOUT, self.kv().delete(delete)).await,
            Ok(Ok(_))
        ) {
            self.next_member();
        }
    }
}

/// Renews `lease` every second on any member until the lease is gone (`alive` turns false),
/// the task is aborted, or `deadline`.
async fn keep_alive(channels: Vec<Channel>, lease: i64, alive: Arc<AtomicBool>, deadline: Instant) {
    let mut member = 0usize;
    while Instant::now() < deadline {
        let mut lc = LeaseClient::new(channels[member % channels.len()].clone());
        match tokio::time::timeout(
            RPC_TIMEOUT,
            lc.keep_alive_once(LeaseKeepAliveRequest { id: lease }),
        )
        .await
        {
            Ok(Ok(r)) if r.get_ref().ttl <= 0 => {
                alive.store(false, Ordering::Relaxed);
                return;
            }
            Ok(Ok(_)) => {}
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
                alive.store(false, Ordering::Relaxed);
                return;
            }
            _ => member += 1,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
