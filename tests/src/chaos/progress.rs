//! What a run is doing while it runs: one status line on stderr.
//!
//! A chaos run is minutes of silence otherwise, and a run that hangs looks the same as one that
//! works until its bounds fire. The status line answers the questions one asks while waiting:
//! how far along is it (elapsed of the planned duration), is the workload getting answers
//! (operations completed so far, `ok` / `fail` / `info` as the history records them), what is
//! being done to the cluster right now (the fault in force and its targets), and who leads.
//!
//! Two renderings of the same line ([`status_line`]):
//!
//! * **A terminal** (stderr is a tty): an `indicatif` spinner redrawn in place a few times a
//!   second, cleared when the load phase ends, so the log lines before and after it stay
//!   readable.
//! * **Anything else** (CI logs, a file, a pipe): a plain line every [`LOG_EVERY`], prefixed
//!   `kvset-chaos: progress:`; a redrawn line would be control characters in a log, and one
//!   line per tick would drown it.
//!
//! Only stderr: stdout carries the Markdown report, which scripts parse. The ticker is one task
//! that ends when the run's stop signal turns (or its sender goes away); it only reads shared
//! state (the recorder's tally, [`LiveStatus`]) and never waits on the cluster, so it cannot
//! delay the run or outlive it.

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::history::{Completions, HistoryRecorder};

/// How often the plain (non-terminal) line is printed.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// How often the terminal line is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// What the nemesis and the leader poller report as they go (read by the ticker).
#[derive(Debug, Default)]
pub struct LiveStatus {
    fault: Mutex<Option<String>>,
    leader: Mutex<Option<String>>,
}

impl LiveStatus {
    /// The fault now in force (`None`: none).
    pub fn set_fault(&self, fault: Option<String>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// The leader as last polled (`None`: no leader seen).
    pub fn set_leader(&self, leader: Option<String>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = leader;
    }

    fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One status line's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Since the load phase started.
    pub elapsed: Duration,
    /// The planned duration.
    pub total: Duration,
    /// Operations completed so far, by outcome.
    pub ops: Completions,
    /// The fault in force, if any.
    pub fault: Option<String>,
    /// The leader, if one was seen.
    pub leader: Option<String>,
}

/// `12s/60s | ops 1234 ok, 3 fail, 1 info | fault: pause kv-1 | leader kv-0`. Elapsed time
/// past the planned duration (healing a fault cut short) shows as such, never as more than
/// 100 %.
pub fn status_line(s: &Status) -> String {
    let elapsed = s.elapsed.as_secs();
    let total = s.total.as_secs();
    let time = if elapsed > total {
        format!("{total}s/{total}s (+{}s)", elapsed - total)
    } else {
        format!("{elapsed}s/{total}s")
    };
    format!(
        "{time} | ops {} ok, {} fail, {} info | fault: {} | leader {}",
        s.ops.ok,
        s.ops.fail,
        s.ops.info,
        s.fault.as_deref().unwrap_or("none"),
        s.leader.as_deref().unwrap_or("none")
    )
}

/// Shows the status until `stop` turns true: a redrawn line when stderr is a terminal, else a
/// plain line every [`LOG_EVERY`].
pub fn spawn(
    recorder: HistoryRecorder,
    live: Arc<LiveStatus>,
    total: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let started = Instant::now();
        let status = || Status {
            elapsed: started.elapsed(),
            total,
            ops: recorder.completions(),
            fault: live.fault(),
            leader: live.leader(),
        };
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} kvset-chaos: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        let every = if terminal { REDRAW_EVERY } else { LOG_EVERY };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = super::faults::stopped(&mut stop) => break,
            }
            let line = status_line(&status());
            match &bar {
                Some(bar) => {
                    bar.set_message(line);
                    bar.tick();
                }
                None => eprintln!("kvset-chaos: progress: {line}"),
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(elapsed: u64, fault: Option<&str>, leader: Option<&str>) -> Status {
        Status {
            elapsed: Duration::from_millis(elapsed),
            total: Duration::from_secs(60),
            ops: Completions {
                ok: 1234,
                fail: 3,
                info: 1,
            },
            fault: fault.map(str::to_string),
            leader: leader.map(str::to_string),
        }
    }

    #[test]
    fn the_line_says_time_operations_fault_and_leader() {
        assert_eq!(
            status_line(&status(12_400, Some("pause kv-1"), Some("kv-0"))),
            "12s/60s | ops 1234 ok, 3 fail, 1 info | fault: pause kv-1 | leader kv-0"
        );
        assert_eq!(
            status_line(&status(0, None, None)),
            "0s/60s | ops 1234 ok, 3 fail, 1 info | fault: none | leader none"
        );
        // Past the planned duration (a fault cut short is being healed): never above 100 %.
        assert_eq!(
            status_line(&status(63_000, Some("kill-all kv-0, kv-1, kv-2"), None)),
            "60s/60s (+3s) | ops 1234 ok, 3 fail, 1 info | fault: kill-all kv-0, kv-1, kv-2 \
             | leader none"
        );
    }

    #[test]
    fn the_recorder_tallies_completions_by_outcome() {
        let recorder = HistoryRecorder::in_memory();
        recorder.invoke_get(0, "k").ok_get(None);
        recorder.invoke_get(1, "k").fail();
        recorder.invoke_put(2, "k", "v").info();
        drop(recorder.invoke_put(3, "k", "w"));
        let _running = recorder.invoke_get(4, "k");
        assert_eq!(
            recorder.completions(),
            Completions {
                ok: 1,
                fail: 1,
                info: 2
            }
        );
    }
}
