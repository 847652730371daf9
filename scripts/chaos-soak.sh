#!/usr/bin/env bash
# The chaos soak of docs/CHAOS.md ("Soak"): one process-backend cluster in namespace mode under
# every fault kind that backend has, one after another at a fast cadence, for an hour or more.
# Not part of CI (CI keeps its short smoke runs); run it by hand, as root, on a quiet machine.
#
# Usage: sudo scripts/chaos-soak.sh [--debug] [--dry-run] [-- EXTRA kvset-chaos ARGS]
#
#   --debug    use debug binaries (default: release, built first)
#   --dry-run  print the kvset-chaos command and exit
#
# Faults: kill-follower, kill-leader, restart, kill-all, pause, partition, partition-leader,
# partition-one-way, wipe, power-loss, power-loss-all and scale, plus the compound faults of
# --overlap (pause + wipe + kill the leader, a kill during a snapshot install, kill-all with one
# volume wiped, kill-all with kv-0's volume wiped). Not included: latency (needs sch_netem) and
# disk-full (its tmpfs volumes exclude power-loss's; run it on its own).
#
# The run writes chaos-out/soak-<unix time>/ (report.md with the per-kind summary, report.json,
# report.html, history.jsonl, logs/) and exits as kvset-chaos does: 0 pass, 1 violation,
# 2 inconclusive or error. Environment: CARGO_TARGET_DIR (honoured), CHAOS_SEED (default
# 20261207), CHAOS_DURATION (default 70m: about 1,300 faults on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --debug) profile=debug ;;
    --dry-run) dry_run=1 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "chaos-soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

seed=${CHAOS_SEED:-20261207}
duration=${CHAOS_DURATION:-70m}
bin=${CARGO_TARGET_DIR:-target}/$profile
out=chaos-out/soak-$(date +%s)
faults=kill-follower,kill-leader,restart,kill-all,pause,partition,wipe,partition-leader
faults+=,partition-one-way,power-loss,power-loss-all,scale
command=(
  "$bin/kvset-chaos" run --backend process --network netns
  --server-bin "$bin/kvset-server" --duration "$duration" --seed "$seed"
  --faults "$faults" --overlap
  # A fault every few seconds: short gaps and holds, and a launcher that restarts a killed
  # member after 500 ms instead of backing off to 10 s as a kubelet would.
  --fault-gap 200ms..600ms --fault-hold 600ms..1200ms --restart-backoff-max 500ms
  # A bounded load (about 840,000 operations in 70 minutes) keeps the history checkable.
  --rate 200 --keys 8 --check-budget 30m
  --out "$out"
)
command+=("${extra[@]}")

if [[ $dry_run == 1 ]]; then
  printf '%s\n' "${command[*]}"
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "chaos-soak: namespace mode and the power-loss filesystem need root" >&2
  exit 2
fi
cargo_profile=()
[[ $profile == debug ]] || cargo_profile=(--release)
echo "chaos-soak: building the binaries ($profile)" >&2
cargo build "${cargo_profile[@]}" --locked -p kvset-server -p kvset-tests --bins >&2
echo "chaos-soak: seed $seed, $duration -> $out" >&2
exec "${command[@]}"
