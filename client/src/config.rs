//! Client configuration and per-call options.
//!
//! Two levels of knobs:
//!
//! - [`ClientBuilder`] sets what holds for every call of a [`crate::Client`]: the endpoints, the
//!   connect timeout, the per-attempt request timeout, the retry deadline of a call, the backoff
//!   between retry rounds, whether leader hints are followed, and how many writes may be in
//!   flight at once (the size of the exactly-once id pool, see [`crate::session`]).
//! - [`ReadOptions`] and [`WriteOptions`] adjust one call: consistency, a member to pin a read
//!   to, a timeout that replaces the retry deadline, `prev_kv`.
//!
//! # Time budget of a call
//!
//! A call may make several attempts. Each attempt is limited by the request timeout (the
//! smaller of it and what is left of the call's deadline); the call as a whole is limited by the
//! retry deadline, or by the per-call timeout when one is given. When the deadline passes the
//! call fails with [`crate::Error::Timeout`] or [`crate::Error::Unavailable`], whichever
//! describes the last attempt.

use std::time::Duration;

use crate::client::Client;
use crate::endpoint::{parse_endpoint_list_with_schemes, EndpointAddr, Scheme};
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// Settings shared by every call of a client. Build one with [`ClientBuilder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Time allowed to establish a TCP/HTTP2 connection to one endpoint. Default 2 s.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt (one RPC to one member). Default 5 s.
    pub request_timeout: Duration,
    /// Time allowed for a whole call, retries included, unless the call sets its own timeout.
    /// Default 15 s.
    pub retry_deadline: Duration,
    /// First backoff between retry rounds. Default 50 ms.
    pub backoff_base: Duration,
    /// Largest backoff between retry rounds. Default 2 s.
    pub backoff_max: Duration,
    /// Follow `kvset-leader` hints (default). When false, a refusal with a hint fails the call
    /// with [`Error::NotLeader`].
    pub follow_leader: bool,
    /// At most this many writes of one client are in flight at once; more wait for a slot. Each
    /// slot has its own exactly-once client id. Default 32.
    pub max_inflight_writes: usize,
    /// HTTP/2 keep-alive ping interval on open connections (detects dead peers); `None`
    /// disables pings. Default 10 s.
    pub keepalive_interval: Option<Duration>,
    /// How long a keep-alive ping may go unanswered before the connection is closed. Default 5 s.
    pub keepalive_timeout: Duration,
    /// After a failed connect, an endpoint is tried last for this long. Default 10 s.
    pub endpoint_cooldown: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            retry_deadline: Duration::from_secs(15),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            follow_leader: true,
            max_inflight_writes: 32,
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(5),
            endpoint_cooldown: Duration::from_secs(10),
        }
    }
}

/// Builds a [`Client`]: `Client::builder().endpoints(["kv:7379"]).request_timeout(..).connect()`.
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    config: Config,
    tls: Option<TlsOptions>,
    token: Option<BearerToken>,
}

