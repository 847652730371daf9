//! `kvset-chaos check`: the command-line face of the checker. The binary only parses and
//! dispatches; everything else lives here so that it can be tested and reused by `run`.
//!
//! Exit codes: 0 linearizable, 1 violation, 2 inconclusive or any error (unreadable or invalid
//! history, bad arguments). A check never exits 0 unless it found a linearization of every key.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::{check_file, CheckOptions, CheckReport, Verdict, DEFAULT_MAX_STEPS};
use crate::history::HistoryError;

/// Exit code for a linearizable history.
pub const EXIT_LINEARIZABLE: u8 = 0;
/// Exit code for a violation.
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code for an inconclusive check or an error.
pub const EXIT_INCONCLUSIVE_OR_ERROR: u8 = 2;

/// Arguments of `kvset-chaos check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The history to check (JSON Lines, see docs/CHAOS.md).
    pub history: PathBuf,
    /// Wall-clock budget for the whole check, in milliseconds. When it runs out the verdict
    /// is inconclusive (exit code 2). Default: no limit.
    #[arg(long, value_name = "MS")]
    pub budget_ms: Option<u64>,
    /// Search steps allowed per key before the verdict becomes inconclusive.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_STEPS)]
    pub max_steps: u64,
    /// Do not shrink a violation to a small window; show the whole key.
    #[arg(long)]
    pub no_shrink: bool,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl CheckArgs {
    /// The checker options these arguments ask for.
    pub fn options(&self) -> CheckOptions {
        CheckOptions {
            max_steps: self.max_steps,
            time_budget: self.budget_ms.map(Duration::from_millis),
            shrink: !self.no_shrink,
            ..CheckOptions::default()
        }
    }
}

/// Runs `check`: reads and checks the history, prints the report to `out`, and returns the
/// exit code. An error (unreadable or invalid history, failed write to `out`) is returned for
/// the caller to print; its exit code is [`EXIT_INCONCLUSIVE_OR_ERROR`].
pub fn run_check(args: &CheckArgs, out: &mut dyn Write) -> Result<u8, HistoryError> {
    let report = check_file(&args.history, &args.options())?;
    print_report(args, &report, out)?;
    Ok(report.verdict.exit_code())
}

/// Prints a report as text or JSON, as `args` asks.
pub fn print_report(
    args: &CheckArgs,
    report: &CheckReport,
    out: &mut dyn Write,
) -> Result<(), HistoryError> {
    if args.json {
        serde_json::to_writer(&mut *out, report).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        writeln!(out, "history: {}", args.history.display())?;
        write!(out, "{report}")?;
    }
    out.flush()?;
    Ok(())
}

/// For `--json`: the object printed instead of a report when the check could not run, so that
/// a script reading stdout always gets one JSON object.
pub fn error_json(message: &str) -> String {
    serde_json::json!({ "verdict": "error", "error": message }).to_string()
}

/// The exit code of a verdict (re-exported for callers that only hold a [`Verdict`]).
pub fn exit_code(verdict: &Verdict) -> u8 {
    verdict.exit_code()
}
