#!/usr/bin/env bash
# What goes wrong when kvset runs without a StatefulSet: the counterfactual of
# docs/STATEFULSET.md, played in Docker with the image k8s/examples/as-deployment/ deploys.
#
# Usage: docker/demo-deployment.sh [names|stranger|race|all]   (default: all)
#   names     three replicas named the way a Deployment's ReplicaSet names pods
#             (kv-<hash>-<random>): each is refused by the identity check and exits
#   stranger  suppose the names were fixed by hand (kv-0, kv-1, kv-2), with storage that dies
#             with the pod (an emptyDir; here a tmpfs): kv-1 restarted comes back empty, a
#             stranger the cluster must re-admit and send every byte again
#   race      two replicas that both call themselves kv-0, started at once on empty storage:
#             they race to bootstrap; the cluster record lets one win and refuses the other
#
# Every container, network and volume is named with a prefix (KVSET_NAME_PREFIX, default
# kvset-demo-) and removed at the end. Environment: KVSET_IMAGE (default kvset:dev, see
# docker/build-image.sh). Prints what kvset printed; exits non-zero if kvset did not refuse
# what it should have.
set -euo pipefail

prefix=${KVSET_NAME_PREFIX:-kvset-demo-}
image=${KVSET_IMAGE:-kvset:dev}
network=${prefix}net
record=${prefix}record
failed=0

say() { printf '\n== %s\n' "$*"; }
die() { echo "demo-deployment: $*" >&2; exit 2; }

command -v docker >/dev/null || die "docker not found"
docker image inspect "$image" >/dev/null 2>&1 \
  || die "image $image not found: docker/build-image.sh --tag $image"

