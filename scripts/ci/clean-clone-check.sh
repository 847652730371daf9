#!/usr/bin/env bash
# Proves that the tests need nothing outside the repository: copies the working tree (tracked and
# untracked-but-not-ignored files, as a clone would have them plus any uncommitted change) into an
# empty temporary directory, with nothing beside it, and runs the checker tests there — the ones
# that read recorded data (Jepsen histories, hand-made histories, the checker CLI).
#
#   scripts/ci/clean-clone-check.sh [EXTRA NEXTEST ARGS...]
#
# Uses $CARGO_TARGET_DIR when set (dependencies are reused; the copy's own crates are rebuilt
# because their path differs). Exit status is the test run's.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
clone="$tmp/kvset"
mkdir "$clone"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
  | (cd "$repo" && xargs -0 tar -c --no-recursion -f - 2>/dev/null) \
  | tar -x -C "$clone"
# Nothing may sit beside the copy: a test that reads ../anything must fail here.
[[ "$(ls -A "$tmp")" == kvset ]] || { echo "clean-clone-check: $tmp is not empty" >&2; exit 1; }
echo "clean-clone-check: running the checker tests in $clone"
cd "$clone"
unset KVSET_PORCUPINE_DIR
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p kvset-tests --locked -E 'binary(/^checker_/)' "$@"
else
  cargo test -p kvset-tests --locked --test 'checker_*' "$@"
fi
