//! An in-process cluster on an in-memory network, in simulated time, driven by short scripts.
//!
//! Every member is the real server (`kvset_server::server::start`): the real node, Raft core,
//! store (on a temporary directory) and gRPC services. Only the sockets are replaced, by
//! `kvset_server::memnet`, so a script can cut links; and the tests run on a current-thread
//! tokio runtime with paused time, so an election timeout costs nothing and timers fire in
//! order. A scenario that takes a minute of cluster time runs in well under a second.
//!
//! A script is one command per line (`#` starts a comment); see [`Sim::run`] for the commands.
//! Each line either does something or checks something, and a failed check names its line. The
//! scripts read like the behaviour they pin down, in the manner of toydb's goldenscripts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::{
    Consistency, GetRequest, PutRequest, RemoveRequest, Role, StatusRequest, StatusResponse,
};
use kvset_server::config::{RaftTiming, ServerConfig};
use kvset_server::identity::{PeerDirectory, PodIdentity};
use kvset_server::memnet::MemoryNetwork;
use kvset_server::server::{start, RunningServer};
use kvset_server::tls::{Dialer, Port};
use tokio::time::Instant;

/// How long an `await` waits (in simulated time) before the script fails.
const AWAIT_LIMIT: Duration = Duration::from_secs(60);
/// How long one request may take (simulated time).
const REQUEST_LIMIT: Duration = Duration::from_secs(15);
/// Members the scripts may name: kv-0 … kv-4.
const MAX_MEMBERS: u64 = 5;

/// The host the scripts' client requests come from; `isolate` never cuts it.
fn client_host() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1))
}

fn host(ordinal: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, ordinal as u8 + 1))
}

fn client_addr(ordinal: u64) -> SocketAddr {
    SocketAddr::new(host(ordinal), 7379)
}

fn peer_addr(ordinal: u64) -> SocketAddr {
    SocketAddr::new(host(ordinal), 7479)
}

/// What `bootstrap 3` stands for.
const BOOTSTRAP_3: [&str; 3] = [
    "start kv-0 kv-1 kv-2",
    "await voters kv-0 kv-1 kv-2",
    "await leader kv-0",
];

/// The cluster under test.
pub struct Sim {
    net: MemoryNetwork,
    dir: tempfile::TempDir,
    running: BTreeMap<u64, RunningServer>,
    client: std::sync::Arc<Dialer>,
    /// What `note term` saw.
    noted_term: Option<u64>,
    /// Where the script is, for messages.
    line: usize,
    /// `--snapshot-every` and `--keep-after-snapshot` for members started from now on.
    snapshot: Option<(u64, u64)>,
    /// What `fill` wrote and the cluster acknowledged: key → value.
    acknowledged: BTreeMap<String, String>,
    text: String,
}

impl Sim {
    pub fn new() -> Self {
        let net = MemoryNetwork::new();
        Self {
            client: Dialer::in_memory(net.clone(), client_host()),
            net,
            dir: tempfile::tempdir().expect("temp dir"),
            running: BTreeMap::new(),
            noted_term: None,
            line: 0,
            snapshot: None,
            acknowledged: BTreeMap::new(),
            text: String::new(),
        }
    }

    fn config(&self, ordinal: u64) -> ServerConfig {
        let list: Vec<String> = (0..MAX_MEMBERS)
            .map(|o| format!("kv-{o}={}/{}", client_addr(o), peer_addr(o)))
            .collect();
        let peers = PeerDirectory::parse_static(&list.join(","), "kv").expect("member list");
        let identity = PodIdentity::parse(&format!("kv-{ordinal}")).expect("identity");
        let data_dir: PathBuf = self.dir.path().join(format!("kv-{ordinal}"));
        let mut config = ServerConfig::new(identity, peers, data_dir);
        config.client_listen = client_addr(ordinal);
        config.peer_listen = peer_addr(ordinal);
        config.metrics_listen = "127.0.0.1:0".parse().expect("address");
        config.memory_network = Some(self.net.clone());
        config.cluster_record = format!(
            "file:{}",
            self.dir.path().join("cluster-record.json").display()
        )
        .parse()
        .expect("record spec");
        config.timing = RaftTiming {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(600),
        };
        config.quota_bytes = Some(0);
        config.shutdown_grace = Duration::from_secs(10);
        // Manual membership until a script sets a size (a missing file counts as manual).
        config.replicas_from = kvset_server::replicas::ReplicasFrom::File(self.size_file());
        if let Some((every, keep)) = self.snapshot {
            config.snapshot_every = every;
            config.keep_after_snapshot = keep;
        }
        config
    }

