//! The workloads on server streams: `watch` and `lease-keepalive`.
//!
//! `watch` measures how long a change takes to reach the clients that watch it. `--watchers`
//! watchers of the prefix `benchw/` are spread round-robin over the members, starting with the
//! follower after the leader ([`watchers_per_member`]); the watchers of a member share one Watch
//! stream (how etcd's and kvset's client libraries multiplex them; one more stream every
//! [`WATCHERS_PER_STREAM`] watchers), and every watcher is confirmed by the server before the
//! first put. Then `--concurrency` writers
//! put, in a closed loop, keys under the prefix (1,000 keys, reused). Each value starts with the
//! put's id and the time the put was *sent*, so an event needs no lookup to be timed: the
//! put-to-event latency of a (watcher, event) pair is the time the event's response arrived
//! minus that send time, on the same monotonic clock. Only puts sent inside the measured window
//! are timed. After the window the writers stop and the run waits (at most [`DRAIN_TIMEOUT`])
//! until every watcher has received every acknowledged put, warm-up included; what is still
//! missing then is lost, and a run with a lost event fails. A put that failed may still have
//! been applied: its event is welcome but not owed.
//!
//! `lease-keepalive` measures the renewal rate of many leases. `--leases` leases (TTL
//! [`LEASE_TTL_S`]) are granted first, 64 grants in flight (the time is reported as
//! `preload_s`); then each of `--concurrency` workers opens its own KeepAlive stream to the
//! leader and renews the leases in round-robin order (one counter shared by the workers), one
//! renewal in flight per stream, so a renewal's latency is the time from its request to its
//! answer on the stream. At the end every lease is revoked (bounded by [`REVOKE_TIMEOUT`]; a
//! lease that could not be revoked still expires after its TTL), so that repeated runs on one
//! cluster do not pile leases up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::runner::{spawn_sampler, Outcome, RunSpec, WorkerStats, ERROR_PAUSE, HISTOGRAM_MAX_US};
use crate::target::{KeepAliveStream, Streams, WatchFeed};
use crate::workload::Workload;

/// The prefix the watchers watch and the writers write under (outside the keyspace's `bench/`).
pub const WATCH_PREFIX: &str = "benchw/";
/// Keys the writers cycle through under the prefix.
const WATCH_KEYS: u64 = 1000;
/// Watchers per Watch stream at most: kvset's default `--max-watchers-per-stream`.
const WATCHERS_PER_STREAM: usize = 1000;
/// How long after the window the watchers may take to receive the last events.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// TTL of the benchmark's leases: far longer than a renewal round at any rate the benchmark
/// reaches, short enough that leases a failed revoke leaves behind go away on their own.
pub const LEASE_TTL_S: i64 = 120;
/// Grants and revokes in flight.
const LEASE_REQUESTS_IN_FLIGHT: usize = 64;
/// How long revoking every lease may take.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `spec`'s workload: the stream workloads here, the others in the closed KV loop.
pub async fn run<T: Streams>(target: Arc<T>, spec: RunSpec) -> anyhow::Result<Outcome> {
    match spec.workload {
        Workload::Watch => run_watch(target, &spec).await,
        Workload::LeaseKeepalive => run_lease_keepalive(target, &spec).await,
        _ => crate::runner::run(target, &spec).await,
    }
}

/// Key of put `id`.
pub fn watch_key(id: u64) -> Vec<u8> {
    format!("{WATCH_PREFIX}{:06}", id % WATCH_KEYS).into_bytes()
}

/// The value of put `id`, sent `sent_us` microseconds after the run's start: both as 16 hex
/// digits, then padding up to `size` bytes (at least 32, the CLI's minimum value size).
pub fn put_value(id: u64, sent_us: u64, size: usize) -> Vec<u8> {
    let mut value = format!("{id:016x}{sent_us:016x}").into_bytes();
    value.resize(size.max(32), b'w');
    value
}

/// The (put id, send time) a value of [`put_value`] carries; `None` for any other value.
pub fn parse_put_value(value: &[u8]) -> Option<(u64, u64)> {
    let head = std::str::from_utf8(value.get(..32)?).ok()?;
    let id = u64::from_str_radix(&head[..16], 16).ok()?;
    let sent_us = u64::from_str_radix(&head[16..], 16).ok()?;
    Some((id, sent_us))
}

