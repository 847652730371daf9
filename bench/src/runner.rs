//! The closed loop: C workers, each sending its next request as soon as the previous one answered.
//!
//! Timeline of a run: set-up (a `cas` worker reads the current values of the keys it owns), then
//! `warmup` of load that is not counted, then `duration` of load that is: a request counts when
//! it both started and finished inside the measured window. Server CPU is sampled at the two
//! edges of that window. After the window the workers stop sending and the run ends once the
//! requests still in flight have answered (each is bounded by the request timeout).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::cli::Preload;
use crate::cpu;
use crate::target::Target;
use crate::workload::{Keyspace, Workload};

/// Keys per preload transaction (kvset's default `--max-txn-ops` and etcd's `--max-txn-ops`
/// are both 128).
const PRELOAD_BATCH: u64 = 128;
/// Preload transactions in flight.
const PRELOAD_CONCURRENCY: usize = 16;
/// Latencies are recorded in microseconds, up to a minute, with 3 significant digits.
const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Pause after a failed request, so that a dead cluster is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub workload: Workload,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub keyspace: Keyspace,
    pub seed: u64,
    pub server_pids: Vec<u32>,
}

/// What a run measured (inside the measured window only).
pub struct Outcome {
    pub latency_us: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub reads: u64,
    pub writes: u64,
    /// Reads that found no value (the keyspace was not loaded).
    pub misses: u64,
    /// `cas` requests whose compare failed (answered, counted in `ops`).
    pub cas_failed: u64,
    pub first_error: Option<String>,
    /// CPU seconds the server processes used in the window; None if not measured.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds this process used in the window (the load generator shares the machine).
    pub client_cpu_s: Option<f64>,
    /// The window actually measured.
    pub measured: Duration,
}

/// Whether a run of `workload` loads the keyspace first under `mode`.
pub fn needs_preload(workload: Workload, mode: Preload) -> bool {
    match mode {
        Preload::Always => true,
        Preload::Never => false,
        Preload::Auto => workload.reads(),
    }
}

/// Writes every key of the keyspace (in transactions of 128 puts), then the sentinel key.
/// With `Preload::Auto`, does nothing if the sentinel says this keyspace is loaded already.
/// Returns whether it loaded.
pub async fn preload<T: Target>(
    target: &Arc<T>,
    keyspace: &Keyspace,
    mode: Preload,
) -> anyhow::Result<bool> {
    if mode == Preload::Auto {
        let found = target.get(keyspace.sentinel_key()).await?;
        if found.as_deref() == Some(keyspace.sentinel_value().as_slice()) {
            return Ok(false);
        }
    }
    let batches = (0..keyspace.keys())
        .step_by(PRELOAD_BATCH as usize)
        .map(|start| {
            let end = (start + PRELOAD_BATCH).min(keyspace.keys());
            (start..end)
                .map(|i| (keyspace.key(i), keyspace.value(i, 0)))
                .collect::<Vec<_>>()
        });
    futures::stream::iter(batches)
        .map(|batch| async move {
            let first = String::from_utf8_lossy(&batch[0].0).into_owned();
            let mut attempt = 0;
            loop {
                match target.put_many(batch.clone()).await {
                    Ok(()) => return Ok(()),
                    Err(e) if attempt >= 3 => {
                        return Err(e).with_context(|| format!("batch starting at {first}"))
                    }
                    Err(_) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
        })
        .buffer_unordered(PRELOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    target
        .put(keyspace.sentinel_key(), keyspace.sentinel_value())
        .await?;
    Ok(true)
}

/// Runs the closed loop and gathers what it measured.
pub async fn run<T: Target>(target: Arc<T>, spec: &RunSpec) -> anyhow::Result<Outcome> {
    let spec = Arc::new(spec.clone());

    // Set-up: a cas worker learns the current value of each key it owns (64 reads at a time).
    let mut owned: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); spec.concurrency];
    if spec.workload == Workload::Cas {
        let reads = (0..spec.concurrency).flat_map(|worker| {
            spec.keyspace
                .cas_keys(worker, spec.concurrency)
                .into_iter()
                .map(move |index| (worker, index))
        });
        let found: Vec<(usize, u64, Vec<u8>)> = futures::stream::iter(reads)
            .map(|(worker, index)| {
                let target = target.clone();
                let key = spec.keyspace.key(index);
                async move {
                    let current = target.get(key).await?.unwrap_or_default();
                    anyhow::Ok((worker, index, current))
                }
            })
            .buffered(64)
            .try_collect()
            .await
            .context("reading the keys cas workers own")?;
        for (worker, index, current) in found {
            owned[worker].push((index, current));
        }
    }

    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let until = measure_from + spec.duration;

    let sampler = {
        let pids = spec.server_pids.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from).await;
            let server_before = cpu::cpu_seconds(&pids);
            let client_before = cpu::self_cpu_seconds();
            let window_start = Instant::now();
            tokio::time::sleep_until(until).await;
            let server = match (server_before, cpu::cpu_seconds(&pids)) {
                (Some(a), Some(b)) if !pids.is_empty() => Some(b - a),
                _ => None,
            };
            let client = match (client_before, cpu::self_cpu_seconds()) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            (server, client, window_start.elapsed())
        })
    };

    let workers: Vec<_> = owned
        .into_iter()
        .enumerate()
        .map(|(worker, keys)| {
            let target = target.clone();
            let spec = spec.clone();
            tokio::spawn(worker_loop(target, spec, worker, keys, measure_from, until))
        })
        .collect();

    let mut total = WorkerStats::new();
    for worker in workers {
        let stats = worker.await.context("a worker panicked")?;
        total.merge(stats)?;
    }
    let (server_cpu_s, client_cpu_s, measured) = sampler.await.context("the CPU sampler")?;
    Ok(Outcome {
        latency_us: total.latency_us,
        ops: total.ops,
        errors: total.errors,
        reads: total.reads,
        writes: total.writes,
        misses: total.misses,
        cas_failed: total.cas_failed,
        first_error: total.first_error,
        server_cpu_s,
        client_cpu_s,
        measured,
    })
}

