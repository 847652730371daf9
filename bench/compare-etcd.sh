#!/usr/bin/env bash
# Runs kvset and etcd side by side on loopback and compares them with kvset-bench.
#
# Starts a 3-replica kvset (`kvset-server local`) and a 3-member etcd (installed from Debian's
# `etcd-server` package when missing), each with its own data dirs under one temporary directory,
# fsync on (both systems' defaults). Then runs every workload at every concurrency against both,
# alternating kvset and etcd row by row so that both see the same background load, writes the
# JSON lines and a markdown table with kvset/etcd ratios, prints the table, and stops everything
# it started (trap EXIT). Loopback only; every run is bounded by its duration.
#
#   bench/compare-etcd.sh                    # the full matrix: 5 workloads x C=1,16,64,256, 10 s + 2 s warm-up each (~9-10 min)
#   bench/compare-etcd.sh --quick            # seconds-long smoke (CI): C=16, 1 s + 0.5 s, 10,000 keys (~30 s)
#   bench/compare-etcd.sh --workloads put --concurrency 64 --duration 20s --server-arg=--heartbeat-ms=50
#   bench/compare-etcd.sh --workloads watch --watchers "1 1000"     # put-to-event latency
#   bench/compare-etcd.sh --workloads lease-keepalive --concurrency 64 --leases 10000
#
# The stream workloads are not in the default list (the default matrix stays the 5 KV
# workloads). `watch` runs once per watcher count of --watchers, not per concurrency, with
# --writers writers putting under the watched prefix; `lease-keepalive` runs once per
# concurrency, renewing --leases leases. A watch run whose watchers miss an event fails.
#
# Flags:
#   --duration D        measured time per run (default 10s)
#   --warmup W          unmeasured load before each run (default 2s)
#   --concurrency "C…"  concurrencies (default "1 16 64 256")
#   --workloads "W…"    workloads (default "put get get-stale cas mixed"; also "watch" and
#                       "lease-keepalive")
#   --watchers "W…"     watch: watcher counts, one row each (default "1")
#   --writers N         watch: writers putting under the prefix (default 1)
#   --leases N          lease-keepalive: leases granted and renewed (default 10000)
#   --keys N            keyspace size (default 100000)
#   --quick             smoke settings (see above, and --max-error-rate 0.05); later flags
#                       still override
#   --max-error-rate R  a run fails when more than this fraction of its requests failed
#                       (default 0.01)
#   --out FILE          the markdown report (default <cargo target dir>/bench/compare-<time>.md); the
#                       JSON lines go to FILE with .jsonl instead of .md
#   --build debug|release   which build of kvset-server and kvset-bench (default release)
#   --no-build          use the binaries already built
#   --kvset-client raw|sdk  how kvset is called (default raw; see docs/BENCHMARKS.md; watch and
#                       lease-keepalive need raw)
#   --server-arg ARG    extra kvset-server flag for every replica (repeatable)
#   --etcd-arg ARG      extra etcd flag for every member (repeatable)
#   --server-bin PATH   this kvset-server binary instead of the built one (A/B tests of server
#                       changes; the environment is passed on to the replicas)
#   --only kvset|etcd   run one system only
#   --keep              keep the data directories and logs (path printed at the end)
#
# Progress on stderr: "row n of N" and an estimate of the time left before each row. A row that
# fails is retried once (its partial output removed from the JSON lines first).
#
# Exit status: 0 if every row succeeded, at once or on its retry (kvset-bench exits 1 when more
# than 1% of a run's requests failed), 1 otherwise, 2 on a usage or start-up error.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

