//! `kvset-chaos check`: the command-line face of the checker. The binary only parses and
//! dispatches; everything else lives here so that it can be tested and reused by `run`.
//!
//! Exit codes: 0 linearizable, 1 violation, 2 inconclusive or any error (unreadable or invalid
//! history, bad arguments). A check never exits 0 unless it found a linearization of every key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{check_history, CheckOptions, CheckReport, Verdict, DEFAULT_MAX_STEPS};
use crate::history::{History, HistoryError};

/// Exit code for a linearizable history.
pub const EXIT_LINEARIZABLE: u8 = 0;
/// Exit code for a violation.
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code for an inconclusive check or an error.
pub const EXIT_INCONCLUSIVE_OR_ERROR: u8 = 2;

/// Arguments of `kvset-chaos check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The history to check (JSON Lines, see docs/CHAOS.md), or a run directory holding it.
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
    /// Also draw the history into this HTML file (self-contained): operations and latency
    /// over time and, on a violation, the refuted key's timeline. See docs/CHAOS.md, "The
    /// HTML report".
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
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
///
/// `history` may also be a run directory (its `history.jsonl` is checked). The coordination
/// checks (watch, lock, lease: [`crate::chaos::coord`]) run too, for the evidence files found
/// next to the history, and count in the exit code.
pub fn run_check(args: &CheckArgs, out: &mut dyn Write) -> Result<u8, HistoryError> {
    let mut args = args.clone();
    if args.history.is_dir() {
        args.history = args.history.join("history.jsonl");
    }
    let args = &args;
    let history = History::from_file(&args.history)?;
    let report = check_history(&history, &args.options());
    if let Some(path) = &args.html {
        write_html(path, &args.history, &history, &report)?;
    }
    let dir = args
        .history
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let events: Vec<crate::history::Event> = history.events().cloned().collect();
    let extra = crate::chaos::coord::judge_dir(dir, &events);
    if extra.is_empty() {
        print_report(args, &report, out)?;
        return Ok(report.verdict.exit_code());
    }
    print_with_checks(args, &report, &extra, out)?;
    let statuses = extra.iter().map(|c| c.status);
    Ok(combined_exit_code(report.verdict.exit_code(), statuses))
}

/// The exit code of a linearizability verdict together with further checks: 1 if anything
/// failed, else 2 if anything is undecided, else 0.
pub fn combined_exit_code(
    linearizability: u8,
    checks: impl IntoIterator<Item = crate::chaos::checks::CheckStatus>,
) -> u8 {
    use crate::chaos::checks::CheckStatus;
    let mut code = linearizability;
    for status in checks {
        code = match (code, status) {
            (EXIT_VIOLATION, _) | (_, CheckStatus::Fail) => EXIT_VIOLATION,
            (_, CheckStatus::Inconclusive) => EXIT_INCONCLUSIVE_OR_ERROR,
            (c, CheckStatus::Pass) => c,
        };
    }
    code
}

/// [`print_report`], followed by the coordination checks (as a `"checks"` array with
/// `--json`).
fn print_with_checks(
    args: &CheckArgs,
    report: &CheckReport,
    checks: &[crate::chaos::checks::CheckResult],
    out: &mut dyn Write,
) -> Result<(), HistoryError> {
    if args.json {
        let mut value = serde_json::to_value(report).map_err(std::io::Error::other)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "checks".into(),
                serde_json::to_value(checks).map_err(std::io::Error::other)?,
            );
        }
        serde_json::to_writer(&mut *out, &value).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        writeln!(out, "history: {}", args.history.display())?;
        write!(out, "{report}")?;
        writeln!(out, "coordination checks:")?;
        for c in checks {
            writeln!(
                out,
                "  {:<6} {:<12} {}",
                c.name,
                c.status.label(),
                c.summary
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Draws `history` and its check into `path` (see [`crate::chaos::html`]).
pub fn write_html(
    path: &Path,
    name: &Path,
    history: &History,
    report: &CheckReport,
) -> Result<(), HistoryError> {
    let title = format!("kvset-chaos check: {}", name.display());
    let events: Vec<crate::history::Event> = history.events().cloned().collect();
    let page = crate::chaos::html::render(&crate::chaos::html::ReportInput {
        title: &title,
        events: &events,
        run: None,
        samples: &[],
        verdict: Some(&report.verdict),
    });
    std::fs::write(path, page).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
    })?;
    Ok(())
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
