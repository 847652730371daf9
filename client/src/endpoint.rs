//! Endpoints: parsing, channels, and where the leader is.
//!
//! # What an endpoint is
//!
//! An endpoint is a `host:port` where a kvset member serves its client API. The user gives a list:
//! the pods' stable DNS names (`kv-0.kv.default.svc:7379`), one Service name (`kv:7379`), or
//! loopback addresses (`127.0.0.1:7379`), with or without an `http://` or `https://` scheme. A
//! missing port means [`DEFAULT_PORT`]. The scheme is not part of the address: a client speaks
//! TLS to every member or to none ([`crate::TlsOptions`]); `https://` only says that TLS is
//! expected, and [`crate::ClientBuilder`] refuses it when no CA is configured.
//!
//! # The registry
//!
//! [`Registry`] is the client's shared view of the endpoints:
//!
//! - **Channels** are created on first use with `connect_lazy` and reused for every later call;
//!   tonic reconnects them by itself after a failure. No I/O happens when the client is built.
//! - **Learned endpoints.** A leader hint (`kvset-leader: kv-0=10.0.0.5:7379`) or a membership
//!   listing can name an address that is not in the user's list. It is added to the registry
//!   (marked as learned) and used like any other.
//! - **The leader** is remembered from two sources: a response header whose member has role
//!   `LEADER`, and the `kvset-leader` hint of a refusal. A header does not say where the leader
//!   is: a follower that forwarded a write answers with the leader's header. So the leader's
//!   own address comes from hints and membership listings (`Members` / `Status` carry every
//!   member's client address); until it is known, the endpoint that answered stands in for it
//!   (it forwards), and the client refreshes the membership in the background
//!   ([`Registry::claim_refresh`]). A failed attempt at the remembered leader forgets it.
//! - **Cool-down.** An endpoint that could not be reached is tried last for a while, so one dead
//!   member (or an advertised address that is unreachable from outside Kubernetes) costs one
//!   failed connect per cool-down rather than one per call.
//!
//! [`Registry::pick`] chooses the next endpoint for an attempt from a [`Route`]: the leader
//! first for writes and linearizable reads, a follower first for stale reads, or exactly one
//! endpoint when the caller pinned a member. It never returns an endpoint twice within one
//! round of the retry loop; the loop sleeps when a round is exhausted (see [`crate::retry`]).
//!
//! The registry's lock is a plain mutex held for a few field updates and never across an
//! `.await`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvset_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{CauseKind, Error, Result, TlsMode};

/// The port assumed when an endpoint has none: kvset's default client port.
pub const DEFAULT_PORT: u16 = 7379;

/// The endpoints `kvsetctl` uses when none are given: the local launcher's three members.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7379,127.0.0.1:7380,127.0.0.1:7381";

/// A validated endpoint address, kept as `host:port` (lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointAddr {
    authority: String,
}

/// The scheme an endpoint was written with, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `http://`: plain text.
    Http,
    /// `https://`: TLS.
    Https,
}

impl EndpointAddr {
    /// Parses `host:port`, `http://host:port`, `https://host:port`, `host` (port
    /// [`DEFAULT_PORT`]) or `[v6addr]:port`. The scheme is checked and dropped (see the module
    /// docs).
    pub fn parse(input: &str) -> Result<Self> {
        Self::parse_with_scheme(input).map(|(addr, _)| addr)
    }

