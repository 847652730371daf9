//! Monitoring the Kubernetes way: `k8s/overlays/monitoring` (ServiceMonitor, PrometheusRule,
//! Grafana dashboard ConfigMap) and the metrics plumbing of the base (container port 7579, the
//! `kv-metrics` Service).
//!
//! A dashboard or an alert that queries a metric the server does not export is silently empty
//! (an alert on an empty series never fires), so the central check is against a live server:
//! start a real three-member cluster, write and read through it, scrape every member's
//! `/metrics`, and require every metric name any rule expression or dashboard query uses to be
//! among the scraped series. The PromQL is not evaluated (no Prometheus here); names are pulled
//! out of the expressions by a small tokenizer that drops functions, keywords, label matchers and
//! grouping clauses, and which is itself checked to find the names it should.
//!
//! The rendered ConfigMap is validated strictly against the Kubernetes schemas; the Prometheus
//! Operator's kinds have no schema in `kubernetes-validate`, so their structure is checked here
//! (selectors that really select the metrics Service, a port that exists, every alert
//! docs/OPERATIONS.md describes).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use kvset_proto::v1::{Consistency, GetRequest, PutRequest};
use kvset_tests::testkit::{ProcessCluster, FAST_TIMING};
use kvset_tests::tooling::{
    find_document, have_render_tools, render_kustomization, render_kustomization_yaml, repo_root,
    require_tool,
};
use serde_json::Value;

