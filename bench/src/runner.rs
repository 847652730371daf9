//! The closed loop: C workers, each sending its next request as soon as the previous one answered.
//!
//! Timeline of a run: set-up (a `cas` worker reads the current values of the keys it owns), then
//! `warmup` of load that is not counted, then `duration` of load that is: a request counts when
//! it both started and finished inside the measured window. Server CPU is sampled at the two
//! edges of that window. After the window the workers stop sending and the run ends once the
//! requests still in flight have answered (each is bounded by the request timeout).
//!
//! With an operation budget (`--ops N`), the window also ends once the workers have started N
//! requests in it between them (failed ones included): each worker takes one unit of the shared
//! [`OpsBudget`] before each measured request and stops when none is left, and the CPU sampler
//! closes the window when the last worker is done.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
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
pub const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Pause after a failed request, so that a dead cluster is not hammered in a tight loop.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

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
    /// `watch`: watchers of the prefix.
    pub watchers: usize,
    /// `lease-keepalive`: leases renewed.
    pub leases: u64,
    /// Closed-loop KV workloads: stop after this many requests started after the warm-up (over
    /// every worker), or at the end of `duration`, whichever comes first.
    pub ops: Option<u64>,
}

/// Requests still to send under `--ops`, shared by the workers.
#[derive(Debug)]
pub struct OpsBudget {
    left: AtomicU64,
}

impl OpsBudget {
    pub fn new(ops: u64) -> Self {
        Self {
            left: AtomicU64::new(ops),
        }
    }

    /// Takes one request from the budget; false once it is spent.
    pub fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
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
    /// `watch` only: what the watchers received.
    pub watch: Option<crate::streams::WatchOutcome>,
    /// Seconds the workload's own set-up took (`lease-keepalive`: granting the leases).
    pub setup_s: Option<f64>,
    /// `lease-keepalive` only: leases revoked at the end.
    pub leases_revoked: Option<u64>,
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
    if spec.workload.streams() {
        anyhow::bail!(
            "{} runs on the Watch and Lease streams, which this client does not drive (use the raw kvset client or etcd)",
            spec.workload.as_str()
        );
    }
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

    // Under --ops the window ends when the last worker is done (the sender is dropped then).
    let (workers_done, done) = tokio::sync::oneshot::channel::<()>();
    let sampler = spawn_sampler_ending(spec.server_pids.clone(), measure_from, until, async {
        let _ = done.await;
    });
    let budget = spec.ops.map(|n| Arc::new(OpsBudget::new(n)));

    let workers: Vec<_> = owned
        .into_iter()
        .enumerate()
        .map(|(worker, keys)| {
            let target = target.clone();
            let spec = spec.clone();
            let budget = budget.clone();
            tokio::spawn(worker_loop(
                target,
                spec,
                worker,
                keys,
                budget,
                measure_from,
                until,
            ))
        })
        .collect();

    let mut total = WorkerStats::new();
    for worker in workers {
        let stats = worker.await.context("a worker panicked")?;
        total.merge(stats)?;
    }
    drop(workers_done);
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
        watch: None,
        setup_s: None,
        leases_revoked: None,
    })
}

/// CPU used by the server processes and by this process between `measure_from` and `until`,
/// and the window actually measured.
pub fn spawn_sampler(
    pids: Vec<u32>,
    measure_from: Instant,
    until: Instant,
) -> tokio::task::JoinHandle<(Option<f64>, Option<f64>, Duration)> {
    spawn_sampler_ending(pids, measure_from, until, std::future::pending())
}

