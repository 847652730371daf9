//! The clients: concurrent workers that put, read and compare-and-swap a few keys through the
//! SDK while faults happen, recording every operation in the history.
//!
//! # What the workers do
//!
//! Each worker is one `kvset_client::Client` (its own connections, leader tracking and
//! exactly-once sessions) running operations one after another, drawn from its own random
//! stream (the run's seed mixed with the worker's id):
//!
//! | share | operation | key | recorded as |
//! | --- | --- | --- | --- |
//! | 40 % | linearizable get | one of the `--keys` contended keys `k0..` | `get` |
//! | 25 % | put of a value no one else writes (`<client>.<n>`) | a contended key | `put` |
//! | 25 % | compare-and-swap from the value this worker last saw (absent at first) to a fresh value | a contended key | `cas` |
//! | 10 % | put of a key written exactly once (`u/<client>/<n>`) | its own key | `put` |
//!
//! Few keys and many workers make operations on one key overlap, which is where ordering bugs
//! show. Unique values keep the checker fast (a timed-out write of a value nobody read can be
//! dropped) and make every read attributable to one write. The write-once keys are the
//! lost-write probe: each one that was acknowledged must be there at the end.
//!
//! # Outcomes
//!
//! Every operation is stamped `invoke` just before the SDK call and completed just after it:
//!
//! * `Ok` → `ok` (for a compare-and-swap, with whether it swapped).
//! * A write error with `may_have_applied()` (a timeout, `UNAVAILABLE` after the request may
//!   have reached the leader, an unexpected server error) → `info`: it may have happened, now
//!   or later. A write error without it (refused, never sent) → `fail`.
//! * A read error → `fail` (a read has no effect either way).
//! * The call overrunning the harness's own bound (the SDK's deadline plus a margin) → the
//!   future is dropped, and the dropped [`OpHandle`](crate::history::OpHandle) records `info`.
//!
//! The SDK retries a write inside one call with one request id, so a retried put is one
//! operation that took effect at most once; the harness never retries a write itself (that
//! would be a second operation with a new id). Each call has a short deadline
//! (`--op-timeout`, 2 s by default; each attempt at most 1 s) so a worker does not hang through
//! a fault.
//!
//! # Where reads go
//!
//! `--read-from leader` (default) lets the SDK route linearizable reads to the leader.
//! `followers` pins each read to a random member other than the current leader (as the monitor
//! last saw it), `any` to a random member. Pinned reads exercise the followers' read path
//! (ReadIndex through the leader), which is where a stale read would come from.
//!
//! # Probes and final reads
//!
//! Two more readers are recorded like any client (client ids `clients` and `clients + 1`):
//!
//! * [`Workload::probe`]: right after a member comes back (thawed, reconnected, restarted), a
//!   few bursts of reads of every contended key and of the latest acknowledged write-once keys,
//!   pinned to *that* member. A member that has just returned is the one most likely to be
//!   behind, so this is where a read that skips its barrier is caught.
//! * [`Workload::final_reads`]: once the faults are healed, a linearizable read of every key
//!   the run touched, retried until it succeeds, so the checker also judges the end state and
//!   the lost-write check has something to compare with.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kvset_client::{Client, Compare, ReadOptions, Txn, TxnOp, WriteOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backend::MemberInfo;
use crate::history::{HistoryRecorder, OpHandle};

/// Prefix of the write-once keys.
pub const UNIQUE_PREFIX: &str = "u/";

/// Where pinned reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// Unpinned linearizable reads: the SDK sends them to the leader.
    Leader,
    /// Each read pinned to a random member other than the current leader.
    Followers,
    /// Each read pinned to a random member.
    Any,
}

/// The workload's parameters.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadConfig {
    /// Concurrent workers.
    pub clients: usize,
    /// Contended keys (`k0..`).
    pub keys: usize,
    /// Total operations per second over all workers; 0: as fast as they go.
    pub rate: f64,
    /// Where reads go.
    pub read_from: ReadFrom,
    /// Deadline of one SDK call, retries included.
    #[serde(serialize_with = "super::report::ser_duration_ms")]
    pub op_timeout: Duration,
    /// The run's seed.
    pub seed: u64,
}

/// How a write ended, as far as the lost-write check cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOutcome {
    /// Acknowledged.
    Ok,
    /// Certainly not applied.
    Fail,
    /// Unknown.
    Info,
}

/// A write-once key's write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UniqueWrite {
    /// The value written.
    pub value: String,
    /// How the write ended.
    pub outcome: WriteOutcome,
}