/// The puts one watcher received, by put id (a bit set: ids are dense, from 0).
#[derive(Clone, Debug, Default)]
pub struct Received {
    bits: Vec<u64>,
    unique: u64,
}

impl Received {
    /// Notes put `id`; false if it had been received already.
    pub fn insert(&mut self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, id % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        self.unique += u64::from(fresh);
        fresh
    }

    pub fn contains(&self, id: u64) -> bool {
        self.bits
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Distinct puts received.
    pub fn unique(&self) -> u64 {
        self.unique
    }
}

/// Over every watcher, the acknowledged puts it has not received: each is a lost event.
pub fn lost_events<'a>(acked: &[u64], watchers: impl IntoIterator<Item = &'a Received>) -> u64 {
    watchers
        .into_iter()
        .map(|w| acked.iter().filter(|id| !w.contains(**id)).count() as u64)
        .sum()
}

/// What the watchers of one Watch stream received, timed on arrival.
pub struct EventLog {
    pub watchers: Vec<Received>,
    /// Put-to-event latency of the first receipt of each put sent inside the window.
    pub latency_us: Histogram<u64>,
    /// Events counted in `latency_us`.
    pub timed: u64,
    /// A watcher received the same put twice.
    pub duplicates: u64,
    /// Events that are not this run's puts (or name a watcher the stream does not have).
    pub foreign: u64,
    /// Why the stream ended, if it did.
    pub error: Option<String>,
}

impl EventLog {
    pub fn new(watchers: usize) -> Self {
        Self {
            watchers: vec![Received::default(); watchers],
            latency_us: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
                .expect("valid histogram bounds"),
            timed: 0,
            duplicates: 0,
            foreign: 0,
            error: None,
        }
    }

    /// An event with `value` reached `watcher` at `received_us` (microseconds since the run's
    /// start); it is timed if its put was sent at or after `window_us.0` and before
    /// `window_us.1`.
    pub fn record(
        &mut self,
        watcher: usize,
        value: &[u8],
        received_us: u64,
        window_us: (u64, u64),
    ) {
        let (Some((id, sent_us)), Some(received)) =
            (parse_put_value(value), self.watchers.get_mut(watcher))
        else {
            self.foreign += 1;
            return;
        };
        if !received.insert(id) {
            self.duplicates += 1;
            return;
        }
        if sent_us >= window_us.0 && sent_us < window_us.1 {
            let latency = received_us
                .saturating_sub(sent_us)
                .clamp(1, HISTOGRAM_MAX_US);
            self.latency_us.saturating_record(latency);
            self.timed += 1;
        }
    }
}

/// What the watchers of a `watch` run received, over every stream.
pub struct WatchOutcome {
    pub watchers: usize,
    pub latency_us: Histogram<u64>,
    /// (watcher, event) pairs of puts sent inside the window.
    pub events: u64,
    /// (watcher, acknowledged put) pairs never delivered.
    pub lost: u64,
    pub duplicates: u64,
    pub foreign: u64,
}

/// How many watchers each member gets: watcher i watches through member
/// `(leader + 1 + i) mod members`, so a lone watcher sits on a follower (an event then crosses
/// replication to the watcher's member, the common case of a watcher) and many watchers spread
/// evenly; placing them relative to the leader keeps kvset and etcd alike whatever member leads.
pub fn watchers_per_member(watchers: usize, members: usize, leader: usize) -> Vec<usize> {
    let members = members.max(1);
    let mut per_member = vec![0; members];
    for i in 0..watchers {
        per_member[(leader + 1 + i) % members] += 1;
    }
    per_member
}

fn micros_since(base: Instant) -> u64 {
    base.elapsed().as_micros() as u64
}

/// Reads one feed into its log until the stream ends (or the task is aborted).
async fn read_feed(
    mut feed: WatchFeed,
    log: Arc<Mutex<EventLog>>,
    base: Instant,
    window_us: (u64, u64),
) {
    let error = loop {
        match feed.next().await {
            Some(Ok(delivery)) => {
                let received_us = micros_since(base);
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                for event in &delivery.events {
                    log.record(delivery.watcher, &event.value, received_us, window_us);
                }
            }
            Some(Err(e)) => break format!("{e:#}"),
            None => break "the server ended a watch stream".to_string(),
        }
    };
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .error
        .get_or_insert(error);
}

