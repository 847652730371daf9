//! `kvset-chaos run`: clients under faults, every operation recorded, and the evidence judged.
//!
//! A run is Jepsen's loop, and etcd's robustness tests', in one process:
//!
//! 1. **Cluster.** A [`backend`] starts (or finds) a three-member cluster: the local launcher
//!    (`process`), containers (`docker`), or a StatefulSet (`kubectl`). The [`monitor`] waits
//!    until it is healthy.
//! 2. **Load.** The [`workload`]'s workers put, read (linearizably) and compare-and-swap a few
//!    contended keys, and write a stream of write-once keys, through the SDK with short
//!    deadlines, recording each operation's invoke and completion in the history
//!    ([`crate::history`]): `ok`, `fail` when it certainly had no effect, `info` when it might
//!    have. Meanwhile a status line on stderr ([`progress`]) shows how far the run is, the
//!    operations completed, the fault in force and the leader.
//!    Beside them ([`coord`]): `--watchers` watch streams on the contended keys that resume
//!    across every fault ([`watchers`]), and `--lock-clients` that increment a counter under a
//!    lease-based lock ([`locks`]), each with a lease keeper ([`leases`]), all recording their
//!    own evidence files.
//! 3. **Faults.** Meanwhile the nemesis ([`faults`]) follows a seeded [`schedule`]: kill -9 a
//!    follower or the leader, restart one gracefully, kill every member at once, freeze one,
//!    partition one (on the process backend in namespace mode also: cut the leader from the
//!    majority, drop one member's outbound traffic, delay it), wipe one's volume. One fault at a time, each only into a healthy cluster,
//!    each healed, each followed by reads pinned to the member that came back, and each timed:
//!    how long until a new leader acknowledges a write, how long until the returning member
//!    caught up. With `--overlap`, compound faults ([`overlap`]) join the schedule: several
//!    faults in force at once (pause + wipe + kill the leader, a kill during a snapshot
//!    install, kill-all with one volume wiped), still never wiping more than a minority.
//! 4. **Heal and read back.** When the duration is up, every fault is undone, the harness waits
//!    for a healthy cluster (a liveness check) and reads every key back linearizably — into the
//!    history too.
//! 5. **Judge** ([`checks`]): linearizability of every key's history (the existing checker),
//!    no acknowledged write lost, the replicas converged to one revision and one state hash, the
//!    cluster healed every time; and the coordination checks ([`watch_check`], [`lock_check`],
//!    [`lease_check`]). The verdict and exit code follow `kvset-chaos check`: 0 pass,
//!    1 violation, 2 inconclusive or harness error — never a pass by default.
//! 6. **Report** ([`report`]): `report.md` and `report.json` (operations, faults with times,
//!    recovery p50/max, checks, the violation window), `report.html` ([`html`]: the same run
//!    drawn on one time axis, with the leader, term and lag the run sampled ([`samples`])),
//!    `history.jsonl`, and every member's log in `logs/`, all in one directory with the
//!    command that reproduces the run.
//!
//! # What a seed fixes
//!
//! The seed fixes every random choice the harness makes: each worker's operation stream, the
//! fault sequence with its gaps and holds, and the target choices given the roles at the time.
//! It cannot fix the cluster's timing (elections, scheduling), so two runs with one seed inject
//! the same faults in the same order against the same kind of load, but interleave differently.
//! That is the most a black-box harness can promise; the history is what makes a failure
//! reproducible for the checker (`kvset-chaos check history.jsonl`).
//!
//! # What it leaves out
//!
//! Clock faults (the server does not depend on clocks for safety), disk faults below the file
//! system (fsync lies, torn writes), asymmetric partitions except on the process backend in
//! namespace mode (`partition-one-way`), and membership changes during the run (except the
//! opt-in `scale`); multi-key transactions are outside the checker's model.

