//! The chaos harness's `kubectl` backend, against a fake `kubectl` on `PATH`.
//!
//! No Kubernetes here: the "StatefulSet" is the local launcher (`kvset-server local`), which
//! restarts a killed replica like the StatefulSet controller recreates a deleted pod, and the
//! fake `kubectl` (a shell script written by the test) records every call and maps it onto the
//! launcher's documented files:
//!
//! | kubectl call | what the fake does |
//! | --- | --- |
//! | `delete pod kv-N --grace-period=0 --force` | `kill -9 $(cat kv-N.pid)` |
//! | `delete pod kv-N` | `kill -TERM` (graceful) |
//! | `delete pvc data-kv-N` | marks kv-N's volume for deletion; the next pod delete then holds kv-N, kills it, deletes `kv-N/` and releases it |
//! | `get statefulset kv`, `wait --for=delete ...`, `get pod ...` | succeed |
//! | `logs kv-N` | prints the launcher's `logs/kv-N.log` |
//!
//! So the run is a real one (real members, real faults, the real checks) and the test asserts
//! both the verdict and the exact kubectl commands the backend issued, with the context and
//! namespace it was given, and that pause and partition are reported as unsupported.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use kvset_tests::chaos::backend::process::{
    pick_base_port, pick_bind_ip, ProcessBackend, ProcessConfig,
};
use kvset_tests::chaos::backend::Backend;
use kvset_tests::chaos::testing::run_harness;
use kvset_tests::testkit::server_binary;

const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
# Fake kubectl for tests/tests/chaos_kubectl.rs (see there).
data=__DATA__
printf '%s\n' "$*" >> __CALLS__
args=()
for a in "$@"; do
  case $a in --context=*|--namespace=*) ;; *) args+=("$a") ;; esac
done
set -- "${args[@]}"
pid_of() { cat "$data/$1.pid" 2>/dev/null; }
gone() { # gone PID: exited (no /proc entry, or a zombie waiting to be reaped)
  [[ ! -e /proc/$1/stat ]] || [[ $(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1) == Z ]]
}
case "$1 $2" in
  "get statefulset") echo "statefulset.apps/$3"; exit 0 ;;
  "get pod") exit 0 ;;
  "wait --for=delete") exit 0 ;;
  "delete pvc") touch "$data/$3.wipe"; exit 0 ;;
  "delete pod")
    shift 2
    force=0; pods=()
    for a in "$@"; do
      case $a in --force) force=1 ;; --*) ;; *) pods+=("$a") ;; esac
    done
    for p in "${pods[@]}"; do
      pid=$(pid_of "$p")
      if [[ -e $data/data-$p.wipe ]]; then
        touch "$data/$p.hold"
        [[ -z $pid ]] || kill -9 "$pid" 2>/dev/null
        for _ in $(seq 200); do [[ -z $pid ]] || gone "$pid" && break; sleep 0.05; done
        rm -rf "${data:?}/$p"
        rm -f "$data/data-$p.wipe" "$data/$p.hold"
      elif [[ $force == 1 ]]; then
        [[ -z $pid ]] || kill -9 "$pid" 2>/dev/null
      else
        [[ -z $pid ]] || kill -TERM "$pid" 2>/dev/null
      fi
    done
    exit 0 ;;
esac
case $1 in
  logs) [[ ${3:-} == --previous ]] && exit 1; cat "$data/logs/$2.log"; exit 0 ;;
esac
echo "fake kubectl: unexpected call: $*" >&2
exit 3
"#;

