#!/usr/bin/env bash
# Generate the Python stubs once, into the client distribution, where both the
# client and the server import them (one copy per process keeps the descriptor
# pool consistent). Usage: scripts/gen_proto.sh [OUT_DIR]  (default: client)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-client}"
mkdir -p "$out/sentiment/v1"
"${PYTHON:-python3}" -m grpc_tools.protoc -I proto \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  proto/sentiment/v1/sentiment.proto proto/sentiment/v1/admin.proto
touch "$out/sentiment/__init__.py" "$out/sentiment/v1/__init__.py"