struct WorkerStats {
    latency_us: Histogram<u64>,
    ops: u64,
    errors: u64,
    reads: u64,
    writes: u64,
    misses: u64,
    cas_failed: u64,
    first_error: Option<String>,
}

impl WorkerStats {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
                .expect("valid histogram bounds"),
            ops: 0,
            errors: 0,
            reads: 0,
            writes: 0,
            misses: 0,
            cas_failed: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: WorkerStats) -> anyhow::Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        self.ops += other.ops;
        self.errors += other.errors;
        self.reads += other.reads;
        self.writes += other.writes;
        self.misses += other.misses;
        self.cas_failed += other.cas_failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

/// What one request turned out to be.
enum Done {
    Read { found: bool },
    Write,
    Cas { swapped: bool },
}

async fn worker_loop<T: Target>(
    target: Arc<T>,
    spec: Arc<RunSpec>,
    worker: usize,
    mut owned: Vec<(u64, Vec<u8>)>,
    measure_from: Instant,
    until: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::new();
    let mut rng =
        StdRng::seed_from_u64(spec.seed ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let keyspace = &spec.keyspace;
    let mut n: u64 = 0;
    loop {
        let began = Instant::now();
        if began >= until {
            break;
        }
        n += 1;
        let generation = (worker as u64) << 40 | n;
        let index = rng.random_range(0..keyspace.keys());
        let result = match spec.workload {
            Workload::Put => target
                .put(keyspace.key(index), keyspace.value(index, generation))
                .await
                .map(|()| Done::Write),
            Workload::Get => target
                .get(keyspace.key(index))
                .await
                .map(|v| Done::Read { found: v.is_some() }),
            Workload::GetStale => target
                .get_stale(keyspace.key(index))
                .await
                .map(|v| Done::Read { found: v.is_some() }),
            Workload::Mixed if rng.random_ratio(1, 10) => target
                .put(keyspace.key(index), keyspace.value(index, generation))
                .await
                .map(|()| Done::Write),
            Workload::Mixed => target
                .get(keyspace.key(index))
                .await
                .map(|v| Done::Read { found: v.is_some() }),
            Workload::Cas => {
                let slot = (n as usize) % owned.len().max(1);
                let (index, expected) = owned[slot].clone();
                let new = keyspace.value(index, generation);
                let outcome = target.cas(keyspace.key(index), expected, new.clone()).await;
                if let Ok(true) = outcome {
                    owned[slot].1 = new;
                }
                outcome.map(|swapped| Done::Cas { swapped })
            }
        };
        let ended = Instant::now();
        let counted = began >= measure_from && ended <= until;
        match result {
            Ok(done) => {
                if counted {
                    let micros = (ended - began)
                        .as_micros()
                        .clamp(1, HISTOGRAM_MAX_US as u128);
                    stats.latency_us.saturating_record(micros as u64);
                    stats.ops += 1;
                    match done {
                        Done::Read { found } => {
                            stats.reads += 1;
                            stats.misses += u64::from(!found);
                        }
                        Done::Write => stats.writes += 1,
                        Done::Cas { swapped } => {
                            stats.writes += 1;
                            stats.cas_failed += u64::from(!swapped);
                        }
                    }
                }
                if let Done::Cas { swapped: false } = done {
                    // Someone else changed the key (another bench run, a preload): learn its
                    // value again, outside the timed request.
                    let slot = (n as usize) % owned.len().max(1);
                    let key = keyspace.key(owned[slot].0);
                    if let Ok(current) = target.get(key).await {
                        owned[slot].1 = current.unwrap_or_default();
                    }
                }
            }
            Err(e) => {
                if began >= measure_from {
                    stats.errors += 1;
                    if stats.first_error.is_none() {
                        stats.first_error = Some(format!("{e:#}"));
                    }
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    stats
}