    /// Like [`EndpointAddr::parse`], also returning the scheme the endpoint was written with.
    pub(crate) fn parse_with_scheme(input: &str) -> Result<(Self, Option<Scheme>)> {
        let invalid = |reason: &str| Error::InvalidEndpoint {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid("empty endpoint"));
        }
        let lower = s.to_ascii_lowercase();
        let (scheme, rest) = if let Some(rest) = lower.strip_prefix("http://") {
            (Some(Scheme::Http), rest)
        } else if let Some(rest) = lower.strip_prefix("https://") {
            (Some(Scheme::Https), rest)
        } else if lower.contains("://") {
            return Err(invalid(
                "unsupported scheme; use host:port, http://host:port or https://host:port",
            ));
        } else {
            (None, lower.as_str())
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid("an endpoint is host:port, without a path or user"));
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let close = inner
                .find(']')
                .ok_or_else(|| invalid("unclosed '[' in IPv6 address"))?;
            let host = &rest[..close + 2];
            let after = &inner[close + 1..];
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("expected ':port' after ']'"))?,
                ),
            };
            (host, port)
        } else if rest.matches(':').count() > 1 {
            return Err(invalid("put IPv6 addresses in brackets, e.g. [::1]:7379"));
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.is_empty() {
            return Err(invalid("missing host"));
        }
        let host_ok = if host.starts_with('[') {
            bare.chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '%'))
        } else {
            bare.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        };
        if !host_ok {
            return Err(invalid(
                "the host has characters a DNS name or IP cannot have",
            ));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(invalid("the port must be a number from 1 to 65535")),
            },
        };
        let authority = format!("{host}:{port}");
        Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| invalid(&format!("not a valid URI: {e}")))?;
        Ok((EndpointAddr { authority }, scheme))
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `http://host:port`, the URI a plain-text channel connects to.
    pub fn uri(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// `https://host:port`, the URI a TLS channel connects to (the host is the name checked
    /// against the member's certificate).
    pub fn https_uri(&self) -> String {
        format!("https://{}", self.authority)
    }
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority)
    }
}

impl FromStr for EndpointAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        EndpointAddr::parse(s)
    }
}

/// Parses a comma- or whitespace-separated endpoint list (the `KVSET_ENDPOINTS` format).
pub fn parse_endpoint_list(list: &str) -> Result<Vec<EndpointAddr>> {
    Ok(parse_endpoint_list_with_schemes(list)?
        .into_iter()
        .map(|(addr, _, _)| addr)
        .collect())
}

/// Like [`parse_endpoint_list`], with each entry's scheme and text as written.
pub(crate) fn parse_endpoint_list_with_schemes(
    list: &str,
) -> Result<Vec<(EndpointAddr, Option<Scheme>, String)>> {
    let addrs = list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| EndpointAddr::parse_with_scheme(s).map(|(a, scheme)| (a, scheme, s.to_string())))
        .collect::<Result<Vec<_>>>()?;
    if addrs.is_empty() {
        return Err(Error::InvalidEndpoint {
            input: list.to_string(),
            reason: "no endpoints given; pass e.g. 127.0.0.1:7379 or set KVSET_ENDPOINTS"
                .to_string(),
        });
    }
    Ok(addrs)
}

/// The leader a member named in its `kvset-leader` metadata: `<name>=<client address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's member name, e.g. `kv-0`.
    pub name: String,
    /// The leader's client address as `host:port`, when the hint carried a usable one.
    pub endpoint: Option<String>,
}

impl LeaderHint {
    /// Parses `kv-0=127.0.0.1:7379`. A hint with only a name (`kv-0` or `kv-0=`) is kept
    /// without an endpoint; an empty hint is `None`.
    pub fn parse(value: &str) -> Option<LeaderHint> {
        let value = value.trim();
        let (name, addr) = match value.split_once('=') {
            Some((name, addr)) => (name.trim(), addr.trim()),
            None => (value, ""),
        };
        if name.is_empty() && addr.is_empty() {
            return None;
        }
        let endpoint = EndpointAddr::parse(addr)
            .ok()
            .map(|a| a.authority().to_string());
        Some(LeaderHint {
            name: name.to_string(),
            endpoint,
        })
    }
}

impl fmt::Display for LeaderHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(ep) if self.name.is_empty() => write!(f, "{ep}"),
            Some(ep) => write!(f, "{} at {ep}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// The last known leader, as reported by [`crate::Client::leader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's member name, when known.
    pub name: Option<String>,
    /// The endpoint (`host:port`) the client sends leader-bound requests to, when known.
    pub endpoint: Option<String>,
    /// The Raft term in which it was seen as leader (0 when learned from a hint).
    pub term: u64,
}

