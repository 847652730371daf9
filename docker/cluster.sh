#!/usr/bin/env bash
# A kvset cluster in Docker containers, laid out like the StatefulSet (see docker/compose.yaml):
# network `kvset`, containers kv-0..kv-2 (kv-3, kv-4 when scaled up), volumes kvset-data-kv-N,
# client ports published on 127.0.0.1:17379..17383 only.
#
# Usage: docker/cluster.sh COMMAND
#   up [--build]        build the image if it is missing (or always with --build), then start
#                       kv-0, kv-1, kv-2 in ordinal order, each one Ready before the next
#                       (OrderedReady); prints the endpoints. The desired size is 3.
#   scale N             change the number of members to N (1..5), as `kubectl scale statefulset`
#                       does: the desired size is written first, then the members at or above N
#                       are stopped one at a time, highest ordinal first (each leaves the cluster
#                       as it stops), or the missing ones are started in ordinal order, each one
#                       Ready before the next. Exits 0 once the cluster's membership is kv-0 ..
#                       kv-(N-1); non-zero, saying why, otherwise
#   down [--volumes]    stop and remove the containers and the network; --volumes also deletes
#                       the data volumes (otherwise the next `up` finds the same data)
#   status              the cluster as kvsetctl sees it from inside (members, roles, lag)
#   logs [kv-N]         follow the logs of one member or of all
#   ps                  the containers and their health
#
# Environment: KVSET_IMAGE (default kvset:dev), KVSET_READY_TIMEOUT (seconds per member, 120),
# KVSET_SCALE_TIMEOUT (seconds for the membership to follow a scale, 120), KVSET_PORT_KV0..KV4
# (host ports, 17379..17383), KVSET_NAME_PREFIX (prefix of every container, network and volume
# name, empty by default: a second topology beside the first).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export KVSET_NAME_PREFIX=${KVSET_NAME_PREFIX:-}
prefix=$KVSET_NAME_PREFIX
project=${prefix}kvset
# Every member the compose file defines; `up` starts the first three.
max_members=5
initial_members=3
export KVSET_IMAGE=${KVSET_IMAGE:-kvset:dev}
ready_timeout=${KVSET_READY_TIMEOUT:-120}
scale_timeout=${KVSET_SCALE_TIMEOUT:-120}

die() { echo "cluster: $*" >&2; exit 1; }
log() { echo "cluster: $*" >&2; }

command -v docker >/dev/null || die "docker not found; install Docker Engine"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running?)"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose -p "$project" -f "$here/compose.yaml" --profile scale)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose -p "$project" -f "$here/compose.yaml" --profile scale)
else
  die "neither 'docker compose' nor 'docker-compose' is installed"
fi

# The container of member kv-N ($1 = kv-N).
container() { echo "${prefix}$1"; }

running() {
  [[ $(docker inspect --format '{{.State.Running}}' "$(container "$1")" 2>/dev/null) == true ]]
}

# Cluster.Status of the member inside its own container, as compact JSON.
member_status() {
  docker exec "$(container "$1")" kvsetctl --endpoints 127.0.0.1:7379 --timeout 2s -o json \
    status 2>/dev/null | tr -d ' \n'
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
    if ! running "$name"; then
      docker logs --tail 30 "$(container "$name")" >&2 || true
      die "$name is not running (its last log lines are above)"
    fi
    if is_ready "$name"; then
      log "$name is ready"
      return 0
    fi
    sleep 1
  done
  docker logs --tail 30 "$(container "$name")" >&2 || true
  die "$name not ready after ${ready_timeout}s (its last log lines are above)"
}

# Writes the set's desired size ($1) to the volume every member mounts at /record (the
# StatefulSet's spec.replicas; the members read it through KVSET_REPLICAS_FROM). The image has no
# shell to write it from inside, so it is copied in through the container $2 (running or not).
write_desired() {
  local tmp
  tmp=$(mktemp)
  echo "$1" >"$tmp"
  chmod 0644 "$tmp"
  if ! docker cp "$tmp" "$(container "$2"):/record/replicas" >/dev/null; then
    rm -f "$tmp"
    die "cannot write the desired size to /record/replicas through $(container "$2")"
  fi
  rm -f "$tmp"
}

# Starts member $1 (creating its container if needed) and waits until it is ready.
start_member() {
  log "starting $1"
  "${compose[@]}" up -d --no-deps "$1"
  wait_ready "$1"
}

