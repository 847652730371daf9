//! `kvset-chaos`: the chaos harness's command line. It only parses arguments and dispatches
//! to the library (`kvset_tests`), where the logic lives and is tested.
//!
//! Exit codes: 0 linearizable, 1 violation, 2 inconclusive or any error.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Check a recorded history (JSON Lines) for linearizability, key by key.
    ///
    /// Exit code 0: linearizable; 1: violation; 2: inconclusive (budget ran out) or error.
    Check(CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check(&args),
    }
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
