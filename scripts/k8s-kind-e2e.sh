#!/usr/bin/env bash
# End-to-end check of k8s/ on a throwaway kind cluster: the README's kind walkthrough, asserted.
#
#   create a kind cluster (k8s/kind-cluster.yaml) -> build kvset:dev (docker/build-image.sh) ->
#   kind load -> kubectl apply -k k8s/overlays/kind -> ordered start -> put/get through
#   kubectl exec and through `kubectl port-forward svc/kv-client` -> delete kv-0 and see it come
#   back with the same volume, identity and data, and take the primary role back -> scale
#   3 -> 5 -> 3 (members remove first, then scale; the removed ordinals' PVCs are deleted) ->
#   rolling restart -> teardown.
#
# Usage: scripts/k8s-kind-e2e.sh [--keep]
#   --keep   leave the cluster and the kvset deployment (namespace kvset-e2e) running at the end,
#            and print how to reach it; without it, the deployment is torn down and the cluster
#            deleted (also on failure) unless the cluster existed before the script started
# Environment:
#   KIND_CLUSTER       cluster name (default kvset-e2e); an existing cluster of that name is reused
#   KIND_NODE_IMAGE    kind node image (default: kind's own default, Kubernetes >= 1.27 needed)
#   KVSET_IMAGE_BUILD  online | offline, passed to docker/build-image.sh
#   KVSETCTL           a host kvsetctl for the port-forward step (default: target/*/kvsetctl or PATH)
#
# Needs kind, kubectl and a running Docker Engine; the kind node image must be pullable.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/k8s.sh
source "$repo/scripts/lib/k8s.sh"
cluster=${KIND_CLUSTER:-kvset-e2e}
context=kind-$cluster
namespace=kvset-e2e
image=kvset:dev
keep=0
created_cluster=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "k8s-kind-e2e: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }
die() { echo "k8s-kind-e2e: FAILED: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found. $2"
}
need kind "Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
need docker "Install Docker Engine: https://docs.docker.com/engine/install/"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running?)"

k() { kubectl --context "$context" --namespace "$namespace" "$@"; }
ctl() { k exec "$1" -- kvsetctl --endpoints 127.0.0.1:7379 "${@:2}"; }
# kvsetctl -o json, without whitespace, for grep.
ctl_json() { ctl "$1" -o json "${@:2}" | tr -d ' \n'; }

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every 2 s.
wait_for() {
  local what=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for: $what"
    sleep 2
  done
  echo "ok: $what"
}

voters_are() { # voters_are N: the membership has exactly N voters
  [[ $(ctl_json kv-0 members list | grep -o '"voter":true' | wc -l) -eq $1 ]]
}
leader_is() { ctl_json kv-1 status | grep -q "\"leader\":\"$1\""; }
pvc_gone() { ! k get pvc "$1" >/dev/null 2>&1; }
pod_gone() { ! k get pod "$1" >/dev/null 2>&1; }
rollout() { k rollout status statefulset/kv --timeout=300s; }