/// [`spawn_sampler`], whose window also closes early when `end` completes (after
/// `measure_from`).
pub fn spawn_sampler_ending(
    pids: Vec<u32>,
    measure_from: Instant,
    until: Instant,
    end: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<(Option<f64>, Option<f64>, Duration)> {
    tokio::spawn(async move {
        tokio::time::sleep_until(measure_from).await;
        let server_before = cpu::cpu_seconds(&pids);
        let client_before = cpu::self_cpu_seconds();
        let window_start = Instant::now();
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = end => {}
        }
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
}

/// What the workers of one run counted.
pub struct WorkerStats {
    pub latency_us: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub reads: u64,
    pub writes: u64,
    pub misses: u64,
    pub cas_failed: u64,
    pub first_error: Option<String>,
}

impl WorkerStats {
    /// A request that started at `began` and answered at `ended`: counted (latency, `ops`) if
    /// both are inside the window; returns whether it was.
    pub fn answered(
        &mut self,
        began: Instant,
        ended: Instant,
        measure_from: Instant,
        until: Instant,
    ) -> bool {
        let counted = began >= measure_from && ended <= until;
        if counted {
            let micros = (ended - began)
                .as_micros()
                .clamp(1, HISTOGRAM_MAX_US as u128);
            self.latency_us.saturating_record(micros as u64);
            self.ops += 1;
        }
        counted
    }

    /// A request that started at `began` failed: counted if it started inside the window.
    pub fn failed(&mut self, began: Instant, measure_from: Instant, error: &anyhow::Error) {
        if began >= measure_from {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(format!("{error:#}"));
            }
        }
    }

    pub fn new() -> Self {
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

    pub fn merge(&mut self, other: WorkerStats) -> anyhow::Result<()> {
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
    budget: Option<Arc<OpsBudget>>,
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
        if let Some(budget) = &budget {
            if began >= measure_from && !budget.take() {
                break;
            }
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
            Workload::Watch | Workload::LeaseKeepalive => Err(anyhow::anyhow!(
                "{} is not a closed loop of KV requests",
                spec.workload.as_str()
            )),
        };
        let ended = Instant::now();
        match result {
            Ok(done) => {
                if stats.answered(began, ended, measure_from, until) {
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
                stats.failed(began, measure_from, &e);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::OpResult;

    /// A cluster in memory that counts the puts it was sent; every `fail_every`-th one fails.
    struct Counting {
        puts: AtomicU64,
        fail_every: u64,
    }

    impl Counting {
        fn new(fail_every: u64) -> Arc<Self> {
            Arc::new(Self {
                puts: AtomicU64::new(0),
                fail_every,
            })
        }
    }

    impl Target for Counting {
        async fn ready(&self, _: Duration) -> OpResult<String> {
            Ok("in memory".to_string())
        }
        async fn put(&self, _: Vec<u8>, _: Vec<u8>) -> OpResult<()> {
            let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_micros(200)).await;
            if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
                anyhow::bail!("put {n} failed on purpose");
            }
            Ok(())
        }
        async fn get(&self, _: Vec<u8>) -> OpResult<Option<Vec<u8>>> {
            Ok(None)
        }
        async fn get_stale(&self, _: Vec<u8>) -> OpResult<Option<Vec<u8>>> {
            Ok(None)
        }
        async fn cas(&self, _: Vec<u8>, _: Vec<u8>, _: Vec<u8>) -> OpResult<bool> {
            Ok(true)
        }
        async fn put_many(&self, _: Vec<(Vec<u8>, Vec<u8>)>) -> OpResult<()> {
            Ok(())
        }
    }

    fn spec(ops: Option<u64>, warmup: Duration, duration: Duration) -> RunSpec {
        RunSpec {
            workload: Workload::Put,
            concurrency: 7,
            warmup,
            duration,
            keyspace: Keyspace::new(100, 64),
            seed: 1,
            server_pids: Vec::new(),
            watchers: 1,
            leases: 1,
            ops,
        }
    }

    #[test]
    fn the_budget_is_taken_exactly_n_times() {
        let budget = OpsBudget::new(3);
        assert!(budget.take() && budget.take() && budget.take());
        assert!(!budget.take());
        assert!(!budget.take());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ops_stops_the_run_after_exactly_n_requests_long_before_its_duration() {
        let target = Counting::new(0);
        let started = std::time::Instant::now();
        let outcome = run(
            target.clone(),
            &spec(Some(1234), Duration::ZERO, Duration::from_secs(60)),
        )
        .await
        .unwrap();
        assert_eq!(target.puts.load(Ordering::SeqCst), 1234);
        assert_eq!(outcome.ops, 1234);
        assert_eq!(outcome.writes, 1234);
        assert_eq!(outcome.errors, 0);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ran to its duration"
        );
        assert!(
            outcome.measured < Duration::from_secs(30),
            "the window must close with the last request, not at --duration: {:?}",
            outcome.measured
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_requests_use_the_budget_and_warm_up_requests_do_not() {
        let target = Counting::new(10);
        let outcome = run(
            target.clone(),
            &spec(
                Some(500),
                Duration::from_millis(200),
                Duration::from_secs(60),
            ),
        )
        .await
        .unwrap();
        assert_eq!(outcome.ops + outcome.errors, 500);
        assert!(outcome.errors > 0);
        let sent = target.puts.load(Ordering::SeqCst);
        assert!(sent > 500, "the warm-up sent nothing: {sent}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_duration_still_ends_a_run_whose_budget_is_not_spent() {
        let target = Counting::new(0);
        let outcome = run(
            target.clone(),
            &spec(Some(u64::MAX), Duration::ZERO, Duration::from_millis(300)),
        )
        .await
        .unwrap();
        assert!(outcome.ops > 0);
        assert!(target.puts.load(Ordering::SeqCst) < u64::MAX);
        // The window opens once the CPU counters are read, a little after the start.
        assert!(
            outcome.measured >= Duration::from_millis(250),
            "{:?}",
            outcome.measured
        );
    }
}