/// The dashboard as committed.
fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_root().join("k8s/monitoring/kvset-dashboard.json"))
        .expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: panel targets and templating queries.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for t in panel["targets"].as_array().expect("targets") {
            out.push((
                format!("panel {title}"),
                t["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for var in d["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            let q = &var["query"];
            let q = q["query"].as_str().or(q.as_str()).expect("query");
            out.push((format!("variable {}", var["name"]), q.to_string()));
        }
    }
    out
}

/// Every alert of the PrometheusRule: (alert name, expression).
fn rule_exprs(rule: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .expect("alert or record")
                .to_string();
            out.push((name, r["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

/// PromQL words that are not metric names: keywords and the aggregation operators (which may
/// be followed by `by (…)` rather than directly by their parenthesis).
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// The metric names a PromQL expression (or a Grafana `label_values(...)` query) reads.
/// Strings, `{…}` label matchers, `[…]` ranges, the label lists of `by`/`on`/… and
/// function names (a word followed by `(`) are skipped; what remains are metric names.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Grafana's `label_values(METRIC_SELECTOR, LABEL)`: the second argument is a label name.
    let expr = match expr.trim().strip_prefix("label_values(") {
        Some(args) => args.rsplit_once(',').map_or(args, |(selector, _)| selector),
        None => expr,
    };
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_next_parens = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c == '(' && skip_next_parens {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
            skip_next_parens = false;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                skip_next_parens = true;
            } else if j < chars.len() && chars[j] == '(' {
                // a function call (rate, sum, histogram_quantile, label_values…)
            } else if !PROMQL_WORDS.contains(&lower.as_str()) && !word.starts_with('$') {
                names.insert(word);
            }
        } else if c == '$' {
            // Grafana variables: $__rate_interval, ${datasource}
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_{}".contains(chars[i]))
            {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_tokenizer_finds_metric_names_and_nothing_else() {
    let found = metric_names(
        r#"histogram_quantile(0.99, sum by (le, method) (rate(kvset_request_duration_seconds_bucket{job="kv-metrics",method=~"Put|Get"}[$__rate_interval])))"#,
    );
    assert_eq!(
        found,
        BTreeSet::from(["kvset_request_duration_seconds_bucket".to_string()])
    );
    let found = metric_names(
        "max by (namespace) (a_applied{x=\"y\"}) - on (namespace) group_right b_applied > 1000",
    );
    assert_eq!(
        found,
        BTreeSet::from(["a_applied".to_string(), "b_applied".to_string()])
    );
    let found = metric_names(r#"label_values(kvset_raft_term{job="kv-metrics"}, namespace)"#);
    assert_eq!(found, BTreeSet::from(["kvset_raft_term".to_string()]));
    assert!(
        metric_names("sum(rate(x_total[5m])) / sum(rate(y_total[5m])) > 0.05")
            == BTreeSet::from(["x_total".to_string(), "y_total".to_string()])
    );
}

/// GET /metrics from `addr` over plain HTTP/1.0; returns the body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    assert!(head.starts_with("HTTP/1."), "{head}");
    assert!(head.contains(" 200 "), "GET /metrics on {addr}: {head}");
    body.to_string()
}

/// Names of the samples in an exposition (`name{labels} value` or `name value` lines).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split(|c: char| c == '{' || c.is_whitespace())
                .next()
                .expect("name")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_query_only_metrics_a_live_member_exports() {
    if !have_render_tools() {
        return;
    }
    let docs = render_kustomization("overlays/monitoring");
    let rule = find_document(&docs, "PrometheusRule", "kvset");
    let mut queries = rule_exprs(rule);
    queries.extend(dashboard_queries(&dashboard()));

    // A real cluster, with every kind of traffic the dashboard shows: writes (batch sizes,
    // forwarded writes through a follower), linearizable reads (read-index rounds), errors.
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    for i in [leader, follower] {
        for n in 0..5 {
            c.kv(i)
                .put(PutRequest {
                    key: format!("metrics-{n}").into(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .expect("put");
        }
        c.kv(i)
            .get(GetRequest {
                key: b"metrics-0".to_vec(),
                consistency: Consistency::Linearizable as i32,
                revision: 0,
            })
            .await
            .expect("get");
    }
    let _ = c
        .kv(leader)
        .put(PutRequest {
            key: Vec::new(), // an empty key: InvalidArgument, counted with its code
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await;
    let mut exported = BTreeSet::new();
    for m in &c.members {
        exported.extend(sample_names(&scrape(m.spec.metrics)));
    }
    assert!(
        exported.len() > 20 && exported.contains("kvset_raft_term"),
        "the scrape returned too little: {exported:?}"
    );

    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (what, expr) in &queries {
        let names = metric_names(expr);
        if names.is_empty() {
            problems.push(format!("{what}: no metric name found in `{expr}`"));
        }
        for name in names {
            if !exported.contains(&name) {
                problems.push(format!(
                    "{what}: `{name}` is not exported by kvset-server (query: {expr})"
                ));
            }
            used.insert(name);
        }
    }
    assert!(
        problems.is_empty(),
        "queries naming metrics the server does not export:\n{}\nexported: {exported:?}",
        problems.join("\n")
    );
    // What the issue asks the dashboard and the rules to show, by metric.
    for needed in [
        "kvset_raft_leader_id",
        "kvset_raft_term",
        "kvset_raft_is_leader",
        "kvset_raft_leader_changes_total",
        "kvset_requests_total",
        "kvset_request_duration_seconds_bucket",
        "kvset_raft_commit_index",
        "kvset_raft_applied_index",
        "kvset_write_batch_size_bucket",
        "kvset_store_disk_bytes",
    ] {
        assert!(used.contains(needed), "nothing queries {needed}");
    }
}

#[test]
fn monitoring_overlay_renders_validates_and_selects_the_metrics_service() {
    if !have_render_tools() {
        return;
    }
    let docs = render_kustomization("overlays/monitoring");
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap".to_string(),
            "PrometheusRule".to_string(),
            "ServiceMonitor".to_string()
        ])
    );

    // Strict schema validation where a schema exists (the ConfigMap).
    if require_tool(
        "kubernetes-validate",
        &["--version"],
        "pip install kubernetes-validate",
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("monitoring.yaml");
        std::fs::write(&file, render_kustomization_yaml("overlays/monitoring")).expect("write");
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", "1.33.0"])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{report}");
        assert!(
            report.contains("passed for resource configmap/kvset-grafana-dashboard"),
            "{report}"
        );
    }

    // The ConfigMap carries the committed dashboard, labelled for Grafana's sidecar.
    let cm = find_document(&docs, "ConfigMap", "kvset-grafana-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value =
        serde_json::from_str(cm["data"]["kvset-dashboard.json"].as_str().expect("data"))
            .expect("JSON");
    assert_eq!(embedded, dashboard());

    // The ServiceMonitor selects exactly the kv-metrics Service, on a port it has, which leads
    // to the container's metrics port, where the server listens.
    let base = render_kustomization("base");
    let sm = find_document(&docs, "ServiceMonitor", "kvset");
    let svc = find_document(&base, "Service", "kv-metrics");
    let selector = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    let selected: Vec<&Value> = base
        .iter()
        .filter(|d| d["kind"] == "Service")
        .filter(|d| {
            selector
                .iter()
                .all(|(k, v)| &d["metadata"]["labels"][k.as_str()] == v)
        })
        .collect();
    assert_eq!(selected.len(), 1, "the ServiceMonitor selects one Service");
    assert_eq!(selected[0]["metadata"]["name"], "kv-metrics");
    assert_eq!(svc["spec"]["clusterIP"], "None", "one target per member");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(endpoint["port"], port["name"]);
    assert_eq!(port["port"], 7579);
    let sts = find_document(&base, "StatefulSet", "kv");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let cport = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("the Service's targetPort names a container port");
    assert_eq!(cport["containerPort"], 7579);
    let listen = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "KVSET_METRICS_LISTEN")
        .expect("KVSET_METRICS_LISTEN set");
    assert_eq!(listen["value"], "0.0.0.0:7579");

    // The image declares the port too.
    for dockerfile in ["docker/Dockerfile", "docker/Dockerfile.offline"] {
        let text = std::fs::read_to_string(repo_root().join(dockerfile)).expect("Dockerfile");
        let expose = text
            .lines()
            .find(|l| l.starts_with("EXPOSE "))
            .expect("EXPOSE");
        assert!(
            expose.split_whitespace().any(|p| p == "7579"),
            "{dockerfile}: {expose}"
        );
    }
}

#[test]
fn prometheus_rule_carries_the_operations_alerts() {
    if !have_render_tools() {
        return;
    }
    let docs = render_kustomization("overlays/monitoring");
    let rule = find_document(&docs, "PrometheusRule", "kvset");
    let mut alerts = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(name.to_string()), "duplicate alert {name}");
            for field in ["summary", "description"] {
                assert!(
                    r["annotations"][field]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name} has no {field}"
                );
            }
            let severity = r["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["warning", "critical"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            let expr = r["expr"].as_str().expect("expr");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{name}: unbalanced parentheses in {expr}"
            );
        }
    }
    // docs/OPERATIONS.md: no leader, leader changes, member lagging, disk near the PVC size,
    // write errors, the NOSPACE alarm.
    for needed in [
        "KvsetNoLeader",
        "KvsetLeaderChanges",
        "KvsetMemberLagging",
        "KvsetDiskNearlyFull",
        "KvsetWriteErrors",
        "KvsetNoSpaceAlarm",
    ] {
        assert!(alerts.contains(needed), "no alert {needed}: {alerts:?}");
    }
    let ops = std::fs::read_to_string(repo_root().join("docs/OPERATIONS.md")).expect("ops doc");
    for alert in &alerts {
        assert!(
            ops.contains(alert.as_str()),
            "docs/OPERATIONS.md does not describe {alert}"
        );
    }

    // The disk alert's threshold is 80 % of the PVC size the StatefulSet requests.
    let base = render_kustomization("base");
    let sts = find_document(&base, "StatefulSet", "kv");
    let storage = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
        ["storage"]
        .as_str()
        .expect("storage request");
    let bytes: u64 = match storage.strip_suffix("Gi") {
        Some(n) => n.parse::<u64>().expect("number") << 30,
        None => match storage.strip_suffix("Mi") {
            Some(n) => n.parse::<u64>().expect("number") << 20,
            None => panic!("unexpected storage size {storage}"),
        },
    };
    let (_, disk) = rule_exprs(rule)
        .into_iter()
        .find(|(n, _)| n == "KvsetDiskNearlyFull")
        .expect("disk alert");
    let threshold: u64 = disk
        .rsplit('>')
        .next()
        .expect("a > threshold")
        .trim()
        .parse()
        .expect("a numeric threshold");
    assert_eq!(
        threshold,
        bytes * 8 / 10,
        "KvsetDiskNearlyFull must fire at 80 % of the {storage} volume"
    );
}
