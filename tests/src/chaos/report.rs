//! The run's report: `report.json` for scripts, `report.md` for people (also printed at the end
//! of a run). `report.html`, the same run drawn, is `super::html`'s.
//!
//! Both carry the same facts: the seed and the command that reproduces the run; operations by
//! kind and outcome; every fault with its time, targets and recovery; recovery percentiles;
//! each check's result and the verdict; and, on a violation, the checker's window. The JSON
//! shape is meant to be stable in the same way as the history format: fields are added, never
//! renamed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::backend::MemberInfo;
use super::checks::{CheckResult, LostWrites, RunVerdict};
use super::faults::{FaultKind, FaultRecord};
use super::monitor::Convergence;
use super::workload::{WorkloadConfig, UNIQUE_PREFIX};
use crate::checker::{CheckReport, KeyResult, Verdict as CheckerVerdict};
use crate::history::{Event, EventKind, Function, Output};

/// Serializes a duration as milliseconds.
pub fn ser_duration_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Operations of one kind, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpRow {
    /// `get`, `put`, `cas`, `put (write-once)`, `get (probe)`, `get (final)`.
    pub operation: String,
    /// Invoked.
    pub total: usize,
    /// Completed `ok`.
    pub ok: usize,
    /// Completed `fail`.
    pub fail: usize,
    /// Completed `info` or never completed.
    pub info: usize,
    /// For `cas`: `ok` with the compare holding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swapped: Option<usize>,
}

