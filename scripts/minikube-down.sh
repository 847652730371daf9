#!/usr/bin/env bash
# One command down: the counterpart of scripts/minikube-up.sh.
#
# Usage: scripts/minikube-down.sh [--profile NAME] [--namespace NS] [--keep-cluster]
#   --profile NAME    minikube profile (default: $MINIKUBE_PROFILE or kvset)
#   (default)         deletes the whole minikube profile, data included
#   --keep-cluster    deletes only kvset (the overlay's objects and the PVCs data-kv-N, which
#                     the StatefulSet keeps on purpose) and leaves minikube running
#   --namespace NS    with --keep-cluster: the namespace minikube-up.sh deployed into (default)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/k8s.sh
source "$repo/scripts/lib/k8s.sh"

profile=${MINIKUBE_PROFILE:-kvset}
namespace=default
keep_cluster=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --profile) [[ $# -ge 2 ]] || k8s_die "--profile needs a value"; profile=$2; shift ;;
    --namespace) [[ $# -ge 2 ]] || k8s_die "--namespace needs a value"; namespace=$2; shift ;;
    --keep-cluster) keep_cluster=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) k8s_die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

k8s_need minikube "Install minikube: https://minikube.sigs.k8s.io/docs/start/"
if [[ $keep_cluster == 1 ]]; then
  k8s_need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
  minikube --profile "$profile" status >/dev/null 2>&1 \
    || k8s_die "minikube profile $profile is not running; start it, or drop --keep-cluster to delete it"
  k8s_undeploy "$profile" "$namespace" "$repo/k8s/overlays/minikube"
else
  minikube --profile "$profile" delete
fi
k8s_log "done"