/// A bearer token, kept out of `Debug` output.
#[derive(Clone, Default)]
struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl ClientBuilder {
    /// A builder with default settings and no endpoints.
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Adds endpoints: `host:port`, `http://host:port`, `https://host:port`, or `host` (port
    /// 7379). An entry may itself be a comma-separated list, as in `KVSET_ENDPOINTS`.
    /// `https://` needs [`ClientBuilder::tls`]; `http://` cannot be combined with it.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.endpoints
            .extend(endpoints.into_iter().map(|s| s.as_ref().to_string()));
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> ClientBuilder {
        self.config = config;
        self
    }

    /// See [`Config::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.connect_timeout = timeout;
        self
    }

    /// See [`Config::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.request_timeout = timeout;
        self
    }

    /// See [`Config::retry_deadline`].
    pub fn retry_deadline(mut self, deadline: Duration) -> ClientBuilder {
        self.config.retry_deadline = deadline;
        self
    }

    /// See [`Config::backoff_base`] and [`Config::backoff_max`].
    pub fn backoff(mut self, base: Duration, max: Duration) -> ClientBuilder {
        self.config.backoff_base = base;
        self.config.backoff_max = max;
        self
    }

    /// See [`Config::follow_leader`].
    pub fn follow_leader(mut self, follow: bool) -> ClientBuilder {
        self.config.follow_leader = follow;
        self
    }

    /// See [`Config::max_inflight_writes`].
    pub fn max_inflight_writes(mut self, n: usize) -> ClientBuilder {
        self.config.max_inflight_writes = n;
        self
    }

    /// See [`Config::keepalive_interval`] and [`Config::keepalive_timeout`].
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> ClientBuilder {
        self.config.keepalive_interval = interval;
        self.config.keepalive_timeout = timeout;
        self
    }

    /// See [`Config::endpoint_cooldown`].
    pub fn endpoint_cooldown(mut self, cooldown: Duration) -> ClientBuilder {
        self.config.endpoint_cooldown = cooldown;
        self
    }

    /// Speaks TLS to every member: verifies their certificates against `tls.ca` and presents
    /// `tls.identity` when set (see [`crate::TlsOptions`]). The files are read, and checked, by
    /// [`ClientBuilder::build`].
    pub fn tls(mut self, tls: TlsOptions) -> ClientBuilder {
        self.tls = Some(tls);
        self
    }

    /// Sends `token` with every call (`authorization: Bearer TOKEN`): the identity
    /// `token:NAME` of a cluster whose authorization policy lists it (`--auth-tokens`). Use it
    /// where a client cannot present a TLS client certificate. An empty token sends none.
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        let token = token.into();
        self.token = (!token.is_empty()).then_some(BearerToken(token));
        self
    }

    /// Sets or clears the TLS settings (`None`: plain text, the default).
    pub fn tls_options(mut self, tls: Option<TlsOptions>) -> ClientBuilder {
        self.tls = tls;
        self
    }

    /// Validates the settings and builds the client. No connection is made here: channels
    /// connect on first use, so this succeeds while the cluster is down and the first call
    /// reports what is unreachable.
    pub async fn connect(self) -> Result<Client> {
        self.build()
    }

    /// Like [`ClientBuilder::connect`], usable outside an async context. The client must still
    /// be used inside a Tokio runtime.
    ///
    /// Fails with [`Error::InvalidEndpoint`] for an endpoint that cannot be parsed, or an
    /// `https://` endpoint without TLS settings; with [`Error::TlsConfig`] when the TLS files
    /// cannot be read or used, or an `http://` endpoint is combined with TLS settings.
    pub fn build(self) -> Result<Client> {
        let entries = parse_endpoint_list_with_schemes(&self.endpoints.join(","))?;
        validate(&self.config)?;
        let tls = match &self.tls {
            Some(tls) => {
                if let Some((_, _, input)) =
                    entries.iter().find(|(_, s, _)| *s == Some(Scheme::Http))
                {
                    return Err(Error::TlsConfig(format!(
                        "endpoint {input:?} is plain text (http://) but TLS is configured; use \
                         host:port or https://host:port"
                    )));
                }
                Some((tls.client_config()?, tls.identity.is_some()))
            }
            None => {
                if let Some((_, _, input)) =
                    entries.iter().find(|(_, s, _)| *s == Some(Scheme::Https))
                {
                    return Err(Error::InvalidEndpoint {
                        input: input.clone(),
                        reason: "https endpoint needs --cacert: the CA bundle that signed the \
                                 members' certificates (in the SDK: ClientBuilder::tls)"
                            .to_string(),
                    });
                }
                None
            }
        };
        let credentials = match &self.token {
            Some(BearerToken(token)) => crate::endpoint::Credentials::bearer(token)?,
            None => crate::endpoint::Credentials::default(),
        };
        let addrs = entries.into_iter().map(|(addr, _, _)| addr).collect();
        Ok(Client::from_parts(
            dedup(addrs),
            self.config,
            tls,
            credentials,
        ))
    }
}