/// Counts operations by kind and outcome. `probe` and `last` are the probe and final readers'
/// client ids.
pub fn count_ops(events: &[Event], probe: u64, last: u64) -> Vec<OpRow> {
    let mut rows: BTreeMap<&'static str, OpRow> = BTreeMap::new();
    let mut open: HashMap<(u64, u64), &'static str> = HashMap::new();
    let order = [
        "get",
        "put",
        "cas",
        "put (write-once)",
        "get (probe)",
        "get (final)",
    ];
    for event in events {
        let id = (event.client, event.op);
        match &event.kind {
            EventKind::Invoke(_) => {
                let name = match event.function() {
                    Function::Get if event.client == probe => "get (probe)",
                    Function::Get if event.client == last => "get (final)",
                    Function::Get => "get",
                    Function::Put if event.key.starts_with(UNIQUE_PREFIX) => "put (write-once)",
                    Function::Put => "put",
                    Function::Cas => "cas",
                };
                let row = rows.entry(name).or_default();
                row.total += 1;
                row.info += 1; // until a completion says otherwise
                open.insert(id, name);
            }
            kind => {
                let Some(name) = open.remove(&id) else {
                    continue;
                };
                let row = rows.entry(name).or_default();
                match kind {
                    EventKind::Ok(output) => {
                        row.info -= 1;
                        row.ok += 1;
                        if let Output::Cas { succeeded } = output {
                            *row.swapped.get_or_insert(0) += usize::from(*succeeded);
                        }
                    }
                    EventKind::Fail(_) => {
                        row.info -= 1;
                        row.fail += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    order
        .iter()
        .filter_map(|name| {
            rows.remove(name).map(|mut row| {
                row.operation = name.to_string();
                if name == &"cas" {
                    row.swapped.get_or_insert(0);
                }
                row
            })
        })
        .collect()
}

/// Percentiles and max of some samples (ms).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// How many samples.
    pub count: usize,
    /// Median (nearest rank).
    pub p50_ms: Option<f64>,
    /// 90th percentile (nearest rank).
    pub p90_ms: Option<f64>,
    /// 99th percentile (nearest rank).
    pub p99_ms: Option<f64>,
    /// Largest.
    pub max_ms: Option<f64>,
    /// Events that should have produced a sample but did not recover within the bound.
    pub not_observed: usize,
}

impl Stats {
    /// Stats of `samples` (`None`: not observed).
    pub fn of(samples: impl IntoIterator<Item = Option<f64>>) -> Stats {
        let mut values = Vec::new();
        let mut missing = 0;
        for s in samples {
            match s {
                Some(v) => values.push(v),
                None => missing += 1,
            }
        }
        values.sort_by(f64::total_cmp);
        // Nearest rank: the smallest sample with at least p of them at or below it.
        let rank = |p: f64| {
            (!values.is_empty()).then(|| {
                let r = (p * values.len() as f64).ceil() as usize;
                values[r.clamp(1, values.len()) - 1]
            })
        };
        Stats {
            count: values.len(),
            p50_ms: rank(0.5),
            p90_ms: rank(0.9),
            p99_ms: rank(0.99),
            max_ms: values.last().copied(),
            not_observed: missing,
        }
    }
}

/// Recovery times over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// Leader loss → first acknowledged write the lost leader cannot have served.
    pub leader_loss_to_write: Stats,
    /// Member back (restart, thaw, reconnect, rejoin) → caught up with the leader's commit index.
    pub restart_to_caught_up: Stats,
    /// The same, and the counts, per fault kind (in the order kinds first ran): what a long
    /// run (a soak) is summed up by.
    pub by_kind: Vec<KindRecovery>,
}

/// One fault kind's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct KindRecovery {
    /// The kind.
    pub kind: FaultKind,
    /// How many were scheduled (injection failures included).
    pub injected: usize,
    /// How many failed to inject.
    pub failed: usize,
    /// How many took the leader down.
    pub leader_lost: usize,
    /// Leader loss → write, over this kind's faults.
    pub leader_loss_to_write: Stats,
    /// Member back → caught up, over this kind's faults.
    pub restart_to_caught_up: Stats,
}

impl Recovery {
    /// From the fault records (failed injections left out).
    pub fn of(faults: &[FaultRecord]) -> Recovery {
        let (leader_loss_to_write, restart_to_caught_up) = Self::times(faults.iter());
        Recovery {
            leader_loss_to_write,
            restart_to_caught_up,
            by_kind: Self::by_kind(faults),
        }
    }

    /// Leader loss → write and member back → caught up, over the faults that were injected.
    fn times<'a>(faults: impl Iterator<Item = &'a FaultRecord> + Clone) -> (Stats, Stats) {
        let done = faults.filter(|f| f.error.is_none());
        (
            Stats::of(
                done.clone()
                    .filter(|f| f.leader_lost)
                    .map(|f| f.leader_recovery_ms),
            ),
            Stats::of(done.flat_map(|f| f.members.iter().map(|m| m.caught_up_ms))),
        )
    }

    fn by_kind(faults: &[FaultRecord]) -> Vec<KindRecovery> {
        let mut kinds: Vec<FaultKind> = Vec::new();
        for f in faults {
            if !kinds.contains(&f.kind) {
                kinds.push(f.kind);
            }
        }
        kinds
            .into_iter()
            .map(|kind| {
                let of_kind = faults.iter().filter(move |f| f.kind == kind);
                let (leader_loss_to_write, restart_to_caught_up) = Self::times(of_kind.clone());
                KindRecovery {
                    kind,
                    injected: of_kind.clone().count(),
                    failed: of_kind.clone().filter(|f| f.error.is_some()).count(),
                    leader_lost: leader_loss_to_write.count + leader_loss_to_write.not_observed,
                    leader_loss_to_write,
                    restart_to_caught_up,
                }
            })
            .collect()
    }
}

/// A fault kind left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unsupported {
    /// The kind.
    pub kind: FaultKind,
    /// Why the backend cannot do it.
    pub reason: String,
}

/// The linearizability part of the report: the verdict and the keys worth showing (contended
/// keys and any key that did not pass), not the thousands of write-once keys.
#[derive(Debug, Clone, Serialize)]
pub struct Linearizability {
    /// The checker's verdict (with the violation window).
    #[serde(flatten)]
    pub verdict: CheckerVerdict,
    /// Keys checked.
    pub keys_checked: usize,
    /// Contended keys and keys that did not pass.
    pub keys: Vec<crate::checker::KeyReport>,
    /// The checker's time (ms).
    pub elapsed_ms: f64,
}

