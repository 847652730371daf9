#!/usr/bin/env bash
# Bounded chaos smoke runs of `kvset-chaos run`, for CI or by hand.
#
# Usage: scripts/chaos-smoke.sh [process|docker|overlap|overlap-docker|all] [--release]
#                               [-- EXTRA kvset-chaos ARGS]
#
#   process   (default) the local launcher, fixed seed, every fault the backend supports,
#             45 s of load (about a minute in all)
#   docker    plain containers with a name prefix of their own (--docker-prefix), including
#             network partitions, from an image built out of the same binaries with
#             docker/build-image.sh --offline (about 1.5 minutes); skipped when no Docker Engine
#             answers, unless CI=true
#   overlap   the local launcher with --overlap --faults none: only compound faults (pause +
#             wipe + kill the leader, a kill during a snapshot install, kill-all with one
#             volume wiped), fixed seed, 35 s of load (about a minute in all)
#   overlap-docker  the same against plain containers (skipped like docker)
#   all       process, docker and overlap, one after the other
#   --release use release binaries (default: debug, as the tests do)
#
# Each run writes its directory under chaos-out/ (history.jsonl, report.md, report.json, logs/)
# and prints the report; the script exits with the first non-zero exit code (1 violation,
# 2 inconclusive or error). Environment: CARGO_TARGET_DIR (honoured), CHAOS_SEED (default
# 20261126; overlap: 7), CHAOS_DURATION (default 45s; overlap: 35s).
#
# In CI the same runs exist as tests (tests/tests/chaos_smoke.rs, chaos_overlap.rs,
# chaos_docker.rs); this script is for running them outside the test harness, e.g. with
# --release or a longer duration. kill-all-wipe-kv0 (an empty kv-0 restarted with the rest) is in
# none of these runs; run it alone with: scripts/chaos-smoke.sh process -- --faults
# kill-all-wipe-kv0
set -euo pipefail
cd "$(dirname "$0")/.."

what=process
profile=debug
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    process|docker|overlap|overlap-docker|all) what=$1 ;;
    --release) profile=release ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "chaos-smoke: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

seed=${CHAOS_SEED:-20261126}
duration=${CHAOS_DURATION:-45s}
overlap_seed=${CHAOS_SEED:-7}
overlap_duration=${CHAOS_DURATION:-35s}
overlap_args=(--overlap --faults none)
target=${CARGO_TARGET_DIR:-target}
bin=$target/$profile
cargo_profile=()
[[ $profile == debug ]] || cargo_profile=(--release)

echo "chaos-smoke: building the binaries ($profile)" >&2
cargo build "${cargo_profile[@]}" --locked -p kvset-server -p kvsetctl -p kvset-tests --bins >&2

stamp=$(date +%s)
status=0

# run_process NAME SEED DURATION [kvset-chaos ARGS...]
run_process() {
  local name=$1 seed=$2 duration=$3 out=chaos-out/smoke-$1-$stamp
  shift 3
  echo "chaos-smoke: process backend ($name), seed $seed, $duration -> $out" >&2
  timeout --signal=INT --kill-after=90 300 \
    "$bin/kvset-chaos" run --backend process --duration "$duration" --seed "$seed" \
    --server-bin "$bin/kvset-server" --out "$out" "$@" "${extra[@]}" || return $?
}

# run_docker NAME SEED DURATION [kvset-chaos ARGS...]
run_docker() {
  local name=$1 seed=$2 duration=$3
  shift 3
  if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    if [[ ${CI:-} == true ]]; then
      echo "chaos-smoke: no Docker Engine answers, and CI=true" >&2
      return 2
    fi
    echo "chaos-smoke: SKIPPED docker: no Docker Engine answers" >&2
    return 0
  fi
  local prefix=kvset-smoke-$$ tag=kvset-chaos-smoke:$$ out=chaos-out/smoke-$name-$stamp rc=0
  docker/build-image.sh --offline --quiet --tag "$tag" --bin-dir "$bin" >/dev/null
  echo "chaos-smoke: docker backend ($name), seed $seed, $duration -> $out" >&2
  timeout --signal=INT --kill-after=90 360 \
    "$bin/kvset-chaos" run --backend docker --docker-prefix "$prefix" --image "$tag" \
    --duration "$duration" --seed "$seed" --out "$out" "$@" "${extra[@]}" || rc=$?
  # The harness removes its containers; this catches what an aborted run left.
  docker ps -aq --filter "label=kvset.chaos=$prefix" | xargs -r docker rm -f -v >/dev/null
  docker volume ls -q --filter "label=kvset.chaos=$prefix" | xargs -r docker volume rm -f >/dev/null
  docker network rm "$prefix-net" >/dev/null 2>&1 || true
  docker image rm -f "$tag" >/dev/null 2>&1 || true
  return $rc
}

case $what in
  process) run_process process "$seed" "$duration" || status=$? ;;
  docker) run_docker docker "$seed" "$duration" || status=$? ;;
  overlap)
    run_process overlap "$overlap_seed" "$overlap_duration" "${overlap_args[@]}" || status=$? ;;
  overlap-docker)
    run_docker overlap-docker "$overlap_seed" "$overlap_duration" "${overlap_args[@]}" \
      || status=$? ;;
  all)
    run_process process "$seed" "$duration" || status=$?
    rc=0; run_docker docker "$seed" "$duration" || rc=$?
    [[ $status != 0 ]] || status=$rc
    rc=0; run_process overlap "$overlap_seed" "$overlap_duration" "${overlap_args[@]}" || rc=$?
    [[ $status != 0 ]] || status=$rc
    ;;
esac
exit "$status"
