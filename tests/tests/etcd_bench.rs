//! `kvset-bench --target etcd` runs unchanged against kvset: the benchmark's etcd client (its
//! own small etcd v3 client, the code path it measures etcd with) finds kvset's leader through
//! etcd's Maintenance.Status and drives every workload through etcd's KV API with no errors.
//! The numbers of such a run are in docs/BENCHMARKS.md; this only checks that it works.

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