/// An acknowledged write: when it was invoked and completed, and in which term the leader
/// served it.
#[derive(Debug, Clone, Copy)]
pub struct WriteAck {
    /// Invoke time.
    pub invoked: Instant,
    /// Completion time.
    pub at: Instant,
    /// The Raft term in the response header.
    pub term: u64,
}

/// What the harness learns from the workers besides the history.
#[derive(Debug, Default)]
pub struct Observations {
    acks: Mutex<Vec<WriteAck>>,
    unique: Mutex<BTreeMap<String, UniqueWrite>>,
}

impl Observations {
    fn ack(&self, invoked: Instant, term: u64) {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(WriteAck {
                invoked,
                at: Instant::now(),
                term,
            });
    }

    /// The first write acknowledged after `since` that the leader lost at `since` cannot have
    /// served: one served in a term above `term`, or one invoked after `since`. (The second
    /// covers a leader that restarts and leads again in its old term, which openraft allows for
    /// a leader whose vote is committed.)
    pub fn first_ack_after(&self, since: Instant, term: u64) -> Option<Instant> {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            // Acks are appended in completion order: only the tail can be after `since`.
            .rev()
            .take_while(|a| a.at > since)
            .filter(|a| a.term > term || a.invoked > since)
            .map(|a| a.at)
            .min()
    }

    /// Every write-once key and how its write ended.
    pub fn unique_writes(&self) -> BTreeMap<String, UniqueWrite> {
        self.unique
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn latest_acked_unique(&self, n: usize) -> Vec<String> {
        let unique = self.unique.lock().unwrap_or_else(|p| p.into_inner());
        let mut acked: Vec<&String> = unique
            .iter()
            .filter(|(_, w)| w.outcome == WriteOutcome::Ok)
            .map(|(k, _)| k)
            .collect();
        // Keys are u/<client>/<n>: the highest n per client are the latest.
        acked.sort_by_key(|k| {
            std::cmp::Reverse(
                k.rsplit('/')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0),
            )
        });
        acked.into_iter().take(n).cloned().collect()
    }
}

/// The final reads' results.
#[derive(Debug, Clone, Default)]
pub struct FinalReads {
    /// Keys read, with the value (`None`: absent).
    pub values: BTreeMap<String, Option<String>>,
    /// Keys that could not be read.
    pub unread: Vec<String>,
}

