//! The one-command local-cluster scripts (`scripts/kind-up.sh`, `kind-down.sh`,
//! `minikube-up.sh`, `minikube-down.sh`, and the shared `scripts/lib/k8s.sh`), tested without a
//! cluster.
//!
//! kind and minikube need nested containers or a VM, which CI does not have, so what is tested
//! here is the scripts' logic: fake `kind`, `minikube`, `kubectl` and `docker` executables first
//! on PATH record every call (tool, arguments, and the `DOCKER_HOST` it ran under) and answer
//! the way the real tools would in the situation a test sets up (cluster absent or present,
//! `kind load docker-image` failing as it does with Docker's containerd image store, the
//! StatefulSet already deployed…). The tests then check the order of the steps, the arguments,
//! the fallback path, and what the user is told. The real tools' side — that these are the right
//! calls — is checked by `scripts/k8s-kind-e2e.sh` on a machine with kind. All scripts also pass
//! `bash -n` and shellcheck.

use std::path::{Path, PathBuf};
use std::process::Command;

use kvset_tests::tooling::{repo_root, shellcheck};

const SCRIPTS: &[&str] = &[
    "scripts/kind-up.sh",
    "scripts/kind-down.sh",
    "scripts/minikube-up.sh",
    "scripts/minikube-down.sh",
    "scripts/k8s-kind-e2e.sh",
    "scripts/lib/k8s.sh",
];

