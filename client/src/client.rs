//! The [`Client`]: key-value operations and cluster administration over the retry loop.
//!
//! Every method follows the same steps:
//!
//! 1. pick a [`Route`] (leader for writes, linearizable reads and membership changes; a
//!    follower for stale reads; one endpoint for a pinned read),
//! 2. for a write, lease an exactly-once session and allocate the write's `RequestId`
//!    ([`crate::session`]),
//! 3. run the attempts through [`retry::run`], which follows the leader and retries what is
//!    safe to retry,
//! 4. convert the wire answer to the SDK's types.
//!
//! A `Client` is cheap to clone; clones share endpoints, channels, the known leader and the id
//! pool, so they count as one client for the exactly-once guarantee. It must be used inside a
//! Tokio runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kvset_proto::v1 as pb;
use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::kv_client::KvClient;
use tonic::transport::ClientTlsConfig;

use crate::config::{ClientBuilder, Config, Consistency, ReadOptions, WriteOptions};
use crate::endpoint::{ChannelSettings, EndpointAddr, EndpointId, LeaderInfo, Registry, Route};
use crate::error::{Error, Result};
use crate::range::{KeyRange, KvStream, PageStream, RangeOptions, RangePage};
use crate::retry::{self, CallSpec, Safety};
use crate::session::{IdPool, WriteLease};
use crate::txn::{Compare, Txn, TxnOp, TxnResponse};
use crate::types::{
    Alarm, DeleteResponse, GetResponse, Header, KeyValue, Member, PutResponse, Status,
};

/// A kvset client. See the [crate docs](crate) for an overview.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    registry: Registry,
    ids: IdPool,
    uses_tls: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("leader", &self.leader())
            .finish()
    }
}

/// Wraps a message with the attempt's gRPC deadline.
pub(crate) fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