impl Linearizability {
    /// From a checker report.
    pub fn of(report: &CheckReport) -> Linearizability {
        Linearizability {
            verdict: report.verdict.clone(),
            keys_checked: report.keys.len(),
            keys: report
                .keys
                .iter()
                .filter(|k| {
                    !k.key.starts_with(UNIQUE_PREFIX)
                        || !matches!(k.result, KeyResult::Linearizable)
                })
                .cloned()
                .collect(),
            elapsed_ms: report.elapsed_ms,
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The verdict.
    pub verdict: RunVerdict,
    /// 0, 1 or 2.
    pub exit_code: u8,
    /// The seed.
    pub seed: u64,
    /// `process`, `docker` or `kubectl`.
    pub backend: String,
    /// How the cluster ran.
    pub cluster: String,
    /// How the members were networked (the process backend: `namespaces: …` or `loopback: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The members.
    pub members: Vec<MemberInfo>,
    /// Deliberate server faults the members reported running with.
    pub server_faults: Vec<String>,
    /// The workload.
    pub workload: WorkloadConfig,
    /// Planned workload duration (ms).
    pub duration_ms: u64,
    /// Wall time of the whole run, setup to teardown (ms).
    pub elapsed_ms: f64,
    /// Unix time the run started.
    pub started_unix: u64,
    /// A command line that reruns it.
    pub reproduce: String,
    /// Operations by kind and outcome.
    pub ops: Vec<OpRow>,
    /// Faults, in order.
    pub faults: Vec<FaultRecord>,
    /// Fault kinds left out on this backend.
    pub unsupported_faults: Vec<Unsupported>,
    /// Recovery times.
    pub recovery: Recovery,
    /// Each check.
    pub checks: Vec<CheckResult>,
    /// The checker's result.
    pub linearizability: Option<Linearizability>,
    /// The write-once keys' fate.
    pub lost_writes: Option<LostWrites>,
    /// The replicas' end state.
    pub convergence: Option<Convergence>,
    /// Harness errors (each makes the verdict at best inconclusive).
    pub errors: Vec<String>,
    /// Files of the run, relative to the output directory.
    pub files: Vec<String>,
    /// The output directory.
    pub out_dir: String,
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into())
}

fn secs(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}", v / 1e3))
        .unwrap_or_else(|| "—".into())
}

impl RunReport {
    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let w = &self.workload;
        let _ = writeln!(s, "# kvset-chaos run: {}\n", self.verdict.label());
        let _ = writeln!(
            s,
            "seed **{}** · backend **{}** · {:.0} s · {} clients · {} keys · reads from {} · \
             rate {} · verdict **{}** (exit {})\n",
            self.seed,
            self.backend,
            self.duration_ms as f64 / 1e3,
            w.clients,
            w.keys,
            serde_json::to_value(w.read_from)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            if w.rate > 0.0 {
                format!("{} ops/s", w.rate)
            } else {
                "unlimited".into()
            },
            self.verdict.label(),
            self.exit_code
        );
        let _ = writeln!(s, "Cluster: {}\n", self.cluster);
        if let Some(network) = &self.network {
            let _ = writeln!(s, "Network: {network}\n");
        }
        if !self.server_faults.is_empty() {
            let _ = writeln!(
                s,
                "**The members ran with deliberate server faults: {}.**\n",
                self.server_faults.join(", ")
            );
        }
        let _ = writeln!(s, "Reproduce: `{}`\n", self.reproduce);

        let _ = writeln!(s, "## Checks\n");
        let _ = writeln!(s, "| check | result | summary |\n| --- | --- | --- |");
        for c in &self.checks {
            let _ = writeln!(s, "| {} | {} | {} |", c.name, c.status.label(), c.summary);
        }
        for e in &self.errors {
            let _ = writeln!(s, "| harness | error | {e} |");
        }

