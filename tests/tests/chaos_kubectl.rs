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
//! | `scale statefulset kv --replicas=N` | `kvset-server local scale N` (the launcher stops the replicas above N, highest first, or starts the missing ones in order) |
//! | `exec kv-N -- kvsetctl --endpoints 127.0.0.1:7379 ARGS` | `kvsetctl --endpoints <kv-N's endpoint> ARGS` |
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
use kvset_tests::testkit::{kvsetctl_binary, server_binary};

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
endpoints=(__ENDPOINTS__)
case "$1 $2" in
  "get statefulset") echo "statefulset.apps/$3"; exit 0 ;;
  "scale statefulset")
    # The launcher plays the controller: the desired size first, then the pods above it stop
    # (highest first) or the missing ones start (in order).
    exec __SERVER__ local scale "${4#--replicas=}" --data-dir "$data" --timeout-secs 120 ;;
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
  exec)
    # exec kv-N -- kvsetctl --endpoints 127.0.0.1:7379 ARGS: the pod's own endpoint instead.
    pod=$2; shift 3
    [[ $1 == kvsetctl && $2 == --endpoints ]] || { echo "fake kubectl: exec $*" >&2; exit 3; }
    shift 3
    exec __KVSETCTL__ --endpoints "${endpoints[${pod#kv-}]}" "$@" ;;
  logs) [[ ${3:-} == --previous ]] && exit 1; cat "$data/logs/$2.log"; exit 0 ;;
esac
echo "fake kubectl: unexpected call: $*" >&2
exit 3
"#;

/// The "StatefulSet" (the local launcher with fast timing, on `data`) and the fake `kubectl` in
/// `bin` that drives it, recording its calls in `calls`. Returns the launcher's backend (to tear
/// it down) and the members' endpoints.
fn fake_statefulset(
    dir: &Path,
    data: &Path,
    calls: &Path,
    bin: &Path,
    seed: u64,
) -> (ProcessBackend, Vec<String>) {
    std::fs::create_dir_all(bin).unwrap();
    let ip = pick_bind_ip(seed);
    let cluster = ProcessBackend::new(ProcessConfig {
        server_bin: server_binary(),
        data_dir: data.to_path_buf(),
        launcher_log: dir.join("launcher.log"),
        replicas: 3,
        bind_ip: ip,
        base_port: pick_base_port(ip, 3, seed).expect("free ports"),
        server_args: vec![],
        small_disks_mb: None,
        power_disks: false,
        restart_backoff_max: None,
        network: Default::default(),
    });
    cluster.start(&|_| Ok(())).expect("start the local cluster");
    let endpoints: Vec<String> = cluster.members().into_iter().map(|m| m.endpoint).collect();
    let script = FAKE_KUBECTL
        .replace("__DATA__", &format!("'{}'", data.display()))
        .replace("__CALLS__", &format!("'{}'", calls.display()))
        .replace("__SERVER__", &format!("'{}'", server_binary().display()))
        .replace(
            "__KVSETCTL__",
            &format!("'{}'", kvsetctl_binary().display()),
        )
        .replace("__ENDPOINTS__", &endpoints.join(" "));
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, script).unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    (cluster, endpoints)
}

#[test]
fn the_kubectl_backend_scales_the_statefulset() {
    let dir = tempfile::Builder::new()
        .prefix("kvset-chaos-kubectl-scale-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("cluster");
    let calls = dir.path().join("kubectl-calls.log");
    let bin = dir.path().join("bin");
    let (cluster, endpoints) = fake_statefulset(dir.path(), &data, &calls, &bin, 43);
    let out = dir.path().join("run");
    let args: Vec<String> = [
        "--backend",
        "kubectl",
        "--namespace",
        "chaos-test",
        "--endpoints",
        &endpoints.join(","),
        "--duration",
        "30s",
        "--seed",
        "20261206",
        "--faults",
        "scale",
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
        Duration::from_secs(180),
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
    let faults = report["faults"].as_array().expect("faults");
    assert!(!faults.is_empty(), "no scale injected");
    let called = |wanted: &str| {
        calls_text
            .lines()
            .any(|l| l.trim_start_matches("--namespace=chaos-test ") == wanted)
    };
    for fault in faults {
        assert_eq!(fault["kind"], "scale", "{fault}");
        assert!(fault["error"].is_null(), "{fault}");
        let down = 3 - fault["targets"].as_array().expect("targets").len();
        assert!(
            called(&format!("scale statefulset kv --replicas={down}")),
            "{fault}:\n{calls_text}"
        );
    }
    assert!(
        called("scale statefulset kv --replicas=3"),
        "never scaled back:\n{calls_text}"
    );
    // The membership was read inside a pod (kubectl exec), as it is in a real cluster.
    assert!(
        called(
            "exec kv-0 -- kvsetctl --endpoints 127.0.0.1:7379 --timeout 2s -o json members list"
        ),
        "{calls_text}"
    );
}

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
    let (cluster, endpoints) = fake_statefulset(dir.path(), &data, &calls, &bin, 42);

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