impl Client {
    /// A client with default settings for these endpoints (`host:port`, `http://host:port`, a
    /// pod or Service DNS name; each entry may be a comma-separated list). Makes no connection:
    /// the first call does.
    pub async fn connect<I, S>(endpoints: I) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ClientBuilder::new().endpoints(endpoints).connect().await
    }

    /// A builder for a client with custom settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn from_parts(
        addrs: Vec<EndpointAddr>,
        config: Config,
        tls: Option<(ClientTlsConfig, bool)>,
        credentials: crate::endpoint::Credentials,
    ) -> Client {
        let uses_tls = tls.is_some();
        let tls_identity = tls.as_ref().is_some_and(|(_, identity)| *identity);
        let settings = ChannelSettings {
            connect_timeout: config.connect_timeout,
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
            cooldown: config.endpoint_cooldown,
            tls: tls.map(|(config, _)| config),
            tls_identity,
            credentials,
        };
        Client {
            inner: Arc::new(Inner {
                registry: Registry::new(addrs, settings),
                ids: IdPool::new(config.max_inflight_writes),
                config,
                uses_tls,
            }),
        }
    }

    /// True when the client speaks TLS to the members ([`ClientBuilder::tls`]).
    pub fn uses_tls(&self) -> bool {
        self.inner.uses_tls
    }

    /// The client's settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Every endpoint the client knows (`host:port`): the configured ones, then those learned
    /// from leader hints and membership listings.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .registry
            .all()
            .into_iter()
            .map(|(_, a, _)| a)
            .collect()
    }

    /// The cluster id this client talks to: that of the first answer it got. Answers from a
    /// member of another cluster fail with [`crate::Error::ClusterMismatch`].
    pub fn cluster_id(&self) -> Option<String> {
        self.inner.registry.cluster_id()
    }

    /// The last known leader, if any.
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.inner.registry.leader()
    }

    /// The exactly-once client ids this client has used so far (one per concurrent write
    /// slot).
    pub fn client_ids(&self) -> Vec<u64> {
        self.inner.ids.client_ids()
    }

    /// Runs one call through the retry loop, then starts a background membership refresh if
    /// the leader's own address is unknown (see `Registry::claim_refresh`).
    async fn call<T, F, Fut>(&self, spec: CallSpec, attempt: F) -> Result<(T, String)>
    where
        F: FnMut(crate::endpoint::Transport, Duration) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
        T: crate::types::HasHeader,
    {
        let result = retry::run(&self.inner.registry, &self.inner.config, spec, attempt).await;
        if result.is_ok() && self.inner.registry.claim_refresh() {
            let client = self.clone();
            tokio::spawn(async move {
                if let Err(e) = client.members().await {
                    tracing::debug!(error = %e, "membership refresh failed");
                }
            });
        }
        result
    }

    pub(crate) fn spec(
        &self,
        op: &'static str,
        safety: Safety,
        route: Route,
        timeout: Duration,
    ) -> CallSpec {
        CallSpec {
            op,
            safety,
            route,
            timeout,
            max_attempts: 0,
        }
    }

    fn deadline_of(&self, timeout: Option<Duration>) -> Instant {
        Instant::now() + timeout.unwrap_or(self.inner.config.retry_deadline)
    }

    /// Leases an exactly-once session, waiting at most until `deadline`.
    async fn lease(&self, deadline: Instant) -> Result<WriteLease<'_>> {
        let started = Instant::now();
        tokio::time::timeout_at(deadline.into(), self.inner.ids.acquire())
            .await
            .map_err(|_| Error::Timeout {
                after: started.elapsed(),
                last_cause: None,
                may_have_applied: false,
            })
    }

    async fn read_route(&self, opts: &ReadOptions) -> Result<Route> {
        if let Some(member) = &opts.member {
            return Ok(Route::Pinned(self.resolve_member(member).await?));
        }
        Ok(match opts.consistency {
            Consistency::Linearizable => Route::Leader,
            Consistency::Stale => Route::Follower,
        })
    }

    /// Finds the endpoint of a member given by name (`kv-1`) or address (`host:port`).
    async fn resolve_member(&self, member: &str) -> Result<EndpointId> {
        let registry = &self.inner.registry;
        if let Some(id) = registry.by_name(member) {
            return Ok(id);
        }
        if member.contains(':') {
            return Ok(registry.add(EndpointAddr::parse(member)?, false));
        }
        // Learn the members' own addresses, then look again.
        self.members().await?;
        registry.by_name(member).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown member {member:?}; members are: {}; name a member or give host:port",
                registry.known_names().join(", ")
            ))
        })
    }

    // ----- key-value -----

    /// Sets `key` to `value`.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<PutResponse> {
        self.put_with(key, value, &WriteOptions::default()).await
    }

    /// Sets `key` to `value` with options (`prev_kv`, lease, timeout).
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        opts: &WriteOptions,
    ) -> Result<PutResponse> {
        let deadline = self.deadline_of(opts.timeout);
        let mut lease = self.lease(deadline).await?;
        let message = pb::PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            prev_kv: opts.prev_kv,
            request_id: Some(lease.next_request_id()),
            lease: opts.lease,
            ignore_lease: Default::default(),
            ignore_value: Default::default(),
        };
        let spec = self.spec("put", Safety::Write, Route::Leader, remaining(deadline));
        let (resp, _) = self
            .call(spec, |ch, t| {
                let message = message.clone();
                async move { KvClient::new(ch).put(request(message, t)).await }
            })
            .await?;
        drop(lease);
        Ok(PutResponse {
            header: Header::from_pb(resp.header),
            prev_kv: resp.prev_kv.map(KeyValue::from),
        })
    }

    /// Reads `key` (linearizable). `Ok(None)` when it does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        self.get_with(key, &ReadOptions::default()).await
    }

    /// Reads `key` with options (consistency, member pin, timeout, past revision).
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        opts: &ReadOptions,
    ) -> Result<Option<KeyValue>> {
        Ok(self.get_response(key, opts).await?.kv)
    }

    /// Reads `key` and returns the response header too (who served it, at which revision).
    pub async fn get_response(
        &self,
        key: impl AsRef<[u8]>,
        opts: &ReadOptions,
    ) -> Result<GetResponse> {
        let revision = opts.checked_revision()?;
        let deadline = self.deadline_of(opts.timeout);
        let route = self.read_route(opts).await?;
        let message = pb::GetRequest {
            key: key.as_ref().to_vec(),
            consistency: opts.consistency.to_pb(),
            revision,
        };
        let spec = self.spec("get", Safety::Read, route, remaining(deadline));
        let (resp, _) = self
            .call(spec, |ch, t| {
                let message = message.clone();
                async move { KvClient::new(ch).get(request(message, t)).await }
            })
            .await?;
        Ok(GetResponse {
            header: Header::from_pb(resp.header),
            kv: resp.kv.map(KeyValue::from),
        })
    }

    /// Deletes one key.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<DeleteResponse> {
        self.delete_with(KeyRange::key(key), &WriteOptions::default())
            .await
    }

    /// Deletes every key under `prefix` (the empty prefix deletes every key).
    pub async fn delete_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<DeleteResponse> {
        self.delete_with(KeyRange::prefix(prefix), &WriteOptions::default())
            .await
    }

    /// Deletes every key in `[start, end)`.
    pub async fn delete_range(
        &self,
        start: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
    ) -> Result<DeleteResponse> {
        self.delete_with(KeyRange::range(start, end), &WriteOptions::default())
            .await
    }

    /// Deletes a key, range or prefix with options (`prev_kv`, timeout).
    pub async fn delete_with(
        &self,
        range: KeyRange,
        opts: &WriteOptions,
    ) -> Result<DeleteResponse> {
        let base = range.delete_request()?;
        let deadline = self.deadline_of(opts.timeout);
        let mut lease = self.lease(deadline).await?;
        let message = pb::DeleteRequest {
            prev_kv: opts.prev_kv,
            request_id: Some(lease.next_request_id()),
            ..base
        };
        let spec = self.spec("delete", Safety::Write, Route::Leader, remaining(deadline));
        let (resp, _) = self
            .call(spec, |ch, t| {
                let message = message.clone();
                async move { KvClient::new(ch).delete(request(message, t)).await }
            })
            .await?;
        drop(lease);
        Ok(DeleteResponse {
            header: Header::from_pb(resp.header),
            deleted: resp.deleted,
            prev_kvs: resp.prev_kvs.into_iter().map(KeyValue::from).collect(),
        })
    }

    /// Streams every key of `range` (linearizable pages of the default size).
    pub fn range(&self, range: KeyRange) -> KvStream {
        self.range_with(range, RangeOptions::default())
    }

    /// Streams every key under `prefix`.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> KvStream {
        self.range(KeyRange::prefix(prefix))
    }

    /// Streams the keys of `range` with options (consistency, page size, total limit,
    /// keys only).
    pub fn range_with(&self, range: KeyRange, opts: RangeOptions) -> KvStream {
        self.pages(range, opts)
            .map_ok(|page| futures::stream::iter(page.kvs.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Streams the pages of `range`, following the server's cursor.
    pub fn pages(&self, range: KeyRange, opts: RangeOptions) -> PageStream {
        struct State {
            client: Client,
            range: KeyRange,
            opts: RangeOptions,
            /// The cursor of the next page; `None` once the listing is complete.
            cursor: Option<Vec<u8>>,
            remaining: Option<u64>,
        }
        let state = State {
            client: self.clone(),
            range,
            remaining: opts.limit,
            opts,
            cursor: Some(Vec::new()),
        };
        futures::stream::try_unfold(state, |mut st| async move {
            let Some(cursor) = st.cursor.take() else {
                return Ok(None);
            };
            if st.remaining == Some(0) {
                return Ok(None);
            }
            let mut page_size = u64::from(st.opts.page_size);
            if let Some(left) = st.remaining {
                page_size = if page_size == 0 {
                    left
                } else {
                    page_size.min(left)
                };
            }
            let (mut page, endpoint) = st
                .client
                .fetch_page(&st.range, &st.opts, &cursor, page_size)
                .await?;
            if let Some(left) = st.remaining.as_mut() {
                page.kvs
                    .truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= page.kvs.len() as u64;
            }
            if page.more && st.remaining != Some(0) {
                if page.next_cursor.is_empty() || page.next_cursor == cursor {
                    return Err(Error::Protocol {
                        endpoint,
                        message: "range page says more keys follow but its cursor does not advance"
                            .into(),
                    });
                }
                st.cursor = Some(page.next_cursor.clone());
            }
            Ok(Some((page, st)))
        })
        .boxed()
    }

    /// Reads one page of `range` after `cursor` (empty for the first page).
    pub async fn range_page(
        &self,
        range: &KeyRange,
        opts: &RangeOptions,
        cursor: &[u8],
    ) -> Result<RangePage> {
        let page_size = u64::from(opts.page_size);
        Ok(self.fetch_page(range, opts, cursor, page_size).await?.0)
    }

    async fn fetch_page(
        &self,
        range: &KeyRange,
        opts: &RangeOptions,
        cursor: &[u8],
        limit: u64,
    ) -> Result<(RangePage, String)> {
        let requested = opts.read.checked_revision()?;
        let deadline = self.deadline_of(opts.read.timeout);
        let route = self.read_route(&opts.read).await?;
        let message = pb::RangeRequest {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            keys_only: opts.keys_only,
            consistency: opts.read.consistency.to_pb(),
            cursor: cursor.to_vec(),
            // A later page is read at the revision its cursor carries (the first page's); the
            // server wants 0 or exactly that revision with a cursor, so only the first page
            // names it.
            revision: if cursor.is_empty() { requested } else { 0 },
            ..range.range_request()
        };
        let spec = self.spec("range", Safety::Read, route, remaining(deadline));
        let (resp, endpoint) = self
            .call(spec, |ch, t| {
                let message = message.clone();
                async move { KvClient::new(ch).range(request(message, t)).await }
            })
            .await?;
        Ok((RangePage::from_pb(resp), endpoint))
    }

    /// Runs a transaction (see [`Txn`]). A failed compare is `succeeded == false`, not an error.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.txn_with(txn, &WriteOptions::default()).await
    }

    /// Runs a transaction with options (timeout; `prev_kv` is set per operation).
    pub async fn txn_with(&self, txn: Txn, opts: &WriteOptions) -> Result<TxnResponse> {
        let deadline = self.deadline_of(opts.timeout);
        let mut lease = self.lease(deadline).await?;
        let message = txn.to_pb(lease.next_request_id())?;
        let spec = self.spec("txn", Safety::Write, Route::Leader, remaining(deadline));
        let (resp, _) = self
            .call(spec, |ch, t| {
                let message = message.clone();
                async move { KvClient::new(ch).txn(request(message, t)).await }
            })
            .await?;
        drop(lease);
        Ok(TxnResponse::from_pb(resp))
    }

    /// Compare-and-swap: sets `key` to `new` if its value is `expected` (`None`: if the key is
    /// absent). `Ok(true)` when swapped, `Ok(false)` when the current value differs.
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: impl AsRef<[u8]>,
    ) -> Result<bool> {
        let key = key.as_ref();
        let compare = match expected {
            None => Compare::absent(key),
            Some(value) => Compare::value(key).equal(value),
        };
        let txn = Txn::new().when([compare]).and_then([TxnOp::put(key, new)]);
        Ok(self.txn(txn).await?.succeeded)
    }

    /// Forgets the history at and below `revision` (replicated: every member compacts at the
    /// same point). Reads below it then fail with [`Error::Compacted`], and watches cannot
    /// start below it. Returns the compact revision after the call. A revision at or below the
    /// current compact revision fails with [`Error::Compacted`]; one above the current
    /// revision with [`Error::RevisionOutOfRange`]. Idempotent, so retried like a read.
    pub async fn compact(&self, revision: i64) -> Result<i64> {
        if revision <= 0 {
            return Err(Error::InvalidArgument(format!(
                "compact revision {revision} must be positive: give a revision of 1 or more, at \
                 most the current one (see `kvsetctl status`)"
            )));
        }
        let spec = self.spec(
            "compact",
            Safety::Read,
            Route::Leader,
            self.inner.config.retry_deadline,
        );
        let (resp, _) = self
            .call(spec, |ch, t| async move {
                KvClient::new(ch)
                    .compact(request(pb::CompactRequest { revision }, t))
                    .await
            })
            .await?;
        Ok(resp.compact_revision)
    }

    // ----- cluster -----

    /// The status of one member: the leader when known, else any member that answers.
    pub async fn status(&self) -> Result<Status> {
        let spec = self.spec(
            "status",
            Safety::Read,
            Route::Leader,
            self.inner.config.retry_deadline,
        );
        self.status_call(spec).await
    }

    /// The status of the member at `endpoint` (`host:port`), asked once, with the request
    /// timeout.
    pub async fn status_of(&self, endpoint: &str) -> Result<Status> {
        let id = self
            .inner
            .registry
            .add(EndpointAddr::parse(endpoint)?, false);
        let spec = CallSpec {
            max_attempts: 1,
            ..self.spec(
                "status",
                Safety::Read,
                Route::Pinned(id),
                self.inner.config.request_timeout,
            )
        };
        self.status_call(spec).await
    }

    async fn status_call(&self, spec: CallSpec) -> Result<Status> {
        let (resp, endpoint) = retry::run(
            &self.inner.registry,
            &self.inner.config,
            spec,
            |ch, t| async move {
                ClusterClient::new(ch)
                    .status(request(pb::StatusRequest {}, t))
                    .await
            },
        )
        .await?;
        let status = Status::from_pb(endpoint, resp);
        self.learn(status.members.iter().map(|m| &m.member));
        Ok(status)
    }

    fn learn<'a>(&self, members: impl Iterator<Item = &'a Member>) {
        let pairs: Vec<(String, String)> = members
            .map(|m| (m.name.clone(), m.client_addr.clone()))
            .collect();
        self.inner.registry.learn_members(&pairs);
    }

    /// The current membership, voters and learners, ordered by id.
    pub async fn members(&self) -> Result<Vec<Member>> {
        let spec = self.spec(
            "members",
            Safety::Read,
            Route::Leader,
            self.inner.config.retry_deadline,
        );
        let (resp, _) = retry::run(
            &self.inner.registry,
            &self.inner.config,
            spec,
            |ch, t| async move {
                ClusterClient::new(ch)
                    .members(request(pb::MembersRequest {}, t))
                    .await
            },
        )
        .await?;
        self.membership(resp.members)
    }

    fn membership(&self, members: Vec<pb::Member>) -> Result<Vec<Member>> {
        let members: Vec<Member> = members.into_iter().map(Member::from).collect();
        self.learn(members.iter());
        Ok(members)
    }

    fn mutation_spec(&self, op: &'static str) -> CallSpec {
        self.spec(
            op,
            Safety::Mutation,
            Route::Leader,
            self.inner.config.retry_deadline,
        )
    }

    /// Adds `member` as a learner (id, name, client and peer address are required). With
    /// `wait_caught_up` the call returns once it has caught up with the leader's log. Returns
    /// the membership after the change.
    ///
    /// Membership changes carry no exactly-once token: they are retried only when an attempt
    /// provably did nothing (see [`crate::retry`]).
    pub async fn add_learner(&self, member: Member, wait_caught_up: bool) -> Result<Vec<Member>> {
        let message = pb::AddLearnerRequest {
            member: Some(member.into()),
            wait_caught_up,
        };
        let (resp, _) = self
            .call(self.mutation_spec("add_learner"), |ch, t| {
                let message = message.clone();
                async move {
                    ClusterClient::new(ch)
                        .add_learner(request(message, t))
                        .await
                }
            })
            .await?;
        self.membership(resp.members)
    }

    /// Promotes the learner `id` to voter. Returns the membership after the change.
    pub async fn promote(&self, id: u64) -> Result<Vec<Member>> {
        let (resp, _) = self
            .call(self.mutation_spec("promote"), |ch, t| async move {
                ClusterClient::new(ch)
                    .promote(request(pb::PromoteRequest { id }, t))
                    .await
            })
            .await?;
        self.membership(resp.members)
    }

    /// The alarms active in the cluster (a `NOSPACE` alarm refuses writes that grow the data),
    /// as the leader applied them.
    pub async fn alarms(&self) -> Result<Vec<Alarm>> {
        self.alarm_call("alarm list", pb::AlarmRequest::default())
            .await
    }

    /// Clears every alarm of every member (through the Raft log), as `kvsetctl alarm disarm`
    /// does. Safe to repeat. A member still over its quota raises its alarm again at its next
    /// check. Returns the alarms left active (none, right after).
    pub async fn disarm_alarms(&self) -> Result<Vec<Alarm>> {
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            all_members: true,
            ..Default::default()
        };
        self.alarm_call("alarm disarm", req).await
    }

    /// Clears the alarms raised by member `member_id` only (`kvsetctl alarm disarm --member`),
    /// for when one member's volume was fixed while others are still over their quota. Safe to
    /// repeat. Returns the alarms left active.
    pub async fn disarm_member_alarms(&self, member_id: u64) -> Result<Vec<Alarm>> {
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            member_id,
            ..Default::default()
        };
        self.alarm_call("alarm disarm", req).await
    }

    /// One `Cluster.Alarm` call on the leader. Listing reads, and clearing is idempotent (a
    /// repeat changes nothing), so both may be retried like reads.
    async fn alarm_call(&self, what: &'static str, req: pb::AlarmRequest) -> Result<Vec<Alarm>> {
        let spec = self.spec(
            what,
            Safety::Read,
            Route::Leader,
            self.inner.config.retry_deadline,
        );
        let (resp, _) = retry::run(&self.inner.registry, &self.inner.config, spec, |ch, t| {
            let req = req.clone();
            async move { ClusterClient::new(ch).alarm(request(req, t)).await }
        })
        .await?;
        Ok(resp.alarms.into_iter().map(Alarm::from_pb).collect())
    }

    /// Removes member `id` (the highest ordinal, unless `any_order`). Returns the membership
    /// after the change.
    pub async fn remove(&self, id: u64, any_order: bool) -> Result<Vec<Member>> {
        let (resp, _) = self
            .call(self.mutation_spec("remove"), |ch, t| async move {
                ClusterClient::new(ch)
                    .remove(request(pb::RemoveRequest { id, any_order }, t))
                    .await
            })
            .await?;
        self.membership(resp.members)
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
