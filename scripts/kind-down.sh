#!/usr/bin/env bash
# One command down: the counterpart of scripts/kind-up.sh.
#
# Usage: scripts/kind-down.sh [--name NAME] [--namespace NS] [--keep-cluster]
#   --name NAME       kind cluster name (default: $KIND_CLUSTER or kvset)
#   (default)         deletes the whole kind cluster, data included
#   --keep-cluster    deletes only kvset (the overlay's objects and the PVCs data-kv-N, which
#                     the StatefulSet keeps on purpose) and leaves the cluster running
#   --namespace NS    with --keep-cluster: the namespace kind-up.sh deployed into (default)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/k8s.sh
source "$repo/scripts/lib/k8s.sh"

cluster=${KIND_CLUSTER:-kvset}
namespace=default
keep_cluster=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) [[ $# -ge 2 ]] || k8s_die "--name needs a value"; cluster=$2; shift ;;
    --namespace) [[ $# -ge 2 ]] || k8s_die "--namespace needs a value"; namespace=$2; shift ;;
    --keep-cluster) keep_cluster=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) k8s_die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

k8s_need kind "Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  k8s_log "there is no kind cluster $cluster: nothing to do"
  exit 0
fi
if [[ $keep_cluster == 1 ]]; then
  k8s_need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
  k8s_undeploy "kind-$cluster" "$namespace" "$repo/k8s/overlays/kind"
else
  kind delete cluster --name "$cluster"
fi
k8s_log "done"
