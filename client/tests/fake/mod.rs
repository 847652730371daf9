//! An in-process fake kvset cluster with scripted behaviour.
//!
//! Each [`FakeMember`] is a real tonic server on `127.0.0.1:0` implementing the generated `Kv`,
//! `Cluster`, `Watch` and `Lease` traits. The store keeps every event (a history that
//! [`FakeCluster::compact`] trims) and the leases (which never expire on their own:
//! [`FakeCluster::expire`] ends one). Watch and keep-alive streams can be scripted to break
//! after some responses ([`FakeMember::break_watch_after`], [`FakeMember::break_keep_alive_after`]). Members share one [`Store`] (a "perfectly replicated" state machine
//! with the server's exactly-once rules) so a request may land anywhere. Every call is recorded
//! ([`Call`]), and per-method scripts ([`Action`]) make a member refuse, fail, lose the answer
//! after applying, or hang.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kvset_proto::v1 as pb;
use kvset_proto::v1::cluster_server::{Cluster, ClusterServer};
use kvset_proto::v1::kv_server::{Kv, KvServer};
use kvset_proto::v1::lease_server::{Lease, LeaseServer};
use kvset_proto::v1::watch_server::{Watch, WatchServer};
use tonic::{Code, Request, Response, Status, Streaming};

/// What a member does with the next call of a method.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer normally.
    Serve,
    /// Fail with this code and message, without doing anything.
    Fail(Code, &'static str),
    /// Fail with UNAVAILABLE and a `kvset-leader` hint.
    Redirect(String),
    /// Apply the request, then fail as if the answer was lost.
    ApplyThenFail(Code),
    /// Apply the request, then hang for this long before answering.
    ApplyThenHang(Duration),
    /// Wait this long, then answer normally.
    Delay(Duration),
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    pub key: Vec<u8>,
    pub request_id: Option<(u64, u64)>,
    pub consistency: i32,
    pub cursor: Vec<u8>,
    pub limit: i64,
}

/// The shared, replicated state.
#[derive(Debug, Default)]
pub struct Store {
    pub kvs: BTreeMap<Vec<u8>, pb::KeyValue>,
    pub revision: i64,
    pub term: u64,
    pub leader: String,
    pub members: Vec<pb::Member>,
    /// client_id -> (last sequence, its response)
    sessions: HashMap<u64, (u64, Stored)>,
    /// Request ids actually applied, in order.
    pub applied: Vec<(u64, u64)>,
    /// Requests whose sequence was older than the client's last one.
    pub stale: Vec<(u64, u64)>,
    inflight: HashMap<u64, usize>,
    pub max_inflight_per_client: usize,
    /// Every event, in revision order (trimmed by compaction).
    pub events: Vec<pb::Event>,
    /// History at and below it is gone.
    pub compact_revision: i64,
    /// Lease id -> (granted TTL, attached keys).
    pub leases: BTreeMap<i64, (i64, BTreeSet<Vec<u8>>)>,
    next_lease: i64,
    /// Every keep-alive received: (member name, lease id).
    pub keep_alives: Vec<(String, i64)>,
    /// Woken on every change (watchers wait on it).
    pub changed: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Clone)]
enum Stored {
    Put(pb::PutResponse),
    Delete(pb::DeleteResponse),
    Txn(pb::TxnResponse),
}

/// One member's scripted behaviour and call log.
pub struct MemberState {
    pub name: String,
    pub ordinal: u64,
    pub addr: SocketAddr,
    pub role: Mutex<pb::Role>,
    pub ready: Mutex<bool>,
    /// Answer with another member's header (name, ordinal), as a follower that forwarded the
    /// request to the leader does.
    pub forwards_to: Mutex<Option<(String, u64)>>,
    scripts: Mutex<HashMap<&'static str, VecDeque<Action>>>,
    defaults: Mutex<HashMap<&'static str, Action>>,
    pub calls: Mutex<Vec<Call>>,
    pub store: Arc<Mutex<Store>>,
    /// What `Snapshot` streams (after the script lets it through); empty: UNIMPLEMENTED.
    pub snapshot_chunks: Mutex<Vec<pb::SnapshotChunk>>,
    /// The cluster id in this member's response headers.
    pub cluster_id: Mutex<String>,
    /// Every watch create request this member received.
    pub watch_creates: Mutex<Vec<pb::WatchCreateRequest>>,
    /// For each next watch stream: end it with UNAVAILABLE after this many event responses.
    watch_breaks: Mutex<VecDeque<usize>>,
    /// Deliver from one revision before the start revision (as a member that repeats the last
    /// revision a client saw would).
    pub watch_repeats: Mutex<bool>,
    /// Watch streams still running on this member.
    pub active_watchers: Arc<AtomicUsize>,
    /// For each next keep-alive stream: end it with UNAVAILABLE after this many responses.
    keep_alive_breaks: Mutex<VecDeque<usize>>,
}