pub mod backend;
pub mod checks;
pub mod cli;
pub mod coord;
pub mod faults;
pub mod html;
pub mod jsonl;
pub mod lease_check;
pub mod leases;
pub mod lock_check;
pub mod locks;
pub mod monitor;
pub mod overlap;
pub mod progress;
pub mod report;
pub mod samples;
pub mod schedule;
pub mod testing;
pub mod watch_check;
pub mod watchers;
pub mod workload;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use backend::docker::{DockerBackend, DockerConfig};
use backend::kubectl::{KubectlBackend, KubectlConfig};
use backend::process::{ProcessBackend, ProcessConfig};
use backend::{Backend, BackendError};
use checks::{CheckResult, LostWrites, RunVerdict};
use faults::{FaultKind, Nemesis, NemesisReport};
use monitor::{ClusterView, Convergence, Monitor};
use report::{Linearizability, Recovery, RunReport, Unsupported};
use samples::{ClusterSample, ClusterSamples};
use schedule::{Schedule, ScheduleConfig};
use workload::{FinalReads, Routing, Workload, WorkloadConfig};

use crate::checker::{check_history, CheckOptions};
use crate::history::{Event, HistoryError, HistoryRecorder};

/// Why a run could not produce a verdict at all (its exit code is 2).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The arguments do not make a valid run.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The backend failed to set up the cluster.
    #[error("cannot set up the {backend} cluster: {source}")]
    Setup {
        /// The backend.
        backend: &'static str,
        /// Why.
        source: BackendError,
    },
    /// The cluster never became healthy after the start.
    #[error("the cluster did not become healthy within {timeout:?} of starting: {detail} (logs in {logs})")]
    NotHealthy {
        /// The bound.
        timeout: Duration,
        /// What was wrong.
        detail: String,
        /// Where the members' logs were copied.
        logs: String,
    },
    /// The history could not be written.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A file of the run could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What, with the path.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The SDK refused the configuration (bad endpoints).
    #[error("cannot create clients: {0}")]
    Client(#[from] kvset_client::Error),
}

fn io_error(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.to_string();
    move |source| ChaosError::Io { what, source }
}

/// The run's clock: times in reports are milliseconds since the run's workload started (the
/// history's `ts_ns` count from within microseconds of the same instant).
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    origin: Instant,
}

impl RunClock {
    /// A clock starting now.
    pub fn start() -> RunClock {
        RunClock {
            origin: Instant::now(),
        }
    }

    /// Milliseconds from the origin to `t` (0 for earlier instants).
    pub fn ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.origin).as_secs_f64() * 1e3
    }
}

/// Which deployment to run against.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// The local launcher.
    Process(ProcessConfig),
    /// Docker containers.
    Docker(DockerConfig),
    /// A StatefulSet through kubectl.
    Kubectl(KubectlConfig),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Where the cluster runs.
    pub backend: BackendConfig,
    /// How long the workload (and the faults) run.
    pub duration: Duration,
    /// The seed.
    pub seed: u64,
    /// The workload (its seed is the run's).
    pub workload: WorkloadConfig,
    /// Fault kinds asked for (the backend's unsupported ones are reported and left out).
    pub faults: Vec<FaultKind>,
    /// Gap and hold ranges (`kinds` is filled in from `faults`).
    pub schedule: ScheduleConfig,
    /// Bound on every wait for the cluster to heal (before a fault, after it, at the end).
    pub heal_timeout: Duration,
    /// Bound on the cluster becoming healthy after the start.
    pub startup_timeout: Duration,
    /// Wall-clock budget of the linearizability check.
    pub check_budget: Duration,
    /// The output directory.
    pub out_dir: PathBuf,
    /// Keep the members' data directories (process backend) even when the run passes.
    pub keep_data: bool,
    /// The command line that reproduces the run (for the report).
    pub reproduce: String,
    /// Watchers and lock clients ([`coord`]).
    pub coordination: coord::CoordConfig,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The report (also written as report.json and report.md).
    pub report: RunReport,
}

impl RunOutcome {
    /// 0 pass, 1 violation, 2 inconclusive.
    pub fn exit_code(&self) -> u8 {
        self.report.exit_code
    }
}

/// Builds the backend a configuration asks for.
pub fn build_backend(config: &BackendConfig) -> Result<Arc<dyn Backend>, ChaosError> {
    Ok(match config {
        BackendConfig::Process(c) => Arc::new(ProcessBackend::new(c.clone())),
        BackendConfig::Docker(c) => Arc::new(DockerBackend::new(c.clone())),
        BackendConfig::Kubectl(c) => Arc::new(KubectlBackend::new(c.clone()).map_err(
            |source| ChaosError::Setup {
                backend: "kubectl",
                source,
            },
        )?),
    })
}

