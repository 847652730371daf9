#!/usr/bin/env bash
# Rebuilds the converted histories from porcupine's original Jepsen logs.
#
#   regenerate.sh PORCUPINE_DIR           convert into a temp dir, compare with the committed files
#   regenerate.sh --write PORCUPINE_DIR   convert and replace the committed files
#
# PORCUPINE_DIR is a porcupine checkout (it has test_data/jepsen/etcd_NNN.log). Exit 0 when
# every file named in EXPECTED.tsv converts (and, without --write, matches); 1 on a difference.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
write=false
if [[ "${1:-}" == --write ]]; then write=true; shift; fi
[[ $# -eq 1 ]] || { sed -n '2,8p' "$0" >&2; exit 2; }
logs="$1/test_data/jepsen"
[[ -d "$logs" ]] || { echo "regenerate.sh: $logs does not exist (not a porcupine checkout?)" >&2; exit 2; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
while IFS=$'\t' read -r file _verdict; do
  [[ -n "$file" ]] || continue
  log="$logs/${file%.jsonl}.log"
  python3 "$here/convert.py" "$log" "$out/$file"
  if $write; then
    cp "$out/$file" "$here/$file"
  elif ! cmp -s "$out/$file" "$here/$file"; then
    echo "differs: $file" >&2
    status=1
  fi
done <"$here/EXPECTED.tsv"
if $write; then echo "regenerated $(wc -l <"$here/EXPECTED.tsv") histories"; fi
exit "$status"