duration=10s
warmup=2s
concurrency="1 16 64 256"
workloads="put get get-stale cas mixed"
keys=100000
watchers="1"
writers=1
leases=10000
max_error_rate=0.01
out=""
build=release
do_build=1
kvset_client=raw
only=""
server_bin=""
keep=0
server_args=()
etcd_args=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d' >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --workloads) workloads="$2"; shift 2 ;;
    --keys) keys="$2"; shift 2 ;;
    --watchers) watchers="$2"; shift 2 ;;
    --writers) writers="$2"; shift 2 ;;
    --leases) leases="$2"; shift 2 ;;
    --quick) duration=1s; warmup=0.5s; concurrency="16"; keys=10000; max_error_rate=0.05; shift ;;
    --max-error-rate) max_error_rate="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --kvset-client) kvset_client="$2"; shift 2 ;;
    --server-arg) server_args+=("$2"); shift 2 ;;
    --server-arg=*) server_args+=("${1#--server-arg=}"); shift ;;
    --etcd-arg) etcd_args+=("$2"); shift 2 ;;
    --etcd-arg=*) etcd_args+=("${1#--etcd-arg=}"); shift ;;
    --only) only="$2"; shift 2 ;;
    --server-bin) server_bin="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage ;;
    *) echo "compare-etcd.sh: unknown argument $1" >&2; usage ;;
  esac
done
case "$build" in debug|release) ;; *) echo "--build must be debug or release" >&2; exit 2 ;; esac

say() { printf '[compare-etcd %s] %s\n' "$(date +%T)" "$*" >&2; }
started_at=$(date +%s)

# ---- etcd -------------------------------------------------------------------------------------
if [[ "$only" != kvset ]] && ! command -v etcd >/dev/null 2>&1; then
  say "etcd not found: installing Debian's etcd-server"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq etcd-server >/dev/null
fi

# ---- build ------------------------------------------------------------------------------------
if [[ $do_build -eq 1 ]]; then
  say "building kvset-server and kvset-bench ($build)"
  if [[ "$build" == release ]]; then
    cargo build --release --bins >&2
  else
    cargo build --bins >&2
  fi
fi
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-${CARGO_TARGET_DIR:-$repo/target}}
bin="$target_dir/$build"
custom_bin=$server_bin
server_bin=${server_bin:-$bin/kvset-server}
for b in "$server_bin" "$bin/kvset-bench"; do
  [[ -x "$b" ]] || { echo "compare-etcd.sh: $b is missing (build it, or drop --no-build)" >&2; exit 2; }
done

# ---- work dir, ports, cleanup -----------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/kvset-bench.XXXXXX")
launcher_pid=""
etcd_pids=()