/// Index of an endpoint in the registry; stable for the client's lifetime.
pub(crate) type EndpointId = usize;

/// Where an attempt should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The known leader first, then every other endpoint (writes, linearizable reads, admin).
    Leader,
    /// A non-leader first (stale reads, to keep load off the primary), then the leader.
    Follower,
    /// Exactly this endpoint.
    Pinned(EndpointId),
}

/// Channel settings applied to every endpoint.
#[derive(Debug, Clone)]
pub(crate) struct ChannelSettings {
    pub connect_timeout: Duration,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub cooldown: Duration,
    /// TLS for every endpoint (configured or learned); `None`: plain text.
    pub tls: Option<ClientTlsConfig>,
    /// The TLS settings present a client certificate.
    pub tls_identity: bool,
    /// What every request carries to identify the client (a bearer token, or nothing).
    pub credentials: Credentials,
}

/// What every call goes through: a member's channel whose requests carry the client's
/// credentials.
pub(crate) type Transport = InterceptedService<Channel, Credentials>;

/// The client's credentials, added to every request: `authorization: Bearer TOKEN` when a token
/// is set ([`crate::ClientBuilder::token`]), nothing otherwise.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// Credentials with a bearer token; a token that cannot be sent as metadata (control
    /// characters, non-ASCII) is an invalid argument.
    pub(crate) fn bearer(token: &str) -> crate::Result<Credentials> {
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            crate::Error::InvalidArgument(
                "the token has characters that cannot be sent in gRPC metadata (use printable \
                 ASCII)"
                    .to_string(),
            )
        })?;
        Ok(Credentials {
            authorization: Some(value),
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.authorization.is_some() {
            "Credentials(bearer token)"
        } else {
            "Credentials(none)"
        })
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

struct Slot {
    addr: EndpointAddr,
    configured: bool,
    channel: Option<Channel>,
    down_until: Option<Instant>,
}

struct Leader {
    name: Option<String>,
    endpoint: Option<EndpointId>,
    term: u64,
}

struct State {
    slots: Vec<Slot>,
    by_addr: HashMap<EndpointAddr, EndpointId>,
    /// Member name -> its own client address, learned from hints and membership listings.
    names: HashMap<String, EndpointId>,
    leader: Option<Leader>,
    /// The cluster id of the first answer that carried one: answers with another are refused.
    cluster_id: Option<String>,
    /// Where the rotation over non-leader endpoints starts; moves past an endpoint that failed.
    cursor: usize,
    /// When the last membership refresh was claimed (see [`Registry::claim_refresh`]).
    last_refresh: Option<Instant>,
}

/// How often at most the client refreshes the membership to find the leader's own address.
const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

impl State {
    fn cool(&self, id: EndpointId, now: Instant) -> bool {
        self.slots[id].down_until.is_none_or(|t| t <= now)
    }

    /// The reachable own address of a member known by name.
    fn own_address(&self, name: &str, now: Instant) -> Option<EndpointId> {
        self.names
            .get(name)
            .copied()
            .filter(|&id| self.cool(id, now))
    }
}

/// The client's shared view of endpoints and leader; see the module docs.
pub(crate) struct Registry {
    state: Mutex<State>,
    settings: ChannelSettings,
}

impl Registry {
    pub(crate) fn new(addrs: Vec<EndpointAddr>, settings: ChannelSettings) -> Registry {
        let registry = Registry {
            state: Mutex::new(State {
                slots: Vec::new(),
                by_addr: HashMap::new(),
                names: HashMap::new(),
                leader: None,
                cursor: 0,
                last_refresh: None,
                cluster_id: None,
            }),
            settings,
        };
        for addr in addrs {
            registry.add(addr, true);
        }
        registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent (if stale) data: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an address (no-op when known) and returns its id.
    pub(crate) fn add(&self, addr: EndpointAddr, configured: bool) -> EndpointId {
        let mut st = self.lock();
        Self::add_locked(&mut st, addr, configured)
    }

    fn add_locked(st: &mut State, addr: EndpointAddr, configured: bool) -> EndpointId {
        if let Some(&id) = st.by_addr.get(&addr) {
            st.slots[id].configured |= configured;
            return id;
        }
        let id = st.slots.len();
        st.by_addr.insert(addr.clone(), id);
        st.slots.push(Slot {
            addr,
            configured,
            channel: None,
            down_until: None,
        });
        id
    }

    /// The channel for an endpoint, created on first use, and its `host:port`. Fails (with the
    /// `host:port` and a reason) only when TLS cannot be set up for this address, for example a
    /// host that is not a valid TLS server name.
    pub(crate) fn channel(
        &self,
        id: EndpointId,
    ) -> std::result::Result<(Transport, String), (String, String)> {
        let mut st = self.lock();
        let slot = &mut st.slots[id];
        let authority = slot.addr.authority().to_string();
        let transport =
            |ch: Channel| InterceptedService::new(ch, self.settings.credentials.clone());
        if let Some(ch) = &slot.channel {
            return Ok((transport(ch.clone()), authority));
        }
        let s = &self.settings;
        let uri = match s.tls {
            Some(_) => slot.addr.https_uri(),
            None => slot.addr.uri(),
        };
        // The address was validated with `Endpoint::from_shared` when it was parsed.
        let mut endpoint = Endpoint::from_shared(uri)
            .expect("EndpointAddr is validated at parse time")
            .connect_timeout(s.connect_timeout)
            .tcp_nodelay(true);
        if let Some(interval) = s.keepalive_interval {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(s.keepalive_timeout);
        }
        if let Some(tls) = &s.tls {
            // The server name checked against the member's certificate is the URI's host.
            endpoint = endpoint
                .tls_config(tls.clone().timeout(s.connect_timeout))
                .map_err(|e| {
                    (
                        authority.clone(),
                        format!(
                            "TLS cannot be set up for {authority}: {}",
                            crate::tls::error_chain(&e)
                        ),
                    )
                })?;
        }
        let ch = endpoint.connect_lazy();
        slot.channel = Some(ch.clone());
        Ok((transport(ch), authority))
    }

    /// Plain text or TLS (with or without a client certificate).
    pub(crate) fn tls_mode(&self) -> TlsMode {
        match self.settings.tls {
            Some(_) => TlsMode::Tls {
                identity: self.settings.tls_identity,
            },
            None => TlsMode::Plain,
        }
    }

    /// Every registered endpoint: (id, `host:port`, configured by the user).
    pub(crate) fn all(&self) -> Vec<(EndpointId, String, bool)> {
        self.lock()
            .slots
            .iter()
            .enumerate()
            .map(|(id, s)| (id, s.addr.authority().to_string(), s.configured))
            .collect()
    }

    /// The last known leader.
    pub(crate) fn leader(&self) -> Option<LeaderInfo> {
        let st = self.lock();
        st.leader.as_ref().map(|l| LeaderInfo {
            name: l.name.clone(),
            endpoint: l
                .endpoint
                .map(|id| st.slots[id].addr.authority().to_string()),
            term: l.term,
        })
    }

    /// Chooses the endpoint for the next attempt; `None` when every candidate was tried in
    /// this round.
    pub(crate) fn pick(&self, route: Route, tried: &HashSet<EndpointId>) -> Option<EndpointId> {
        let now = Instant::now();
        let st = self.lock();
        let usable = |id: EndpointId| !tried.contains(&id);
        let cool = |id: EndpointId| st.cool(id, now);
        let leader = st.leader.as_ref().and_then(|l| l.endpoint);
        let n = st.slots.len();
        // Configured endpoints rotate from the cursor; learned ones come after them.
        let rotation: Vec<EndpointId> = (0..n)
            .map(|i| (st.cursor + i) % n)
            .filter(|&id| st.slots[id].configured)
            .chain((0..n).filter(|&id| !st.slots[id].configured))
            .collect();
        match route {
            Route::Pinned(id) => usable(id).then_some(id),
            Route::Leader => leader
                .filter(|&id| usable(id) && cool(id))
                .or_else(|| rotation.iter().copied().find(|&id| usable(id) && cool(id)))
                .or_else(|| leader.filter(|&id| usable(id)))
                .or_else(|| rotation.iter().copied().find(|&id| usable(id))),
            Route::Follower => rotation
                .iter()
                .copied()
                .find(|&id| Some(id) != leader && usable(id) && cool(id))
                .or_else(|| leader.filter(|&id| usable(id) && cool(id)))
                .or_else(|| rotation.iter().copied().find(|&id| usable(id))),
        }
    }

    /// Checks that an answer from `id` comes from the cluster this client talks to: the first
    /// cluster id seen is remembered, and an answer with another one is refused. A header with
    /// no cluster id (a member that has not joined yet) passes.
    pub(crate) fn check_cluster(
        &self,
        id: EndpointId,
        header: Option<&pb::ResponseHeader>,
    ) -> Result<()> {
        let Some(got) = header.map(|h| &h.cluster_id).filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        let mut st = self.lock();
        match &st.cluster_id {
            None => {
                st.cluster_id = Some(got.clone());
                Ok(())
            }
            Some(expected) if expected == got => Ok(()),
            Some(expected) => Err(Error::ClusterMismatch {
                expected: expected.clone(),
                got: got.clone(),
                endpoint: st.slots[id].addr.authority().to_string(),
            }),
        }
    }

    /// The cluster id this client talks to, once an answer told it.
    pub(crate) fn cluster_id(&self) -> Option<String> {
        self.lock().cluster_id.clone()
    }

    /// Records a successful answer from `id` and what its header says about the leader.
    pub(crate) fn on_success(&self, id: EndpointId, header: Option<&pb::ResponseHeader>) {
        let now = Instant::now();
        let mut st = self.lock();
        st.slots[id].down_until = None;
        let Some(header) = header else { return };
        let Some(member) = header.member.as_ref() else {
            return;
        };
        let is_leader = member.role == pb::Role::Leader as i32;
        let known_term = st.leader.as_ref().map_or(0, |l| l.term);
        if is_leader && header.raft_term >= known_term {
            let name = (!member.name.is_empty()).then(|| member.name.clone());
            // Prefer the leader's own address when it is known and reachable: the endpoint
            // that answered may be a follower that forwarded the request (the header is then
            // the leader's), or a Service.
            let endpoint = name
                .as_ref()
                .and_then(|n| st.own_address(n, now))
                .unwrap_or(id);
            st.leader = Some(Leader {
                name,
                endpoint: Some(endpoint),
                term: header.raft_term,
            });
        } else if !is_leader {
            let stale = st.leader.as_ref().is_some_and(|l| {
                l.endpoint == Some(id)
                    && (l.name.is_none() || l.name.as_deref() == Some(member.name.as_str()))
            });
            if stale {
                st.leader = None;
            }
        }
    }

    /// Records a failed attempt at `id`. Returns the endpoint a leader hint pointed to, if the
    /// failure carried one.
    pub(crate) fn on_failure(
        &self,
        id: EndpointId,
        kind: CauseKind,
        hint: Option<&LeaderHint>,
    ) -> Option<EndpointId> {
        let mut st = self.lock();
        if kind == CauseKind::Connect {
            st.slots[id].down_until = Some(Instant::now() + self.settings.cooldown);
        }
        if st.slots[id].configured {
            let n = st.slots.len();
            st.cursor = (id + 1) % n;
        }
        if st.leader.as_ref().is_some_and(|l| l.endpoint == Some(id)) {
            st.leader = None;
        }
        let hint = hint?;
        let hinted = hint
            .endpoint
            .as_deref()
            .and_then(|a| EndpointAddr::parse(a).ok())
            .map(|addr| Self::add_locked(&mut st, addr, false));
        if let (Some(hinted), false) = (hinted, hint.name.is_empty()) {
            st.names.insert(hint.name.clone(), hinted);
        }
        let endpoint = hinted.or_else(|| st.names.get(&hint.name).copied());
        st.leader = Some(Leader {
            name: (!hint.name.is_empty()).then(|| hint.name.clone()),
            endpoint,
            term: 0,
        });
        endpoint
    }

    /// Learns the members' own client addresses from a membership listing, and re-points the
    /// known leader at its own address.
    pub(crate) fn learn_members(&self, members: &[(String, String)]) {
        let now = Instant::now();
        let mut st = self.lock();
        for (name, client_addr) in members {
            if name.is_empty() {
                continue;
            }
            if let Ok(addr) = EndpointAddr::parse(client_addr) {
                let id = Self::add_locked(&mut st, addr, false);
                st.names.insert(name.clone(), id);
            }
        }
        let own = st
            .leader
            .as_ref()
            .and_then(|l| l.name.as_deref())
            .and_then(|n| st.own_address(n, now));
        if let (Some(own), Some(leader)) = (own, st.leader.as_mut()) {
            leader.endpoint = Some(own);
        }
    }

    /// True (at most once per [`REFRESH_INTERVAL`]) when the leader is known by name but not
    /// by its own address, so the caller should refresh the membership to learn it.
    pub(crate) fn claim_refresh(&self) -> bool {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(name) = st.leader.as_ref().and_then(|l| l.name.clone()) else {
            return false;
        };
        if st.names.contains_key(&name)
            || st
                .last_refresh
                .is_some_and(|t| now.duration_since(t) < REFRESH_INTERVAL)
        {
            return false;
        }
        st.last_refresh = Some(now);
        true
    }

    /// Records that a long-lived stream (a watch, a keep-alive stream) to the endpoint
    /// `authority` (`host:port`) broke: like a failed attempt there, it forgets that endpoint as
    /// the leader and moves the rotation past it, so the stream is re-opened elsewhere first.
    pub(crate) fn on_stream_broken(&self, authority: &str) {
        let id = {
            let st = self.lock();
            st.slots
                .iter()
                .position(|s| s.addr.authority() == authority)
        };
        if let Some(id) = id {
            self.on_failure(id, CauseKind::Broken, None);
        }
    }

    /// The endpoint of a member known by name.
    pub(crate) fn by_name(&self, name: &str) -> Option<EndpointId> {
        self.lock().names.get(name).copied()
    }

    /// The names learned so far, sorted (for error messages).
    pub(crate) fn known_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().names.keys().cloned().collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ChannelSettings {
        ChannelSettings {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(1),
            cooldown: Duration::from_secs(10),
            tls: None,
            tls_identity: false,
            credentials: Credentials::default(),
        }
    }

    #[test]
    fn parses_endpoint_forms() {
        let ok = |s: &str| EndpointAddr::parse(s).unwrap().to_string();
        assert_eq!(ok("127.0.0.1:7379"), "127.0.0.1:7379");
        assert_eq!(ok("http://127.0.0.1:7380/"), "127.0.0.1:7380");
        assert_eq!(
            ok("HTTP://Kv-0.KV.default.svc:7379"),
            "kv-0.kv.default.svc:7379"
        );
        assert_eq!(ok("kv"), "kv:7379");
        assert_eq!(ok("[::1]:7381"), "[::1]:7381");
        assert_eq!(ok("[::1]"), "[::1]:7379");
        assert_eq!(ok("https://Kv-0.kv:7380/"), "kv-0.kv:7380");
        let (_, scheme) = EndpointAddr::parse_with_scheme("https://a:1").unwrap();
        assert_eq!(scheme, Some(Scheme::Https));
        let (_, scheme) = EndpointAddr::parse_with_scheme("a:1").unwrap();
        assert_eq!(scheme, None);
        for bad in ["", "a:0", "a:x", "::1", "a/b", "grpc://a:1", "a b:1"] {
            assert!(
                EndpointAddr::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
        let list = parse_endpoint_list("127.0.0.1:7379, 127.0.0.1:7380,,").unwrap();
        assert_eq!(list.len(), 2);
        assert!(parse_endpoint_list(" , ").is_err());
    }

    #[test]
    fn parses_hints() {
        let h = LeaderHint::parse("kv-1=127.0.0.1:7380").unwrap();
        assert_eq!(h.name, "kv-1");
        assert_eq!(h.endpoint.as_deref(), Some("127.0.0.1:7380"));
        assert_eq!(h.to_string(), "kv-1 at 127.0.0.1:7380");
        let h = LeaderHint::parse("kv-1=http://10.0.0.5:7379").unwrap();
        assert_eq!(h.endpoint.as_deref(), Some("10.0.0.5:7379"));
        let h = LeaderHint::parse("kv-2").unwrap();
        assert_eq!(h.endpoint, None);
        assert!(LeaderHint::parse("  ").is_none());
    }

    #[test]
    fn routes_follow_leader_and_skip_tried() {
        let addrs = parse_endpoint_list("a:1,b:1,c:1").unwrap();
        let reg = Registry::new(addrs, settings());
        let mut tried = HashSet::new();
        assert_eq!(reg.pick(Route::Leader, &tried), Some(0));
        // A hint to an unknown address registers it and makes it the leader.
        let hint = LeaderHint::parse("kv-3=d:1").unwrap();
        let hinted = reg.on_failure(0, CauseKind::Refused, Some(&hint)).unwrap();
        assert_eq!(hinted, 3);
        assert_eq!(reg.pick(Route::Leader, &tried), Some(3));
        assert_eq!(reg.by_name("kv-3"), Some(3));
        // Stale reads prefer a non-leader; the cursor moved past the failed endpoint 0.
        assert_eq!(reg.pick(Route::Follower, &tried), Some(1));
        tried.extend([3, 1]);
        assert_eq!(reg.pick(Route::Leader, &tried), Some(2));
        tried.extend([2, 0]);
        assert_eq!(reg.pick(Route::Leader, &tried), None);
        assert_eq!(reg.pick(Route::Pinned(1), &HashSet::new()), Some(1));
    }

    #[test]
    fn unreachable_endpoints_cool_down() {
        let reg = Registry::new(parse_endpoint_list("a:1,b:1").unwrap(), settings());
        reg.on_failure(0, CauseKind::Connect, None);
        // Cursor moved to 1 and 0 is cooling down; after 1 is tried, 0 is still offered.
        let mut tried = HashSet::new();
        assert_eq!(reg.pick(Route::Leader, &tried), Some(1));
        tried.insert(1);
        assert_eq!(reg.pick(Route::Leader, &tried), Some(0));
    }

    #[test]
    fn header_updates_leader() {
        let reg = Registry::new(parse_endpoint_list("a:1,b:1").unwrap(), settings());
        let header = |name: &str, role: pb::Role, term: u64| pb::ResponseHeader {
            cluster_id: "c".into(),
            member: Some(pb::MemberRef {
                name: name.into(),
                ordinal: 0,
                role: role as i32,
            }),
            raft_term: term,
            revision: 1,
        };
        reg.on_success(1, Some(&header("kv-1", pb::Role::Leader, 3)));
        let l = reg.leader().unwrap();
        assert_eq!(l.name.as_deref(), Some("kv-1"));
        assert_eq!(l.endpoint.as_deref(), Some("b:1"));
        // An older term does not override.
        reg.on_success(0, Some(&header("kv-0", pb::Role::Leader, 2)));
        assert_eq!(reg.leader().unwrap().name.as_deref(), Some("kv-1"));
        // The remembered leader answering as follower forgets it.
        reg.on_success(1, Some(&header("kv-1", pb::Role::Follower, 4)));
        assert!(reg.leader().is_none());
    }
}