port_forward_pid=
cleanup() {
  local rc=$?
  [[ -z $port_forward_pid ]] || kill "$port_forward_pid" 2>/dev/null || true
  if ((rc != 0)); then
    echo "--- diagnostics" >&2
    k get pods,pvc,svc,pdb -o wide >&2 || true
    for p in kv-0 kv-1 kv-2 kv-3 kv-4; do
      k logs "$p" --tail=30 >&2 2>/dev/null || true
    done
  fi
  if ((keep == 1 || created_cluster == 0)); then
    echo "cluster $cluster kept: kubectl --context $context -n $namespace get pods; delete it with: kind delete cluster --name $cluster"
  else
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

step "kind cluster $cluster"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  echo "reusing the existing cluster $cluster"
else
  create=(kind create cluster --name "$cluster" --config "$repo/k8s/kind-cluster.yaml" --wait 180s)
  [[ -z ${KIND_NODE_IMAGE:-} ]] || create+=(--image "$KIND_NODE_IMAGE")
  created_cluster=1
  "${create[@]}"
fi
kubectl --context "$context" version

step "image $image"
"$repo/docker/build-image.sh" --tag "$image"
k8s_kind_load "$image" "$cluster"

step "apply k8s/overlays/kind into namespace $namespace"
kubectl --context "$context" create namespace "$namespace" --dry-run=client -o yaml \
  | kubectl --context "$context" apply -f -
k apply -k "$repo/k8s/overlays/kind"
rollout
k get pods -o wide

step "ordered start: kv-0, then kv-1, then kv-2"
created() { k get pod "$1" -o jsonpath='{.metadata.creationTimestamp}'; }
[[ $(created kv-0) < $(created kv-1) || $(created kv-0) == "$(created kv-1)" ]] || die "kv-1 was created before kv-0"
[[ $(created kv-1) < $(created kv-2) || $(created kv-1) == "$(created kv-2)" ]] || die "kv-2 was created before kv-1"
wait_for "three voters" 60 voters_are 3
wait_for "kv-0 leads" 60 leader_is kv-0
ctl kv-0 status

step "writes and reads through the members"
ctl kv-0 put e2e/a one
ctl kv-2 put e2e/b two # kv-2 forwards the write to the leader
[[ $(ctl kv-1 get e2e/a) == one ]] || die "kv-1 does not read e2e/a"
[[ $(ctl kv-0 get e2e/b) == two ]] || die "kv-0 does not read e2e/b"

step "through the client Service: kubectl port-forward svc/kv-client"
kvsetctl=${KVSETCTL:-}
for candidate in "$repo/target/release/kvsetctl" "$repo/target/debug/kvsetctl" "$(command -v kvsetctl || true)"; do
  [[ -n $kvsetctl || -z $candidate || ! -x $candidate ]] || kvsetctl=$candidate
done
if [[ -n $kvsetctl ]]; then
  port=17379
  k port-forward svc/kv-client "$port:7379" >/dev/null 2>&1 &
  port_forward_pid=$!
  wait_for "port-forward on 127.0.0.1:$port" 30 "$kvsetctl" --endpoints "127.0.0.1:$port" --timeout 2s get e2e/a
  "$kvsetctl" --endpoints "127.0.0.1:$port" put e2e/c three
  [[ $("$kvsetctl" --endpoints "127.0.0.1:$port" get e2e/c) == three ]] || die "get through the Service"
  kill "$port_forward_pid"
  port_forward_pid=
else
  echo "no host kvsetctl (cargo build --release --bin kvsetctl, or set KVSETCTL): skipping this step"
  ctl kv-0 put e2e/c three
fi

step "delete kv-0: same name, same volume, same data, primary again"
pv_before=$(k get pvc data-kv-0 -o jsonpath='{.spec.volumeName}')
uid_before=$(k get pod kv-0 -o jsonpath='{.metadata.uid}')
k delete pod kv-0 --wait=true
new_kv0() {
  local uid
  uid=$(k get pod kv-0 -o jsonpath='{.metadata.uid}') && [[ -n $uid && $uid != "$uid_before" ]]
}
wait_for "a new kv-0 pod" 120 new_kv0
k wait --for=condition=Ready pod/kv-0 --timeout=180s
[[ $(k get pvc data-kv-0 -o jsonpath='{.spec.volumeName}') == "$pv_before" ]] || die "kv-0 came back with another volume"
[[ $(ctl kv-0 --consistency stale get e2e/b) == two ]] || die "kv-0 lost its data"
wait_for "kv-0 leads again (preferred primary)" 60 leader_is kv-0

step "PodDisruptionBudget allows one disruption"
one_disruption_allowed() { [[ $(k get pdb kv -o jsonpath='{.status.disruptionsAllowed}') == 1 ]]; }
wait_for "disruptionsAllowed=1" 60 one_disruption_allowed

step "scale 3 -> 5"
k scale statefulset kv --replicas=5
rollout
wait_for "five voters" 120 voters_are 5
[[ $(ctl kv-4 get e2e/a) == one ]] || die "kv-4 does not read e2e/a"

step "scale 5 -> 3: remove the member first, then scale"
for ordinal in 4 3; do
  ctl kv-0 members remove "$ordinal"
  k scale statefulset kv --replicas="$ordinal"
  wait_for "pod kv-$ordinal gone" 120 pod_gone "kv-$ordinal"
  wait_for "PVC data-kv-$ordinal deleted (whenScaled: Delete)" 120 pvc_gone "data-kv-$ordinal"
done
wait_for "three voters" 60 voters_are 3

step "scale 3 -> 2 -> 3: the removed ordinal comes back as a new member"
ctl kv-0 members remove 2
k scale statefulset kv --replicas=2
wait_for "PVC data-kv-2 deleted" 120 pvc_gone data-kv-2
k scale statefulset kv --replicas=3
rollout
wait_for "three voters again" 120 voters_are 3
[[ $(ctl kv-2 get e2e/c) == three ]] || die "the new kv-2 does not read e2e/c"

step "rolling restart (highest ordinal first, each Ready before the next)"
k rollout restart statefulset/kv
rollout
wait_for "kv-0 leads after the restart" 60 leader_is kv-0
[[ $(ctl kv-1 get e2e/a) == one ]] || die "data lost in the rolling restart"

if ((keep == 1)); then
  step "--keep: kvset stays deployed"
  k8s_print_access "$context" "$namespace" "kind delete cluster --name $cluster"
  echo "k8s-kind-e2e: PASSED"
  exit 0
fi

step "teardown"
k delete -k "$repo/k8s/overlays/kind" --wait=true
k delete pvc -l app.kubernetes.io/instance=kv --wait=true
kubectl --context "$context" delete namespace "$namespace" --wait=true
echo "k8s-kind-e2e: PASSED"
