#!/usr/bin/env bash
# A three-member kvset cluster in Docker containers, laid out like the StatefulSet (see
# docker/compose.yaml): network `kvset`, containers kv-0..kv-2, volumes kvset-data-kv-N, client
# ports published on 127.0.0.1:17379..17381 only.
#
# Usage: docker/cluster.sh COMMAND
#   up [--build]        build the image if it is missing (or always with --build), then start
#                       kv-0, kv-1, kv-2 in ordinal order, each one Ready before the next
#                       (OrderedReady); prints the endpoints
#   down [--volumes]    stop and remove the containers and the network; --volumes also deletes
#                       the data volumes (otherwise the next `up` finds the same data)
#   status              the cluster as kvsetctl sees it from inside (members, roles, lag)
#   logs [kv-N]         follow the logs of one member or of all
#   ps                  the containers and their health
#
# Environment: KVSET_IMAGE (default kvset:dev), KVSET_READY_TIMEOUT (seconds per member, 120),
# KVSET_PORT_KV0..KV2 (host ports, 17379..17381).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=kvset
members=(kv-0 kv-1 kv-2)
export KVSET_IMAGE=${KVSET_IMAGE:-kvset:dev}
ready_timeout=${KVSET_READY_TIMEOUT:-120}

die() { echo "cluster: $*" >&2; exit 1; }
log() { echo "cluster: $*" >&2; }

command -v docker >/dev/null || die "docker not found; install Docker Engine"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running?)"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose -p "$project" -f "$here/compose.yaml")
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose -p "$project" -f "$here/compose.yaml")
else
  die "neither 'docker compose' nor 'docker-compose' is installed"
fi

# Cluster.Status of the member inside its own container, as compact JSON.
member_status() {
  docker exec "$1" kvsetctl --endpoints 127.0.0.1:7379 --timeout 2s -o json status 2>/dev/null \
    | tr -d ' \n'
}

# True when member $1 reports itself ready: a member of the cluster that knows a leader and has
# applied close to its log (the same predicate as the `readiness` gRPC health service).
is_ready() {
  local json
  json=$(member_status "$1") || return 1
  # One member object per line; the one named $1 must say "ready":true.
  grep "\"name\":\"$1\"" <<<"${json//\},\{/$'}\n{'}" | grep -q '"ready":true'
}

wait_ready() {
  local name=$1 deadline=$((SECONDS + ready_timeout))
  while ((SECONDS < deadline)); do
    if [[ $(docker inspect --format '{{.State.Running}}' "$name" 2>/dev/null) != true ]]; then
      docker logs --tail 30 "$name" >&2 || true
      die "$name is not running (its last log lines are above)"
    fi
    if is_ready "$name"; then
      log "$name is ready"
      return 0
    fi
    sleep 1
  done
  docker logs --tail 30 "$name" >&2 || true
  die "$name not ready after ${ready_timeout}s (its last log lines are above)"
}

cmd=${1:-}
[[ $# -eq 0 ]] || shift
case $cmd in
  up)
    build=0
    [[ ${1:-} != --build ]] || build=1
    if [[ $build == 1 ]] || ! docker image inspect "$KVSET_IMAGE" >/dev/null 2>&1; then
      "$here/build-image.sh" --tag "$KVSET_IMAGE"
    fi
    for m in "${members[@]}"; do
      log "starting $m"
      "${compose[@]}" up -d --no-deps "$m"
      wait_ready "$m"
    done
    echo "kvset is up: kvsetctl --endpoints 127.0.0.1:${KVSET_PORT_KV0:-17379},127.0.0.1:${KVSET_PORT_KV1:-17380},127.0.0.1:${KVSET_PORT_KV2:-17381} status"
    ;;
  down)
    if [[ ${1:-} == --volumes || ${1:-} == -v ]]; then
      "${compose[@]}" down --volumes
    else
      "${compose[@]}" down
      log "data volumes kept (kvset-data-kv-0..2, kvset-cluster-record); 'down --volumes' deletes them"
    fi
    ;;
  status)
    for m in "${members[@]}"; do
      if [[ $(docker inspect --format '{{.State.Running}}' "$m" 2>/dev/null) == true ]]; then
        exec docker exec "$m" kvsetctl --endpoints 127.0.0.1:7379 status "$@"
      fi
    done
    die "no member is running (docker/cluster.sh up)"
    ;;
  logs)
    exec "${compose[@]}" logs -f "$@"
    ;;
  ps)
    exec "${compose[@]}" ps
    ;;
  ''|-h|--help|help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    ;;
  *)
    die "unknown command '$cmd' (up, down, status, logs, ps)"
    ;;
esac
