#!/usr/bin/env bash
# CI check of the image users build: `docker build` of the unmodified docker/Dockerfile, then the
# built image run as a three-member topology (kv-0, kv-1, kv-2 as the StatefulSet lays them out),
# a put through kv-0 and a linearizable get through kv-2.
#
# Usage: scripts/ci/dockerfile-check.sh [--keep]
#
#   --keep   leave the containers, volumes and network up (names start with kvset-dfcheck-)
#
# No registry is reachable in CI, so docker/standin-bases.sh first makes local stand-ins for the
# two base images under exactly the names the Dockerfile uses (cached; a rerun takes seconds).
# The builder is buildx (with --provenance=false) when it is installed, else the classic builder
# (DOCKER_BUILDKIT=0): the Dockerfile uses no builder-specific syntax. Cargo inside the build
# fetches crates from crates.io over the build container's default network. The dependency
# layer is cached by Docker, so a rerun with an unchanged Cargo.lock compiles only the
# workspace crates.
#
# Environment: KVSET_DOCKERFILE_CHECK_TAG (image tag, default kvset:dockerfile-check),
# KVSET_READY_TIMEOUT (seconds per member, default 120).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tag=${KVSET_DOCKERFILE_CHECK_TAG:-kvset:dockerfile-check}
ready_timeout=${KVSET_READY_TIMEOUT:-120}
prefix=kvset-dfcheck
network=$prefix-net
keep=0