        let _ = writeln!(s, "\n## Operations\n");
        let _ = writeln!(
            s,
            "| operation | total | ok | fail | info |\n| --- | ---: | ---: | ---: | ---: |"
        );
        let mut total = 0;
        for r in &self.ops {
            total += r.total;
            let ok = match r.swapped {
                Some(sw) => format!("{} ({} swapped, {} not)", r.ok, sw, r.ok - sw),
                None => r.ok.to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.operation, r.total, ok, r.fail, r.info
            );
        }
        let _ = writeln!(s, "| **all** | **{total}** | | | |");
        let _ = writeln!(
            s,
            "\n`fail`: certainly not applied (for reads: no answer). `info`: unknown outcome \
             (timeouts, possibly-applied errors); the checker lets an `info` write take effect \
             at any time after its invoke, or never."
        );

        let _ = writeln!(s, "\n## Faults\n");
        if self.faults.is_empty() {
            let _ = writeln!(s, "No faults were injected.");
        } else {
            let _ = writeln!(
                s,
                "| # | at (s) | fault | targets | leader before | healed (s) | leader loss → write (ms) | back → caught up (ms) | probe reads | error |\n\
                 | ---: | ---: | --- | --- | --- | ---: | ---: | --- | ---: | --- |"
            );
            for f in &self.faults {
                let caught: Vec<String> = f
                    .members
                    .iter()
                    .map(|m| format!("{} {}", m.member, ms(m.caught_up_ms)))
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    f.index,
                    f.at_ms / 1e3,
                    f.kind,
                    f.targets.join(" "),
                    f.leader_before.as_deref().unwrap_or("—"),
                    secs(f.healed_ms),
                    if f.leader_lost {
                        ms(f.leader_recovery_ms)
                    } else {
                        "".into()
                    },
                    caught.join(", "),
                    f.probe_reads,
                    match (&f.error, f.cut_short) {
                        (Some(e), _) => e.clone(),
                        (None, true) => "cut short: the run ended while it was in force".into(),
                        (None, false) => String::new(),
                    }
                );
            }
        }
        let compound: Vec<&FaultRecord> =
            self.faults.iter().filter(|f| !f.steps.is_empty()).collect();
        if !compound.is_empty() {
            let _ = writeln!(s, "\n### Overlapping faults\n");
            for f in compound {
                let steps: Vec<String> = f
                    .steps
                    .iter()
                    .map(|st| {
                        let when = match st.to_ms {
                            Some(to) if to == st.from_ms => format!("at {:.1} s", st.from_ms / 1e3),
                            Some(to) => format!("{:.1}–{:.1} s", st.from_ms / 1e3, to / 1e3),
                            None => format!("from {:.1} s, not undone", st.from_ms / 1e3),
                        };
                        let error = st
                            .error
                            .as_deref()
                            .map(|e| format!(" (failed: {e})"))
                            .unwrap_or_default();
                        format!("{} {when}{error}", st.step)
                    })
                    .collect();
                let _ = writeln!(s, "* #{} {}: {}.", f.index, f.kind, steps.join("; "));
                if f.overlaps.is_empty() {
                    let _ = writeln!(
                        s,
                        "  * {}",
                        if f.kind == FaultKind::KillDuringSnapshot {
                            "the kill overlapped the wiped member's catch-up (below), not another \
                             fault"
                        } else {
                            "no two of its faults were in force together"
                        }
                    );
                }
                for o in &f.overlaps {
                    let _ = writeln!(
                        s,
                        "  * {} overlapped {} ({})",
                        o.steps[0],
                        o.steps[1],
                        if o.to_ms > o.from_ms {
                            format!("{:.1}–{:.1} s", o.from_ms / 1e3, o.to_ms / 1e3)
                        } else {
                            format!("at {:.1} s", o.from_ms / 1e3)
                        }
                    );
                }
                for note in f.steps.iter().filter_map(|st| st.note.as_deref()) {
                    let _ = writeln!(s, "  * {note}");
                }
            }
        }
        for u in &self.unsupported_faults {
            let _ = writeln!(
                s,
                "\nNot injected on the {} backend: **{}** — {}.",
                self.backend, u.kind, u.reason
            );
        }

        let _ = writeln!(s, "\n## Recovery\n");
        let _ = writeln!(
            s,
            "| measure | samples | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | not recovered in time |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (name, st) in [
            (
                "leader loss → next acknowledged write the lost leader cannot have served",
                &self.recovery.leader_loss_to_write,
            ),
            (
                "member back → caught up (applied ≥ leader's commit index)",
                &self.recovery.restart_to_caught_up,
            ),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                st.count,
                ms(st.p50_ms),
                ms(st.p90_ms),
                ms(st.p99_ms),
                ms(st.max_ms),
                st.not_observed
            );
        }
        if !self.recovery.by_kind.is_empty() {
            let _ = writeln!(
                s,
                "\nBy fault kind (times in ms, p50 / p99 / max; not recovered in time in \
                 brackets):\n\n| kind | faults | failed to inject | leader lost | leader loss → \
                 write | back → caught up |\n| --- | ---: | ---: | ---: | --- | --- |"
            );
            let cell = |st: &Stats| {
                if st.count == 0 && st.not_observed == 0 {
                    return "—".to_string();
                }
                format!(
                    "{} / {} / {} ({} samples{})",
                    ms(st.p50_ms),
                    ms(st.p99_ms),
                    ms(st.max_ms),
                    st.count,
                    if st.not_observed > 0 {
                        format!(", [{}]", st.not_observed)
                    } else {
                        String::new()
                    }
                )
            };
            for k in &self.recovery.by_kind {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    k.kind.as_str(),
                    k.injected,
                    k.failed,
                    k.leader_lost,
                    cell(&k.leader_loss_to_write),
                    cell(&k.restart_to_caught_up)
                );
            }
            let total: usize = self.recovery.by_kind.iter().map(|k| k.injected).sum();
            let _ = writeln!(
                s,
                "| **all** | **{total}** | {} | {} | {} | {} |",
                self.recovery
                    .by_kind
                    .iter()
                    .map(|k| k.failed)
                    .sum::<usize>(),
                self.recovery
                    .by_kind
                    .iter()
                    .map(|k| k.leader_lost)
                    .sum::<usize>(),
                cell(&self.recovery.leader_loss_to_write),
                cell(&self.recovery.restart_to_caught_up)
            );
        }

        if let Some(lin) = &self.linearizability {
            let _ = writeln!(s, "\n## Linearizability\n");
            let _ = writeln!(
                s,
                "{} keys checked in {:.0} ms. Contended keys:\n",
                lin.keys_checked, lin.elapsed_ms
            );
            let _ = writeln!(
                s,
                "| key | ok | info | fail | checked | result |\n| --- | ---: | ---: | ---: | ---: | --- |"
            );
            for k in &lin.keys {
                let result = match &k.result {
                    KeyResult::Linearizable => "linearizable",
                    KeyResult::Violation { .. } => "**VIOLATION**",
                    KeyResult::Inconclusive { .. } => "inconclusive",
                };
                let _ = writeln!(
                    s,
                    "| {:?} | {} | {} | {} | {} | {} |",
                    k.key, k.ok, k.info, k.failed, k.checked, result
                );
            }
            if let CheckerVerdict::Violation { key, details } = &lin.verdict {
                let _ = writeln!(s, "\n### Violation on key {key:?}\n\n```text\n{details}```");
            }
            if let CheckerVerdict::Inconclusive { reason } = &lin.verdict {
                let _ = writeln!(s, "\nInconclusive: {reason}");
            }
        }

        let _ = writeln!(s, "\n## Files\n");
        let _ = writeln!(s, "In `{}`:\n", self.out_dir);
        for f in &self.files {
            let _ = writeln!(s, "- `{f}`");
        }
        let _ = writeln!(
            s,
            "\nRecheck the run with `kvset-chaos check {}` (the history, and the watch, lock \
             and lease evidence beside it).",
            self.out_dir
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::HistoryRecorder;

    #[test]
    fn ops_are_counted_by_kind_and_outcome() {
        let r = HistoryRecorder::in_memory();
        r.invoke_get(0, "k0").ok_get(None);
        r.invoke_get(0, "k0").fail();
        r.invoke_put(1, "k0", "a").ok_put();
        r.invoke_put(1, "k0", "b").info();
        r.invoke_cas(2, "k0", None, "c").ok_cas(true);
        r.invoke_cas(2, "k0", None, "d").ok_cas(false);
        let _open = r.invoke_put(3, "u/3/1", "x");
        r.invoke_get(5, "k0").ok_get(None);
        r.invoke_get(6, "u/3/1").ok_get(None);
        drop(_open);
        let rows = count_ops(&r.events(), 5, 6);
        let find = |name: &str| rows.iter().find(|r| r.operation == name).cloned().unwrap();
        assert_eq!((find("get").ok, find("get").fail), (1, 1));
        assert_eq!((find("put").ok, find("put").info), (1, 1));
        assert_eq!((find("cas").ok, find("cas").swapped), (2, Some(1)));
        assert_eq!(find("put (write-once)").info, 1);
        assert_eq!(find("get (probe)").ok, 1);
        assert_eq!(find("get (final)").ok, 1);
    }

    fn fault(kind: FaultKind, leader_recovery_ms: Option<f64>, error: Option<&str>) -> FaultRecord {
        FaultRecord {
            index: 0,
            kind,
            targets: vec!["kv-1".into()],
            leader_before: Some("kv-0".into()),
            term_before: 1,
            at_ms: 0.0,
            healed_ms: Some(1.0),
            leader_lost: leader_recovery_ms.is_some(),
            leader_recovery_ms,
            members: Vec::new(),
            probe_reads: 0,
            error: error.map(str::to_string),
            steps: Vec::new(),
            overlaps: Vec::new(),
            cut_short: false,
        }
    }

    #[test]
    fn recovery_is_summed_up_per_kind_in_the_order_kinds_first_ran() {
        let faults = [
            fault(FaultKind::Pause, None, None),
            fault(FaultKind::KillLeader, Some(100.0), None),
            fault(FaultKind::Pause, None, Some("SIGSTOP failed")),
            fault(FaultKind::KillLeader, Some(300.0), None),
            fault(FaultKind::KillLeader, Some(200.0), None),
        ];
        let r = Recovery::of(&faults);
        let kinds: Vec<_> = r.by_kind.iter().map(|k| k.kind).collect();
        assert_eq!(kinds, [FaultKind::Pause, FaultKind::KillLeader]);
        let (pause, kill) = (&r.by_kind[0], &r.by_kind[1]);
        assert_eq!((pause.injected, pause.failed, pause.leader_lost), (2, 1, 0));
        assert_eq!((kill.injected, kill.failed, kill.leader_lost), (3, 0, 3));
        assert_eq!(kill.leader_loss_to_write.p50_ms, Some(200.0));
        assert_eq!(kill.leader_loss_to_write.max_ms, Some(300.0));
        assert_eq!(r.leader_loss_to_write.count, 3);
    }

    #[test]
    fn stats_take_the_median_and_the_max() {
        let s = Stats::of([Some(3.0), Some(1.0), None, Some(2.0), Some(10.0)]);
        assert_eq!(s.count, 4);
        assert_eq!(s.p50_ms, Some(2.0));
        assert_eq!(s.p90_ms, Some(10.0));
        assert_eq!(s.max_ms, Some(10.0));
        assert_eq!(s.not_observed, 1);
        assert_eq!(Stats::of([]).p50_ms, None);
        let hundred = Stats::of((1..=100).map(|v| Some(v as f64)));
        assert_eq!(
            (hundred.p50_ms, hundred.p90_ms, hundred.p99_ms),
            (Some(50.0), Some(90.0), Some(99.0))
        );
    }
}