/// One fake for all four tools: it logs `tool args…` (plus `DOCKER_HOST=…` when set) to
/// $FAKE_LOG and behaves as the FAKE_* variables say.
const FAKE: &str = r#"#!/usr/bin/env bash
set -u
tool=$(basename "$0")
line="$tool $*"
[[ -z ${DOCKER_HOST:-} ]] || line="$line [DOCKER_HOST=$DOCKER_HOST]"
echo "$line" >>"$FAKE_LOG"
state=${FAKE_LOG%/*}
replicas() { cat "$state/replicas" 2>/dev/null || echo 3; }
# kvsetctl as a three-member cluster led by kv-0 would answer, with keys kept in $state.
fake_kvsetctl() {
  local words=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --endpoints|-o|--consistency|--timeout) shift ;;
      *) words+=("$1") ;;
    esac
    shift
  done
  case ${words[0]:-} in
    put) echo "${words[2]}" >"$state/key-${words[1]//\//_}"; echo OK ;;
    get) cat "$state/key-${words[1]//\//_}" ;;
    status) echo '{"leader": "kv-0", "members": []}' ;;
    members)
      if [[ ${words[1]} == list ]]; then
        printf '{"members": ['
        for ((i = 0; i < $(replicas); i++)); do printf '{"voter": true},'; done
        echo ']}'
      else
        echo OK
      fi ;;
    *) echo "fake kvsetctl: unexpected ${words[*]}" >&2; exit 3 ;;
  esac
}
# The ordinal N of the last argument named kv-N or data-kv-N.
ordinal() { local last=${*: -1}; echo "${last##*kv-}"; }
if [[ $tool == kvsetctl ]]; then fake_kvsetctl "$@"; exit; fi
if [[ $tool == kubectl && " $* " == *" exec "* ]]; then
  while [[ $# -gt 0 && $1 != kvsetctl ]]; do shift; done
  shift
  fake_kvsetctl "$@"
  exit
fi
case "$tool $*" in
  "docker info"*) exit 0 ;;
  "docker buildx version"*) [[ ${FAKE_DOCKER_BUILDX:-0} == 1 ]]; exit ;;
  "docker image inspect --format {{.Id}}"*) echo sha256:fakeimage; exit 0 ;;
  "docker image inspect --format {{.Size}}"*) echo 30000000; exit 0 ;;
  "docker image inspect"*) [[ ${FAKE_DOCKER_NO_IMAGE:-0} != 1 ]]; exit ;;
  "docker pull"*) exit 1 ;;
  "docker save --output "*)
    [[ ${FAKE_DOCKER_SAVE_FAILS:-0} != 1 ]] || exit 1
    echo "fake image archive of $4" >"$3"; exit 0 ;;
  "docker "*) exit 0 ;;
  "kind get clusters"*) for c in ${FAKE_KIND_CLUSTERS:-}; do echo "$c"; done; exit 0 ;;
  "kind load docker-image"*)
    if [[ ${FAKE_KIND_LOAD_FAILS:-0} == 1 ]]; then
      echo 'ERROR: failed to load image: command "docker exec --privileged -i kvset-control-plane ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -" failed with error: exit status 1' >&2
      echo 'ctr: content digest sha256:0123: not found' >&2
      exit 1
    fi
    exit 0 ;;
  "kind load image-archive"*)
    [[ -s $3 ]] || { echo "ERROR: archive $3 missing" >&2; exit 1; }
    echo "archive $3 present" >>"$FAKE_LOG"
    [[ ${FAKE_KIND_ARCHIVE_FAILS:-0} != 1 ]]; exit ;;
  "kind "*) exit 0 ;;
  "kubectl "*"create namespace "*) printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n'; exit 0 ;;
  "kubectl "*"apply -f -"*) cat >/dev/null; exit 0 ;;
  "kubectl "*"get statefulset kv"*) [[ ${FAKE_STS_EXISTS:-0} == 1 ]]; exit ;;
  "kubectl "*"rollout status"*) [[ ${FAKE_ROLLOUT_FAILS:-0} != 1 ]]; exit ;;
  "kubectl "*"port-forward "*) exec sleep 10 ;;
  "kubectl "*"scale statefulset kv --replicas="*) last=${*: -1}; echo "${last#--replicas=}" >"$state/replicas"; exit 0 ;;
  "kubectl "*"delete pod kv-"*) echo x >>"$state/restarts-$(ordinal "${@:1:$#-1}")"; exit 0 ;;
  "kubectl "*"get pod kv-"*"creationTimestamp"*) echo "2026-01-01T00:00:0$(ordinal "${@:1:$#-2}")Z"; exit 0 ;;
  "kubectl "*"get pod kv-"*"uid"*)
    n=$(ordinal "${@:1:$#-2}"); echo "uid-$n-$(wc -l <"$state/restarts-$n" 2>/dev/null || echo 0)"; exit 0 ;;
  "kubectl "*"get pvc data-kv-"*"volumeName"*) echo "pv-$(ordinal "${@:1:$#-2}")"; exit 0 ;;
  "kubectl "*"get pod kv-"*|"kubectl "*"get pvc data-kv-"*) (($(ordinal "$@") < $(replicas))); exit ;;
  "kubectl "*"get pdb kv"*) echo 1; exit 0 ;;
  "kubectl "*) exit 0 ;;
  "minikube "*" status"*) [[ ${FAKE_MINIKUBE_RUNNING:-0} == 1 ]] || exit 7; exit 0 ;;
  "minikube "*" docker-env"*) echo 'export DOCKER_HOST="tcp://192.168.49.2:2376"'; exit 0 ;;
  "minikube "*" image load "*)
    image=${*: -1}
    if [[ $image == *.tar ]]; then
      [[ -s $image ]] || exit 1
      echo "archive $image present" >>"$FAKE_LOG"; exit 0
    fi
    [[ ${FAKE_MINIKUBE_LOAD_FAILS:-0} != 1 ]]; exit ;;
  "minikube "*) exit 0 ;;
esac
echo "fake: unexpected call: $tool $*" >&2
exit 3
"#;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    /// One line per call, in order: `tool args…`.
    calls: Vec<String>,
}

impl Run {
    fn explain(&self) -> String {
        format!(
            "calls:\n  {}\nstdout:\n{}\nstderr:\n{}",
            self.calls.join("\n  "),
            self.stdout,
            self.stderr
        )
    }

    /// Index of the first call at or after `from` that contains `needle`.
    fn find_from(&self, from: usize, needle: &str) -> Option<usize> {
        self.calls[from..]
            .iter()
            .position(|c| c.contains(needle))
            .map(|i| i + from)
    }

    /// Every needle occurs in a call, in this order (two needles may match the same call).
    fn assert_in_order(&self, needles: &[&str]) {
        let mut at = 0;
        for needle in needles {
            match self.find_from(at, needle) {
                Some(i) => at = i,
                None => panic!(
                    "no call containing `{needle}` after call #{at}\n{}",
                    self.explain()
                ),
            }
        }
    }

    fn assert_no_call(&self, needle: &str) {
        assert!(
            self.find_from(0, needle).is_none(),
            "unexpected call containing `{needle}`\n{}",
            self.explain()
        );
    }
}

/// Runs `script args…` from the repository with the fake tools first on PATH and `env` set.
fn run(script: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let fake = bin.join("fake");
    std::fs::write(&fake, FAKE).expect("write fake");
    make_executable(&fake);
    for tool in ["kind", "kubectl", "docker", "minikube", "kvsetctl"] {
        std::os::unix::fs::symlink(&fake, bin.join(tool)).expect("symlink fake");
    }
    let log = dir.path().join("calls.log");
    std::fs::write(&log, "").expect("log");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("tmp dir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(repo_root().join(script));
    cmd.args(args)
        .current_dir(repo_root())
        .env("PATH", path)
        .env("FAKE_LOG", &log)
        // The e2e's port-forward step talks through a host kvsetctl: the fake one.
        .env("KVSETCTL", bin.join("kvsetctl"))
        .env("TMPDIR", &tmp)
        // build-image.sh takes the Dockerfile path: no cargo on the host.
        .env("KVSET_IMAGE_BUILD", "online")
        .env_remove("DOCKER_HOST")
        .env_remove("KIND_CLUSTER")
        .env_remove("MINIKUBE_PROFILE")
        .env_remove("KIND_NODE_IMAGE")
        .env_remove("MINIKUBE_START_ARGS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run script");
    let calls = std::fs::read_to_string(&log)
        .expect("read log")
        .lines()
        .map(str::to_string)
        .collect();
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .expect("tmp")
        .map(|e| e.expect("entry").path())
        .collect();
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        calls,
    };
    assert!(
        leftovers.is_empty(),
        "{script} left temporary files behind: {leftovers:?}\n{}",
        run.explain()
    );
    run
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path).expect("metadata").permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(path, perms).expect("chmod");
}

fn repo(path: &str) -> String {
    repo_root().join(path).display().to_string()
}

/// What every up script must end with: how to reach the cluster and a `kvsetctl status` to try.
fn assert_prints_access(run: &Run, context: &str) {
    assert_prints_access_in(run, context, "default");
}

fn assert_prints_access_in(run: &Run, context: &str, namespace: &str) {
    for want in [
        format!("kubectl --context {context} -n {namespace} port-forward svc/kv-client 7379"),
        "kvsetctl --endpoints 127.0.0.1:7379 status".to_string(),
    ] {
        assert!(
            run.stdout.contains(&want),
            "output lacks `{want}`\n{}",
            run.explain()
        );
    }
}

#[test]
fn kind_up_creates_builds_loads_applies_and_waits() {
    let run = run("scripts/kind-up.sh", &[], &[]);
    assert!(run.ok, "kind-up.sh failed\n{}", run.explain());
    let config = format!("--config {}", repo("k8s/kind-cluster.yaml"));
    let dockerfile = format!("-f {}", repo("docker/Dockerfile"));
    let overlay = format!("apply -k {}", repo("k8s/overlays/kind"));
    run.assert_in_order(&[
        "kind get clusters",
        "kind create cluster --name kvset",
        &config,
        "docker build",
        &dockerfile,
        "docker run --rm --network none kvset:dev --version",
        "kind load docker-image kvset:dev --name kvset",
        "kubectl --context kind-kvset create namespace default",
        &overlay,
        "kubectl --context kind-kvset --namespace default rollout status statefulset/kv",
        "wait --for=condition=Ready pod/kv-0 pod/kv-1 pod/kv-2",
    ]);
    // The image loaded fine: no fallback, and a fresh StatefulSet needs no restart.
    run.assert_no_call("image-archive");
    run.assert_no_call("docker save");
    run.assert_no_call("rollout restart");
    assert_prints_access(&run, "kind-kvset");
}

#[test]
fn kind_up_falls_back_to_an_image_archive_and_reuses_the_cluster() {
    let run = run(
        "scripts/kind-up.sh",
        &["--name", "dev", "--no-build"],
        &[
            ("FAKE_KIND_CLUSTERS", "other dev"),
            ("FAKE_KIND_LOAD_FAILS", "1"),
            ("FAKE_STS_EXISTS", "1"),
        ],
    );
    assert!(run.ok, "kind-up.sh failed\n{}", run.explain());
    run.assert_no_call("kind create cluster");
    run.assert_no_call("docker build");
    run.assert_in_order(&[
        "docker image inspect kvset:dev",
        "kind load docker-image kvset:dev --name dev",
        "docker save --output ",
        "kind load image-archive ",
        "archive ",
        "apply -k",
        // The StatefulSet existed: its pods restart onto the image just loaded.
        "kubectl --context kind-dev --namespace default rollout restart statefulset/kv",
        "rollout status statefulset/kv",
        "wait --for=condition=Ready",
    ]);
    // The archive `kind load image-archive` got is the one `docker save` wrote.
    let save = &run.calls[run.find_from(0, "docker save").expect("save")];
    let archive = save.split_whitespace().nth(3).expect("archive path");
    assert!(
        run.calls
            .iter()
            .any(|c| c.starts_with("kind load image-archive")
                && c.contains(archive)
                && c.ends_with("--name dev")),
        "image-archive loads {archive}\n{}",
        run.explain()
    );
    assert!(run.stderr.contains("falling back to docker save"));
    assert_prints_access(&run, "kind-dev");
}

#[test]
fn kind_up_reports_a_load_that_fails_both_ways() {
    let run = run(
        "scripts/kind-up.sh",
        &["--single-node"],
        &[
            ("FAKE_KIND_LOAD_FAILS", "1"),
            ("FAKE_KIND_ARCHIVE_FAILS", "1"),
        ],
    );
    assert!(!run.ok, "must fail\n{}", run.explain());
    assert!(
        run.stderr
            .contains("could not load kvset:dev into kind cluster kvset"),
        "{}",
        run.explain()
    );
    // --single-node: kind's default one-node cluster, no config file.
    run.assert_no_call("--config");
    run.assert_no_call("apply -k");
}

#[test]
fn kind_up_stops_when_the_pods_do_not_become_ready() {
    let run = run(
        "scripts/kind-up.sh",
        &[],
        &[("KVSET_READY_TIMEOUT", "7"), ("FAKE_ROLLOUT_FAILS", "1")],
    );
    assert!(!run.ok, "must fail\n{}", run.explain());
    run.assert_in_order(&["apply -k", "rollout status statefulset/kv --timeout=7s"]);
    assert!(
        run.stderr.contains("did not roll out within 7s"),
        "{}",
        run.explain()
    );
    assert!(!run.stdout.contains("kvset is up"));
}

#[test]
fn kind_down_deletes_the_cluster_or_only_kvset() {
    let run1 = run(
        "scripts/kind-down.sh",
        &[],
        &[("FAKE_KIND_CLUSTERS", "kvset")],
    );
    assert!(run1.ok, "{}", run1.explain());
    run1.assert_in_order(&["kind get clusters", "kind delete cluster --name kvset"]);

    let absent = run("scripts/kind-down.sh", &[], &[]);
    assert!(absent.ok, "{}", absent.explain());
    absent.assert_no_call("kind delete");

    let keep = run(
        "scripts/kind-down.sh",
        &["--keep-cluster", "--namespace", "db"],
        &[("FAKE_KIND_CLUSTERS", "kvset")],
    );
    assert!(keep.ok, "{}", keep.explain());
    keep.assert_no_call("kind delete");
    let overlay = format!("delete -k {}", repo("k8s/overlays/kind"));
    keep.assert_in_order(&[
        &overlay,
        "kubectl --context kind-kvset --namespace db delete pvc -l app.kubernetes.io/instance=kv",
    ]);
}

#[test]
fn minikube_up_starts_builds_loads_applies_and_waits() {
    let run = run("scripts/minikube-up.sh", &[], &[]);
    assert!(run.ok, "minikube-up.sh failed\n{}", run.explain());
    let overlay = format!("apply -k {}", repo("k8s/overlays/minikube"));
    run.assert_in_order(&[
        "minikube --profile kvset status",
        "minikube --profile kvset start",
        "docker build",
        "minikube --profile kvset image load kvset:dev",
        &overlay,
        "kubectl --context kvset --namespace default rollout status statefulset/kv",
        "wait --for=condition=Ready pod/kv-0 pod/kv-1 pod/kv-2",
    ]);
    run.assert_no_call("docker save");
    assert_prints_access(&run, "kvset");
}

#[test]
fn minikube_up_can_build_inside_minikubes_docker() {
    let run = run(
        "scripts/minikube-up.sh",
        &["--docker-env", "--profile", "mk"],
        &[("FAKE_MINIKUBE_RUNNING", "1")],
    );
    assert!(run.ok, "minikube-up.sh failed\n{}", run.explain());
    run.assert_no_call("minikube --profile mk start");
    run.assert_no_call("image load");
    run.assert_in_order(&[
        "minikube --profile mk docker-env",
        // The build talks to minikube's Docker.
        "docker build",
        "[DOCKER_HOST=tcp://192.168.49.2:2376]",
        "apply -k",
        "wait --for=condition=Ready",
    ]);
    // Only the build ran against minikube's Docker; kubectl did not inherit it.
    assert!(
        run.calls
            .iter()
            .filter(|c| c.contains("DOCKER_HOST"))
            .all(|c| c.starts_with("docker ")),
        "{}",
        run.explain()
    );
    assert_prints_access(&run, "mk");
}

#[test]
fn minikube_up_falls_back_to_an_image_archive() {
    let run = run(
        "scripts/minikube-up.sh",
        &[],
        &[
            ("FAKE_MINIKUBE_RUNNING", "1"),
            ("FAKE_MINIKUBE_LOAD_FAILS", "1"),
        ],
    );
    assert!(run.ok, "minikube-up.sh failed\n{}", run.explain());
    run.assert_in_order(&[
        "minikube --profile kvset image load kvset:dev",
        "docker save --output ",
        "minikube --profile kvset image load ",
        "archive ",
        "apply -k",
    ]);
}

#[test]
fn minikube_down_deletes_the_profile_or_only_kvset() {
    let all = run("scripts/minikube-down.sh", &[], &[]);
    assert!(all.ok, "{}", all.explain());
    all.assert_in_order(&["minikube --profile kvset delete"]);

    let keep = run(
        "scripts/minikube-down.sh",
        &["--keep-cluster"],
        &[("FAKE_MINIKUBE_RUNNING", "1")],
    );
    assert!(keep.ok, "{}", keep.explain());
    keep.assert_no_call("delete --profile");
    keep.assert_no_call("minikube --profile kvset delete");
    keep.assert_in_order(&[
        "kubectl --context kvset --namespace default delete -k",
        "delete pvc -l app.kubernetes.io/instance=kv",
    ]);
}

#[test]
fn kind_e2e_with_keep_leaves_cluster_and_deployment_up() {
    let run = run("scripts/k8s-kind-e2e.sh", &["--keep"], &[]);
    assert!(run.ok, "k8s-kind-e2e.sh --keep failed\n{}", run.explain());
    run.assert_in_order(&[
        "kind create cluster --name kvset-e2e",
        "kind load docker-image kvset:dev --name kvset-e2e",
        "apply -k",
        "scale statefulset kv --replicas=5",
        "rollout restart statefulset/kv",
    ]);
    // --keep: nothing of the deployment or the cluster is deleted at the end.
    run.assert_no_call("delete -k");
    run.assert_no_call("delete namespace");
    run.assert_no_call("kind delete cluster");
    assert!(
        run.stdout.contains("k8s-kind-e2e: PASSED"),
        "{}",
        run.explain()
    );
    assert_prints_access_in(&run, "kind-kvset-e2e", "kvset-e2e");
}

#[test]
fn kind_e2e_without_keep_tears_down_and_uses_the_load_fallback() {
    let run = run(
        "scripts/k8s-kind-e2e.sh",
        &[],
        &[("FAKE_KIND_LOAD_FAILS", "1")],
    );
    assert!(run.ok, "k8s-kind-e2e.sh failed\n{}", run.explain());
    run.assert_in_order(&[
        "kind load docker-image kvset:dev --name kvset-e2e",
        "docker save --output ",
        "kind load image-archive ",
        "apply -k",
        "rollout restart statefulset/kv",
        "--namespace kvset-e2e delete -k",
        "delete pvc -l app.kubernetes.io/instance=kv",
        "delete namespace kvset-e2e",
        "kind delete cluster --name kvset-e2e",
    ]);
    assert!(
        run.stdout.contains("k8s-kind-e2e: PASSED"),
        "{}",
        run.explain()
    );
    assert!(!run.stdout.contains("port-forward svc/kv-client 7379\n"));
}

#[test]
fn scripts_refuse_unknown_arguments_and_explain_themselves() {
    for script in &SCRIPTS[..5] {
        let bad = run(script, &["--bogus"], &[]);
        assert!(!bad.ok, "{script} --bogus must fail");
        assert!(
            bad.stderr.contains("unknown argument --bogus"),
            "{script}: {}",
            bad.explain()
        );
        assert!(bad.calls.is_empty(), "{script} ran tools on bad usage");
        let help = run(script, &["--help"], &[]);
        assert!(help.ok && help.stdout.contains("Usage:"), "{script} --help");
    }
}

#[test]
fn scripts_pass_bash_and_shellcheck() {
    let root = repo_root();
    for script in SCRIPTS {
        let out = Command::new("bash")
            .arg("-n")
            .arg(root.join(script))
            .output()
            .expect("bash -n");
        assert!(
            out.status.success(),
            "bash -n {script}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    shellcheck(SCRIPTS);
}
