# shellcheck shell=bash
# Shared steps of the local-cluster scripts (kind-up.sh, minikube-up.sh, k8s-kind-e2e.sh):
# loading the image into the cluster with today's Docker, waiting for the three members, and
# telling the user how to reach them. Sourced, not run; the caller sets `set -euo pipefail`.

# k8s_die MESSAGE: stop with a message naming the calling script.
k8s_die() { echo "$(basename "$0"): $*" >&2; exit 1; }
k8s_log() { echo "$(basename "$0"): $*" >&2; }

# k8s_need TOOL HINT: TOOL must be on PATH.
k8s_need() { command -v "$1" >/dev/null 2>&1 || k8s_die "$1 not found. $2"; }

# k8s_kind_load IMAGE CLUSTER: puts IMAGE into every node of the kind cluster.
# `kind load docker-image` asks Docker for the image with `docker save` of the image's ID; with
# Docker's containerd image store (the default on new installations of recent Docker Engine releases, and Docker Desktop's option) that export can
# miss layers of other platforms and the load fails ("content digest ... not found"). The
# fallback saves the image by name into an archive and loads that, which works with either
# store.
k8s_kind_load() {
  local image=$1 cluster=$2 dir rc=0
  if kind load docker-image "$image" --name "$cluster"; then
    return 0
  fi
  k8s_log "kind load docker-image failed (Docker's containerd image store?); falling back to docker save + kind load image-archive"
  dir=$(mktemp -d "${TMPDIR:-/tmp}/kvset-image.XXXXXX")
  docker save --output "$dir/image.tar" "$image" \
    && kind load image-archive "$dir/image.tar" --name "$cluster" || rc=$?
  rm -rf "$dir"
  ((rc == 0)) || k8s_die "could not load $image into kind cluster $cluster (both kind load docker-image and image-archive failed)"
}

# k8s_minikube_load IMAGE PROFILE: puts IMAGE into minikube's node, with the same fallback
# through an archive.
k8s_minikube_load() {
  local image=$1 profile=$2 dir rc=0
  if minikube --profile "$profile" image load "$image"; then
    return 0
  fi
  k8s_log "minikube image load $image failed; falling back to docker save + minikube image load ARCHIVE"
  dir=$(mktemp -d "${TMPDIR:-/tmp}/kvset-image.XXXXXX")
  docker save --output "$dir/image.tar" "$image" \
    && minikube --profile "$profile" image load "$dir/image.tar" || rc=$?
  rm -rf "$dir"
  ((rc == 0)) || k8s_die "could not load $image into minikube profile $profile"
}

# k8s_deploy CONTEXT NAMESPACE OVERLAY: creates the namespace if needed and applies the overlay.
# When the StatefulSet was already there, its pods are restarted (highest ordinal first, as a
# rolling update): a rebuilt image loaded under the same tag is not picked up by running pods.
k8s_deploy() {
  local context=$1 namespace=$2 overlay=$3 existed=0
  kubectl --context "$context" create namespace "$namespace" --dry-run=client -o yaml \
    | kubectl --context "$context" apply -f - >/dev/null
  if kubectl --context "$context" --namespace "$namespace" get statefulset kv >/dev/null 2>&1; then
    existed=1
  fi
  kubectl --context "$context" --namespace "$namespace" apply -k "$overlay"
  if ((existed == 1)); then
    k8s_log "the StatefulSet existed: restarting its pods so they run the image just loaded"
    kubectl --context "$context" --namespace "$namespace" rollout restart statefulset/kv
  fi
}

# k8s_undeploy CONTEXT NAMESPACE OVERLAY: deletes the overlay's objects and the members' PVCs
# (the StatefulSet keeps them on delete: whenDeleted: Retain), leaving the cluster.
k8s_undeploy() {
  local context=$1 namespace=$2 overlay=$3
  kubectl --context "$context" --namespace "$namespace" delete -k "$overlay" --ignore-not-found --wait=true
  kubectl --context "$context" --namespace "$namespace" delete pvc \
    -l app.kubernetes.io/instance=kv --ignore-not-found --wait=true
}

# k8s_wait_ready CONTEXT NAMESPACE SECONDS: the StatefulSet rolled out and kv-0..kv-2 Ready.
k8s_wait_ready() {
  local context=$1 namespace=$2 timeout=$3
  kubectl --context "$context" --namespace "$namespace" rollout status statefulset/kv \
    --timeout="${timeout}s" \
    || k8s_die "the StatefulSet did not roll out within ${timeout}s; see: kubectl --context $context -n $namespace get pods; kubectl --context $context -n $namespace describe pod kv-0"
  kubectl --context "$context" --namespace "$namespace" wait --for=condition=Ready \
    pod/kv-0 pod/kv-1 pod/kv-2 --timeout="${timeout}s" \
    || k8s_die "kv-0..kv-2 are not all Ready; see: kubectl --context $context -n $namespace get pods"
}

# k8s_print_access CONTEXT NAMESPACE DOWN: how to reach the cluster and how to take it down.
k8s_print_access() {
  local context=$1 namespace=$2 down=$3
  cat <<MSG

kvset is up: kv-0, kv-1, kv-2 Ready in namespace $namespace (context $context).

  From inside the cluster:
    kubectl --context $context -n $namespace exec kv-0 -- kvsetctl --endpoints 127.0.0.1:7379 status

  From this machine (leave the port-forward running, then in another terminal):
    kubectl --context $context -n $namespace port-forward svc/kv-client 7379
    kvsetctl --endpoints 127.0.0.1:7379 status
    kvsetctl --endpoints 127.0.0.1:7379 put greeting hello

  Metrics of one member:
    kubectl --context $context -n $namespace port-forward pod/kv-0 7579 & curl -s 127.0.0.1:7579/metrics

  Take it down: $down
MSG
}
