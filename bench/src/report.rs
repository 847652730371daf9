//! Results: the JSON document of one run (a contract: scripts read these fields), its one-line
//! text form, and the markdown table comparing kvset with etcd.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::{RunArgs, TableArgs, TargetKind};
use crate::runner::{Outcome, RunSpec};
use crate::workload::{Workload, KEY_SIZE};

/// One run. Times in milliseconds unless the name says otherwise.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `kvset` or `etcd`.
    pub target: String,
    /// `put`, `get`, `get-stale`, `cas`, `mixed`, `watch` or `lease-keepalive`. For `watch`,
    /// `ops` and the latencies are the writers' puts (the events are in `event_latency_ms`);
    /// for `lease-keepalive`, they are the renewals.
    pub workload: String,
    /// How the target was called: `raw` or `sdk` (kvset), `grpc` (etcd).
    pub client: String,
    pub concurrency: usize,
    /// The measured window (seconds).
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Requests answered inside the measured window.
    pub ops: u64,
    pub ops_per_sec: f64,
    /// Requests that failed inside the window (not in `ops`).
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub reads: u64,
    pub writes: u64,
    /// Reads that found no value.
    pub misses: u64,
    /// cas requests whose compare failed.
    pub cas_failed: u64,
    /// CPU seconds (user + system) the server processes used in the window.
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds per 1000 operations (= CPU milliseconds per operation).
    pub cpu_per_kop: Option<f64>,
    /// Server CPU as cores kept busy on average (`server_cpu_s / duration_s`).
    pub server_cores: Option<f64>,
    pub server_pids: Vec<u32>,
    /// CPU seconds the load generator itself used in the window.
    pub client_cpu_s: Option<f64>,
    pub endpoints: Vec<String>,
    pub keys: u64,
    pub key_size: usize,
    pub value_size: usize,
    /// kvset raw client: whether writes carried exactly-once request ids.
    pub request_ids: Option<bool>,
    /// 1-minute load average just before the run (a busy machine skews results).
    pub load_avg_1m: Option<f64>,
    /// Seconds spent preloading the keyspace before this run, if it did (`lease-keepalive`:
    /// granting the leases).
    pub preload_s: Option<f64>,
    pub first_error: Option<String>,
    pub label: Option<String>,
    /// `watch`: watchers of the prefix, spread over the members.
    #[serde(default)]
    pub watchers: Option<usize>,
    /// `watch`: put-to-event latency over every (watcher, event) pair of the puts sent inside
    /// the window, from the put's send to the event's arrival.
    #[serde(default)]
    pub event_latency_ms: Option<EventLatency>,
    /// `watch`: those (watcher, event) pairs.
    #[serde(default)]
    pub events: Option<u64>,
    /// `watch`: `events` per second of the window.
    #[serde(default)]
    pub events_per_s: Option<f64>,
    /// `watch`: (watcher, acknowledged put) pairs never delivered (warm-up included); a run
    /// with any fails.
    #[serde(default)]
    pub lost_events: Option<u64>,
    /// `watch`: events a watcher received a second time.
    #[serde(default)]
    pub duplicate_events: Option<u64>,
    /// `lease-keepalive`: leases renewed round-robin.
    #[serde(default)]
    pub leases: Option<u64>,
    /// `lease-keepalive`: leases revoked after the run.
    #[serde(default)]
    pub leases_revoked: Option<u64>,
    /// `--ops`: the requests the run was limited to (it ends at `--duration` if that comes
    /// first; then `ops + errors` is smaller).
    #[serde(default)]
    pub ops_limit: Option<u64>,
}

