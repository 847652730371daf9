#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time from the committed seed corpus
# (fuzz/seeds/<target>/), and fails on the first crash: a panic, a hang (one input running
# longer than -timeout) or an allocation past -rss_limit_mb / -malloc_limit_mb. See
# fuzz/README.md for what each target decodes.
#
#   scripts/ci/fuzz.sh [TARGET...]          (default: every target)
#
# Environment: FUZZ_SECONDS (per target, default 30), FUZZ_TARGET_DIR (build and scratch
# directory, default ~/.cache/kvset/fuzz-target). The repository is never written: the seeds
# are copied into a scratch corpus under the build directory
# (<FUZZ_TARGET_DIR>/scratch/<target>/corpus), and crash inputs go beside it (artifacts/).
# On a crash the script prints the reproducer's path and exits non-zero.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"

seconds="${FUZZ_SECONDS:-30}"
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/kvset/fuzz-target}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
mkdir -p "$target_dir"

# cargo-fuzz instruments the code with rustc flags that only nightly compilers accept
# (-Cpasses=sancov-module and the -Cllvm-args for coverage; -Zsanitizer=… when a sanitizer is
# on). The machine has one stable toolchain; RUSTC_BOOTSTRAP=1 lets it accept those flags.
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2

# No sanitizer: the decoders are safe Rust, so what the fuzzer hunts (panics, overflow checks,
# hangs, runaway allocations) needs none, and AddressSanitizer would double the build and halve
# the speed. Debug assertions and overflow checks are on (cargo-fuzz's default).
# --codegen-units 16: a cold build of the dependencies with one codegen unit each is minutes
# slower; the fuzzed code loses a little speed for it.
build=(-s none --codegen-units 16 --target-dir "$target_dir")
cargo fuzz build "${build[@]}"

if (($# > 0)); then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

# The targets' temporary files (segment and snapshot files, whole stores for log_command) go to
# a memory-backed directory when there is one: the store's fsyncs on a disk make log_command
# several times slower.
tmp_root=/dev/shm
[[ -d "$tmp_root" && -w "$tmp_root" ]] || tmp_root="$target_dir"
tmp="$(mktemp -d "$tmp_root/kvset-fuzz.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

failed=()
for target in "${targets[@]}"; do
  seeds="fuzz/seeds/$target"
  [[ -d "$seeds" ]] || { echo "fuzz: no seed corpus $seeds for target $target" >&2; exit 1; }
  scratch="$target_dir/scratch/$target"
  rm -rf "$scratch"
  mkdir -p "$scratch/corpus" "$scratch/artifacts"
  cp "$seeds"/* "$scratch/corpus/"
  echo "== fuzz $target: ${seconds}s from $(ls "$seeds" | wc -l) seeds"
  if ! TMPDIR="$tmp" "$target_dir/$triple/release/$target" \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$scratch/artifacts/" "$scratch/corpus" 2>"$scratch/log"; then
    tail -n 60 "$scratch/log"
    for crash in "$scratch"/artifacts/*; do
      [[ -e "$crash" ]] || continue
      echo "fuzz: $target crashed; reproducer: $crash"
      echo "      replay with: $target_dir/$triple/release/$target $crash"
    done
    failed+=("$target")
  else
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/log" || true
  fi
done

if ((${#failed[@]} > 0)); then
  echo "fuzz: crashes in: ${failed[*]} (findings become regression tests next to the decoder;" \
    "see fuzz/README.md)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
