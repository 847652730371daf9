//! `kvset-bench`: a closed-loop load generator that drives kvset and etcd through the same code.
//!
//! One run keeps `--concurrency` requests in flight (each worker sends its next request as soon
//! as the previous one answered) for `--warmup`, then measures for `--duration`, then stops. It
//! reports throughput, latency percentiles from an HDR histogram, and how many CPU seconds the
//! server processes spent during the measured window (from `/proc/<pid>/stat`).
//!
//! The generator (`workload.rs`, `runner.rs`) only sees the [`target::Target`] trait; kvset
//! (`target/kvset.rs`: raw gRPC or the SDK) and etcd (`target/etcd.rs`) implement it over the
//! same tonic/prost stack, one HTTP/2 channel per endpoint, with the same routing: writes and
//! linearizable reads to the leader, stale reads round-robin over every endpoint.
//!
//! `kvset-bench table FILE...` turns the JSON lines of several runs into the markdown comparison
//! table that `bench/compare-etcd.sh` prints (`report.rs`).
//!
//! `kvset-bench chart --input FILE [--input FILE...] --out-dir DIR` draws SVG charts of the same
//! JSON lines: throughput and p99 latency against concurrency, per workload (`chart.rs`).
//!
//! `watch` and `lease-keepalive` (`streams.rs`) use the Watch and Lease streams, which the raw
//! kvset client and etcd implement through [`target::Streams`].
//!
//! Left out on purpose: open-loop (fixed arrival rate) load, multi-process clients, and key
//! distributions other than uniform. On a 2-core machine the client shares the cores with the
//! servers, so a closed loop at a few concurrencies is the honest measurement to make.

mod chart;
mod cli;
mod cpu;
mod report;
mod runner;
mod streams;
mod target;
mod workload;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command, KvsetClientKind, OutputFormat, RunArgs, TargetKind};
use report::Report;
use runner::{Outcome, RunSpec};
use target::Target;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.run.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Table(args)) => report::table_command(&args).map(|()| true),
            Some(Command::Chart(args)) => chart::chart_command(&args)
                .map(|written| {
                    for path in written {
                        println!("{}", path.display());
                    }
                    true
                })
                .map_err(anyhow::Error::from),
            None => run_command(cli.run).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One benchmark run. `Ok(false)`: it ran, but too many requests failed to call it a measurement.
async fn run_command(args: RunArgs) -> anyhow::Result<bool> {
    if args.ops.is_some() && args.workload.streams() {
        anyhow::bail!(
            "--ops bounds the closed loop of KV requests; --workload {} is timed by --duration only",
            args.workload.as_str()
        );
    }
    let endpoints = args.endpoints();
    let options = target::ConnectOptions {
        endpoints: endpoints.clone(),
        connect_timeout: args.connect_timeout,
        request_timeout: args.request_timeout,
        max_inflight_writes: args.concurrency.max(1),
        request_ids: args.request_ids,
    };
    match (args.target, args.kvset_client) {
        (TargetKind::Kvset, KvsetClientKind::Raw) => {
            let t = target::kvset::KvsetRaw::connect(&options)?;
            run_target(Arc::new(t), &args, endpoints, streams::run).await
        }
        (TargetKind::Kvset, KvsetClientKind::Sdk) => {
            if args.workload.streams() {
                anyhow::bail!(
                    "--workload {} drives the Watch and Lease streams one request at a time, which the SDK does not expose: use --kvset-client raw",
                    args.workload.as_str()
                );
            }
            let t = target::kvset::KvsetSdk::connect(&options)?;
            run_target(Arc::new(t), &args, endpoints, |t, spec| async move {
                runner::run(t, &spec).await
            })
            .await
        }
        (TargetKind::Etcd, _) => {
            let t = target::etcd::Etcd::connect(&options)?;
            run_target(Arc::new(t), &args, endpoints, streams::run).await
        }
    }
}

/// Readies `target`, preloads, runs the workload with `run`, prints the report.
async fn run_target<T, F, Fut>(
    target: Arc<T>,
    args: &RunArgs,
    endpoints: Vec<String>,
    run: F,
) -> anyhow::Result<bool>
where
    T: Target,
    F: FnOnce(Arc<T>, RunSpec) -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let keyspace = workload::Keyspace::new(args.keys, args.value_size as usize);
    let ready = target
        .ready(args.ready_timeout)
        .await
        .with_context(|| format!("{} at {} is not ready", args.target, endpoints.join(",")))?;
    log(args, &format!("{}: {ready}", args.target));

    let preload_s = if runner::needs_preload(args.workload, args.preload) {
        let started = Instant::now();
        let loaded = runner::preload(&target, &keyspace, args.preload)
            .await
            .context("preloading the keyspace")?;
        let secs = started.elapsed().as_secs_f64();
        if loaded {
            log(
                args,
                &format!("preloaded {} keys in {secs:.1} s", keyspace.keys()),
            );
            Some(secs)
        } else {
            log(args, "keyspace already preloaded (sentinel key found)");
            None
        }
    } else {
        None
    };

    let server_pids = if args.server_pids.is_empty() {
        let found = cpu::discover_listeners(&endpoints);
        if found.is_empty() {
            log(
                args,
                "no server processes found listening on the endpoints: server CPU not measured (pass --server-pids)",
            );
        } else {
            log(
                args,
                &format!("server pids (listening on the endpoints): {found:?}"),
            );
        }
        found
    } else {
        args.server_pids.clone()
    };

    let spec = RunSpec {
        workload: args.workload,
        concurrency: args.concurrency.max(1),
        warmup: args.warmup,
        duration: args.duration,
        keyspace,
        seed: args.seed.unwrap_or_else(rand::random),
        server_pids: server_pids.clone(),
        watchers: args.watchers as usize,
        leases: args.leases,
        ops: args.ops,
    };
    let load_avg_1m = cpu::load_average();
    let outcome = run(target.clone(), spec.clone()).await?;
    let preload_s = preload_s.or(outcome.setup_s);
    let report = Report::new(args, &spec, &outcome, endpoints, preload_s, load_avg_1m);
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
        OutputFormat::Text => println!("{}", report.text()),
    }
    let attempts = report.ops + report.errors;
    let error_rate = if attempts == 0 {
        1.0
    } else {
        report.errors as f64 / attempts as f64
    };
    if report.ops == 0 || error_rate > args.max_error_rate {
        eprintln!(
            "kvset-bench: {} of {attempts} requests failed (limit {:.1}%){}",
            report.errors,
            args.max_error_rate * 100.0,
            report
                .first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
        return Ok(false);
    }
    if let Some(limit) = args.ops {
        if attempts < limit {
            log(
                args,
                &format!(
                    "--duration ({} s) ended the run after {attempts} of the {limit} requests of --ops",
                    args.duration.as_secs_f64()
                ),
            );
        }
    }
    if let Some(lost) = report.lost_events.filter(|n| *n > 0) {
        eprintln!(
            "kvset-bench: {lost} (watcher, event) pairs were never delivered{}",
            report
                .first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
        return Ok(false);
    }
    if let (Some(n), Some(revoked)) = (report.leases, report.leases_revoked) {
        if revoked < n {
            log(
                args,
                &format!(
                    "revoked {revoked} of {n} leases; the rest expire within {} s",
                    streams::LEASE_TTL_S
                ),
            );
        }
    }
    Ok(true)
}

/// Progress lines go to stderr so that stdout stays one JSON document per run.
fn log(args: &RunArgs, line: &str) {
    if !args.quiet {
        eprintln!("kvset-bench: {line}");
    }
}