/// Percentiles of put-to-event latency, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EventLatency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl Report {
    pub fn new(
        args: &RunArgs,
        spec: &RunSpec,
        outcome: &Outcome,
        endpoints: Vec<String>,
        preload_s: Option<f64>,
        load_avg_1m: Option<f64>,
    ) -> Self {
        let h = &outcome.latency_us;
        let duration_s = outcome.measured.as_secs_f64().max(1e-9);
        let (client, request_ids) = match args.target {
            TargetKind::Kvset => (
                args.kvset_client.as_str().to_string(),
                Some(args.request_ids || args.kvset_client == crate::cli::KvsetClientKind::Sdk),
            ),
            TargetKind::Etcd => ("grpc".to_string(), None),
        };
        let empty = outcome.ops == 0;
        let pct = |q: f64| {
            if empty {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        Report {
            target: args.target.to_string(),
            workload: spec.workload.as_str().to_string(),
            client,
            concurrency: spec.concurrency,
            duration_s: round(duration_s, 3),
            warmup_s: round(spec.warmup.as_secs_f64(), 3),
            ops: outcome.ops,
            ops_per_sec: round(outcome.ops as f64 / duration_s, 1),
            errors: outcome.errors,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            p999_ms: pct(0.999),
            mean_ms: if empty {
                0.0
            } else {
                round(h.mean() / 1000.0, 3)
            },
            max_ms: if empty { 0.0 } else { ms(h.max()) },
            reads: outcome.reads,
            writes: outcome.writes,
            misses: outcome.misses,
            cas_failed: outcome.cas_failed,
            server_cpu_s: outcome.server_cpu_s.map(|c| round(c, 3)),
            cpu_per_kop: outcome
                .server_cpu_s
                .filter(|_| outcome.ops > 0)
                .map(|c| round(c / (outcome.ops as f64 / 1000.0), 4)),
            server_cores: outcome.server_cpu_s.map(|c| round(c / duration_s, 2)),
            server_pids: spec.server_pids.clone(),
            client_cpu_s: outcome.client_cpu_s.map(|c| round(c, 3)),
            endpoints,
            keys: spec.keyspace.keys(),
            key_size: KEY_SIZE,
            value_size: spec.keyspace.value_size(),
            request_ids,
            load_avg_1m,
            preload_s: preload_s.map(|s| round(s, 2)),
            first_error: outcome.first_error.clone(),
            label: args.label.clone(),
            watchers: outcome.watch.as_ref().map(|w| w.watchers),
            event_latency_ms: outcome.watch.as_ref().map(|w| {
                let at = |q: f64| {
                    if w.events == 0 {
                        0.0
                    } else {
                        ms(w.latency_us.value_at_quantile(q))
                    }
                };
                EventLatency {
                    p50: at(0.5),
                    p99: at(0.99),
                    max: if w.events == 0 {
                        0.0
                    } else {
                        ms(w.latency_us.max())
                    },
                }
            }),
            events: outcome.watch.as_ref().map(|w| w.events),
            events_per_s: outcome
                .watch
                .as_ref()
                .map(|w| round(w.events as f64 / duration_s, 1)),
            lost_events: outcome.watch.as_ref().map(|w| w.lost),
            duplicate_events: outcome.watch.as_ref().map(|w| w.duplicates),
            leases: (spec.workload == Workload::LeaseKeepalive).then_some(spec.leases),
            leases_revoked: outcome.leases_revoked,
            ops_limit: spec.ops,
        }
    }

    /// One human-readable line.
    pub fn text(&self) -> String {
        let cpu = match (self.server_cpu_s, self.cpu_per_kop) {
            (Some(c), Some(k)) => format!(", server CPU {c:.2} s ({k:.3} s per 1000 ops)"),
            (Some(c), None) => format!(", server CPU {c:.2} s"),
            _ => String::new(),
        };
        let watch = match (&self.event_latency_ms, self.watchers) {
            (Some(e), Some(w)) => format!(
                "; {w} watchers: {} events, {:.1} events/s, event p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, lost {}",
                self.events.unwrap_or(0),
                self.events_per_s.unwrap_or(0.0),
                e.p50,
                e.p99,
                e.max,
                self.lost_events.unwrap_or(0)
            ),
            _ => String::new(),
        };
        let leases = self
            .leases
            .map(|n| {
                format!(
                    "; {n} leases, {} revoked after",
                    self.leases_revoked.unwrap_or(0)
                )
            })
            .unwrap_or_default();
        format!(
            "{} {} C={} ({}) {:.1}s: {} ops, {:.1} ops/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, errors {}{}{}{}",
            self.target,
            self.workload,
            self.concurrency,
            self.client,
            self.duration_s,
            self.ops,
            self.ops_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.errors,
            cpu,
            watch,
            leases
        )
    }
}

/// `kvset-bench table`: reads JSON lines and prints the comparison table.
pub fn table_command(args: &TableArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for file in &args.files {
        let text = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || !line.starts_with('{') {
                continue;
            }
            let report: Report = serde_json::from_str(line).with_context(|| {
                format!(
                    "{} line {}: not a kvset-bench result",
                    file.display(),
                    n + 1
                )
            })?;
            reports.push(report);
        }
    }
    print!("{}", markdown_table(&reports));
    Ok(())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".to_string()
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".to_string())
}