# shellcheck disable=SC2329 # both are called from the EXIT trap
stop_pid() { # pid: SIGTERM, wait up to 15 s, then SIGKILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2329
cleanup() {
  local rc=$?
  set +e
  [[ -n "$launcher_pid" ]] && stop_pid "$launcher_pid"
  # Replicas the launcher may have left behind (it stops them itself on SIGTERM).
  for f in "$work"/kvset/kv-*.pid; do [[ -f "$f" ]] && stop_pid "$(cat "$f")"; done
  for pid in "${etcd_pids[@]}"; do stop_pid "$pid"; done
  if [[ $keep -eq 1 ]]; then say "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
all_free() { local p; for p in "$@"; do port_free "$p" || return 1; done; }
# Bases stay below Linux's ephemeral port range (32768+), where a port that this machine's own
# outgoing connections use looks free to port_free but cannot be bound; kvset and etcd draw from
# disjoint halves, so that neither can pick the other's ports before those are bound.
pick_base() { # first count offsets...: a base (first + k*100, k < count) with base+offsets all free
  local first=$1 count=$2 base p ports
  shift 2
  for _ in $(seq 50); do
    base=$(( first + (RANDOM % count) * 100 ))
    ports=()
    for p in "$@"; do ports+=( $((base + p)) ); done
    if all_free "${ports[@]}"; then echo "$base"; return 0; fi
  done
  echo "compare-etcd.sh: no free ports found" >&2; return 1
}

# ---- start kvset ------------------------------------------------------------------------------
kvset_endpoints=""
if [[ "$only" != etcd ]]; then
  kbase=$(pick_base 20000 55 0 1 2 100 101 102 200 201 202) # 20000..25602
  kvset_endpoints="127.0.0.1:$kbase,127.0.0.1:$((kbase + 1)),127.0.0.1:$((kbase + 2))"
  local_args=(local --replicas 3 --data-dir "$work/kvset" --base-port "$kbase" --bind-ip 127.0.0.1)
  for a in "${server_args[@]}"; do local_args+=("--server-arg=$a"); done
  say "starting kvset: $server_bin ${local_args[*]}"
  "$server_bin" "${local_args[@]}" >"$work/kvset-launcher.log" 2>&1 &
  launcher_pid=$!
fi

# ---- start etcd -------------------------------------------------------------------------------
etcd_endpoints=""
if [[ "$only" != kvset ]]; then
  ebase=$(pick_base 26000 60 0 1 2 10 11 12) # 26000..31912
  cluster=""
  for i in 0 1 2; do cluster+="${cluster:+,}e$i=http://127.0.0.1:$((ebase + 10 + i))"; done
  for i in 0 1 2; do
    cp=$((ebase + i)); pp=$((ebase + 10 + i))
    etcd_endpoints+="${etcd_endpoints:+,}127.0.0.1:$cp"
    mkdir -p "$work/etcd"
    etcd --name "e$i" --data-dir "$work/etcd/e$i" \
      --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
      --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token kvset-bench \
      --logger zap --log-level warn "${etcd_args[@]}" >"$work/etcd/e$i.log" 2>&1 &
    etcd_pids+=($!)
  done
  say "started etcd $(etcd --version | head -1 | awk '{print $3}') on $etcd_endpoints (pids ${etcd_pids[*]})"
fi

# kvset's member pids, from the launcher's pid files (read before every run: it restarts members).
kvset_pids() {
  local f pids=""
  for f in "$work"/kvset/kv-0.pid "$work"/kvset/kv-1.pid "$work"/kvset/kv-2.pid; do
    [[ -f "$f" ]] && pids+="${pids:+,}$(cat "$f")"
  done
  echo "$pids"
}
if [[ -n "$launcher_pid" ]]; then
  for i in $(seq 600); do
    [[ -f "$work/kvset/kv-2.pid" ]] && break
    kill -0 "$launcher_pid" 2>/dev/null || { cat "$work/kvset-launcher.log" >&2; exit 2; }
    sleep 0.1
  done
  say "started kvset on $kvset_endpoints (member pids $(kvset_pids))"
fi

# ---- run ---------------------------------------------------------------------------------------
if [[ -z "$out" ]]; then
  out="$target_dir/bench/compare-$(date +%Y%m%d-%H%M%S).md"
fi
mkdir -p "$(dirname "$out")"
jsonl="${out%.md}.jsonl"
: >"$jsonl"
failed=0
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# Seconds in a duration as kvset-bench takes it (500ms, 2s, 1.5s, 1m); empty when unknown.
seconds_of() {
  awk -v d="$1" 'BEGIN {
    if (d ~ /^[0-9.]+ms$/) { sub(/ms$/, "", d); print d / 1000; exit }
    if (d ~ /^[0-9.]+s?$/) { sub(/s$/, "", d); print d + 0; exit }
    if (d ~ /^[0-9.]+m$/) { sub(/m$/, "", d); print d * 60; exit }
  }'
}

# The row parameter of a workload: the watcher count for watch, the concurrency otherwise.
bench_once() { # system workload param: one kvset-bench run, its JSON line appended
  local system=$1 workload=$2 param=$3 endpoints pids shape
  if [[ $system == kvset ]]; then endpoints=$kvset_endpoints; pids=$(kvset_pids)
  else endpoints=$etcd_endpoints; pids=$(IFS=,; echo "${etcd_pids[*]}"); fi
  case "$workload" in
    watch) shape=(--concurrency "$writers" --watchers "$param") ;;
    lease-keepalive) shape=(--concurrency "$param" --leases "$leases") ;;
    *) shape=(--concurrency "$param") ;;
  esac
  "$bin/kvset-bench" --target "$system" --endpoints "$endpoints" --workload "$workload" \
    "${shape[@]}" --duration "$duration" --warmup "$warmup" --keys "$keys" \
    --kvset-client "$kvset_client" --server-pids "$pids" --ready-timeout 60s \
    --max-error-rate "$max_error_rate" \
    --output json -q >>"$jsonl"
}

# A failed row is retried once (a freshly installed etcd sometimes answers nothing on its first
# row): its partial output is cut from the JSON lines first, so the file keeps one line per row.
row_label() { # workload param
  if [[ $1 == watch ]]; then echo "W=$2 (writers $writers)"; else echo "C=$2"; fi
}

