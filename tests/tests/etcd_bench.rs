//! `kvset-bench --target etcd` runs unchanged against kvset: the benchmark's etcd client (its
//! own small etcd v3 client, the code path it measures etcd with) finds kvset's leader through
//! etcd's Maintenance.Status and drives every workload through etcd's KV API with no errors.
//! The numbers of such a run are in docs/BENCHMARKS.md; this only checks that it works. The
//! stream workloads (`watch`, `lease-keepalive`) run through both clients against kvset too.

use std::process::Command;

use kvset_tests::testkit::{workspace_binary, ProcessCluster, FAST_TIMING};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmarks_etcd_client_drives_kvset() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let bench = workspace_binary("kvset-bench", "KVSET_BENCH_BIN");
    for workload in ["put", "get", "get-stale", "cas", "mixed"] {
        let out = Command::new(&bench)
            .args(["--target", "etcd", "--endpoints", &c.endpoints().join(",")])
            .args(["--workload", workload, "--concurrency", "4"])
            .args(["--duration", "1s", "--warmup", "200ms", "--output", "json"])
            .output()
            .expect("run kvset-bench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{workload}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{workload}: not JSON ({e}): {stdout}"));
        assert_eq!(report["errors"], 0, "{workload}: {report}");
        assert!(
            report["ops"].as_u64().unwrap_or(0) > 0,
            "{workload}: {report}"
        );
    }
}

/// The stream workloads against a real cluster, through both of the benchmark's clients (kvset's
/// own API and etcd's): every watcher receives every put (a lost event fails the run, exit 1),
/// the watchers' events are at least the timed puts times the watchers, and every lease the
/// keep-alive run granted is revoked at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_workloads_lose_no_event_and_leave_no_lease() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let bench = workspace_binary("kvset-bench", "KVSET_BENCH_BIN");
    for target in ["kvset", "etcd"] {
        for (workload, shape) in [
            ("watch", ["--watchers", "2", "--concurrency", "1"]),
            ("lease-keepalive", ["--leases", "200", "--concurrency", "4"]),
        ] {
            let out = Command::new(&bench)
                .args(["--target", target, "--endpoints", &c.endpoints().join(",")])
                .args(["--workload", workload])
                .args(shape)
                .args(["--duration", "2s", "--warmup", "200ms", "--output", "json"])
                .output()
                .expect("run kvset-bench");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let what = format!("{target} {workload}");
            assert!(
                out.status.success(),
                "{what}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_str(stdout.trim())
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {stdout}"));
            assert_eq!(report["errors"], 0, "{what}: {report}");
            let ops = report["ops"].as_u64().unwrap_or(0);
            assert!(ops > 0, "{what}: {report}");
            if workload == "watch" {
                assert_eq!(report["watchers"], 2, "{what}: {report}");
                assert_eq!(report["lost_events"], 0, "{what}: {report}");
                let events = report["events"].as_u64().unwrap_or(0);
                assert!(events >= 2 * ops, "{what}: {report}");
                assert!(
                    report["event_latency_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0,
                    "{what}: {report}"
                );
            } else {
                assert_eq!(report["leases"], 200, "{what}: {report}");
                assert_eq!(report["leases_revoked"], 200, "{what}: {report}");
            }
        }
    }
}
