#!/usr/bin/env bash
# Set up everything the service and its tests need on a fresh machine, once.
# Idempotent: a second run with nothing changed returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.bootstrapped"
inputs=(scripts/bootstrap.sh client/pyproject.toml server/pyproject.toml requirements-dev.txt constraints.txt package.json client/node/package.json)

if [[ -f "$stamp" ]] && [[ -z "$(find "${inputs[@]}" -newer "$stamp" 2>/dev/null)" ]]; then
  exit 0
fi

# The embedded Triton's Python backend stub links the shared libpython of this Python.
pyver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"
if ! ldconfig -p | grep -q "libpython${pyver}.so.1.0"; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing libpython${pyver} (needed by Triton's Python backend stub)"
    apt-get update -qq && apt-get install -y -qq "libpython${pyver}" >/dev/null
  else
    echo "bootstrap: libpython${pyver}.so.1.0 is missing: install it (Debian/Ubuntu: apt-get install libpython${pyver})" >&2
    exit 1
  fi
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
# CPU torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
"${pip[@]}" install -c constraints.txt "torch==2.13.0"
"${pip[@]}" install -c constraints.txt -e ./client -e "./server[export,embedded,tracing]" -r requirements-dev.txt
if command -v npm >/dev/null; then
  npm install --no-audit --no-fund --silent
fi
touch "$stamp"
echo "bootstrap: ready ($VENV)"