/// The leader as last seen by the monitor (`usize::MAX`: unknown), for routing reads.
#[derive(Debug)]
pub struct Routing {
    leader: AtomicUsize,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            leader: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Routing {
    /// Records the current leader.
    pub fn set_leader(&self, leader: Option<usize>) {
        self.leader
            .store(leader.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    fn leader(&self) -> Option<usize> {
        let l = self.leader.load(Ordering::Relaxed);
        (l != usize::MAX).then_some(l)
    }
}

/// The workers and the extra readers.
pub struct Workload {
    config: WorkloadConfig,
    members: Vec<MemberInfo>,
    recorder: HistoryRecorder,
    observations: Arc<Observations>,
    routing: Arc<Routing>,
}

/// Operation weights: get, put, cas, write-once put.
const MIX: [u32; 4] = [40, 25, 25, 10];

impl Workload {
    /// A workload against `members`, recording into `recorder`.
    pub fn new(
        config: WorkloadConfig,
        members: Vec<MemberInfo>,
        recorder: HistoryRecorder,
        routing: Arc<Routing>,
    ) -> Workload {
        Workload {
            config,
            members,
            recorder,
            observations: Arc::new(Observations::default()),
            routing,
        }
    }

    /// What the workers observed.
    pub fn observations(&self) -> &Arc<Observations> {
        &self.observations
    }

    /// The contended keys.
    pub fn contended_keys(&self) -> Vec<String> {
        (0..self.config.keys).map(|k| format!("k{k}")).collect()
    }

    /// The client id of the probe reader.
    pub fn probe_client(&self) -> u64 {
        self.config.clients as u64
    }

    /// The client id of the final reader.
    pub fn final_client(&self) -> u64 {
        self.config.clients as u64 + 1
    }

    fn sdk_client(&self, timeout: Duration) -> Result<Client, kvset_client::Error> {
        Client::builder()
            .endpoints(self.members.iter().map(|m| m.endpoint.as_str()))
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(timeout.min(Duration::from_secs(1)))
            .retry_deadline(timeout)
            .backoff(Duration::from_millis(20), Duration::from_millis(250))
            .endpoint_cooldown(Duration::from_secs(1))
            .keepalive(Some(Duration::from_secs(1)), Duration::from_secs(1))
            .build()
    }

    /// Starts the workers; they stop when `stop` turns true (finishing the operation at hand).
    pub fn spawn(
        self: &Arc<Self>,
        stop: watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, kvset_client::Error> {
        (0..self.config.clients)
            .map(|c| {
                let client = self.sdk_client(self.config.op_timeout)?;
                let me = Arc::clone(self);
                let stop = stop.clone();
                Ok(tokio::spawn(async move {
                    me.worker(c as u64, client, stop).await
                }))
            })
            .collect()
    }

    async fn worker(&self, id: u64, client: Client, stop: watch::Receiver<bool>) {
        let mut rng = StdRng::seed_from_u64(
            self.config
                .seed
                .wrapping_add(id.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        );
        let interval = (self.config.rate > 0.0)
            .then(|| Duration::from_secs_f64(self.config.clients as f64 / self.config.rate));
        let keys = self.contended_keys();
        let mut seen: HashMap<String, Option<String>> = HashMap::new();
        let mut seq: u64 = 0;
        let mut next = tokio::time::Instant::now();
        // Spread the workers' first operations over one interval.
        if let Some(i) = interval {
            next += i.mul_f64(rng.random::<f64>());
        }
        while !*stop.borrow() {
            if interval.is_some() {
                tokio::time::sleep_until(next).await;
                if *stop.borrow() {
                    break;
                }
            }
            let total: u32 = MIX.iter().sum();
            let mut roll = rng.random_range(0..total);
            let kind = MIX
                .iter()
                .position(|w| {
                    if roll < *w {
                        true
                    } else {
                        roll -= w;
                        false
                    }
                })
                .unwrap_or(0);
            let key = keys[rng.random_range(0..keys.len())].clone();
            seq += 1;
            let bound = self.config.op_timeout + Duration::from_millis(500);
            match kind {
                0 => {
                    let opts = self.read_options(&mut rng);
                    let op = self.recorder.invoke_get(id, key.as_str());
                    if let Ok(Some(value)) =
                        tokio::time::timeout(bound, read(&client, &key, &opts, op)).await
                    {
                        seen.insert(key, value);
                    }
                }
                1 => {
                    let value = format!("{id}.{seq}");
                    let op = self.recorder.invoke_put(id, key.as_str(), value.as_str());
                    if let Ok(true) = tokio::time::timeout(
                        bound,
                        put(&client, &key, &value, op, &self.observations),
                    )
                    .await
                    {
                        seen.insert(key, Some(value));
                    }
                }
                2 => {
                    let expected = seen.get(&key).cloned().flatten();
                    let value = format!("{id}.{seq}");
                    let op = self.recorder.invoke_cas(
                        id,
                        key.as_str(),
                        expected.clone(),
                        value.as_str(),
                    );
                    if let Ok(Some(swapped)) = tokio::time::timeout(
                        bound,
                        cas(&client, &key, expected, &value, op, &self.observations),
                    )
                    .await
                    {
                        if swapped {
                            seen.insert(key, Some(value));
                        }
                    }
                }
                _ => {
                    let key = format!("{UNIQUE_PREFIX}{id}/{seq}");
                    let value = format!("u{id}.{seq}");
                    self.set_unique(&key, &value, WriteOutcome::Info);
                    let op = self.recorder.invoke_put(id, key.as_str(), value.as_str());
                    let outcome = match tokio::time::timeout(
                        bound,
                        put_outcome(&client, &key, &value, op, &self.observations),
                    )
                    .await
                    {
                        Ok(outcome) => outcome,
                        Err(_) => WriteOutcome::Info,
                    };
                    self.set_unique(&key, &value, outcome);
                }
            }
            if let Some(i) = interval {
                next += i;
                let now = tokio::time::Instant::now();
                if next < now {
                    next = now;
                }
            }
        }
    }

    fn set_unique(&self, key: &str, value: &str, outcome: WriteOutcome) {
        self.observations
            .unique
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.to_string(),
                UniqueWrite {
                    value: value.to_string(),
                    outcome,
                },
            );
    }

    fn read_options(&self, rng: &mut StdRng) -> ReadOptions {
        let opts = ReadOptions::new().timeout(self.config.op_timeout);
        let n = self.members.len();
        let pinned = match self.config.read_from {
            ReadFrom::Leader => return opts,
            ReadFrom::Any => rng.random_range(0..n),
            ReadFrom::Followers => {
                let leader = self.routing.leader();
                let candidates: Vec<usize> = (0..n).filter(|m| Some(*m) != leader).collect();
                candidates[rng.random_range(0..candidates.len())]
            }
        };
        opts.on_member(self.members[pinned].endpoint.clone())
    }

    /// Bursts of reads pinned to `member`, just after it came back (see the module docs).
    /// Returns how many reads were made.
    pub async fn probe(&self, member: usize) -> usize {
        let Ok(client) = self.sdk_client(Duration::from_secs(1)) else {
            return 0;
        };
        let opts = ReadOptions::new()
            .timeout(Duration::from_secs(1))
            .on_member(self.members[member].endpoint.clone());
        let mut keys = self.contended_keys();
        keys.extend(self.observations.latest_acked_unique(5));
        let id = self.probe_client();
        let mut count = 0;
        for pause in [0u64, 100, 300] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let reads = keys.iter().map(|key| {
                let op = self.recorder.invoke_get(id, key.as_str());
                read(&client, key, &opts, op)
            });
            count += futures::future::join_all(reads).await.len();
        }
        count
    }

    /// A linearizable read of every key the run wrote, each retried (as new operations) until
    /// it succeeds or `timeout` has passed; recorded as client [`Workload::final_client`].
    pub async fn final_reads(&self, timeout: Duration) -> FinalReads {
        let deadline = Instant::now() + timeout;
        let Ok(client) = self.sdk_client(Duration::from_secs(5)) else {
            let mut keys = self.contended_keys();
            keys.extend(self.observations.unique_writes().into_keys());
            return FinalReads {
                values: BTreeMap::new(),
                unread: keys,
            };
        };
        let mut keys = self.contended_keys();
        keys.extend(self.observations.unique_writes().into_keys());
        let id = self.final_client();
        let opts = ReadOptions::new().timeout(Duration::from_secs(5));
        let results: Vec<(String, Option<Option<String>>)> = futures::stream::iter(keys)
            .map(|key| {
                let client = client.clone();
                let opts = opts.clone();
                async move {
                    loop {
                        let op = self.recorder.invoke_get(id, key.as_str());
                        if let Some(value) = read(&client, &key, &opts, op).await {
                            return (key, Some(value));
                        }
                        if Instant::now() >= deadline {
                            return (key, None);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut out = FinalReads::default();
        for (key, value) in results {
            match value {
                Some(v) => {
                    out.values.insert(key, v);
                }
                None => out.unread.push(key),
            }
        }
        out.unread.sort();
        out
    }
}

/// A recorded get; `Some(value)` when it succeeded.
async fn read(
    client: &Client,
    key: &str,
    opts: &ReadOptions,
    op: OpHandle,
) -> Option<Option<String>> {
    match client.get_response(key, opts).await {
        Ok(resp) => {
            let value = resp
                .kv
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            op.ok_get(value.clone());
            Some(value)
        }
        Err(_) => {
            op.fail();
            None
        }
    }
}

/// Completes a write that failed: `info` when it may have been applied, else `fail`.
fn write_failed(op: OpHandle, error: &kvset_client::Error) -> WriteOutcome {
    if error.may_have_applied() {
        op.info();
        WriteOutcome::Info
    } else {
        op.fail();
        WriteOutcome::Fail
    }
}

/// A recorded put; true when acknowledged.
async fn put(
    client: &Client,
    key: &str,
    value: &str,
    op: OpHandle,
    observations: &Observations,
) -> bool {
    put_outcome(client, key, value, op, observations).await == WriteOutcome::Ok
}

async fn put_outcome(
    client: &Client,
    key: &str,
    value: &str,
    op: OpHandle,
    observations: &Observations,
) -> WriteOutcome {
    let invoked = Instant::now();
    match client.put_with(key, value, &WriteOptions::new()).await {
        Ok(resp) => {
            op.ok_put_at(resp.header.revision);
            observations.ack(invoked, resp.header.term);
            WriteOutcome::Ok
        }
        Err(e) => write_failed(op, &e),
    }
}

/// A recorded compare-and-swap; `Some(swapped)` when the compare ran.
async fn cas(
    client: &Client,
    key: &str,
    expected: Option<String>,
    value: &str,
    op: OpHandle,
    observations: &Observations,
) -> Option<bool> {
    let compare = match &expected {
        None => Compare::absent(key),
        Some(v) => Compare::value(key).equal(v.as_str()),
    };
    let txn = Txn::new()
        .when([compare])
        .and_then([TxnOp::put(key, value)]);
    let invoked = Instant::now();
    match client.txn(txn).await {
        Ok(resp) => {
            op.ok_cas_at(resp.succeeded, resp.header.revision);
            observations.ack(invoked, resp.header.term);
            Some(resp.succeeded)
        }
        Err(e) => {
            write_failed(op, &e);
            None
        }
    }
}
