#!/usr/bin/env bash
# GPU figures for the README (bench/gpu.py): random-weight large-v3 and nllb-200-1.3B shapes,
# batched against sequential transcription, translation by batch size, GPU memory per worker
# (both engines: CTranslate2 large-v3 float16/int8_float16, NLLB-1.3B float16/int8_float16)
# and after each worker exits, and the LLM engine on a random Qwen3-1.7B shape (memory around the
# translate worker, lines and tokens a second). Not yet run with the CTranslate2 and LLM rows:
# plan for 10-12 minutes.
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
  # The CTranslate2 engine, as binary wheels for the GPU machine's Python (3.12 there). The
  # ctranslate2 wheel is built for CUDA 12: on a CUDA 13 driver it may not find its libraries.
  python3 -m pip download -q --no-deps -d .whl --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    ctranslate2 faster-whisper onnxruntime av
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
python3 -c 'import ctranslate2; print("ctranslate2", ctranslate2.__version__, ctranslate2.get_cuda_device_count(), "GPU")' || true
python3 -m bench.gpu --device cuda --work /tmp/autokr-gpu "$@" 2>&1 | tee "${OUT:-/tmp}/gpu-bench.txt"