async fn blocking<T: Send + 'static>(
    backend: &Arc<dyn Backend>,
    f: impl FnOnce(&dyn Backend) -> T + Send + 'static,
) -> Option<T> {
    let b = Arc::clone(backend);
    tokio::task::spawn_blocking(move || f(b.as_ref()))
        .await
        .ok()
}

/// Runs the harness. `interrupt` ends the workload early (Ctrl-C): the run then heals, checks
/// and reports what it has.
pub async fn run(
    config: RunConfig,
    interrupt: impl Future<Output = ()>,
) -> Result<RunOutcome, ChaosError> {
    if config.workload.clients == 0 || config.workload.keys == 0 {
        return Err(ChaosError::Config(
            "--clients and --keys must be at least 1".into(),
        ));
    }
    let logs_dir = config.out_dir.join("logs");
    std::fs::create_dir_all(&logs_dir)
        .map_err(io_error(format!("create {}", logs_dir.display())))?;
    let backend = build_backend(&config.backend)?;
    let monitor = Arc::new(Monitor::new(&backend.members()).map_err(ChaosError::Config)?);
    let run = Run {
        started: Instant::now(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        logs_dir,
        config,
        backend,
        monitor,
    };
    let view = run.start_cluster().await?;
    let (kinds, unsupported) = run.plan_faults();
    let load = run.load(&view, kinds, interrupt).await?;
    let end = run.heal_and_read_back(&load).await;
    run.judge_and_report(view, unsupported, load, end).await
}

/// One run's fixed parts, shared by its phases.
struct Run {
    started: Instant,
    started_unix: u64,
    logs_dir: PathBuf,
    config: RunConfig,
    backend: Arc<dyn Backend>,
    monitor: Arc<Monitor>,
}

/// What the load phase produced.
struct Load {
    recorder: HistoryRecorder,
    workload: Arc<Workload>,
    nemesis: NemesisReport,
    errors: Vec<String>,
    /// The cluster's status over the load phase (for report.html).
    samples: Vec<ClusterSample>,
    /// Watchers, lock clients and lease keepers; finished after the heal.
    coord: coord::Coordination,
}

/// What the end of the run observed.
struct End {
    /// Harness errors met while healing.
    errors: Vec<String>,
    liveness_problems: Vec<String>,
    final_heal_ms: Option<f64>,
    finals: FinalReads,
    convergence: Convergence,
}

impl Run {
    /// Starts the cluster and waits until it is healthy; on failure, keeps the logs and tears
    /// down.
    async fn start_cluster(&self) -> Result<ClusterView, ChaosError> {
        eprintln!(
            "kvset-chaos: starting the {} cluster: {}",
            self.backend.name(),
            self.backend.describe()
        );
        let started = {
            let handle = tokio::runtime::Handle::current();
            let monitor = Arc::clone(&self.monitor);
            let timeout = self.config.startup_timeout;
            blocking(&self.backend, move |b| {
                b.start(&|m| handle.block_on(monitor.wait_member_ready(m, timeout)))
            })
            .await
            .unwrap_or_else(|| Err(BackendError::Setup("the start task panicked".into())))
        };
        let failure = match started {
            Err(source) => ChaosError::Setup {
                backend: self.backend.name(),
                source,
            },
            Ok(()) => match self.monitor.wait_healthy(self.config.startup_timeout).await {
                Ok(view) => {
                    eprintln!("kvset-chaos: cluster healthy: {}", view.summary());
                    return Ok(view);
                }
                Err(not) => ChaosError::NotHealthy {
                    timeout: self.config.startup_timeout,
                    detail: not.to_string(),
                    logs: self.logs_dir.display().to_string(),
                },
            },
        };
        let dir = self.logs_dir.clone();
        let _ = blocking(&self.backend, move |b| {
            let _ = b.collect_logs(&dir);
            let _ = b.teardown();
        })
        .await;
        Err(failure)
    }

    /// The fault kinds to schedule, and those the backend cannot do (with why).
    fn plan_faults(&self) -> (Vec<FaultKind>, Vec<Unsupported>) {
        let mut kinds = Vec::new();
        let mut unsupported = Vec::new();
        for &kind in &self.config.faults {
            // A compound fault needs every fault of its script.
            let reason = kind.components().into_iter().find_map(|c| {
                backend::why_unsupported(self.backend.as_ref(), c).map(|r| {
                    if c == kind {
                        r
                    } else {
                        format!("it needs {c}: {r}")
                    }
                })
            });
            match reason {
                Some(reason) => {
                    eprintln!(
                        "kvset-chaos: not injecting {kind} on the {} backend: {reason}",
                        self.backend.name()
                    );
                    unsupported.push(Unsupported { kind, reason });
                }
                None => kinds.push(kind),
            }
        }
        (kinds, unsupported)
    }

    /// Runs the workers and the nemesis for the duration (or until `interrupt`), then stops
    /// both; a fault in progress is healed first.
    async fn load(
        &self,
        view: &ClusterView,
        kinds: Vec<FaultKind>,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Load, ChaosError> {
        let config = &self.config;
        let recorder = HistoryRecorder::to_file(config.out_dir.join("history.jsonl"))?;
        let clock = RunClock::start();
        let routing = Arc::new(Routing::default());
        routing.set_leader(view.leader());
        let workload = Arc::new(Workload::new(
            WorkloadConfig {
                seed: config.seed,
                ..config.workload.clone()
            },
            self.backend.members(),
            recorder.clone(),
            Arc::clone(&routing),
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let samples = Arc::new(ClusterSamples::new());
        let live = Arc::new(progress::LiveStatus::default());
        let poller = spawn_leader_poller(
            Arc::clone(&self.monitor),
            routing,
            Arc::clone(&samples),
            Arc::clone(&live),
            clock,
            stop_rx.clone(),
        );
        // Before any write: the watchers start from the cluster's revision now.
        let lifetime = config.duration + config.heal_timeout * 4 + Duration::from_secs(60);
        let coord = match coord::Coordination::start(
            config.coordination,
            &self.backend.members(),
            &config.out_dir,
            stop_rx.clone(),
            lifetime,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = blocking(&self.backend, |b| b.teardown()).await;
                return Err(ChaosError::Config(format!("coordination clients: {e}")));
            }
        };
        let workers = match workload.spawn(stop_rx.clone()) {
            Ok(w) => w,
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = blocking(&self.backend, |b| b.teardown()).await;
                return Err(ChaosError::Client(e));
            }
        };
        let nemesis = Nemesis::new(
            Arc::clone(&self.backend),
            Arc::clone(&self.monitor),
            Arc::clone(&workload),
            clock,
            config.heal_timeout,
        )
        .with_live_status(Arc::clone(&live));
        let schedule = Schedule::new(
            config.seed,
            ScheduleConfig {
                kinds,
                ..config.schedule.clone()
            },
        );
        let nemesis_task = tokio::spawn(nemesis.run(schedule, stop_rx.clone()));
        eprintln!(
            "kvset-chaos: running {} clients for {:?} (seed {})",
            config.workload.clients, config.duration, config.seed
        );
        let ticker = progress::spawn(recorder.clone(), live, config.duration, stop_rx.clone());

        let mut errors = Vec::new();
        tokio::select! {
            _ = tokio::time::sleep(config.duration) => {}
            _ = interrupt => {
                eprintln!("kvset-chaos: interrupted: ending the workload early");
                errors.push("interrupted before the planned duration".into());
            }
        }
        let _ = stop_tx.send(true);
        // The status line goes before anything else is printed (it clears itself).
        let _ = ticker.await;
        let nemesis = match tokio::time::timeout(
            config.heal_timeout * 2 + Duration::from_secs(30),
            nemesis_task,
        )
        .await
        {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                errors.push(format!("the nemesis task failed: {e}"));
                NemesisReport::default()
            }
            Err(_) => {
                errors.push("the nemesis did not stop in time".into());
                NemesisReport::default()
            }
        };
        for f in &nemesis.faults {
            if let Some(e) = &f.error {
                errors.push(format!(
                    "fault #{} ({} of {}) could not be injected: {e}",
                    f.index,
                    f.kind,
                    f.targets.join(", ")
                ));
            }
        }
        let worker_bound = config.workload.op_timeout + Duration::from_secs(5);
        for w in workers {
            let abort = w.abort_handle();
            if tokio::time::timeout(worker_bound, w).await.is_err() {
                abort.abort();
                errors.push("a worker did not stop in time".into());
            }
        }
        poller.abort();
        eprintln!(
            "kvset-chaos: workload done ({} faults injected); healing",
            nemesis.faults.len()
        );
        Ok(Load {
            recorder,
            workload,
            nemesis,
            errors,
            samples: samples.snapshot(),
            coord,
        })
    }

    /// Undoes every fault, waits for a healthy cluster, reads every key back, and waits for
    /// the replicas to converge.
    async fn heal_and_read_back(&self, load: &Load) -> End {
        let mut liveness_problems: Vec<String> =
            load.nemesis.liveness_failure.iter().cloned().collect();
        let mut errors = Vec::new();
        if let Some(Err(e)) = blocking(&self.backend, |b| b.heal_all()).await {
            errors.push(format!("undoing the faults failed: {e}"));
        }
        let heal_started = Instant::now();
        let final_heal_ms = match self.monitor.wait_healthy(self.config.heal_timeout).await {
            Ok(_) => Some(heal_started.elapsed().as_secs_f64() * 1e3),
            Err(not) => {
                liveness_problems.push(format!(
                    "after the run, the cluster did not heal within {:?}: {not}",
                    self.config.heal_timeout
                ));
                None
            }
        };
        let finals = load.workload.final_reads(self.config.heal_timeout).await;
        errors.extend(load.coord.finish(self.config.heal_timeout).await);
        let convergence = self.monitor.wait_converged(self.config.heal_timeout).await;
        End {
            errors,
            liveness_problems,
            final_heal_ms,
            finals,
            convergence,
        }
    }

    /// Checks the history and the end state, keeps the evidence, stops the cluster, and writes
    /// the report.
    async fn judge_and_report(
        &self,
        view: ClusterView,
        unsupported: Vec<Unsupported>,
        load: Load,
        end: End,
    ) -> Result<RunOutcome, ChaosError> {
        let config = &self.config;
        let out = &config.out_dir;
        let Load {
            recorder,
            workload,
            nemesis,
            mut errors,
            samples,
            coord: _,
        } = load;
        errors.extend(end.errors);

        recorder.flush()?;
        let history = recorder.history()?;
        let operations = history.operations().ops.len();
        let options = CheckOptions {
            time_budget: Some(config.check_budget),
            ..CheckOptions::default()
        };
        eprintln!("kvset-chaos: checking {operations} operations");
        let check_report =
            match tokio::task::spawn_blocking(move || check_history(&history, &options)).await {
                Ok(report) => Some(report),
                Err(e) => {
                    errors.push(format!("the checker failed: {e}"));
                    None
                }
            };
        let lost = LostWrites::compute(&workload.observations().unique_writes(), &end.finals);
        let mut checks: Vec<CheckResult> = Vec::new();
        if let Some(report) = &check_report {
            checks.push(checks::linearizability(report, operations));
        }
        checks.push(lost.result());
        checks.push(checks::convergence(&end.convergence));
        checks.push(checks::liveness(&end.liveness_problems, end.final_heal_ms));
        checks.extend(coord::judge_dir(out, &recorder.events()));

        // Keep the evidence, stop the cluster.
        let dir = self.logs_dir.clone();
        match blocking(&self.backend, move |b| b.collect_logs(&dir)).await {
            Some(Err(e)) => errors.push(format!("collecting logs: {e}")),
            None => errors.push("collecting logs: the task panicked".into()),
            Some(Ok(_)) => {}
        }
        if let Some(Err(e)) = blocking(&self.backend, |b| b.teardown()).await {
            errors.push(format!("teardown: {e}"));
        }
        let verdict = checks::verdict(&checks, !errors.is_empty());
        if let BackendConfig::Process(p) = &config.backend {
            if verdict == RunVerdict::Pass && !config.keep_data {
                let _ = std::fs::remove_dir_all(&p.data_dir);
            }
        }

        let mut server_faults: Vec<String> = view
            .members
            .iter()
            .flat_map(|m| m.faults.iter().map(|f| format!("{f} ({})", m.name)))
            .collect();
        server_faults.sort();
        let report = RunReport {
            verdict,
            exit_code: verdict.exit_code(),
            seed: config.seed,
            backend: self.backend.name().to_string(),
            cluster: self.backend.describe(),
            network: self.backend.network(),
            members: self.backend.members(),
            server_faults,
            workload: WorkloadConfig {
                seed: config.seed,
                ..config.workload.clone()
            },
            duration_ms: config.duration.as_millis() as u64,
            elapsed_ms: self.started.elapsed().as_secs_f64() * 1e3,
            started_unix: self.started_unix,
            reproduce: config.reproduce.clone(),
            ops: report::count_ops(
                &recorder.events(),
                workload.probe_client(),
                workload.final_client(),
            ),
            recovery: Recovery::of(&nemesis.faults),
            faults: nemesis.faults,
            unsupported_faults: unsupported,
            checks,
            linearizability: check_report.as_ref().map(Linearizability::of),
            lost_writes: Some(lost),
            convergence: Some(end.convergence),
            errors,
            files: list_files(out),
            out_dir: out.display().to_string(),
        };
        write_report(out, &report)?;
        write_html(out, &report, &recorder.events(), &samples)?;
        Ok(RunOutcome { report })
    }
}

/// Keeps the workload's idea of the leader fresh (for `--read-from followers`), and keeps a
/// digest of each poll for the HTML report (bounded, see [`samples`]).
fn spawn_leader_poller(
    monitor: Arc<Monitor>,
    routing: Arc<Routing>,
    samples: Arc<ClusterSamples>,
    live: Arc<progress::LiveStatus>,
    clock: RunClock,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Stamped when the poll starts: a member that does not answer (frozen, killed)
            // then shows as down from the poll that first waited for it, not a timeout later.
            let at = clock.ms(Instant::now());
            let view = monitor.poll().await;
            samples.record(at, &view);
            live.set_leader(view.leader().map(|l| monitor.members()[l].name.clone()));
            if view.leader().is_some() {
                routing.set_leader(view.leader());
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = faults::stopped(&mut stop) => return,
            }
        }
    })
}