async fn run_watch<T: Streams>(target: Arc<T>, spec: &RunSpec) -> anyhow::Result<Outcome> {
    let members = target.members().max(1);
    let watchers = spec.watchers.max(1);
    let per_member = watchers_per_member(watchers, members, target.leader_index());
    // A member with more watchers than one stream may carry gets several streams.
    let streams = per_member.iter().enumerate().flat_map(|(m, &n)| {
        (0..n.div_ceil(WATCHERS_PER_STREAM))
            .map(move |k| (m, (n - k * WATCHERS_PER_STREAM).min(WATCHERS_PER_STREAM)))
    });
    let feeds: Vec<(usize, WatchFeed)> = futures::future::try_join_all(streams.map(|(m, n)| {
        let target = target.clone();
        async move {
            let feed = target
                .watch_prefix(m, WATCH_PREFIX.as_bytes().to_vec(), n)
                .await?;
            anyhow::Ok((n, feed))
        }
    }))
    .await
    .context("creating the watchers")?;

    let base = Instant::now();
    let measure_from = base + spec.warmup;
    let until = measure_from + spec.duration;
    let window_us = (
        spec.warmup.as_micros() as u64,
        (spec.warmup + spec.duration).as_micros() as u64,
    );
    let logs: Vec<Arc<Mutex<EventLog>>> = feeds
        .iter()
        .map(|(n, _)| Arc::new(Mutex::new(EventLog::new(*n))))
        .collect();
    let readers: Vec<_> = feeds
        .into_iter()
        .zip(&logs)
        .map(|((_, feed), log)| tokio::spawn(read_feed(feed, log.clone(), base, window_us)))
        .collect();
    let sampler = spawn_sampler(spec.server_pids.clone(), measure_from, until);

    let next_id = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..spec.concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            let next_id = next_id.clone();
            let value_size = spec.keyspace.value_size();
            tokio::spawn(async move {
                let mut stats = WorkerStats::new();
                let mut acked = Vec::new();
                loop {
                    let began = Instant::now();
                    if began >= until {
                        break;
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let value = put_value(id, (began - base).as_micros() as u64, value_size);
                    match target.put(watch_key(id), value).await {
                        Ok(()) => {
                            acked.push(id);
                            if stats.answered(began, Instant::now(), measure_from, until) {
                                stats.writes += 1;
                            }
                        }
                        Err(e) => {
                            stats.failed(began, measure_from, &e);
                            tokio::time::sleep(ERROR_PAUSE).await;
                        }
                    }
                }
                (stats, acked)
            })
        })
        .collect();
    let mut total = WorkerStats::new();
    let mut acked = Vec::new();
    for writer in writers {
        let (stats, ids) = writer.await.context("a writer panicked")?;
        total.merge(stats)?;
        acked.extend(ids);
    }
    let (server_cpu_s, client_cpu_s, measured) = sampler.await.context("the CPU sampler")?;

    // Drain: wait until every watcher holds every acknowledged put, a stream broke, or time is up.
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    let owed = acked.len() as u64;
    loop {
        let complete = logs.iter().all(|log| {
            let log = log.lock().unwrap_or_else(PoisonError::into_inner);
            log.watchers.iter().all(|w| w.unique() >= owed)
                && lost_events(&acked, &log.watchers) == 0
        });
        if complete || readers.iter().any(|r| r.is_finished()) || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for reader in &readers {
        reader.abort();
    }
    for reader in readers {
        // Aborted readers end with a cancellation, which is expected here.
        let _ = reader.await;
    }

    let mut watch = WatchOutcome {
        watchers,
        latency_us: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
            .expect("valid histogram bounds"),
        events: 0,
        lost: 0,
        duplicates: 0,
        foreign: 0,
    };
    for log in &logs {
        let log = log.lock().unwrap_or_else(PoisonError::into_inner);
        watch
            .latency_us
            .add(&log.latency_us)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        watch.events += log.timed;
        watch.lost += lost_events(&acked, &log.watchers);
        watch.duplicates += log.duplicates;
        watch.foreign += log.foreign;
        if total.first_error.is_none() {
            total.first_error = log.error.clone();
        }
    }
    Ok(Outcome {
        latency_us: total.latency_us,
        ops: total.ops,
        errors: total.errors,
        reads: 0,
        writes: total.writes,
        misses: 0,
        cas_failed: 0,
        first_error: total.first_error,
        server_cpu_s,
        client_cpu_s,
        measured,
        watch: Some(watch),
        setup_s: None,
        leases_revoked: None,
    })
}

