//! A second etcd client library against kvset: python-etcd3 (PyPI `etcd3`), which kvset did not
//! write, drives the core operations (keys, prefixes, transactions, a watch from a revision,
//! leases with refresh and expiry, its lock recipe, members, status) through kvset's etcd API.
//! The script is `tests/etcd-clients/python_etcd3.py`; its interpreter is the virtual
//! environment `.ci/run` prepares (`KVSET_ETCD3_PYTHON`, default
//! `~/.cache/kvset/etcd3-venv/bin/python`).

use std::process::Command;
use std::time::Duration;

use kvset_tests::testkit::{ProcessCluster, FAST_TIMING};
use kvset_tests::tooling::{repo_root, require_tool};

fn python() -> String {
    std::env::var("KVSET_ETCD3_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/kvset/etcd3-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3_works_against_kvset() {
    let python = python();
    if !require_tool(
        &python,
        &["-c", "import etcd3"],
        "python3 -m venv ~/.cache/kvset/etcd3-venv && ~/.cache/kvset/etcd3-venv/bin/pip install \
         etcd3==0.12.0 protobuf==3.20.3 grpcio",
    ) {
        return;
    }
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    c.wait_leader(Duration::from_secs(10)).await;
    let script = repo_root().join("tests/etcd-clients/python_etcd3.py");
    let out = Command::new("timeout")
        .arg("120")
        .arg(&python)
        .arg(&script)
        .args(c.endpoints())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python-etcd3 against kvset failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
