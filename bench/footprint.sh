#!/usr/bin/env bash
# Disk and memory footprint of kvset members under a stream of overwrites (issue 17).
#
# Starts a fresh 3-replica kvset (`kvset-server local`) in a temporary directory on free loopback
# ports, then overwrites K keys N times in total with kvset-bench (`--workload put --ops`,
# closed loop at concurrency 64, 16-byte keys, 128-byte values), in C equal steps. After each
# step it records, for every member: the bytes of its data dir (`du -sb`, and the blocks it
# really occupies) split into the sled database (store/sled/), the Raft log segments
# (store/raft-log/), the snapshot file(s) (store/snapshot/) and the rest (the volume record,
# directories); its RSS and peak RSS (/proc/PID/status); its
# revision, Raft log index, snapshot index and what its space quota counts (its /metrics); and
# the cluster's compact revision
# (`kvsetctl -o json status`). One JSON object per member per step goes to --out, and a
# markdown table to stdout. The cluster is stopped and the temporary directory removed at the
# end, on failure and on Ctrl-C too (unless --keep).
#
#   bench/footprint.sh                                    # 1,000,000 overwrites of 10,000 keys, 10 steps
#   bench/footprint.sh --overwrites 2000 --keys 100 --checkpoints 2 --no-build   # seconds
#   bench/footprint.sh --server-arg=--snapshot-every=100000 --label 'snapshot every 100k'
#
# The first put of each key creates it; every later one overwrites it. "overwrites" in the
# output counts every acknowledged put.
#
# Flags:
#   --overwrites N      puts in total (default 1000000)
#   --keys K            keys they are spread over, uniformly at random (default 10000)
#   --checkpoints C     measurements, one after each N/C puts (default 10)
#   --concurrency W     requests in flight (default 64)
#   --value-size B      bytes per value (default 128)
#   --settle S          seconds to wait after each step before measuring (default 2), so that
#                       a snapshot or purge the last puts started can finish
#   --out FILE          the JSON lines (default <cargo target dir>/bench/footprint-<time>.jsonl);
#                       kvset-bench's own JSON lines go to FILE with .bench.jsonl instead
#   --label TEXT        copied into every JSON line (e.g. the server setting under test)
#   --server-arg ARG    extra kvset-server flag for every replica (repeatable), e.g.
#                       --server-arg=--snapshot-every=1000
#   --build debug|release   which build to use (default release)
#   --no-build          use the binaries already built
#   --bin-dir DIR       take kvset-server, kvset-bench and kvsetctl from DIR (implies --no-build)
#   --keep              keep the data directories and logs (path printed at the end)
#
# Exit status: 0 when every step ran (kvset-bench fails a step when more than 1% of its
# requests failed) and every member could be measured, 1 otherwise, 2 on a usage or start-up
# error.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

overwrites=1000000
keys=10000
checkpoints=10
concurrency=64
value_size=128
settle=2
out=""
label=""
build=release
do_build=1
bin_dir=""
keep=0
server_args=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d' >&2; exit 2; }
need_value() { [[ $# -ge 2 ]] || { echo "footprint.sh: $1 needs a value" >&2; exit 2; }; }
positive() { # name value
  [[ "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || { echo "footprint.sh: $1 must be a positive integer, not '$2'" >&2; exit 2; }
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --overwrites) need_value "$@"; overwrites="$2"; shift 2 ;;
    --keys) need_value "$@"; keys="$2"; shift 2 ;;
    --checkpoints) need_value "$@"; checkpoints="$2"; shift 2 ;;
    --concurrency) need_value "$@"; concurrency="$2"; shift 2 ;;
    --value-size) need_value "$@"; value_size="$2"; shift 2 ;;
    --settle) need_value "$@"; settle="$2"; shift 2 ;;
    --out) need_value "$@"; out="$2"; shift 2 ;;
    --label) need_value "$@"; label="$2"; shift 2 ;;
    --server-arg) need_value "$@"; server_args+=("$2"); shift 2 ;;
    --server-arg=*) server_args+=("${1#--server-arg=}"); shift ;;
    --build) need_value "$@"; build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --bin-dir) need_value "$@"; bin_dir="$2"; do_build=0; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage ;;
    *) echo "footprint.sh: unknown argument $1" >&2; usage ;;
  esac
