#!/usr/bin/env bash
# The contract's checks: `buf lint` (STANDARD) and `buf breaking` (FILE rules)
# against the last released contract.
#
#   scripts/check_buf.sh [PROTO_DIR]     lint + breaking (default PROTO_DIR: proto)
#   scripts/check_buf.sh --release       record proto/ as the released contract
#
# The released contract is a committed buf image, proto/released/sentiment.v1.json
# (JSON, so a release shows its contract changes in review): it works in any
# clone, shallow or not, with no network. BUF_AGAINST overrides it with any buf
# input, e.g. BUF_AGAINST='.git#branch=main,subdir=proto'.
set -euo pipefail
cd "$(dirname "$0")/.."
buf="${BUF:-node_modules/.bin/buf}"
released=proto/released/sentiment.v1.json

if [[ "${1:-}" == "--release" ]]; then
  "$buf" lint proto
  "$buf" build proto --exclude-source-info -o -#format=json | python3 -m json.tool --indent 1 > "$released.tmp"
  mv "$released.tmp" "$released"
  echo "check_buf: recorded the released contract in $released"
  exit 0
fi

module="${1:-proto}"
"$buf" lint "$module"
"$buf" breaking "$module" --against "${BUF_AGAINST:-$released}"
echo "check_buf: lint and breaking OK ($module against ${BUF_AGAINST:-$released})"