    fn size_file(&self) -> PathBuf {
        self.dir.path().join("replicas")
    }

    fn fail(&self, why: impl std::fmt::Display) -> ! {
        panic!("line {}: `{}`: {why}", self.line, self.text)
    }

    /// The client's channel to a member's client port.
    fn channel(&self, ordinal: u64) -> tonic::transport::Channel {
        self.client
            .connect_lazy(
                Port::Client,
                &client_addr(ordinal).to_string(),
                REQUEST_LIMIT,
            )
            .expect("channel")
    }

    fn kv(&self, ordinal: u64) -> KvClient<tonic::transport::Channel> {
        KvClient::new(self.channel(ordinal))
    }

    fn cluster(&self, ordinal: u64) -> ClusterClient<tonic::transport::Channel> {
        ClusterClient::new(self.channel(ordinal))
    }

    async fn status(&self, ordinal: u64) -> Option<StatusResponse> {
        let mut client = self.cluster(ordinal);
        match tokio::time::timeout(Duration::from_secs(2), client.status(StatusRequest {})).await {
            Ok(Ok(r)) => Some(r.into_inner()),
            _ => None,
        }
    }

    /// Polls `check` every 20 ms of simulated time until it holds; fails the script after
    /// `limit`. Returns how long it took.
    async fn wait_for<F, Fut>(&self, limit: Duration, what: &str, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            if check().await {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                self.fail(format!("{what} did not happen within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The leader as `ordinal` sees it (its name), if it answers and knows one.
    async fn leader_seen_by(&self, ordinal: u64) -> Option<String> {
        self.status(ordinal)
            .await
            .filter(|s| s.leader_id.is_some())
            .map(|s| s.leader_name)
    }

    async fn put(&self, key: &str, value: &str, via: u64) -> Result<(), tonic::Status> {
        let mut client = self.kv(via);
        let call = client.put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        });
        match tokio::time::timeout(REQUEST_LIMIT, call).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "no answer (simulated timeout)",
            )),
        }
    }

    async fn get(&self, key: &str, via: u64, stale: bool) -> Result<Option<String>, tonic::Status> {
        let consistency = if stale {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        };
        let mut client = self.kv(via);
        let call = client.get(GetRequest {
            key: key.as_bytes().to_vec(),
            consistency: consistency as i32,
            revision: 0,
        });
        match tokio::time::timeout(REQUEST_LIMIT, call).await {
            Ok(r) => r.map(|r| {
                r.into_inner()
                    .kv
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            }),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "no answer (simulated timeout)",
            )),
        }
    }

    fn member(&self, word: Option<&str>) -> u64 {
        let word = word.unwrap_or_else(|| self.fail("a member name (kv-N) is missing"));
        word.strip_prefix("kv-")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n < MAX_MEMBERS)
            .unwrap_or_else(|| self.fail(format!("{word:?} is not kv-0 … kv-{}", MAX_MEMBERS - 1)))
    }

    fn all_hosts(&self) -> Vec<IpAddr> {
        (0..MAX_MEMBERS).map(host).collect()
    }

    /// Runs a script. Commands (`kv-N` names a member; every `await` waits in simulated time):
    ///
    /// - `bootstrap 3`: `start kv-0 kv-1 kv-2`, `await voters kv-0 kv-1 kv-2`,
    ///   `await leader kv-0` — the usual beginning.
    /// - `start kv-N …` starts members, in the order given; `stop kv-N` stops one gracefully
    ///   (SIGTERM: it hands leadership off if it leads).
    /// - `await leader kv-N [within DURATION]`: every running member that answers sees kv-N as
    ///   the leader (and it leads); with `within`, it must take at most DURATION.
    /// - `await leader-not kv-N`: some other running member leads.
    /// - `await voters kv-A kv-B …` / `await learners …`: the leader's membership; for voters,
    ///   each running one also reports ready (it has finished joining).
    /// - `kill kv-N`: stop one at once, as a crash would (no hand-off, no leave).
    /// - `size N`: the set's desired size becomes N (members at or above it leave when stopped,
    ///   and the leader removes them); before any `size`, membership is manual.
    /// - `snapshots every N keep M`: members started from now on snapshot every N entries and
    ///   keep M entries after a snapshot.
    /// - `fill N via kv-N`: N puts of new keys, 8 at a time; each must succeed, and `verify`
    ///   checks them later.
    /// - `verify via kv-N`: every key `fill` wrote reads back (linearizably) with its value.
    /// - `wipe kv-N`: delete a stopped member's volume (it starts empty next time).
    /// - `burst N via kv-N -> entries at most M`: N concurrent puts must all succeed and take at
    ///   most M log entries on the leader (group commit).
    /// - `isolate kv-N`: cut kv-N off from every other member (not from the client);
    ///   `cut kv-A kv-B`: cut the link between two members; `heal`: restore every link.
    /// - `put KEY VALUE via kv-N` must succeed; `put … -> error` must fail.
    /// - `get KEY via kv-N [stale] -> VALUE | none | error [CODE]`.
    /// - `remove kv-N [any-order] -> ok | error CODE [TEXT…]`: `Cluster.Remove`, TEXT must appear
    ///   in the message.
    /// - `note term` / `expect term +N`: the leader's term then and now.
    /// - `sleep DURATION`.
    pub async fn run(&mut self, script: &str) {
        for (n, raw) in script.lines().enumerate() {
            if raw.trim() == "bootstrap 3" {
                // The usual start: three members in ordinal order, all voters, kv-0 leading.
                self.line = n + 1;
                for step in BOOTSTRAP_3 {
                    self.text = format!("bootstrap 3: {step}");
                    let words: Vec<&str> = step.split_whitespace().collect();
                    self.step(&words, None).await;
                }
                continue;
            }
            let text = raw.split('#').next().unwrap_or("").trim();
            if text.is_empty() {
                continue;
            }
            self.line = n + 1;
            self.text = text.to_string();
            tracing::info!(line = self.line, "script: {text}");
            let (action, expect) = match text.split_once("->") {
                Some((a, e)) => (a.trim(), Some(e.trim())),
                None => (text, None),
            };
            let words: Vec<&str> = action.split_whitespace().collect();
            self.step(&words, expect).await;
        }
    }

    async fn step(&mut self, words: &[&str], expect: Option<&str>) {
        match words {
            ["start", members @ ..] => {
                for word in members {
                    let ordinal = self.member(Some(word));
                    let server = start(self.config(ordinal))
                        .await
                        .unwrap_or_else(|e| self.fail(format!("kv-{ordinal} did not start: {e}")));
                    self.running.insert(ordinal, server);
                }
            }
            [how @ ("stop" | "kill"), member] => {
                let ordinal = self.member(Some(member));
                let server = self
                    .running
                    .remove(&ordinal)
                    .unwrap_or_else(|| self.fail("not running"));
                if *how == "stop" {
                    server.shutdown().await;
                } else {
                    server.kill().await;
                    // A killed member's tasks let go of its store as they wind down, not at
                    // once (a process exit would free it at once): wait until a restart can
                    // open it, so that `start` right after a `kill` does not find it locked.
                    let store = self.dir.path().join(format!("kv-{ordinal}/store"));
                    self.wait_for(
                        AWAIT_LIMIT,
                        "the killed member's store to be released",
                        || {
                            let store = store.clone();
                            async move { kvset_server::store::open(&store).is_ok() }
                        },
                    )
                    .await;
                }
                self.net.close(client_addr(ordinal));
                self.net.close(peer_addr(ordinal));
            }
            ["await", "leader", member, rest @ ..] => {
                let ordinal = self.member(Some(member));
                let name = format!("kv-{ordinal}");
                let took = self
                    .wait_for(AWAIT_LIMIT, &format!("{name} leading"), || async {
                        let leads = self
                            .status(ordinal)
                            .await
                            .is_some_and(|s| s.role == Role::Leader as i32);
                        let mut agreed = true;
                        for other in self.running.keys().copied().filter(|o| *o != ordinal) {
                            if let Some(seen) = self.leader_seen_by(other).await {
                                agreed &= seen == name;
                            } else if self.net.link_open(host(other), host(ordinal)) {
                                agreed = false;
                            }
                        }
                        leads && agreed
                    })
                    .await;
                if let ["within", limit] = rest {
                    let limit = parse_duration(limit).unwrap_or_else(|e| self.fail(e));
                    if took > limit {
                        self.fail(format!("took {took:?}, more than {limit:?}"));
                    }
                }
            }
            ["await", "leader-not", member] => {
                let old = self.member(Some(member));
                self.wait_for(
                    AWAIT_LIMIT,
                    &format!("a leader other than kv-{old}"),
                    || async {
                        for ordinal in self.running.keys().copied().filter(|o| *o != old) {
                            if self
                                .status(ordinal)
                                .await
                                .is_some_and(|s| s.role == Role::Leader as i32)
                            {
                                return true;
                            }
                        }
                        false
                    },
                )
                .await;
            }
            ["await", kind @ ("voters" | "learners"), members @ ..] => {
                let want: Vec<u64> = members.iter().map(|m| self.member(Some(m))).collect();
                let kind = *kind;
                self.wait_for(AWAIT_LIMIT, &format!("{kind} {want:?}"), || async {
                    for ordinal in self.running.keys().copied() {
                        let Some(s) = self.status(ordinal).await else {
                            continue;
                        };
                        if s.role != Role::Leader as i32 {
                            continue;
                        }
                        let mut got: Vec<u64> = s
                            .members
                            .iter()
                            .filter_map(|m| m.member.as_ref())
                            .filter(|m| m.voter == (kind == "voters"))
                            .map(|m| m.id)
                            .collect();
                        got.sort();
                        if got != want {
                            return false;
                        }
                        // And every running voter has finished joining (ready), as a
                        // StatefulSet's OrderedReady waits for.
                        if kind == "voters" {
                            for member in want.iter().filter(|m| self.running.contains_key(m)) {
                                if !self.status(*member).await.is_some_and(|s| s.ready) {
                                    return false;
                                }
                            }
                        }
                        return true;
                    }
                    false
                })
                .await;
            }
            ["size", n] => {
                let n: u64 = n.parse().unwrap_or_else(|e| self.fail(e));
                std::fs::write(self.size_file(), format!("{n}\n")).unwrap_or_else(|e| self.fail(e));
            }
            ["snapshots", "every", every, "keep", keep] => {
                let every: u64 = every.parse().unwrap_or_else(|e| self.fail(e));
                let keep: u64 = keep.parse().unwrap_or_else(|e| self.fail(e));
                self.snapshot = Some((every, keep));
            }
            ["fill", count, "via", member] => {
                let ordinal = self.member(Some(member));
                let count: usize = count.parse().unwrap_or_else(|e| self.fail(e));
                let first = self.acknowledged.len();
                let keys: Vec<String> = (first..first + count)
                    .map(|i| format!("fill-{i}"))
                    .collect();
                for chunk in keys.chunks(8) {
                    let this = &*self;
                    let puts = chunk
                        .iter()
                        .map(|k| async move { this.put(k, k, ordinal).await });
                    for (key, result) in chunk.iter().zip(futures::future::join_all(puts).await) {
                        if let Err(e) = result {
                            self.fail(format!("the put of {key} failed: {e}"));
                        }
                        self.acknowledged.insert(key.clone(), key.clone());
                    }
                }
            }
            ["verify", "via", member] => {
                let ordinal = self.member(Some(member));
                let mut lost = Vec::new();
                for (key, value) in &self.acknowledged {
                    match self.get(key, ordinal, false).await {
                        Ok(Some(v)) if v == *value => {}
                        other => lost.push(format!("{key}: {other:?}")),
                    }
                }
                if !lost.is_empty() {
                    self.fail(format!(
                        "{} of {} acknowledged writes are lost, e.g. {:?}",
                        lost.len(),
                        self.acknowledged.len(),
                        &lost[..lost.len().min(5)]
                    ));
                }
            }
            ["wipe", member] => {
                let ordinal = self.member(Some(member));
                if self.running.contains_key(&ordinal) {
                    self.fail("stop it first");
                }
                let dir = self.dir.path().join(format!("kv-{ordinal}"));
                std::fs::remove_dir_all(&dir).unwrap_or_else(|e| self.fail(e));
            }
            ["burst", count, "via", member] => {
                let ordinal = self.member(Some(member));
                let count: usize = count.parse().unwrap_or_else(|e| self.fail(e));
                let before = self.leader_status().await.last_log_index;
                let this = &*self;
                let puts = (0..count)
                    .map(|i| async move { this.put(&format!("burst-{i}"), "x", ordinal).await });
                for result in futures::future::join_all(puts).await {
                    if let Err(e) = result {
                        self.fail(format!("a put of the burst failed: {e}"));
                    }
                }
                let entries = self.leader_status().await.last_log_index - before;
                let expect =
                    expect.unwrap_or_else(|| self.fail("burst needs `-> entries at most M`"));
                let most: u64 = expect
                    .strip_prefix("entries at most ")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or_else(|| self.fail("expected `-> entries at most M`"));
                if entries > most {
                    self.fail(format!(
                        "{count} writes took {entries} log entries, more than {most}"
                    ));
                }
            }
            ["isolate", member] => {
                let ordinal = self.member(Some(member));
                self.net.isolate(host(ordinal), &self.all_hosts());
            }
            ["cut", a, b] => {
                let (a, b) = (self.member(Some(a)), self.member(Some(b)));
                self.net.cut(host(a), host(b));
            }
            ["heal"] => self.net.heal(),
            ["sleep", d] => {
                let d = parse_duration(d).unwrap_or_else(|e| self.fail(e));
                tokio::time::sleep(d).await;
            }
            ["put", key, value, "via", member] => {
                let ordinal = self.member(Some(member));
                let result = self.put(key, value, ordinal).await;
                match (expect, result) {
                    (None, Ok(())) => {}
                    (None, Err(e)) => self.fail(format!("the put failed: {e}")),
                    (Some(e), Err(_)) if e.starts_with("error") => {}
                    (Some(e), r) => self.fail(format!("expected {e}, got {r:?}")),
                }
            }
            ["get", key, "via", member, rest @ ..] => {
                let ordinal = self.member(Some(member));
                let stale = rest == ["stale"];
                let result = self.get(key, ordinal, stale).await;
                let expect = expect.unwrap_or_else(|| self.fail("a get needs `-> VALUE`"));
                self.check_answer(expect, result.map(|v| v.unwrap_or_else(|| "none".into())));
            }
            ["remove", member, rest @ ..] => {
                let ordinal = self.member(Some(member));
                let mut client = self.cluster(self.some_running());
                let call = client.remove(RemoveRequest {
                    id: ordinal,
                    any_order: rest == ["any-order"],
                });
                let result = match tokio::time::timeout(REQUEST_LIMIT, call).await {
                    Ok(r) => r.map(|_| "ok".to_string()),
                    Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
                };
                let expect = expect.unwrap_or_else(|| self.fail("remove needs `-> ok | error …`"));
                self.check_answer(expect, result);
            }
            ["note", "term"] => {
                let term = self.leader_term().await;
                self.noted_term = Some(term);
            }
            ["expect", "term", change] => {
                let before = self
                    .noted_term
                    .unwrap_or_else(|| self.fail("no `note term` before"));
                let now = self.leader_term().await;
                let want: u64 = change
                    .strip_prefix('+')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| self.fail("expected +N"));
                if now != before + want {
                    self.fail(format!(
                        "term went from {before} to {now}, expected +{want}"
                    ));
                }
            }
            _ => self.fail("unknown command"),
        }
    }

    fn some_running(&self) -> u64 {
        *self
            .running
            .keys()
            .next()
            .unwrap_or_else(|| self.fail("no member is running"))
    }

    async fn leader_status(&self) -> StatusResponse {
        for ordinal in self.running.keys().copied() {
            if let Some(s) = self.status(ordinal).await {
                if s.role == Role::Leader as i32 {
                    return s;
                }
            }
        }
        self.fail("no member leads")
    }

    async fn leader_term(&self) -> u64 {
        self.leader_status().await.term
    }

    /// `expect` is `VALUE`, `ok`, `none`, `error`, `error CODE` or `error CODE TEXT…`.
    fn check_answer(&self, expect: &str, got: Result<String, tonic::Status>) {
        let mut words = expect.split_whitespace();
        match (words.next(), got) {
            (Some("error"), Err(status)) => {
                if let Some(code) = words.next() {
                    let actual = format!("{:?}", status.code()).to_uppercase();
                    let wanted = code.replace('_', "");
                    if actual != wanted {
                        self.fail(format!("expected code {code}, got {status}"));
                    }
                }
                let text: Vec<&str> = words.collect();
                if !text.is_empty() && !status.message().contains(&text.join(" ")) {
                    self.fail(format!(
                        "the message does not say {:?}: {}",
                        text.join(" "),
                        status.message()
                    ));
                }
            }
            (Some("error"), Ok(v)) => self.fail(format!("expected an error, got {v:?}")),
            (_, Err(status)) => self.fail(format!("expected {expect}, got {status}")),
            (_, Ok(v)) if v == expect => {}
            (_, Ok(v)) => self.fail(format!("expected {expect}, got {v}")),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    kvset_client::duration::parse(s).map_err(|e| e.to_string())
}

/// Runs `script` on a fresh simulated cluster.
///
/// `KVSET_SIM_LOG=info` (any tracing filter) prints the members' logs.
pub fn run_script(script: &str) {
    if let Ok(filter) = std::env::var("KVSET_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut sim = Sim::new();
        sim.run(script).await;
        for (_, server) in std::mem::take(&mut sim.running) {
            server.shutdown().await;
        }
    });
}