/// (workload position, workload, concurrency).
type RowKey = (usize, String, usize);
/// (kvset, etcd).
type Pair<'a> = (Option<&'a Report>, Option<&'a Report>);

/// The workload as a table row names it: `lease-keepalive` with its lease count.
fn row_name(r: &Report) -> String {
    match r.leases {
        Some(n) if r.workload == "lease-keepalive" => format!("lease-keepalive ({n} leases)"),
        _ => r.workload.clone(),
    }
}

/// Pairs kvset's and etcd's runs by (workload position, row name, `column`).
fn pair_up<'a>(
    reports: impl Iterator<Item = &'a Report>,
    column: fn(&Report) -> usize,
) -> BTreeMap<RowKey, Pair<'a>> {
    let mut rows: BTreeMap<RowKey, Pair<'a>> = BTreeMap::new();
    for r in reports {
        let key = (Workload::order(&r.workload), row_name(r), column(r));
        let row = rows.entry(key).or_default();
        match r.target.as_str() {
            "kvset" => row.0 = Some(r),
            "etcd" => row.1 = Some(r),
            _ => {}
        }
    }
    rows
}

/// One row per (workload, concurrency): kvset and etcd side by side, with kvset/etcd ratios.
/// When a cell has several runs (repeats), the last one is shown. `watch` runs get a table of
/// their own, one row per watcher count and writer count: their figure of merit is the
/// put-to-event latency, not the puts.
pub fn markdown_table(reports: &[Report]) -> String {
    let rows = pair_up(reports.iter().filter(|r| r.workload != "watch"), |r| {
        r.concurrency
    });
    let mut out = String::new();
    if !rows.is_empty() || reports.iter().all(|r| r.workload != "watch") {
        out.push_str(&requests_table(rows));
    }
    let watch = pair_up(reports.iter().filter(|r| r.workload == "watch"), |r| {
        r.watchers.unwrap_or(0)
    });
    if !watch.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&watch_table(watch));
    }
    out
}

fn cell(r: Option<&Report>, pick: impl Fn(&Report) -> f64, digits: usize) -> String {
    r.map(|r| format!("{:.digits$}", pick(r)))
        .unwrap_or_else(|| "-".to_string())
}

fn count(r: Option<&Report>, pick: impl Fn(&Report) -> u64) -> String {
    r.map(|r| pick(r).to_string())
        .unwrap_or_else(|| "-".to_string())
}