# The membership as a running member $1 sees it: ordinals, ascending, space-separated.
member_ordinals() {
  docker exec "$(container "$1")" kvsetctl --endpoints 127.0.0.1:7379 --timeout 2s -o json \
    members list 2>/dev/null | tr -d ' \n' | grep -o '"id":[0-9]*' | cut -d: -f2 | sort -n \
    | paste -sd' ' -
}

# The lowest-ordinal member below $1 whose container runs, or nothing.
some_running_below() {
  local i
  for ((i = 0; i < $1; i++)); do
    if running "kv-$i"; then
      echo "kv-$i"
      return 0
    fi
  done
}

scale() {
  local n=${1:-}
  if ! [[ $n =~ ^[1-9][0-9]*$ ]] || ((n < 1 || n > max_members)); then
    die "scale needs a member count between 1 and $max_members (the members docker/compose.yaml defines), got '${n}'"
  fi
  docker container inspect "$(container kv-0)" >/dev/null 2>&1 \
    || die "no cluster to scale: $(container kv-0) does not exist (docker/cluster.sh up)"
  local via
  via=$(some_running_below "$n")
  [[ -n $via ]] || die "no member below kv-$n runs: start the cluster first (docker/cluster.sh up)"
  # The size first, as the StatefulSet controller changes spec.replicas before it deletes or
  # creates pods: a member stopped below reads it again on SIGTERM and leaves, instead of
  # restarting.
  write_desired "$n" "$via"
  log "desired size is now $n"
  local i c
  for ((i = max_members - 1; i >= n; i--)); do
    c=$(container "kv-$i")
    docker container inspect "$c" >/dev/null 2>&1 || continue
    if running "kv-$i"; then
      log "stopping kv-$i (ordinal at or above $n: it leaves the cluster)"
      docker stop --time 30 "$c" >/dev/null
      # (The log is read whole first: `grep -q` closing the pipe early would fail it.)
      if ! grep -q 'left the cluster (scale-down)' <<<"$(docker logs "$c" 2>&1)"; then
        log "kv-$i stopped without confirming that it left; the leader removes it once it is gone"
      fi
    fi
    # The volume stays, as the PersistentVolumeClaim does: a later scale-up reuses it.
    docker rm "$c" >/dev/null
  done
  for ((i = 0; i < n; i++)); do
    running "kv-$i" || start_member "kv-$i"
  done
  local want have="" deadline=$((SECONDS + scale_timeout))
  want=$(seq 0 $((n - 1)) | paste -sd' ' -)
  while ((SECONDS < deadline)); do
    via=$(some_running_below "$n")
    [[ -z $via ]] || have=$(member_ordinals "$via") || true
    if [[ $have == "$want" ]]; then
      echo "scaled to $n: members kv-${have// /, kv-}"
      return 0
    fi
    sleep 1
  done
  die "the membership is [${have}], not [${want}], ${scale_timeout}s after scaling to $n; \
see docker/cluster.sh status and the members' logs (docker/cluster.sh logs)"
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
    # kv-0's container first (not started), to write the desired size through it: the members
    # follow it from their first moment.
    "${compose[@]}" up --no-start --no-deps kv-0
    write_desired "$initial_members" kv-0
    for ((i = 0; i < initial_members; i++)); do
      start_member "kv-$i"
    done
    echo "kvset is up: kvsetctl --endpoints 127.0.0.1:${KVSET_PORT_KV0:-17379},127.0.0.1:${KVSET_PORT_KV1:-17380},127.0.0.1:${KVSET_PORT_KV2:-17381} status"
    ;;
  scale)
    scale "$@"
    ;;
  down)
    if [[ ${1:-} == --volumes || ${1:-} == -v ]]; then
      "${compose[@]}" down --volumes
    else
      "${compose[@]}" down
      log "data volumes kept (${prefix}kvset-data-kv-N, ${prefix}kvset-cluster-record); 'down --volumes' deletes them"
    fi
    ;;
  status)
    for ((i = 0; i < max_members; i++)); do
      if running "kv-$i"; then
        exec docker exec "$(container "kv-$i")" kvsetctl --endpoints 127.0.0.1:7379 status "$@"
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
    die "unknown command '$cmd' (up, scale, down, status, logs, ps)"
    ;;
esac
