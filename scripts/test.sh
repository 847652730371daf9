#!/usr/bin/env bash
# The test command (README): builds the binaries the integration tests launch, then runs the
# whole suite with cargo-nextest (cargo test when nextest is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  echo "cargo-nextest not found; falling back to cargo test" >&2
  cargo test --workspace --locked --no-fail-fast "$@"
fi