run_one() { # system workload param
  local system=$1 workload=$2 c=$3 size label
  label=$(row_label "$workload" "$c")
  say "$system $workload $label"
  size=$(stat -c %s "$jsonl")
  if ! bench_once "$system" "$workload" "$c"; then
    truncate -s "$size" "$jsonl"
    say "$system $workload $label failed: retrying once"
    if ! bench_once "$system" "$workload" "$c"; then
      say "FAILED: $system $workload $label (twice)"
      failed=1
    fi
  fi
  tail -n 1 "$jsonl" | sed -n 's/.*"ops_per_sec":\([0-9.]*\).*"p99_ms":\([0-9.]*\).*/    ops\/s \1, p99 \2 ms/p' >&2
  tail -n 1 "$jsonl" | sed -n 's/.*"event_latency_ms":{"p50":\([0-9.]*\),"p99":\([0-9.]*\).*"lost_events":\([0-9]*\).*/    event p50 \1 ms, p99 \2 ms, lost \3/p' >&2
}

systems=()
[[ "$only" != etcd ]] && systems+=(kvset)
[[ "$only" != kvset ]] && systems+=(etcd)
read -r -a workload_list <<<"$workloads"
read -r -a concurrency_list <<<"$concurrency"
read -r -a watcher_list <<<"$watchers"
params_of() { # workload: the row parameters it runs with
  if [[ $1 == watch ]]; then echo "${watcher_list[*]}"; else echo "${concurrency_list[*]}"; fi
}
rows=0
for workload in "${workload_list[@]}"; do
  read -r -a params <<<"$(params_of "$workload")"
  rows=$(( rows + ${#params[@]} * ${#systems[@]} ))
done
# Until a row has run, a row is estimated at its warm-up plus its measured time.
nominal=$(awk -v w="$(seconds_of "$warmup")" -v d="$(seconds_of "$duration")" \
  'BEGIN { if (w != "" && d != "") printf "%d", w + d + 0.5 }')
row=0
rows_start=$(date +%s)
for workload in "${workload_list[@]}"; do
  read -r -a params <<<"$(params_of "$workload")"
  for c in "${params[@]}"; do
    for system in "${systems[@]}"; do
      spent=$(( $(date +%s) - rows_start ))
      if [[ $row -gt 0 ]]; then left=$(( spent * (rows - row) / row ))
      elif [[ -n "$nominal" ]]; then left=$(( nominal * rows ))
      else left=""; fi
      row=$((row + 1))
      say "row $row of $rows${left:+, about $((left / 60))m$((left % 60))s left}"
      run_one "$system" "$workload" "$c"
    done
  done
done

# ---- report ------------------------------------------------------------------------------------
elapsed=$(( $(date +%s) - started_at ))
{
  echo "# kvset vs etcd ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "- machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r); the load generator and all six servers share these cores"
  echo "- kvset $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') ($build build, 3 replicas via kvset-server local${server_args[*]:+, server args: ${server_args[*]}}${custom_bin:+, server binary: $custom_bin}); etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}') (3 members, defaults)"
  echo "- data dirs under $(dirname "$work") ($(df -T "$work" | awk 'NR==2{print $2}')), fsync on for both"
  echo "- each run: $warmup warm-up + $duration measured, closed loop, $keys keys of 16 B, 128 B values; kvset client: $kvset_client"
  if [[ " $workloads " == *" watch "* ]]; then
    echo "- watch: watchers of one prefix spread over the members (one Watch stream per member), $writers writer(s); latency from a put's send to each watcher's receipt of its event"
  fi
  if [[ " $workloads " == *" lease-keepalive "* ]]; then
    echo "- lease-keepalive: $leases leases renewed round-robin, one KeepAlive stream to the leader per worker (C), one renewal in flight per stream"
  fi
  echo "- load average (1/5/15 min) at start: $load_start, at end: $(cut -d' ' -f1-3 /proc/loadavg); total time ${elapsed}s"
  echo "- ratios are kvset/etcd: ops/s above 1 and p99 below 1 favour kvset; CPU s/kop = server CPU seconds per 1000 ops (all members)"
  echo
  "$bin/kvset-bench" table "$jsonl"
} >"$out"
cat "$out"
say "report: $out (JSON lines: $jsonl)"
exit $failed