cleanup() {
  local id
  for id in $(docker ps -aq --filter "label=kvset.demo=$prefix"); do
    docker rm -f "$id" >/dev/null 2>&1 || true
  done
  docker volume rm -f "$record" >/dev/null 2>&1 || true
  docker network rm "$network" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
docker network create --label "kvset.demo=$prefix" "$network" >/dev/null

# A replica as a Deployment pod would run: pod name $1, container name $2, data dir on a tmpfs
# (an emptyDir: gone when the container stops). Extra `docker run` arguments follow.
run_replica() {
  local pod=$1 name=$2
  shift 2
  docker run -d --name "$name" --label "kvset.demo=$prefix" --hostname "$pod" \
    --network "$network" --network-alias "$pod.kv.default.svc.cluster.local" \
    --read-only --tmpfs /tmp --tmpfs /data:uid=65532,gid=65532,mode=0700 \
    --cap-drop ALL --security-opt no-new-privileges:true \
    -e POD_NAME="$pod" -e POD_NAMESPACE=default -e KVSET_SERVICE=kv -e KVSET_DATA_DIR=/data \
    -e NO_COLOR=1 -e RUST_LOG=info,openraft=warn \
    "$@" "$image" >/dev/null
}

# True when the log of container $1 matches the extended regex $2 (the log is read whole first:
# `grep -q` closing a pipe early would fail the pipeline under pipefail).
log_has() {
  local text
  text=$(docker logs "$1" 2>&1)
  grep -qE "$2" <<<"$text"
}

exit_code() { docker inspect --format '{{.State.ExitCode}}' "$1"; }

wait_exit() {
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    [[ $(docker inspect --format '{{.State.Running}}' "$1") == false ]] && return 0
    sleep 0.5
  done
  return 1
}

# True once member $1 (container) reports itself ready.
ready() {
  docker exec "$1" kvsetctl --endpoints 127.0.0.1:7379 --timeout 2s -o json status 2>/dev/null \
    | tr -d ' \n' | grep -o "\"name\":\"$2\"[^}]*" | grep -q '"ready":true'
}

wait_ready() {
  local deadline=$((SECONDS + 120))
  until ready "$1" "$2"; do
    ((SECONDS < deadline)) || { docker logs --tail 20 "$1" >&2; die "$2 not ready"; }
    sleep 1
  done
}

demo_names() {
  say "names: three replicas named by a ReplicaSet, as a Deployment names its pods"
  local hash=5d8f7c9b4 suffix pods=()
  for suffix in x2kqp 7hjwm c9tzr; do
    pods+=("kv-$hash-$suffix")
  done
  for pod in "${pods[@]}"; do
    run_replica "$pod" "${prefix}$pod"
  done
  for pod in "${pods[@]}"; do
    wait_exit "${prefix}$pod" || die "$pod still runs with a random name"
    echo "\$ docker logs $pod   (exit code $(exit_code "${prefix}$pod"))"
    docker logs "${prefix}$pod" 2>&1 | tail -n 3
    if ! log_has "${prefix}$pod" 'has no ordinal'; then
      echo "demo-deployment: $pod was not refused by the identity check" >&2
      failed=1
    fi
  done
}

demo_stranger() {
  say "stranger: fixed names kv-0..kv-2, but the data dir dies with the pod"
  docker volume create --label "kvset.demo=$prefix" "$record" >/dev/null
  local m
  for m in 0 1 2; do
    run_replica "kv-$m" "${prefix}kv-$m" -v "$record:/record" \
      -e KVSET_CLUSTER_RECORD=file:/record/cluster-record.json
    wait_ready "${prefix}kv-$m" "kv-$m"
  done
  docker exec "${prefix}kv-0" kvsetctl --endpoints 127.0.0.1:7379 put greeting hello >/dev/null
  local since
  since=$(date -u +%Y-%m-%dT%H:%M:%S)
  echo "\$ docker restart kv-1   (a rescheduled pod: a new emptyDir)"
  docker restart --time 30 "${prefix}kv-1" >/dev/null
  wait_ready "${prefix}kv-1" kv-1
  echo "\$ docker logs --since $since kv-1 | grep -E 'plan=|learner|voter'"
  docker logs --since "$since" "${prefix}kv-1" 2>&1 | grep -E 'plan=|learner|voter' | cut -c1-220
  echo "\$ docker logs --since $since kv-0 | grep membership   (the leader's side)"
  docker logs --since "$since" "${prefix}kv-0" 2>&1 | grep 'node::membership' | cut -c1-220
  if ! grep -q 'a voter asked to join again' <<<"$(docker logs --since "$since" "${prefix}kv-0" 2>&1)"; then
    echo "demo-deployment: kv-1 came back empty but was not re-admitted as a stranger" >&2
    failed=1
  fi
  for m in 0 1 2; do
    docker rm -f "${prefix}kv-$m" >/dev/null
  done
  docker volume rm -f "$record" >/dev/null
}

demo_race() {
  say "race: two replicas that both call themselves kv-0, started at once on empty storage"
  docker volume create --label "kvset.demo=$prefix" "$record" >/dev/null
  local a=${prefix}kv-0-a b=${prefix}kv-0-b
  run_replica kv-0 "$a" -v "$record:/record" \
    -e KVSET_CLUSTER_RECORD=file:/record/cluster-record.json &
  run_replica kv-0 "$b" -v "$record:/record" \
    -e KVSET_CLUSTER_RECORD=file:/record/cluster-record.json &
  wait
  sleep 8
  local c refused=0
  for c in "$a" "$b"; do
    echo "\$ docker logs ${c#"$prefix"}   (running: $(docker inspect --format '{{.State.Running}}' "$c"))"
    docker logs "$c" 2>&1 | grep -E 'plan=|names cluster|waits for the existing' | cut -c1-400 \
      | tail -n 3
    if log_has "$c" 'names cluster|waits for the existing cluster'; then
      refused=$((refused + 1))
    fi
  done
  echo "\$ cat /record/cluster-record.json"
  docker cp "$a:/record/cluster-record.json" - 2>/dev/null | tar -xO
  echo
  if ((refused != 1)); then
    echo "demo-deployment: expected one replica to bootstrap and the other to be refused;" \
      "$refused were refused" >&2
    failed=1
  fi
}

case ${1:-all} in
  names) demo_names ;;
  stranger) demo_stranger ;;
  race) demo_race ;;
  all) demo_names; demo_stranger; demo_race ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown scenario '$1' (names, stranger, race, all)" ;;
esac
exit "$failed"
