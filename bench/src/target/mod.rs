//! The systems under load, behind one trait so that both meet identical generator code.
//!
//! Routing is the same for every implementation: writes (`put`, `cas`, preload batches) and
//! linearizable `get`s go to the leader, found at start-up and re-found after a failure;
//! `get_stale` goes round-robin over every endpoint. Each endpoint gets one lazily connected
//! tonic channel (one HTTP/2 connection, requests multiplexed on it), with TCP_NODELAY and the
//! request timeout as the gRPC deadline.

pub mod etcd;
pub mod kvset;

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// A failed request, with a message fit for a report.
pub type OpResult<T> = Result<T, anyhow::Error>;

/// How to reach a cluster.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// The most writes one client has in flight (the kvset SDK's session pool size).
    pub max_inflight_writes: usize,
    /// kvset raw client: attach exactly-once request ids to writes.
    pub request_ids: bool,
}

/// One system under load. Every method is one request (one round trip from the client).
pub trait Target: Send + Sync + 'static {
    /// Waits until the cluster has a leader and every endpoint answers; describes what it found.
    fn ready(&self, timeout: Duration) -> impl Future<Output = OpResult<String>> + Send;

    /// Durable, replicated write.
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = OpResult<()>> + Send;

    /// Linearizable read; `None` when the key is absent.
    fn get(&self, key: Vec<u8>) -> impl Future<Output = OpResult<Option<Vec<u8>>>> + Send;

    /// Stale (serializable) read from the next member in round-robin order.
    fn get_stale(&self, key: Vec<u8>) -> impl Future<Output = OpResult<Option<Vec<u8>>>> + Send;

    /// Sets `key` to `new` only if its value is `expected`; `Ok(false)` when it was not.
    fn cas(
        &self,
        key: Vec<u8>,
        expected: Vec<u8>,
        new: Vec<u8>,
    ) -> impl Future<Output = OpResult<bool>> + Send;

    /// Writes several keys in one transaction (preloading).
    fn put_many(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>)
        -> impl Future<Output = OpResult<()>> + Send;
}

/// A lazily connected channel to `addr` (`host:port` or `http://host:port`).
pub fn channel(addr: &str, options: &ConnectOptions) -> anyhow::Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| anyhow::anyhow!("invalid endpoint {addr:?}: {e}"))?
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// Round-robin position `n` over `len` endpoints.
pub fn round_robin(counter: &std::sync::atomic::AtomicUsize, len: usize) -> usize {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % len.max(1)
}

/// Retries `probe` until it succeeds or `timeout` passes; returns the last error otherwise.
pub async fn until_ready<T, F, Fut>(timeout: Duration, mut probe: F) -> OpResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = OpResult<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Runs `probe` twice, half a second apart, and succeeds only if both found the same leader in
/// the same term: a run must not start in the middle of an election or a leadership hand-off.
pub async fn stable<F, Fut>(mut probe: F) -> OpResult<(usize, u64)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = OpResult<(usize, u64)>>,
{
    let first = probe().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = probe().await?;
    if first != second {
        anyhow::bail!("leadership moved while checking (from {first:?} to {second:?})");
    }
    Ok(second)
}
