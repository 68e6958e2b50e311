#!/usr/bin/env bash
# GPU check: bf16 training + fp32 probes, per-example gradients, fractional-GPU
# trials, packed trials, DDP over NCCL; one table. Without CUDA it runs the CPU
# fallback (tiny sizes). Sets up .venv (with the dev extra) if missing.
#   benchmarks/gpu_check.sh [gpu_check.py options]     e.g. --device cpu
# GPU_CHECK_TIMEOUT (seconds, default 480) bounds the whole check.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet -e '.[dev]'
fi
exec timeout -k 30 "${GPU_CHECK_TIMEOUT:-480}" .venv/bin/python benchmarks/gpu_check.py "$@"
