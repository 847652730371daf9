#!/usr/bin/env bash
# One command up: kvset on a local kind cluster, three members Ready.
#
#   create the kind cluster if it is absent (k8s/kind-cluster.yaml: one control plane, three
#   workers) -> build kvset:dev (docker/build-image.sh) -> load it into the cluster's nodes
#   (kind load docker-image; with Docker's containerd image store, docker save + kind load
#   image-archive) -> kubectl apply -k k8s/overlays/kind -> wait until kv-0, kv-1, kv-2 are Ready
#   -> print how to reach the cluster.
#
# Usage: scripts/kind-up.sh [--name NAME] [--namespace NS] [--single-node] [--no-build]
#   --name NAME      kind cluster name (default: $KIND_CLUSTER or kvset)
#   --namespace NS   namespace to deploy into (default: default)
#   --single-node    create the cluster with kind's default single node instead of
#                    k8s/kind-cluster.yaml (less memory; all members on one node)
#   --no-build       load the existing kvset:dev image instead of building it
# Environment: KIND_NODE_IMAGE (node image for a new cluster), KVSET_IMAGE_BUILD (online |
# offline, passed to docker/build-image.sh), KVSET_READY_TIMEOUT (seconds, default 300).
#
# Running it again is safe: an existing cluster is reused, the image rebuilt and reloaded, the
# manifests re-applied. scripts/kind-down.sh takes it all down.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/k8s.sh
source "$repo/scripts/lib/k8s.sh"

cluster=${KIND_CLUSTER:-kvset}
namespace=default
single_node=0
build=1
image=kvset:dev
timeout=${KVSET_READY_TIMEOUT:-300}
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) [[ $# -ge 2 ]] || k8s_die "--name needs a value"; cluster=$2; shift ;;
    --namespace) [[ $# -ge 2 ]] || k8s_die "--namespace needs a value"; namespace=$2; shift ;;
    --single-node) single_node=1 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) k8s_die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
context=kind-$cluster

k8s_need kind "Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
k8s_need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
k8s_need docker "Install Docker Engine: https://docs.docker.com/engine/install/"
docker info >/dev/null 2>&1 || k8s_die "cannot reach the Docker daemon (is it running?)"

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  k8s_log "reusing the kind cluster $cluster"
else
  create=(kind create cluster --name "$cluster" --wait 180s)
  [[ $single_node == 1 ]] || create+=(--config "$repo/k8s/kind-cluster.yaml")
  [[ -z ${KIND_NODE_IMAGE:-} ]] || create+=(--image "$KIND_NODE_IMAGE")
  k8s_log "creating the kind cluster $cluster"
  "${create[@]}"
fi

if [[ $build == 1 ]]; then
  "$repo/docker/build-image.sh" --tag "$image"
else
  docker image inspect "$image" >/dev/null 2>&1 || k8s_die "--no-build: there is no image $image; build it with docker/build-image.sh"
fi
k8s_log "loading $image into the kind cluster $cluster"
k8s_kind_load "$image" "$cluster"

k8s_deploy "$context" "$namespace" "$repo/k8s/overlays/kind"
k8s_log "waiting for kv-0, kv-1, kv-2 to be Ready (up to ${timeout}s)"
k8s_wait_ready "$context" "$namespace" "$timeout"
k8s_print_access "$context" "$namespace" "scripts/kind-down.sh --name $cluster"
