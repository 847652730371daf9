#!/usr/bin/env bash
# One command up: kvset on a local minikube cluster, three members Ready.
#
#   start the minikube profile if it is not running -> build kvset:dev (docker/build-image.sh)
#   and `minikube image load` it (falling back to docker save + loading the archive), or, with
#   --docker-env, build it straight inside minikube's own Docker (no load needed; the docker
#   driver or another Docker-runtime profile) -> kubectl apply -k k8s/overlays/minikube -> wait
#   until kv-0, kv-1, kv-2 are Ready -> print how to reach the cluster.
#
# Usage: scripts/minikube-up.sh [--profile NAME] [--namespace NS] [--docker-env] [--no-build]
#   --profile NAME   minikube profile, also the kubectl context (default: $MINIKUBE_PROFILE or kvset)
#   --namespace NS   namespace to deploy into (default: default)
#   --docker-env     build inside minikube's Docker (eval "$(minikube docker-env)") instead of
#                    building here and loading the image
#   --no-build       load the existing kvset:dev image instead of building it
# Environment: MINIKUBE_START_ARGS (extra `minikube start` arguments, split on spaces, e.g.
# "--driver=docker --cpus=4"), KVSET_IMAGE_BUILD (online | offline, passed to
# docker/build-image.sh), KVSET_READY_TIMEOUT (seconds, default 300).
#
# Running it again is safe. scripts/minikube-down.sh takes it down.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/k8s.sh
source "$repo/scripts/lib/k8s.sh"

profile=${MINIKUBE_PROFILE:-kvset}
namespace=default
docker_env=0
build=1
image=kvset:dev
timeout=${KVSET_READY_TIMEOUT:-300}
while [[ $# -gt 0 ]]; do
  case $1 in
    --profile) [[ $# -ge 2 ]] || k8s_die "--profile needs a value"; profile=$2; shift ;;
    --namespace) [[ $# -ge 2 ]] || k8s_die "--namespace needs a value"; namespace=$2; shift ;;
    --docker-env) docker_env=1 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) k8s_die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[[ $docker_env == 0 || $build == 1 ]] || k8s_die "--docker-env builds the image; it cannot be combined with --no-build"

k8s_need minikube "Install minikube: https://minikube.sigs.k8s.io/docs/start/"
k8s_need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
k8s_need docker "Install Docker Engine: https://docs.docker.com/engine/install/"

if minikube --profile "$profile" status >/dev/null 2>&1; then
  k8s_log "reusing the running minikube profile $profile"
else
  k8s_log "starting minikube profile $profile"
  # shellcheck disable=SC2086 # MINIKUBE_START_ARGS is a list of arguments
  minikube --profile "$profile" start ${MINIKUBE_START_ARGS:-}
fi

if [[ $docker_env == 1 ]]; then
  k8s_log "building $image inside minikube's Docker"
  env_script=$(minikube --profile "$profile" docker-env --shell bash) \
    || k8s_die "minikube docker-env failed: --docker-env needs a profile with the Docker container runtime"
  (eval "$env_script" && "$repo/docker/build-image.sh" --tag "$image")
else
  if [[ $build == 1 ]]; then
    docker info >/dev/null 2>&1 || k8s_die "cannot reach the Docker daemon (is it running?)"
    "$repo/docker/build-image.sh" --tag "$image"
  else
    docker image inspect "$image" >/dev/null 2>&1 || k8s_die "--no-build: there is no image $image; build it with docker/build-image.sh"
  fi
  k8s_log "loading $image into minikube profile $profile"
  k8s_minikube_load "$image" "$profile"
fi

k8s_deploy "$profile" "$namespace" "$repo/k8s/overlays/minikube"
k8s_log "waiting for kv-0, kv-1, kv-2 to be Ready (up to ${timeout}s)"
k8s_wait_ready "$profile" "$namespace" "$timeout"
k8s_print_access "$profile" "$namespace" "scripts/minikube-down.sh --profile $profile"
