//! `kvset-chaos`: the chaos harness's command line. It only parses arguments and dispatches
//! to the library (`kvset_tests`), where the logic lives and is tested.
//!
//! Exit codes (both subcommands): 0 linearizable / every check passed, 1 violation,
//! 2 inconclusive or any error.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kvset_tests::chaos::cli::{run_cli, RunArgs};
use kvset_tests::checker::cli::{self, CheckArgs};

/// kvset chaos harness: faults under load, and a linearizability checker for the recorded
/// histories.
#[derive(Debug, Parser)]
#[command(name = "kvset-chaos", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a recorded history (JSON Lines) for linearizability, key by key; given a run
    /// directory (or a history inside one), also its watch, lock and lease evidence.
    ///
    /// Exit code 0: linearizable; 1: violation; 2: inconclusive (budget ran out) or error.
    Check(CheckArgs),
    /// Run clients against a cluster while injecting faults, then check the history
    /// (linearizability), look for lost writes, and check that the replicas converged.
    ///
    /// Writes history.jsonl, report.md, report.json, report.html and logs/ into --out and
    /// prints the report. Exit code 0: every check passed; 1: a violation; 2: inconclusive or error.
    /// See docs/CHAOS.md, "Running the harness".
    Run(Box<RunArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Run(args) => run(&args),
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KVSET_CHAOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvset-chaos run: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_INCONCLUSIVE_OR_ERROR);
        }
    };
    ExitCode::from(runtime.block_on(run_cli(args)))
}

fn check(args: &CheckArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let result = cli::run_check(args, &mut stdout.lock())
        .with_context(|| format!("cannot check {}", args.history.display()));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if args.json {
                let _ = writeln!(stdout.lock(), "{}", cli::error_json(&format!("{err:#}")));
            }
            eprintln!("kvset-chaos check: {err:#}");
            ExitCode::from(cli::EXIT_INCONCLUSIVE_OR_ERROR)
        }
    }
}