fn dedup(addrs: Vec<EndpointAddr>) -> Vec<EndpointAddr> {
    let mut out: Vec<EndpointAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn validate(c: &Config) -> Result<()> {
    let bad = |msg: &str| Err(Error::InvalidArgument(msg.to_string()));
    if c.request_timeout.is_zero() || c.retry_deadline.is_zero() || c.connect_timeout.is_zero() {
        return bad("timeouts must be greater than zero");
    }
    if c.backoff_base.is_zero() || c.backoff_base > c.backoff_max {
        return bad("backoff base must be greater than zero and at most the backoff max");
    }
    if c.max_inflight_writes == 0 {
        return bad("max_inflight_writes must be at least 1");
    }
    Ok(())
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// The serving member confirms with a quorum that the leader still leads and waits until it
    /// has applied up to that point. Never stale. Default.
    #[default]
    Linearizable,
    /// Served from the contacted member's applied state without asking the leader. May be
    /// stale; the response header's revision says how far that member has applied. Use it to
    /// read from a secondary.
    Stale,
}

impl Consistency {
    pub(crate) fn to_pb(self) -> i32 {
        match self {
            Consistency::Linearizable => kvset_proto::v1::Consistency::Linearizable as i32,
            Consistency::Stale => kvset_proto::v1::Consistency::Stale as i32,
        }
    }
}

/// Options of one read (`get`, `range`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Linearizable (default) or stale.
    pub consistency: Consistency,
    /// Send the read to this member only, by name (`kv-1`) or endpoint (`127.0.0.1:7380`). A
    /// name is resolved through the membership's client addresses. Without a pin, linearizable
    /// reads go to the leader and stale reads to a follower, failing over to the others.
    pub member: Option<String>,
    /// Replaces the client's retry deadline for this call.
    pub timeout: Option<Duration>,
    /// Read the store as it was at this revision (0, the default: the current revision). A
    /// compacted revision fails with [`Error::Compacted`]; one above the current revision with
    /// [`Error::RevisionOutOfRange`]. With a range, every page is read at the first page's
    /// revision anyway; this picks that revision.
    pub revision: i64,
}

impl ReadOptions {
    /// Linearizable, not pinned, client's deadline.
    pub fn new() -> ReadOptions {
        ReadOptions::default()
    }

    /// A stale read (from a secondary when one is reachable).
    pub fn stale() -> ReadOptions {
        ReadOptions::new().consistency(Consistency::Stale)
    }

    /// Sets the consistency.
    pub fn consistency(mut self, consistency: Consistency) -> ReadOptions {
        self.consistency = consistency;
        self
    }

    /// Pins the read to one member, by name or endpoint.
    pub fn on_member(mut self, member: impl Into<String>) -> ReadOptions {
        self.member = Some(member.into());
        self
    }

    /// Sets this call's deadline (retries included).
    pub fn timeout(mut self, timeout: Duration) -> ReadOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Reads at a past revision (0: the current one). See [`ReadOptions::revision`].
    pub fn at_revision(mut self, revision: i64) -> ReadOptions {
        self.revision = revision;
        self
    }

    /// Refuses a negative revision before anything is sent.
    pub(crate) fn checked_revision(&self) -> Result<i64> {
        if self.revision < 0 {
            return Err(Error::InvalidArgument(format!(
                "revision {} is negative; give a revision of 1 or more, or 0 for the current one",
                self.revision
            )));
        }
        Ok(self.revision)
    }
}

/// Options of one write (`put`, `delete`, `txn`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Ask for the previous key-value(s) in the response.
    pub prev_kv: bool,
    /// Replaces the client's retry deadline for this call.
    pub timeout: Option<Duration>,
    /// `put` only: attach the key to this lease (0, the default: no lease; a put without a
    /// lease detaches the key from the one it had). An unknown lease fails with
    /// [`Error::NotFound`] and writes nothing. Ignored by `delete` and `txn` (a transaction's
    /// puts carry their own lease, [`crate::TxnOp::put_with_lease`]).
    pub lease: i64,
}

impl WriteOptions {
    /// Defaults: no previous value, client's deadline.
    pub fn new() -> WriteOptions {
        WriteOptions::default()
    }

    /// Ask for the previous key-value(s).
    pub fn prev_kv(mut self) -> WriteOptions {
        self.prev_kv = true;
        self
    }

    /// Sets this call's deadline (retries included).
    pub fn timeout(mut self, timeout: Duration) -> WriteOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Attaches the put key to a lease ([`crate::Client::grant`]).
    pub fn lease(mut self, lease: i64) -> WriteOptions {
        self.lease = lease;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_endpoints_need_tls_and_http_endpoints_exclude_it() {
        let e = ClientBuilder::new()
            .endpoints(["a:1,https://b:2"])
            .build()
            .unwrap_err();
        match &e {
            Error::InvalidEndpoint { input, reason } => {
                assert_eq!(input, "https://b:2");
                assert!(
                    reason.starts_with("https endpoint needs --cacert"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let e = ClientBuilder::new()
            .endpoints(["http://a:1"])
            .tls(TlsOptions::new("not read before the endpoints are checked"))
            .build()
            .unwrap_err();
        assert!(
            matches!(e, Error::TlsConfig(ref m) if m.contains("http://a:1")),
            "{e:?}"
        );
        let plain = ClientBuilder::new()
            .endpoints(["http://a:1", "b"])
            .build()
            .unwrap();
        assert!(!plain.uses_tls());
        assert_eq!(plain.endpoints(), ["a:1", "b:7379"]);
    }
}