fn requests_table(rows: BTreeMap<RowKey, Pair<'_>>) -> String {
    let mut out = String::new();
    out.push_str("| workload | C | kvset ops/s | etcd ops/s | ops/s kvset/etcd | kvset p50 ms | etcd p50 ms | kvset p99 ms | etcd p99 ms | p99 kvset/etcd | kvset p99.9 ms | etcd p99.9 ms | kvset CPU s/kop | etcd CPU s/kop | errors kvset/etcd |\n");
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for ((_, workload, c), (k, e)) in rows {
        let v = |r: Option<&Report>, pick: fn(&Report) -> f64| r.map(pick).unwrap_or(0.0);
        out.push_str(&format!(
            "| {workload} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
            cell(k, |r| r.ops_per_sec, 0),
            cell(e, |r| r.ops_per_sec, 0),
            ratio(v(k, |r| r.ops_per_sec), v(e, |r| r.ops_per_sec)),
            cell(k, |r| r.p50_ms, 2),
            cell(e, |r| r.p50_ms, 2),
            cell(k, |r| r.p99_ms, 2),
            cell(e, |r| r.p99_ms, 2),
            ratio(v(k, |r| r.p99_ms), v(e, |r| r.p99_ms)),
            cell(k, |r| r.p999_ms, 2),
            cell(e, |r| r.p999_ms, 2),
            opt(k.and_then(|r| r.cpu_per_kop), 3),
            opt(e.and_then(|r| r.cpu_per_kop), 3),
            count(k, |r| r.errors),
            count(e, |r| r.errors),
        ));
    }
    out
}