die() { echo "dockerfile-check: $*" >&2; exit 1; }
log() { echo "dockerfile-check: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon"

# 1. The base images: the real ones when present, else local stand-ins.
"$repo/docker/standin-bases.sh"

# 2. The unmodified Dockerfile, from the repository root as users build it.
build_log=$(mktemp "${TMPDIR:-/tmp}/kvset-dockerfile-check.XXXXXX")
cleanup_log() { rm -f "$build_log"; }
trap cleanup_log EXIT
previous=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
start=$SECONDS
if docker buildx version >/dev/null 2>&1; then
  log "docker buildx build -f docker/Dockerfile -t $tag . (--provenance=false --load)"
  build=(docker buildx build --provenance=false --load)
else
  log "docker build -f docker/Dockerfile -t $tag . (classic builder: no buildx here)"
  build=(env DOCKER_BUILDKIT=0 docker build)
fi
if ! "${build[@]}" -f "$repo/docker/Dockerfile" -t "$tag" "$repo" >"$build_log" 2>&1; then
  tail -n 60 "$build_log" >&2
  die "docker build of docker/Dockerfile failed (the last lines are above)"
fi
id=$(docker image inspect --format '{{.Id}}' "$tag")
log "built $tag in $((SECONDS - start)) s ($id)"
if [[ -n $previous && $previous != "$id" ]]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
# The classic builder keeps each build's compile stage as an untagged image (the cache of the next
# build). After a source change the previous one is superseded and would only fill the disk
# (gigabytes each): drop every such stage image of this Dockerfile but the newest.
stale=$(docker images --filter dangling=true --quiet --no-trunc | while read -r img; do
  cmd=$(docker image inspect --format '{{json .ContainerConfig.Cmd}}' "$img" 2>/dev/null || true)
  # shellcheck disable=SC2016 # the literal text of the Dockerfile's RUN line
  [[ $cmd != *'objcopy --strip-debug \"target/release/$b\"'* ]] \
    || echo "$(docker image inspect --format '{{.Created}}' "$img") $img"
done | sort -r | tail -n +2 | cut -d' ' -f2)
for img in $stale; do
  docker image rm "$img" >/dev/null 2>&1 && log "removed the superseded build stage ${img:7:12}" || true
done

# 3. The image's contract: entrypoint, user, ports, volume; and it runs.
config=$(docker image inspect --format '{{json .Config.Entrypoint}} {{.Config.User}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}}' "$tag")
for want in '["/usr/local/bin/kvset-server"]' ' 65532:65532 ' '"7379/tcp"' '"7479/tcp"' '"7579/tcp"' '"/data"'; do
  [[ $config == *"$want"* ]] || die "image config lacks $want: $config"
done
docker run --rm --network none "$tag" --version >&2 || die "kvset-server --version does not run in $tag"
docker run --rm --network none --entrypoint kvsetctl "$tag" --version >&2 \
  || die "kvsetctl --version does not run in $tag"

# 4. Three members, as the StatefulSet runs them: hostnames kv-N, the headless Service's DNS
#    names as network aliases, the downward-API variables, read-only root, no capabilities.
cleanup() {
  local ids
  ids=$(docker ps --all --quiet --filter "label=$prefix" 2>/dev/null || true)
  # shellcheck disable=SC2086 # one container id per word
  [[ -z $ids ]] || docker rm --force --volumes $ids >/dev/null 2>&1 || true
  for i in 0 1 2; do docker volume rm --force "$prefix-data-kv-$i" >/dev/null 2>&1 || true; done
  docker volume rm --force "$prefix-cluster-record" >/dev/null 2>&1 || true
  docker network rm "$network" >/dev/null 2>&1 || true
}
on_exit() {
  local rc=$?
  if [[ $rc != 0 ]]; then
    for i in 0 1 2; do
      docker logs --tail 30 "$prefix-kv-$i" 2>&1 | sed "s/^/kv-$i| /" >&2 || true
    done
  fi
  if [[ $keep == 1 ]]; then
    log "--keep: left $prefix-kv-0..2 and network $network up; remove them with: docker rm -f -v \$(docker ps -aq --filter label=$prefix); docker network rm $network"
  else
    cleanup
  fi
  cleanup_log
}
cleanup
trap on_exit EXIT
docker network create --label "$prefix" "$network" >/dev/null

ctl() { # ctl MEMBER ARGS...: kvsetctl inside member MEMBER's container, against itself
  local member=$1
  shift
  docker exec "$prefix-$member" kvsetctl --endpoints 127.0.0.1:7379 --timeout 5s "$@"
}

for i in 0 1 2; do
  docker run --detach --name "$prefix-kv-$i" --label "$prefix" \
    --hostname "kv-$i" --network "$network" --network-alias "kv-$i.kv.default.svc.cluster.local" \
    --env "POD_NAME=kv-$i" --env POD_NAMESPACE=default --env KVSET_SERVICE=kv --env NO_COLOR=1 \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges --stop-timeout 30 \
    --volume "$prefix-data-kv-$i:/data" --volume "$prefix-cluster-record:/record" \
    --env KVSET_CLUSTER_RECORD=file:/record/cluster-record.json "$tag" >/dev/null
  # OrderedReady: the next member starts only once this one is ready.
  deadline=$((SECONDS + ready_timeout))
  until ctl "kv-$i" health >/dev/null 2>&1; do
    [[ $(docker inspect --format '{{.State.Running}}' "$prefix-kv-$i") == true ]] \
      || die "kv-$i exited while starting"
    ((SECONDS < deadline)) || die "kv-$i not ready within ${ready_timeout}s"
    sleep 1
  done
  log "kv-$i ready"
done

value="written-through-kv-0-at-$(date +%s)"
ctl kv-0 put dockerfile-check "$value" >/dev/null || die "put through kv-0 failed"
got=$(ctl kv-2 --consistency linearizable get dockerfile-check) || die "linearizable get through kv-2 failed"
[[ $got == "$value" ]] || die "kv-2 read '$got', kv-0 wrote '$value'"
log "put on kv-0, linearizable get on kv-2: $got"
ctl kv-1 status >&2
status=$(ctl kv-0 -o json status | tr -d ' \n')
leaders=$(grep -o '"role":"leader"' <<<"$status" | wc -l)
followers=$(grep -o '"role":"follower"' <<<"$status" | wc -l)
((leaders == 1 && followers == 2)) \
  || die "expected one leader and two followers, got $leaders and $followers: $status"
log "ok: docker/Dockerfile builds and the image serves a three-member cluster"