/// Writes report.json and report.md.
fn write_report(out: &Path, report: &RunReport) -> Result<(), ChaosError> {
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| io_error("serialize the report")(std::io::Error::other(e)))?;
    let path = out.join("report.json");
    std::fs::write(&path, json + "\n").map_err(io_error(format!("write {}", path.display())))?;
    let path = out.join("report.md");
    std::fs::write(&path, report.markdown())
        .map_err(io_error(format!("write {}", path.display())))?;
    Ok(())
}

/// Writes report.html: the run drawn (see [`html`]).
fn write_html(
    out: &Path,
    report: &RunReport,
    events: &[Event],
    samples: &[ClusterSample],
) -> Result<(), ChaosError> {
    let title = format!(
        "kvset-chaos run: {} (seed {})",
        report.verdict.label(),
        report.seed
    );
    let page = html::render(&html::ReportInput {
        title: &title,
        events,
        run: Some(report),
        samples,
        verdict: report.linearizability.as_ref().map(|l| &l.verdict),
    });
    let path = out.join("report.html");
    std::fs::write(&path, page).map_err(io_error(format!("write {}", path.display())))
}

/// The run's files, relative to `out` (report files included even before they exist).
fn list_files(out: &Path) -> Vec<String> {
    let mut files = vec![
        "history.jsonl".to_string(),
        "report.md".to_string(),
        "report.json".to_string(),
        "report.html".to_string(),
    ];
    for file in [coord::WATCH_FILE, coord::LOCKS_FILE, coord::LEASES_FILE] {
        if out.join(file).exists() {
            files.push(file.to_string());
        }
    }
    if let Ok(entries) = std::fs::read_dir(out.join("logs")) {
        let mut logs: Vec<String> = entries
            .flatten()
            .map(|e| format!("logs/{}", e.file_name().to_string_lossy()))
            .collect();
        logs.sort();
        files.extend(logs);
    }
    if out.join("data").exists() {
        files.push("data/ (the members' data directories)".into());
    }
    files
}