/// Rows by watcher count; the writers (concurrency) are named in the cell when they differ
/// between the systems' runs, which a comparison should not have.
fn watch_table(rows: BTreeMap<RowKey, Pair<'_>>) -> String {
    let mut out = String::new();
    out.push_str("| watch: watchers | writers | kvset puts/s | etcd puts/s | kvset events/s | etcd events/s | events/s kvset/etcd | kvset event p50 ms | etcd event p50 ms | kvset event p99 ms | etcd event p99 ms | event p99 kvset/etcd | kvset event max ms | etcd event max ms | lost kvset/etcd |\n");
    out.push_str("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let event = |r: &Report, pick: fn(&EventLatency) -> f64| {
        r.event_latency_ms.as_ref().map(pick).unwrap_or(0.0)
    };
    for ((_, _, w), (k, e)) in rows {
        let writers = match (k, e) {
            (Some(k), Some(e)) if k.concurrency != e.concurrency => {
                format!("{}/{}", k.concurrency, e.concurrency)
            }
            _ => k
                .or(e)
                .map(|r| r.concurrency.to_string())
                .unwrap_or_default(),
        };
        let v = |r: Option<&Report>, pick: &dyn Fn(&Report) -> f64| r.map(pick).unwrap_or(0.0);
        out.push_str(&format!(
            "| {w} | {writers} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
            cell(k, |r| r.ops_per_sec, 0),
            cell(e, |r| r.ops_per_sec, 0),
            cell(k, |r| r.events_per_s.unwrap_or(0.0), 0),
            cell(e, |r| r.events_per_s.unwrap_or(0.0), 0),
            ratio(
                v(k, &|r| r.events_per_s.unwrap_or(0.0)),
                v(e, &|r| r.events_per_s.unwrap_or(0.0))
            ),
            cell(k, |r| event(r, |l| l.p50), 2),
            cell(e, |r| event(r, |l| l.p50), 2),
            cell(k, |r| event(r, |l| l.p99), 2),
            cell(e, |r| event(r, |l| l.p99), 2),
            ratio(v(k, &|r| event(r, |l| l.p99)), v(e, &|r| event(r, |l| l.p99))),
            cell(k, |r| event(r, |l| l.max), 2),
            cell(e, |r| event(r, |l| l.max), 2),
            count(k, |r| r.lost_events.unwrap_or(0)),
            count(e, |r| r.lost_events.unwrap_or(0)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, workload: &str, c: usize, ops_s: f64, p99: f64) -> Report {
        serde_json::from_value(serde_json::json!({
            "target": target, "workload": workload, "client": "raw", "concurrency": c,
            "duration_s": 10.0, "warmup_s": 2.0, "ops": (ops_s * 10.0) as u64,
            "ops_per_sec": ops_s, "errors": 0, "p50_ms": p99 / 4.0, "p99_ms": p99,
            "p999_ms": p99 * 2.0, "mean_ms": 1.0, "max_ms": 9.0, "reads": 0, "writes": 0,
            "misses": 0, "cas_failed": 0, "server_cpu_s": 5.0, "cpu_per_kop": 0.25,
            "server_cores": 0.5, "server_pids": [1, 2, 3], "client_cpu_s": 1.0,
            "endpoints": ["a"], "keys": 100000, "key_size": 16, "value_size": 128,
            "request_ids": null, "load_avg_1m": 1.0, "preload_s": null, "first_error": null,
            "label": null
        }))
        .unwrap()
    }

    #[test]
    fn the_json_has_the_contract_fields() {
        let json = serde_json::to_value(report("kvset", "put", 64, 1000.0, 4.0)).unwrap();
        for field in [
            "ops_per_sec",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "errors",
            "target",
            "workload",
            "concurrency",
            "duration_s",
            "ops",
            "server_cpu_s",
            "cpu_per_kop",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
    }

    fn watch_report(target: &str, watchers: usize, events_s: f64, p99: f64, lost: u64) -> Report {
        let mut r = report(target, "watch", 1, 100.0, 2.0);
        r.watchers = Some(watchers);
        r.events_per_s = Some(events_s);
        r.events = Some((events_s * 10.0) as u64);
        r.lost_events = Some(lost);
        r.event_latency_ms = Some(EventLatency {
            p50: p99 / 2.0,
            p99,
            max: p99 * 3.0,
        });
        r
    }

    #[test]
    fn lines_without_the_stream_fields_still_parse_and_new_fields_are_added() {
        let old = report("etcd", "put", 1, 10.0, 1.0);
        assert_eq!(old.watchers, None);
        assert_eq!(old.lost_events, None);
        let json = serde_json::to_value(watch_report("kvset", 1000, 5000.0, 8.0, 0)).unwrap();
        assert_eq!(json["watchers"], 1000);
        assert_eq!(json["event_latency_ms"]["p99"], 8.0);
        assert_eq!(json["lost_events"], 0);
        assert_eq!(json["ops_per_sec"], 100.0, "old fields stay");
    }

    #[test]
    fn watch_runs_get_their_own_table_by_watcher_count() {
        let mut lease = report("kvset", "lease-keepalive", 16, 3000.0, 2.0);
        lease.leases = Some(10_000);
        let reports = vec![
            watch_report("etcd", 1000, 4000.0, 10.0, 0),
            watch_report("kvset", 1, 100.0, 3.0, 0),
            watch_report("kvset", 1000, 5000.0, 8.0, 2),
            watch_report("etcd", 1, 100.0, 2.0, 0),
            lease,
        ];
        let table = markdown_table(&reports);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[2].starts_with("| lease-keepalive (10000 leases) | 16 | 3000 | - |"),
            "{table}"
        );
        let w1 = lines.iter().position(|l| l.starts_with("| 1 |")).unwrap();
        let w1000 = lines
            .iter()
            .position(|l| l.starts_with("| 1000 |"))
            .unwrap();
        assert!(w1 < w1000, "{table}");
        assert!(
            lines[w1000].starts_with(
                "| 1000 | 1 | 100 | 100 | 5000 | 4000 | 1.25 | 4.00 | 5.00 | 8.00 | 10.00 | 0.80 |"
            ),
            "{}",
            lines[w1000]
        );
        assert!(lines[w1000].ends_with("| 2/0 |"), "{}", lines[w1000]);
        assert!(
            lines[w1].contains("| 3.00 | 2.00 | 1.50 |"),
            "{}",
            lines[w1]
        );
    }

    #[test]
    fn the_table_pairs_systems_and_orders_rows() {
        let reports = vec![
            report("etcd", "get", 1, 2000.0, 1.0),
            report("kvset", "put", 64, 1500.0, 8.0),
            report("etcd", "put", 64, 1000.0, 4.0),
            report("kvset", "get", 1, 1000.0, 2.0),
        ];
        let table = markdown_table(&reports);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[2].starts_with("| put | 64 | 1500 | 1000 | 1.50 |"),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("| 8.00 | 4.00 | 2.00 |"), "{}", lines[2]);
        assert!(
            lines[3].starts_with("| get | 1 | 1000 | 2000 | 0.50 |"),
            "{}",
            lines[3]
        );
    }
}
