#!/usr/bin/env bash
# The shipped unit's system-call filter with CUDA (README, Running it as a service): the GPU
# workers (bench/gpu.py --small: a random tiny Whisper and NLLB, built and run on the card by
# the real worker processes, then batched decoding and translation in-process) run three
# times: without a filter, under the unit's filter (EPERM for other calls, as the unit has it),
# and under the same list with SIGSYS for any other call (a pass there means no call outside
# the list was made at all). A few minutes on an H100.
#
#   bench/gpu_filter.sh --prepare   here: the wheels the GPU machine lacks into .whl/ and the
#                                   compiled filters into .bpf/ (needs systemd-analyze, libseccomp)
#   bench/gpu_filter.sh             on the GPU machine (device tool: carry .whl and .bpf)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  set -e
  bench/gpu.sh --prepare >/dev/null
  mkdir -p .bpf
  python3 -m bench.syscall_filter export .bpf/eperm.bpf
  python3 -m bench.syscall_filter export .bpf/kill.bpf --kill
  exit 0
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/autokr-site .whl/*.whl
  export PYTHONPATH="/tmp/autokr-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
uname -r
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
status=0
for mode in none eperm kill; do
  echo "=== filter: $mode"
  started=$(date +%s)
  if [ "$mode" = none ]; then
    python3 -m bench.gpu --device cuda --small --steps 20 --work "/tmp/autokr-filter-$mode"
  else
    python3 -m bench.syscall_filter run ".bpf/$mode.bpf" -- \
      python3 -m bench.gpu --device cuda --small --steps 20 --work "/tmp/autokr-filter-$mode"
  fi
  rc=$?
  echo "=== filter: $mode exit $rc after $(( $(date +%s) - started )) s"
  [ $rc -eq 0 ] || status=1
done
exit $status