done
case "$build" in debug|release) ;; *) echo "footprint.sh: --build must be debug or release" >&2; exit 2 ;; esac
positive --overwrites "$overwrites"
positive --keys "$keys"
positive --checkpoints "$checkpoints"
positive --concurrency "$concurrency"
positive --value-size "$value_size"
[[ "$settle" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "footprint.sh: --settle must be a number of seconds" >&2; exit 2; }
[[ "$checkpoints" -le "$overwrites" ]] || { echo "footprint.sh: more checkpoints than overwrites" >&2; exit 2; }

say() { printf '[footprint %s] %s\n' "$(date +%T)" "$*" >&2; }

# ---- binaries ---------------------------------------------------------------------------------
target_dir=""
if [[ -z "$bin_dir" || -z "$out" ]]; then
  target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p') || true
  target_dir=${target_dir:-${CARGO_TARGET_DIR:-$repo/target}}
fi
if [[ $do_build -eq 1 ]]; then
  say "building kvset-server, kvset-bench and kvsetctl ($build)"
  profile=()
  [[ "$build" == release ]] && profile=(--release)
  cargo build "${profile[@]}" -p kvset-server -p kvset-bench -p kvsetctl >&2
fi
bin_dir=${bin_dir:-$target_dir/$build}
for b in kvset-server kvset-bench kvsetctl; do
  [[ -x "$bin_dir/$b" ]] || { echo "footprint.sh: $bin_dir/$b is missing (build it, or drop --no-build)" >&2; exit 2; }
done

if [[ -z "$out" ]]; then
  out="$target_dir/bench/footprint-$(date +%Y%m%d-%H%M%S).jsonl"
fi
mkdir -p "$(dirname "$out")"
bench_jsonl="${out%.jsonl}.bench.jsonl"
: >"$out"
: >"$bench_jsonl"

# ---- work dir, ports, cleanup -----------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/kvset-footprint.XXXXXX")
data="$work/data"
launcher_pid=""

# shellcheck disable=SC2329 # both are called from the EXIT trap
stop_pid() { # pid: SIGTERM, wait up to 15 s, then SIGKILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2329
cleanup() {
  local rc=$?
  set +e
  [[ -n "$launcher_pid" ]] && stop_pid "$launcher_pid"
  # Replicas the launcher may have left behind (it stops them itself on SIGTERM).
  for f in "$data"/kv-*.pid; do [[ -f "$f" ]] && stop_pid "$(cat "$f")"; done
  if [[ $keep -eq 1 ]]; then say "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A base below Linux's ephemeral ports (32768+) and apart from compare-etcd.sh's (20000-31912)
# whose client, peer and metrics ports (base+N, base+100+N, base+200+N) are all free.
pick_base() {
  local base p ok
  for _ in $(seq 50); do
    base=$(( 10000 + (RANDOM % 95) * 100 )) # 10000..19400
    ok=1
    for p in 0 1 2 100 101 102 200 201 202; do port_free $((base + p)) || { ok=0; break; }; done
    if [[ $ok -eq 1 ]]; then echo "$base"; return 0; fi
  done
  echo "footprint.sh: no free ports found" >&2; return 1
}

# ---- start kvset ------------------------------------------------------------------------------
base=$(pick_base)
endpoints="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
local_args=(local --replicas 3 --data-dir "$data" --base-port "$base" --bind-ip 127.0.0.1)
for a in "${server_args[@]}"; do local_args+=("--server-arg=$a"); done
say "starting kvset: $bin_dir/kvset-server ${local_args[*]}"
"$bin_dir/kvset-server" "${local_args[@]}" >"$work/launcher.log" 2>&1 &
launcher_pid=$!
for _ in $(seq 600); do
  [[ -f "$data/kv-2.pid" ]] && break
  kill -0 "$launcher_pid" 2>/dev/null || { cat "$work/launcher.log" >&2; exit 2; }
  sleep 0.1
done
[[ -f "$data/kv-2.pid" ]] || { echo "footprint.sh: kv-2 did not start within 60 s" >&2; cat "$work/launcher.log" >&2; exit 2; }
say "started kvset on $endpoints"

# ---- measuring --------------------------------------------------------------------------------
bytes_of() { # path: apparent size in bytes (du -sb), 0 when absent
  local n
  [[ -e "$1" ]] || { echo 0; return; }
  n=$(du -sb "$1" 2>/dev/null | awk 'END { print $1 }')
  echo "${n:-0}"
}
blocks_of() { # path: bytes of the blocks it occupies (what fills a volume)
  local n
  [[ -e "$1" ]] || { echo 0; return; }
  n=$(du -s --block-size=1 "$1" 2>/dev/null | awk 'END { print $1 }')
  echo "${n:-0}"
}
count_files() { # dir: regular files under it
  [[ -d "$1" ]] || { echo 0; return; }
  find "$1" -type f 2>/dev/null | wc -l
}
status_kb() { # pid field: a kB line of /proc/PID/status, in bytes; 0 when gone
  local kb
  kb=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true)
  echo $(( ${kb:-0} * 1024 ))
}
metric() { # text name: the value of an unlabelled sample, or null
  local v
  v=$(awk -v n="$2" '$1 == n { print $2; exit }' <<<"$1")
  if [[ "$v" =~ ^[0-9.eE+-]+$ ]]; then printf '%.0f' "$v"; else echo null; fi
}
json_str() { # text: a JSON string literal
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

server_args_json="[]"
if [[ ${#server_args[@]} -gt 0 ]]; then
  server_args_json="["
  for a in "${server_args[@]}"; do server_args_json+="$(json_str "$a"),"; done
  server_args_json="${server_args_json%,}]"
fi
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
measure_failed=0

measure() { # checkpoint done seconds ops_per_sec: one JSON line per member
  local checkpoint=$1 done_puts=$2 elapsed=$3 ops_s=$4 status compact n dir store pid total sled log \
    snap other alloc segs snaps rss hwm metrics revision usage disk last_index log_entries snap_index \
    snapshots now
  status=$("$bin_dir/kvsetctl" --endpoints "$endpoints" -o json status 2>/dev/null || true)
  compact=$(grep -o '"compact_revision": *[0-9]*' <<<"$status" | grep -o '[0-9]*$' | head -1 || true)
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for n in 0 1 2; do
    dir="$data/kv-$n"
    # The member's volume: its store (sled/, raft-log/, snapshot/) lives in store/ beside the
    # volume record (kvset-volume.json).
    store="$dir/store"
    [[ -d "$store" ]] || store="$dir"
    pid=$(cat "$data/kv-$n.pid" 2>/dev/null || echo 0)
    total=$(bytes_of "$dir")
    alloc=$(blocks_of "$dir")
    sled=$(bytes_of "$store/sled")
    log=$(bytes_of "$store/raft-log")
    snap=$(bytes_of "$store/snapshot")
    other=$(( total - sled - log - snap ))
    segs=$(count_files "$store/raft-log")
    snaps=$(count_files "$store/snapshot")
    rss=$(status_kb "$pid" VmRSS)
    hwm=$(status_kb "$pid" VmHWM)
    metrics=$(curl -fsS --max-time 5 "http://127.0.0.1:$((base + 200 + n))/metrics" 2>/dev/null || true)
    revision=$(metric "$metrics" kvset_store_revision)
    usage=$(metric "$metrics" kvset_store_usage_bytes)
    disk=$(metric "$metrics" kvset_store_disk_bytes)
    last_index=$(metric "$metrics" kvset_raft_last_log_index)
    log_entries=$(metric "$metrics" kvset_raft_log_entries)
    snap_index=$(metric "$metrics" kvset_raft_snapshot_index)
    snapshots=$(metric "$metrics" kvset_snapshots_total)
    if [[ "$total" -le 0 || "$rss" -le 0 ]]; then
      say "kv-$n: could not measure (data dir $total bytes, RSS $rss bytes, pid $pid)"
      measure_failed=1
    fi
    printf '{"time":"%s","commit":"%s","label":%s,"server_args":%s,"checkpoint":%d,"checkpoints":%d,"overwrites":%d,"keys":%d,"value_size":%d,"concurrency":%d,"elapsed_s":%s,"ops_per_sec":%s,"member":"kv-%d","pid":%d,"data_dir_bytes":%d,"data_dir_alloc_bytes":%d,"sled_bytes":%d,"raft_log_bytes":%d,"raft_log_segments":%d,"snapshot_bytes":%d,"snapshot_files":%d,"other_bytes":%d,"rss_bytes":%d,"rss_peak_bytes":%d,"revision":%s,"compact_revision":%s,"quota_usage_bytes":%s,"store_disk_bytes":%s,"last_log_index":%s,"log_entries":%s,"snapshot_index":%s,"snapshots":%s}\n' \
      "$now" "$commit" "$(json_str "$label")" "$server_args_json" "$checkpoint" "$checkpoints" \
      "$done_puts" "$keys" "$value_size" "$concurrency" "$elapsed" "$ops_s" "$n" "$pid" \
      "$total" "$alloc" "$sled" "$log" "$segs" "$snap" "$snaps" "$other" "$rss" "$hwm" \
      "$revision" "${compact:-null}" "$usage" "$disk" "$last_index" "$log_entries" "$snap_index" \
      "$snapshots" >>"$out"
  done
}

# ---- run --------------------------------------------------------------------------------------
say "$overwrites puts over $keys keys at C=$concurrency in $checkpoints steps${server_args[*]:+; server args: ${server_args[*]}}"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
done_puts=0
failed=0
measure 0 0 0 null
for step in $(seq "$checkpoints"); do
  ops=$(( overwrites * step / checkpoints - overwrites * (step - 1) / checkpoints ))
  before=$(stat -c %s "$bench_jsonl")
  if ! "$bin_dir/kvset-bench" --target kvset --endpoints "$endpoints" --workload put \
      --concurrency "$concurrency" --keys "$keys" --value-size "$value_size" --ops "$ops" \
      --warmup 0s --duration 1h --ready-timeout 60s --max-error-rate 0.01 \
      --label "footprint step $step" --output json -q >>"$bench_jsonl"; then
    say "step $step: kvset-bench failed"
    failed=1
  fi
  line=""
  [[ $(stat -c %s "$bench_jsonl") -gt $before ]] && line=$(tail -n 1 "$bench_jsonl")
  writes=$(sed -n 's/.*"writes":\([0-9]*\).*/\1/p' <<<"$line")
  ops_s=$(sed -n 's/.*"ops_per_sec":\([0-9.]*\).*/\1/p' <<<"$line")
  done_puts=$(( done_puts + ${writes:-0} ))
  sleep "$settle"
  measure "$step" "$done_puts" "$(( $(date +%s) - started ))" "${ops_s:-null}"
  say "step $step of $checkpoints: $done_puts puts, ${ops_s:-?} ops/s; $(tail -n 3 "$out" |
    sed -n 's/.*"member":"\([^"]*\)".*"data_dir_bytes":\([0-9]*\).*"rss_bytes":\([0-9]*\).*/\1 \2 \3/p' |
    awk '{ printf "%s%s %.1f MiB disk, %.1f MiB RSS", (NR > 1 ? "; " : ""), $1, $2 / 1048576, $3 / 1048576 }')"
  [[ $failed -eq 0 ]] || break
done

# ---- report -----------------------------------------------------------------------------------
# Per checkpoint and member: sizes in MiB (du -sb, apparent size; "alloc" = blocks in use).
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"; }
mib() { awk -v b="$1" 'BEGIN { if (b == "null" || b == "") print "-"; else printf "%.1f", b / 1048576 }'; }
{
  echo "# kvset footprint: $overwrites puts over $keys keys ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "- kvset $commit, 3 replicas via kvset-server local${server_args[*]:+, server args: ${server_args[*]}}${label:+ ($label)}"
  echo "- $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, data dirs on $(df -T "$work" | awk 'NR==2{print $2}'); kvset-bench put, C=$concurrency, 16-byte keys, $value_size-byte values"
  echo "- load average at start: $load_start, at end: $(cut -d' ' -f1-3 /proc/loadavg); $(( $(date +%s) - started )) s"
  echo
  echo "| puts | member | data dir MiB | alloc MiB | sled MiB | raft log MiB (segments) | snapshot MiB | other MiB | RSS MiB | peak RSS MiB | revision | compact rev | log index | snapshot index | quota usage MiB |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  while IFS= read -r l; do
    printf '| %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$(field overwrites <<<"$l")" "$(sed -n 's/.*"member":"\([^"]*\)".*/\1/p' <<<"$l")" \
      "$(mib "$(field data_dir_bytes <<<"$l")")" "$(mib "$(field data_dir_alloc_bytes <<<"$l")")" \
      "$(mib "$(field sled_bytes <<<"$l")")" "$(mib "$(field raft_log_bytes <<<"$l")")" \
      "$(field raft_log_segments <<<"$l")" "$(mib "$(field snapshot_bytes <<<"$l")")" \
      "$(mib "$(field other_bytes <<<"$l")")" "$(mib "$(field rss_bytes <<<"$l")")" \
      "$(mib "$(field rss_peak_bytes <<<"$l")")" "$(field revision <<<"$l")" \
      "$(field compact_revision <<<"$l")" "$(field last_log_index <<<"$l")" \
      "$(field snapshot_index <<<"$l")" "$(mib "$(field quota_usage_bytes <<<"$l")")"
  done <"$out"
} >"${out%.jsonl}.md"
cat "${out%.jsonl}.md"
say "JSON lines: $out (kvset-bench's: $bench_jsonl; table: ${out%.jsonl}.md)"
if [[ $failed -ne 0 || $measure_failed -ne 0 ]]; then exit 1; fi
exit 0