/// Grants `n` leases, retrying each grant a few times.
async fn grant_leases<T: Streams>(target: &Arc<T>, n: u64) -> anyhow::Result<Vec<i64>> {
    futures::stream::iter(0..n)
        .map(|_| async {
            let mut attempt = 0;
            loop {
                match target.grant_lease(LEASE_TTL_S).await {
                    Ok(id) => return Ok(id),
                    Err(e) if attempt >= 3 => return Err(e),
                    Err(_) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
        })
        .buffer_unordered(LEASE_REQUESTS_IN_FLIGHT)
        .try_collect()
        .await
}

/// Revokes `ids` within [`REVOKE_TIMEOUT`]; how many were revoked.
async fn revoke_leases<T: Streams>(target: &Arc<T>, ids: &[i64]) -> u64 {
    let revoked = AtomicU64::new(0);
    let all = futures::stream::iter(ids)
        .map(|&id| {
            let revoked = &revoked;
            async move {
                if target.revoke_lease(id).await.is_ok() {
                    revoked.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .buffer_unordered(LEASE_REQUESTS_IN_FLIGHT)
        .collect::<Vec<()>>();
    let _ = tokio::time::timeout(REVOKE_TIMEOUT, all).await;
    revoked.load(Ordering::Relaxed)
}

async fn run_lease_keepalive<T: Streams>(
    target: Arc<T>,
    spec: &RunSpec,
) -> anyhow::Result<Outcome> {
    let granting = Instant::now();
    let ids = Arc::new(
        grant_leases(&target, spec.leases.max(1))
            .await
            .context("granting the leases")?,
    );
    let setup_s = granting.elapsed().as_secs_f64();
    let next = Arc::new(AtomicU64::new(0));
    let next_lease = {
        let ids = ids.clone();
        let next = next.clone();
        move || ids[(next.fetch_add(1, Ordering::Relaxed) % ids.len() as u64) as usize]
    };

    // Every worker's stream is open before the clock starts (opening renews one lease).
    let concurrency = spec.concurrency.max(1);
    let opened = futures::future::try_join_all((0..concurrency).map(|_| {
        let target = target.clone();
        let first = next_lease();
        async move { target.keep_alive_stream(first).await }
    }))
    .await;
    let streams = match opened {
        Ok(streams) => streams,
        Err(e) => {
            revoke_leases(&target, &ids).await;
            return Err(e.context("opening the keep-alive streams"));
        }
    };

    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let until = measure_from + spec.duration;
    let sampler = spawn_sampler(spec.server_pids.clone(), measure_from, until);
    let workers: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            let target = target.clone();
            let next_lease = next_lease.clone();
            tokio::spawn(async move {
                let mut stats = WorkerStats::new();
                let mut stream: Option<KeepAliveStream> = Some(stream);
                loop {
                    let began = Instant::now();
                    if began >= until {
                        break;
                    }
                    let id = next_lease();
                    let result = match stream.as_mut() {
                        Some(s) => s.keep_alive(id).await.map(drop),
                        // After a failure: a new stream, whose first renewal is not timed.
                        None => match target.keep_alive_stream(id).await {
                            Ok(s) => {
                                stream = Some(s);
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                    };
                    match result {
                        Ok(()) => {
                            stats.answered(began, Instant::now(), measure_from, until);
                        }
                        Err(e) => {
                            stats.failed(began, measure_from, &e);
                            stream = None;
                            tokio::time::sleep(ERROR_PAUSE).await;
                        }
                    }
                }
                stats
            })
        })
        .collect();
    let mut total = WorkerStats::new();
    let mut panicked = None;
    for worker in workers {
        match worker.await {
            Ok(stats) => total.merge(stats)?,
            Err(e) => panicked = Some(e),
        }
    }
    let sampled = sampler.await;
    let revoked = revoke_leases(&target, &ids).await;
    if let Some(e) = panicked {
        return Err(anyhow::anyhow!("a keep-alive worker panicked: {e}"));
    }
    let (server_cpu_s, client_cpu_s, measured) = sampled.context("the CPU sampler")?;
    Ok(Outcome {
        latency_us: total.latency_us,
        ops: total.ops,
        errors: total.errors,
        reads: 0,
        writes: 0,
        misses: 0,
        cas_failed: 0,
        first_error: total.first_error,
        server_cpu_s,
        client_cpu_s,
        measured,
        watch: None,
        setup_s: Some(setup_s),
        leases_revoked: Some(revoked),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_value_carries_its_id_and_send_time() {
        let value = put_value(42, 1_234_567, 128);
        assert_eq!(value.len(), 128);
        assert_eq!(parse_put_value(&value), Some((42, 1_234_567)));
        assert_eq!(
            parse_put_value(&put_value(u64::MAX, 0, 32)),
            Some((u64::MAX, 0))
        );
        assert_eq!(parse_put_value(b"not a benchmark value at all, no"), None);
        assert_eq!(parse_put_value(b"short"), None);
        assert!(watch_key(7).starts_with(WATCH_PREFIX.as_bytes()));
        assert_eq!(watch_key(7), watch_key(7 + WATCH_KEYS));
    }

    #[test]
    fn watchers_start_on_a_follower_and_spread_evenly() {
        assert_eq!(watchers_per_member(1, 3, 0), vec![0, 1, 0]);
        assert_eq!(watchers_per_member(1, 3, 2), vec![1, 0, 0]);
        assert_eq!(watchers_per_member(2, 3, 1), vec![1, 0, 1]);
        assert_eq!(watchers_per_member(1000, 3, 0), vec![333, 334, 333]);
        assert_eq!(watchers_per_member(5, 1, 0), vec![5]);
    }

    #[test]
    fn received_counts_each_put_once() {
        let mut r = Received::default();
        assert!(r.insert(3));
        assert!(r.insert(200));
        assert!(!r.insert(3));
        assert!(r.contains(3) && r.contains(200));
        assert!(!r.contains(4) && !r.contains(10_000));
        assert_eq!(r.unique(), 2);
    }

    #[test]
    fn every_missing_watcher_event_pair_is_lost() {
        let acked = [0, 1, 2, 5];
        let mut all = Received::default();
        let mut some = Received::default();
        for id in [0, 1, 2, 5, 7] {
            all.insert(id);
        }
        some.insert(1);
        some.insert(3); // not acknowledged: received, but never owed
        let none = Received::default();
        assert_eq!(lost_events(&acked, [&all]), 0);
        assert_eq!(lost_events(&acked, [&some]), 3);
        assert_eq!(lost_events(&acked, [&all, &some, &none]), 3 + 4);
    }

    #[test]
    fn events_are_timed_from_the_send_of_their_put() {
        let mut log = EventLog::new(2);
        let window = (1_000, 10_000);
        // Watcher 0 gets put 1 (sent at 2 ms) at 5 ms, watcher 1 at 9 ms.
        log.record(0, &put_value(1, 2_000, 64), 5_000, window);
        log.record(1, &put_value(1, 2_000, 64), 9_000, window);
        // Sent in the warm-up: owed, not timed.
        log.record(0, &put_value(0, 500, 64), 1_500, window);
        // A repeat, an unknown value, an unknown watcher.
        log.record(0, &put_value(1, 2_000, 64), 9_500, window);
        log.record(0, b"someone else's value, not ours!!", 9_600, window);
        log.record(2, &put_value(2, 3_000, 64), 9_700, window);
        assert_eq!(log.timed, 2);
        assert_eq!(log.duplicates, 1);
        assert_eq!(log.foreign, 2);
        assert_eq!(log.latency_us.len(), 2);
        assert_eq!(log.latency_us.min(), 3_000);
        assert!(
            log.latency_us.max().abs_diff(7_000) <= 7,
            "{}",
            log.latency_us.max()
        );
        assert_eq!(
            lost_events(&[0, 1], &log.watchers),
            1,
            "watcher 1 lacks put 0"
        );
    }
}