#[test]
fn the_kubectl_backend_issues_the_documented_commands() {
    let dir = tempfile::Builder::new()
        .prefix("kvset-chaos-kubectl-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("cluster");
    let calls = dir.path().join("kubectl-calls.log");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = FAKE_KUBECTL
        .replace("__DATA__", &format!("'{}'", data.display()))
        .replace("__CALLS__", &format!("'{}'", calls.display()));
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, script).unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The "StatefulSet": the local launcher with fast timing.
    let ip = pick_bind_ip(42);
    let cluster = ProcessBackend::new(ProcessConfig {
        server_bin: server_binary(),
        data_dir: data.clone(),
        launcher_log: dir.path().join("launcher.log"),
        replicas: 3,
        bind_ip: ip,
        base_port: pick_base_port(ip, 3, 42).expect("free ports"),
        server_args: vec![],
        small_disks_mb: None,
        power_disks: false,
        network: Default::default(),
    });
    cluster.start(&|_| Ok(())).expect("start the local cluster");
    let endpoints: Vec<String> = cluster.members().into_iter().map(|m| m.endpoint).collect();

    let out = dir.path().join("run");
    let args: Vec<String> = [
        "--backend",
        "kubectl",
        "--context",
        "kind-chaos",
        "--namespace",
        "chaos-test",
        "--endpoints",
        &endpoints.join(","),
        "--duration",
        "40s",
        "--seed",
        "9",
        "--faults",
        "all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let finished = run_harness(
        Path::new(env!("CARGO_BIN_EXE_kvset-chaos")),
        &args,
        &out,
        &[("PATH".into(), path)],
        Duration::from_secs(150),
    );
    let _ = cluster.teardown();
    let calls_text = std::fs::read_to_string(&calls).unwrap_or_default();
    if finished.code != Some(0) {
        let kept = dir.keep();
        panic!(
            "expected exit 0, files kept in {}:\n{}\n--- kubectl calls ---\n{calls_text}",
            kept.display(),
            finished.output()
        );
    }
    let report = finished.report();
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["backend"], "kubectl");

    // Every call carried the context and namespace, and nothing unexpected was called.
    let lines: Vec<&str> = calls_text.lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line.starts_with("--context=kind-chaos --namespace=chaos-test "),
            "{line}"
        );
    }
    let called = |wanted: &str| {
        lines
            .iter()
            .any(|l| l.trim_start_matches("--context=kind-chaos --namespace=chaos-test ") == wanted)
    };
    assert!(called("get statefulset kv -o name"), "{calls_text}");

    // Each injected fault maps onto its command.
    let faults = report["faults"].as_array().expect("faults");
    let mut kinds = Vec::new();
    for fault in faults {
        assert!(fault["error"].is_null(), "{fault}");
        let kind = fault["kind"].as_str().unwrap();
        kinds.push(kind.to_string());
        let targets: Vec<&str> = fault["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        match kind {
            "kill-follower" | "kill-leader" => assert!(
                called(&format!(
                    "delete pod {} --grace-period=0 --force --wait=false",
                    targets[0]
                )),
                "{kind} {targets:?}:\n{calls_text}"
            ),
            "kill-all" => assert!(
                called("delete pod kv-0 kv-1 kv-2 --grace-period=0 --force --wait=false"),
                "{calls_text}"
            ),
            "restart" => assert!(
                called(&format!("delete pod {} --wait=false", targets[0])),
                "{calls_text}"
            ),
            "wipe" => {
                let pvc = format!("data-{}", targets[0]);
                assert!(
                    called(&format!("delete pvc {pvc} --wait=false")),
                    "{calls_text}"
                );
                assert!(
                    called(&format!("wait --for=delete pvc/{pvc} --timeout=120s")),
                    "{calls_text}"
                );
            }
            other => panic!("the kubectl backend injected {other}"),
        }
    }
    kinds.sort();
    kinds.dedup();
    assert!(kinds.len() >= 4, "only {kinds:?} injected");

    // Pause and partition are reported as unsupported, with reasons.
    let unsupported: Vec<&str> = report["unsupported_faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["kind"].as_str())
        .collect();
    assert_eq!(unsupported, ["pause", "partition"]);
    assert!(finished
        .stdout
        .contains("Not injected on the kubectl backend: **pause**"));

    // Logs came through `kubectl logs`.
    for m in 0..3 {
        assert!(called(&format!("logs kv-{m}")), "{calls_text}");
        let log = std::fs::read_to_string(out.join(format!("logs/kv-{m}.log"))).unwrap();
        assert!(
            log.contains(&format!("kv-{m}")),
            "logs/kv-{m}.log: {log:.200}"
        );
    }
}