/// A handle on one fake member.
#[derive(Clone)]
pub struct FakeMember(pub Arc<MemberState>);

impl FakeMember {
    /// `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        self.0.addr.to_string()
    }

    /// Queues actions for the next calls of `method`.
    pub fn script(&self, method: &'static str, actions: impl IntoIterator<Item = Action>) {
        self.0
            .scripts
            .lock()
            .unwrap()
            .entry(method)
            .or_default()
            .extend(actions);
    }

    /// The action for calls of `method` once the queue is empty.
    pub fn default_action(&self, method: &'static str, action: Action) {
        self.0.defaults.lock().unwrap().insert(method, action);
    }

    /// Recorded calls of `method`.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.0
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    pub fn set_role(&self, role: pb::Role) {
        *self.0.role.lock().unwrap() = role;
    }

    /// Makes `Snapshot` stream `data` in chunks of `chunk` bytes with this member's header,
    /// `keys` and `revision` in the info, and `sha256` in the last chunk (pass the real digest
    /// for a good stream).
    pub fn serve_snapshot(&self, data: &[u8], chunk: usize, sha256: &str, keys: u64) {
        let header = self.header();
        let info = pb::SnapshotInfo {
            revision: header.revision,
            header: Some(header),
            last_log_index: 42,
            last_log_term: 2,
            size_bytes: data.len() as u64,
            format: 1,
            sha256: String::new(),
            keys,
        };
        let mut chunks: Vec<pb::SnapshotChunk> = data
            .chunks(chunk)
            .map(|c| pb::SnapshotChunk {
                info: None,
                data: c.to_vec(),
                sha256: String::new(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(pb::SnapshotChunk::default());
        }
        chunks[0].info = Some(info);
        chunks.last_mut().unwrap().sha256 = sha256.to_string();
        *self.0.snapshot_chunks.lock().unwrap() = chunks;
    }

    /// Ends the next watch streams (one per entry) with UNAVAILABLE after `n` event responses.
    pub fn break_watch_after(&self, n: impl IntoIterator<Item = usize>) {
        self.0.watch_breaks.lock().unwrap().extend(n);
    }

    /// Ends the next keep-alive streams (one per entry) with UNAVAILABLE after `n` responses.
    pub fn break_keep_alive_after(&self, n: impl IntoIterator<Item = usize>) {
        self.0.keep_alive_breaks.lock().unwrap().extend(n);
    }

    /// The watch create requests this member received.
    pub fn watch_creates(&self) -> Vec<pb::WatchCreateRequest> {
        self.0.watch_creates.lock().unwrap().clone()
    }

    /// Makes this member answer as a member of another cluster.
    pub fn set_cluster_id(&self, id: &str) {
        *self.0.cluster_id.lock().unwrap() = id.to_string();
    }

    fn next_action(&self, method: &'static str) -> Action {
        if let Some(a) = self
            .0
            .scripts
            .lock()
            .unwrap()
            .get_mut(method)
            .and_then(|q| q.pop_front())
        {
            return a;
        }
        self.0
            .defaults
            .lock()
            .unwrap()
            .get(method)
            .cloned()
            .unwrap_or(Action::Serve)
    }

    fn header(&self) -> pb::ResponseHeader {
        let store = self.0.store.lock().unwrap();
        let member = match self.0.forwards_to.lock().unwrap().clone() {
            Some((name, ordinal)) => pb::MemberRef {
                name,
                ordinal,
                role: pb::Role::Leader as i32,
            },
            None => pb::MemberRef {
                name: self.0.name.clone(),
                ordinal: self.0.ordinal,
                role: *self.0.role.lock().unwrap() as i32,
            },
        };
        pb::ResponseHeader {
            cluster_id: self.0.cluster_id.lock().unwrap().clone(),
            member: Some(member),
            raft_term: store.term,
            revision: store.revision,
        }
    }

    fn record(&self, call: Call) {
        self.0.calls.lock().unwrap().push(call);
    }
}

/// A set of fake members sharing one store.
pub struct FakeCluster {
    pub members: Vec<FakeMember>,
    pub store: Arc<Mutex<Store>>,
}

impl FakeCluster {
    /// Starts `n` members `kv-0..kv-{n-1}`; kv-0 is the leader. `dead` ordinals are listed in
    /// the membership but not started (their port is closed).
    pub async fn start(n: usize, dead: &[u64]) -> FakeCluster {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let store = Arc::new(Mutex::new(Store {
            term: 2,
            leader: "kv-0".into(),
            members: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| pb::Member {
                    id: i as u64,
                    name: format!("kv-{i}"),
                    client_addr: a.to_string(),
                    peer_addr: format!("127.0.0.1:{}", 17000 + i),
                    voter: true,
                })
                .collect(),
            ..Store::default()
        }));
        let mut members = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let state = Arc::new(MemberState {
                name: format!("kv-{i}"),
                ordinal: i as u64,
                addr: addrs[i],
                role: Mutex::new(if i == 0 {
                    pb::Role::Leader
                } else {
                    pb::Role::Follower
                }),
                ready: Mutex::new(true),
                forwards_to: Mutex::new(None),
                scripts: Mutex::default(),
                defaults: Mutex::default(),
                calls: Mutex::default(),
                store: store.clone(),
                snapshot_chunks: Mutex::default(),
                cluster_id: Mutex::new("fake-cluster".into()),
                watch_creates: Mutex::default(),
                watch_breaks: Mutex::default(),
                watch_repeats: Mutex::new(false),
                active_watchers: Arc::default(),
                keep_alive_breaks: Mutex::default(),
            });
            let member = FakeMember(state);
            if dead.contains(&(i as u64)) {
                drop(listener);
            } else {
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let server = tonic::transport::Server::builder()
                    .add_service(KvServer::new(member.clone()))
                    .add_service(ClusterServer::new(member.clone()))
                    .add_service(WatchServer::new(member.clone()))
                    .add_service(LeaseServer::new(member.clone()))
                    .serve_with_incoming(incoming);
                tokio::spawn(server);
            }
            members.push(member);
        }
        FakeCluster { members, store }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint()).collect()
    }

    /// Inserts keys directly into the store.
    pub fn seed(&self, pairs: &[(&str, &str)]) {
        let mut st = self.store.lock().unwrap();
        for (k, v) in pairs {
            st.put(k.as_bytes(), v.as_bytes(), false);
        }
    }

    /// Forgets the history at and below `revision`; watchers that still need it are
    /// cancelled.
    pub fn compact(&self, revision: i64) {
        let mut st = self.store.lock().unwrap();
        st.compact_revision = st.compact_revision.max(revision);
        let c = st.compact_revision;
        st.events
            .retain(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision > c));
        st.changed.notify_waiters();
    }

    /// Ends lease `id` as its expiry would: deletes its keys in one revision.
    pub fn expire(&self, id: i64) {
        self.store.lock().unwrap().revoke(id);
    }

    /// The keep-alives received so far: (member name, lease id).
    pub fn keep_alives(&self) -> Vec<(String, i64)> {
        self.store.lock().unwrap().keep_alives.clone()
    }

    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.store
            .lock()
            .unwrap()
            .kvs
            .get(key.as_bytes())
            .map(|kv| kv.value.clone())
    }
}

