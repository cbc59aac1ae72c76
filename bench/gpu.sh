#!/usr/bin/env bash
# GPU figures for the README (bench/gpu.py): random-weight large-v3 and nllb-200-1.3B shapes,
# batched against sequential transcription, translation by batch size, GPU memory per worker
# and after each worker exits. About 5 minutes on an H100; plan for 10.
#
#   bench/gpu.sh --prepare     here, with internet: puts the wheels the GPU machine lacks
#                              (openai-whisper is an sdist on PyPI) into .whl/
#   bench/gpu.sh               on the GPU machine (device tool: carry .whl); the output is
#                              also written to $OUT/gpu-bench.txt when $OUT is set
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .whl
  python3 -m pip wheel -q --no-deps -w .whl "openai-whisper==20250625" "more-itertools"
  ls -l .whl
  exit 0
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/autokr-site .whl/*.whl
  export PYTHONPATH="/tmp/autokr-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
python3 bench/gpu.py --device cuda --work /tmp/autokr-gpu "$@" 2>&1 | tee "${OUT:-/tmp}/gpu-bench.txt"