/// A closed port on 127.0.0.1 (connection refused).
pub async fn closed_endpoint() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

fn rid(id: &Option<pb::RequestId>) -> Option<(u64, u64)> {
    id.as_ref()
        .filter(|r| r.client_id != 0 && r.sequence != 0)
        .map(|r| (r.client_id, r.sequence))
}

impl Store {
    fn put(&mut self, key: &[u8], value: &[u8], prev: bool) -> pb::PutResponse {
        self.put_with_lease(key, value, prev, 0)
    }

    /// A put; the caller checked that `lease` (when not 0) exists.
    fn put_with_lease(
        &mut self,
        key: &[u8],
        value: &[u8],
        prev: bool,
        lease: i64,
    ) -> pb::PutResponse {
        self.revision += 1;
        let rev = self.revision;
        let old = self.kvs.get(key).cloned();
        let kv = pb::KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: old.as_ref().map_or(rev, |o| o.create_revision),
            mod_revision: rev,
            version: old.as_ref().map_or(1, |o| o.version + 1),
            lease,
        };
        if let Some(o) = &old {
            if let Some((_, keys)) = self.leases.get_mut(&o.lease) {
                keys.remove(key);
            }
        }
        if let Some((_, keys)) = self.leases.get_mut(&lease) {
            keys.insert(key.to_vec());
        }
        self.kvs.insert(key.to_vec(), kv.clone());
        self.events.push(pb::Event {
            r#type: pb::event::EventType::Put as i32,
            kv: Some(kv),
            prev_kv: old.clone(),
        });
        self.changed.notify_waiters();
        pb::PutResponse {
            header: None,
            prev_kv: if prev { old } else { None },
        }
    }

    /// Deletes `keys` in one revision (if any exists), recording the events.
    fn remove_keys(&mut self, keys: &[Vec<u8>]) -> Vec<pb::KeyValue> {
        let victims: Vec<pb::KeyValue> = keys
            .iter()
            .filter_map(|k| self.kvs.get(k).cloned())
            .collect();
        if victims.is_empty() {
            return victims;
        }
        self.revision += 1;
        let rev = self.revision;
        for v in &victims {
            self.kvs.remove(&v.key);
            if let Some((_, keys)) = self.leases.get_mut(&v.lease) {
                keys.remove(&v.key);
            }
            self.events.push(pb::Event {
                r#type: pb::event::EventType::Delete as i32,
                kv: Some(pb::KeyValue {
                    key: v.key.clone(),
                    mod_revision: rev,
                    ..Default::default()
                }),
                prev_kv: Some(v.clone()),
            });
        }
        self.changed.notify_waiters();
        victims
    }

    /// Ends a lease: deletes it and its keys. False when it does not exist.
    fn revoke(&mut self, id: i64) -> bool {
        let Some((_, keys)) = self.leases.remove(&id) else {
            return false;
        };
        let keys: Vec<Vec<u8>> = keys.into_iter().collect();
        self.remove_keys(&keys);
        true
    }

    /// The events of `revision`-ordered history at or after `from` that `create` selects.
    fn events_from(&self, from: i64, create: &pb::WatchCreateRequest) -> Vec<pb::Event> {
        self.events
            .iter()
            .filter(|e| {
                let kv = e.kv.as_ref().unwrap();
                let key = kv.key.as_slice();
                let selected = if create.prefix {
                    key.starts_with(&create.key)
                } else if create.range_end.is_empty() {
                    key == create.key.as_slice()
                } else if create.range_end == [0] {
                    key >= create.key.as_slice()
                } else {
                    key >= create.key.as_slice() && key < create.range_end.as_slice()
                };
                let filtered = (e.r#type == 0
                    && create
                        .filters
                        .contains(&(pb::watch_create_request::Filter::Noput as i32)))
                    || (e.r#type == 1
                        && create
                            .filters
                            .contains(&(pb::watch_create_request::Filter::Nodelete as i32)));
                kv.mod_revision >= from && selected && !filtered
            })
            .cloned()
            .map(|mut e| {
                if !create.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }

    fn select(&self, start: &[u8], end: &[u8], prefix: bool) -> Vec<pb::KeyValue> {
        self.kvs
            .values()
            .filter(|kv| {
                if prefix {
                    kv.key.starts_with(start)
                } else if end.is_empty() {
                    kv.key.as_slice() >= start
                } else {
                    kv.key.as_slice() >= start && kv.key.as_slice() < end
                }
            })
            .cloned()
            .collect()
    }

    fn delete(&mut self, r: &pb::DeleteRequest) -> pb::DeleteResponse {
        let keys: Vec<Vec<u8>> = if r.prefix || !r.range_end.is_empty() {
            self.select(&r.key, &r.range_end, r.prefix)
                .into_iter()
                .map(|kv| kv.key)
                .collect()
        } else {
            vec![r.key.clone()]
        };
        let victims = self.remove_keys(&keys);
        pb::DeleteResponse {
            header: None,
            deleted: victims.len() as i64,
            prev_kvs: if r.prev_kv { victims } else { vec![] },
        }
    }

    fn holds(&self, c: &pb::Compare) -> bool {
        use pb::compare::{Op, Operand};
        let kv = self.kvs.get(&c.key);
        let ord = match (&c.operand, kv) {
            (Some(Operand::Value(_)), None) => return false,
            (Some(Operand::Value(v)), Some(kv)) => kv.value.cmp(v),
            (Some(Operand::Version(n)), kv) => kv.map_or(0, |k| k.version).cmp(n),
            (Some(Operand::ModRevision(n)), kv) => kv.map_or(0, |k| k.mod_revision).cmp(n),
            (Some(Operand::CreateRevision(n)), kv) => kv.map_or(0, |k| k.create_revision).cmp(n),
            (Some(Operand::Exists(b)), kv) => kv.is_some().cmp(b),
            (Some(Operand::Lease(n)), kv) => kv.map_or(0, |k| k.lease).cmp(n),
            (None, _) => return false,
        };
        match Op::try_from(c.op).unwrap() {
            Op::Equal => ord.is_eq(),
            Op::NotEqual => ord.is_ne(),
            Op::Greater => ord.is_gt(),
            Op::Less => ord.is_lt(),
        }
    }

    fn txn(&mut self, r: &pb::TxnRequest) -> pb::TxnResponse {
        use pb::request_op::Request as Rq;
        use pb::response_op::Response as Rs;
        let succeeded = r.compares.iter().all(|c| self.holds(c));
        let ops = if succeeded { &r.success } else { &r.failure };
        let mut responses = Vec::new();
        for op in ops {
            let resp = match op.request.as_ref().unwrap() {
                Rq::Put(p) => Rs::Put(self.put_with_lease(&p.key, &p.value, p.prev_kv, p.lease)),
                Rq::Delete(d) => Rs::Delete(self.delete(d)),
                Rq::Range(q) => {
                    let kvs = self.select(&q.start, &q.end, q.prefix);
                    Rs::Range(pb::RangeResponse {
                        count: kvs.len() as i64,
                        kvs,
                        ..Default::default()
                    })
                }
            };
            responses.push(pb::ResponseOp {
                response: Some(resp),
            });
        }
        pb::TxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }

    /// The exactly-once rule: fresh ids apply, the last id answers from memory.
    fn exactly_once(
        &mut self,
        id: Option<(u64, u64)>,
        apply: impl FnOnce(&mut Store) -> Stored,
    ) -> Result<Stored, Status> {
        let Some((client, seq)) = id else {
            return Ok(apply(self));
        };
        if let Some((last, stored)) = self.sessions.get(&client) {
            if seq == *last {
                return Ok(stored.clone());
            }
            if seq < *last {
                self.stale.push((client, seq));
                return Err(Status::failed_precondition("stale request id"));
            }
        }
        let result = apply(self);
        self.applied.push((client, seq));
        self.sessions.insert(client, (seq, result.clone()));
        Ok(result)
    }
}

impl FakeMember {
    /// Runs a write under the script, with in-flight accounting per client id.
    async fn write(
        &self,
        method: &'static str,
        id: Option<(u64, u64)>,
        apply: impl FnOnce(&mut Store) -> Stored,
    ) -> Result<Stored, Status> {
        struct InFlight(Arc<Mutex<Store>>, u64);
        impl Drop for InFlight {
            fn drop(&mut self) {
                *self.0.lock().unwrap().inflight.get_mut(&self.1).unwrap() -= 1;
            }
        }
        let _guard = id.map(|(client, _)| {
            let mut st = self.0.store.lock().unwrap();
            let n = st.inflight.entry(client).or_default();
            *n += 1;
            let n = *n;
            st.max_inflight_per_client = st.max_inflight_per_client.max(n);
            InFlight(self.0.store.clone(), client)
        });
        match self.next_action(method) {
            Action::Serve => self.0.store.lock().unwrap().exactly_once(id, apply),
            Action::Delay(d) => {
                tokio::time::sleep(d).await;
                self.0.store.lock().unwrap().exactly_once(id, apply)
            }
            Action::Fail(code, msg) => Err(Status::new(code, msg)),
            Action::Redirect(hint) => Err(redirect(&hint)),
            Action::ApplyThenFail(code) => {
                self.0.store.lock().unwrap().exactly_once(id, apply)?;
                Err(Status::new(code, "connection to the leader lost"))
            }
            Action::ApplyThenHang(d) => {
                self.0.store.lock().unwrap().exactly_once(id, apply)?;
                tokio::time::sleep(d).await;
                Err(Status::deadline_exceeded("hung"))
            }
        }
    }

    /// Runs a read or admin call under the script.
    async fn gate(&self, method: &'static str) -> Result<(), Status> {
        match self.next_action(method) {
            Action::Serve => Ok(()),
            Action::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Action::Fail(code, msg) => Err(Status::new(code, msg)),
            Action::Redirect(hint) => Err(redirect(&hint)),
            Action::ApplyThenFail(code) => Err(Status::new(code, "lost")),
            Action::ApplyThenHang(d) => {
                tokio::time::sleep(d).await;
                Err(Status::deadline_exceeded("hung"))
            }
        }
    }
}

fn redirect(hint: &str) -> Status {
    let mut s = Status::unavailable("not the leader");
    s.metadata_mut()
        .insert(kvset_proto::LEADER_METADATA_KEY, hint.parse().unwrap());
    s
}

#[tonic::async_trait]
impl Kv for FakeMember {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let r = req.into_inner();
        self.record(Call {
            method: "put",
            key: r.key.clone(),
            request_id: rid(&r.request_id),
            consistency: 0,
            cursor: vec![],
            limit: 0,
        });
        let (k, v, p, lease) = (r.key.clone(), r.value.clone(), r.prev_kv, r.lease);
        if lease != 0 && !self.0.store.lock().unwrap().leases.contains_key(&lease) {
            return Err(Status::not_found(format!("lease {lease} not found")));
        }
        match self
            .write("put", rid(&r.request_id), move |st| {
                Stored::Put(st.put_with_lease(&k, &v, p, lease))
            })
            .await?
        {
            Stored::Put(mut resp) => {
                resp.header = Some(self.header());
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal("id reused across kinds")),
        }
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let r = req.into_inner();
        self.record(Call {
            method: "get",
            key: r.key.clone(),
            request_id: None,
            consistency: r.consistency,
            cursor: vec![],
            limit: 0,
        });
        self.gate("get").await?;
        check_revision(&self.0.store.lock().unwrap(), r.revision)?;
        let kv = self.0.store.lock().unwrap().kvs.get(&r.key).cloned();
        Ok(Response::new(pb::GetResponse {
            header: Some(self.header()),
            kv,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        self.record(Call {
            method: "delete",
            key: r.key.clone(),
            request_id: rid(&r.request_id),
            consistency: 0,
            cursor: vec![],
            limit: 0,
        });
        let id = rid(&r.request_id);
        match self
            .write("delete", id, move |st| Stored::Delete(st.delete(&r)))
            .await?
        {
            Stored::Delete(mut resp) => {
                resp.header = Some(self.header());
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal("id reused across kinds")),
        }
    }

    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = req.into_inner();
        self.record(Call {
            method: "range",
            key: r.start.clone(),
            request_id: None,
            consistency: r.consistency,
            cursor: r.cursor.clone(),
            limit: r.limit,
        });
        self.gate("range").await?;
        let st = self.0.store.lock().unwrap();
        check_revision(&st, r.revision)?;
        let all = st.select(&r.start, &r.end, r.prefix);
        let after = r
            .cursor
            .strip_prefix(b"after:".as_slice())
            .map(<[u8]>::to_vec);
        let rest: Vec<pb::KeyValue> = all
            .iter()
            .filter(|kv| after.as_ref().is_none_or(|a| kv.key > *a))
            .cloned()
            .collect();
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        let mut page: Vec<pb::KeyValue> = rest.iter().take(limit).cloned().collect();
        let more = rest.len() > page.len();
        let next_cursor = if more {
            [b"after:".as_slice(), &page.last().unwrap().key].concat()
        } else {
            vec![]
        };
        if r.keys_only {
            for kv in &mut page {
                kv.value.clear();
            }
        }
        let revision = st.revision;
        drop(st);
        Ok(Response::new(pb::RangeResponse {
            header: Some(self.header()),
            kvs: page,
            more,
            next_cursor,
            count: all.len() as i64,
            first_page_revision: revision,
        }))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let r = req.into_inner();
        self.record(Call {
            method: "txn",
            key: r
                .compares
                .first()
                .map(|c| c.key.clone())
                .unwrap_or_default(),
            request_id: rid(&r.request_id),
            consistency: 0,
            cursor: vec![],
            limit: 0,
        });
        let id = rid(&r.request_id);
        match self
            .write("txn", id, move |st| Stored::Txn(st.txn(&r)))
            .await?
        {
            Stored::Txn(mut resp) => {
                resp.header = Some(self.header());
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal("id reused across kinds")),
        }
    }

    async fn compact(
        &self,
        req: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        self.record(plain_call("compact"));
        self.gate("compact").await?;
        let rev = req.into_inner().revision;
        let mut st = self.0.store.lock().unwrap();
        if rev <= st.compact_revision {
            return Err(Status::out_of_range(format!(
                "revision {rev} is already compacted; the compact revision is {}",
                st.compact_revision
            )));
        }
        if rev > st.revision {
            return Err(Status::out_of_range(format!(
                "revision {rev} is in the future; the current revision is {}",
                st.revision
            )));
        }
        st.compact_revision = rev;
        st.events
            .retain(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision > rev));
        st.changed.notify_waiters();
        drop(st);
        Ok(Response::new(pb::CompactResponse {
            header: Some(self.header()),
            compact_revision: rev,
        }))
    }
}

/// The refusals of a read at `revision` (0: current). The fake keeps no old versions, so a
/// read at an allowed past revision returns the current state.
fn check_revision(st: &Store, revision: i64) -> Result<(), Status> {
    if revision != 0 && revision <= st.compact_revision {
        return Err(Status::out_of_range(format!(
            "revision {revision} was compacted; the compact revision is {}",
            st.compact_revision
        )));
    }
    if revision > st.revision {
        return Err(Status::out_of_range(format!(
            "revision {revision} is in the future; the current revision is {}",
            st.revision
        )));
    }
    Ok(())
}

fn plain_call(method: &'static str) -> Call {
    Call {
        method,
        key: vec![],
        request_id: None,
        consistency: 0,
        cursor: vec![],
        limit: 0,
    }
}

#[tonic::async_trait]
impl Cluster for FakeMember {
    type SnapshotStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<kvset_proto::v1::SnapshotChunk, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn alarm(
        &self,
        _request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        self.record(plain_call("alarm"));
        self.gate("alarm").await?;
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.header()),
            alarms: Vec::new(),
        }))
    }

    async fn snapshot(
        &self,
        _request: Request<kvset_proto::v1::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.record(plain_call("snapshot"));
        self.gate("snapshot").await?;
        let chunks = self.0.snapshot_chunks.lock().unwrap().clone();
        if chunks.is_empty() {
            return Err(Status::unimplemented(
                "the fake cluster serves no snapshots",
            ));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.record(plain_call("status"));
        self.gate("status").await?;
        let role = *self.0.role.lock().unwrap();
        let st = self.0.store.lock().unwrap();
        let is_leader = role == pb::Role::Leader;
        let members = st
            .members
            .iter()
            .map(|m| pb::MemberStatus {
                member: Some(m.clone()),
                role: if m.name == st.leader {
                    pb::Role::Leader as i32
                } else {
                    pb::Role::Follower as i32
                },
                matched_index: st.revision as u64,
                lag: if is_leader { m.id } else { 0 },
                healthy: true,
            })
            .collect();
        let resp = pb::StatusResponse {
            header: None,
            role: role as i32,
            term: st.term,
            leader_id: Some(0),
            leader_name: st.leader.clone(),
            last_log_index: st.revision as u64 + 3,
            commit_index: st.revision as u64 + 3,
            applied_index: st.revision as u64 + 3,
            revision: st.revision,
            members,
            ready: *self.0.ready.lock().unwrap(),
            version: "fake".into(),
            ..Default::default()
        };
        drop(st);
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header()),
            ..resp
        }))
    }

    async fn members(
        &self,
        _req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.record(plain_call("members"));
        self.gate("members").await?;
        let members = self.0.store.lock().unwrap().members.clone();
        Ok(Response::new(pb::MembersResponse {
            header: Some(self.header()),
            members,
            authoritative: true,
        }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::AddLearnerResponse>, Status> {
        self.record(plain_call("add_learner"));
        self.gate("add_learner").await?;
        let mut m = req.into_inner().member.unwrap();
        m.voter = false;
        let members = {
            let mut st = self.0.store.lock().unwrap();
            st.members.push(m);
            st.members.clone()
        };
        Ok(Response::new(pb::AddLearnerResponse {
            header: Some(self.header()),
            members,
        }))
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        self.record(plain_call("promote"));
        self.gate("promote").await?;
        let id = req.into_inner().id;
        let members = {
            let mut st = self.0.store.lock().unwrap();
            let Some(m) = st.members.iter_mut().find(|m| m.id == id) else {
                return Err(Status::not_found(format!("no member with id {id}")));
            };
            m.voter = true;
            st.members.clone()
        };
        Ok(Response::new(pb::PromoteResponse {
            header: Some(self.header()),
            members,
            membership_index: 0,
        }))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        self.record(plain_call("remove"));
        self.gate("remove").await?;
        let id = req.into_inner().id;
        let members = {
            let mut st = self.0.store.lock().unwrap();
            st.members.retain(|m| m.id != id);
            st.members.clone()
        };
        Ok(Response::new(pb::RemoveResponse {
            header: Some(self.header()),
            members,
        }))
    }
}

type ResponseStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Decrements a counter when dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeMember {
    /// Serves one watch stream: the first create request only (the SDK puts one watcher on a
    /// stream), its events from history, then live, grouped by revision.
    async fn serve_watch(
        self,
        mut requests: Streaming<pb::WatchRequest>,
        out: futures::channel::mpsc::UnboundedSender<Result<pb::WatchResponse, Status>>,
    ) {
        let _active = {
            self.0.active_watchers.fetch_add(1, Ordering::SeqCst);
            Active(self.0.active_watchers.clone())
        };
        let create = loop {
            match requests.next().await {
                Some(Ok(pb::WatchRequest {
                    request: Some(pb::watch_request::Request::CreateRequest(c)),
                })) => break c,
                Some(Ok(_)) => continue,
                _ => return,
            }
        };
        self.0.watch_creates.lock().unwrap().push(create.clone());
        let break_after = self.0.watch_breaks.lock().unwrap().pop_front();
        let repeats = *self.0.watch_repeats.lock().unwrap();
        let watch_id = 7;
        let mut next = {
            let st = self.0.store.lock().unwrap();
            if create.start_revision == 0 {
                st.revision + 1
            } else if repeats {
                (create.start_revision - 1).max(1)
            } else {
                create.start_revision
            }
        };
        let created = pb::WatchResponse {
            header: Some(self.header()),
            watch_id,
            created: true,
            ..Default::default()
        };
        if out.unbounded_send(Ok(created)).is_err() {
            return;
        }
        let mut sent = 0usize;
        loop {
            let changed = self.0.store.lock().unwrap().changed.clone();
            let notified = changed.notified();
            let (events, compact_now) = {
                let st = self.0.store.lock().unwrap();
                (st.events_from(next, &create), st.compact_revision)
            };
            if next <= compact_now {
                let _ = out.unbounded_send(Ok(pb::WatchResponse {
                    header: Some(self.header()),
                    watch_id,
                    canceled: true,
                    compact_revision: compact_now,
                    cancel_reason: format!(
                        "revision {next} was compacted; the compact revision is {compact_now}"
                    ),
                    ..Default::default()
                }));
                return;
            }
            if events.is_empty() {
                // Wake up on a change, or now and then to notice a client that went away.
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                if out.is_closed() {
                    return;
                }
                continue;
            }
            // One response per revision.
            let rev = events[0].kv.as_ref().unwrap().mod_revision;
            let batch: Vec<pb::Event> = events
                .into_iter()
                .take_while(|e| e.kv.as_ref().unwrap().mod_revision == rev)
                .collect();
            if break_after == Some(sent) {
                let _ = out.unbounded_send(Err(Status::unavailable("the member stopped")));
                return;
            }
            let mut header = self.header();
            header.revision = rev;
            if out
                .unbounded_send(Ok(pb::WatchResponse {
                    header: Some(header),
                    watch_id,
                    events: batch,
                    ..Default::default()
                }))
                .is_err()
            {
                return;
            }
            sent += 1;
            next = rev + 1;
        }
    }
}

#[tonic::async_trait]
impl Watch for FakeMember {
    type WatchStream = ResponseStream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.record(plain_call("watch"));
        self.gate("watch").await?;
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tokio::spawn(self.clone().serve_watch(req.into_inner(), tx));
        Ok(Response::new(Box::pin(rx)))
    }
}

#[tonic::async_trait]
impl Lease for FakeMember {
    type KeepAliveStream = ResponseStream<pb::LeaseKeepAliveResponse>;

    async fn grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        self.record(plain_call("lease_grant"));
        self.gate("lease_grant").await?;
        let r = req.into_inner();
        let id = {
            let mut st = self.0.store.lock().unwrap();
            let id = if r.id != 0 {
                if st.leases.contains_key(&r.id) {
                    return Err(Status::failed_precondition(format!(
                        "lease {} is in use",
                        r.id
                    )));
                }
                r.id
            } else {
                st.next_lease += 1;
                0x7a00 + st.next_lease
            };
            st.leases.insert(id, (r.ttl, BTreeSet::new()));
            id
        };
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(self.header()),
            id,
            ttl: r.ttl,
        }))
    }

    async fn revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        self.record(plain_call("lease_revoke"));
        self.gate("lease_revoke").await?;
        let id = req.into_inner().id;
        if !self.0.store.lock().unwrap().revoke(id) {
            return Err(Status::not_found(format!("lease {id} not found")));
        }
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(self.header()),
        }))
    }

    async fn keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        self.record(plain_call("lease_keep_alive"));
        self.gate("lease_keep_alive").await?;
        let mut requests = req.into_inner();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let member = self.clone();
        let break_after = self.0.keep_alive_breaks.lock().unwrap().pop_front();
        tokio::spawn(async move {
            let mut sent = 0usize;
            while let Some(Ok(r)) = requests.next().await {
                if break_after == Some(sent) {
                    let _ = tx.unbounded_send(Err(Status::unavailable("the member stopped")));
                    return;
                }
                let ttl = {
                    let mut st = member.0.store.lock().unwrap();
                    st.keep_alives.push((member.0.name.clone(), r.id));
                    st.leases.get(&r.id).map_or(0, |(ttl, _)| *ttl)
                };
                let resp = pb::LeaseKeepAliveResponse {
                    header: Some(member.header()),
                    id: r.id,
                    ttl,
                };
                if tx.unbounded_send(Ok(resp)).is_err() {
                    return;
                }
                sent += 1;
            }
        });
        Ok(Response::new(Box::pin(rx)))
    }

    async fn keep_alive_once(
        &self,
        req: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        self.record(plain_call("lease_keep_alive_once"));
        self.gate("lease_keep_alive_once").await?;
        let id = req.into_inner().id;
        let ttl = {
            let mut st = self.0.store.lock().unwrap();
            st.keep_alives.push((self.0.name.clone(), id));
            st.leases.get(&id).map_or(0, |(ttl, _)| *ttl)
        };
        Ok(Response::new(pb::LeaseKeepAliveResponse {
            header: Some(self.header()),
            id,
            ttl,
        }))
    }

    async fn time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        self.record(plain_call("lease_ttl"));
        self.gate("lease_ttl").await?;
        let r = req.into_inner();
        let (ttl, granted_ttl, keys) = match self.0.store.lock().unwrap().leases.get(&r.id) {
            // The fake's leases do not count down: the remaining TTL is the granted one - 1.
            Some((ttl, keys)) => (
                ttl - 1,
                *ttl,
                if r.keys {
                    keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            ),
            None => (-1, 0, Vec::new()),
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: Some(self.header()),
            id: r.id,
            ttl,
            granted_ttl,
            keys,
        }))
    }

    async fn leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.record(plain_call("lease_list"));
        self.gate("lease_list").await?;
        let leases = self
            .0
            .store
            .lock()
            .unwrap()
            .leases
            .iter()
            .map(|(id, (ttl, keys))| pb::LeaseStatus {
                id: *id,
                granted_ttl: *ttl,
                keys: keys.len() as i64,
            })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.header()),
            leases,
        }))
    }
}
