#!/usr/bin/env bash
# GPU check: bf16 training + fp32 probes, per-example gradients, fractional-GPU
# trials, packed trials, DDP over NCCL; one table. Without CUDA it runs the CPU
# fallback (tiny sizes).
#   benchmarks/gpu_check.sh [gpu_check.py options]     e.g. --device cpu
# Python: .venv if present; else, unless GPU_CHECK_WHEELS is set, it creates
# .venv with $PYTHON (default python3.11) and the dev extra; failing that, or
# with GPU_CHECK_WHEELS (a folder of wheels installed offline with --no-deps,
# for a machine whose python3 already has torch), python3 with this checkout
# on PYTHONPATH. Sections whose packages are absent print "skipped".
# GPU_CHECK_TIMEOUT (seconds, default 480) bounds the whole check.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
PY=.venv/bin/python
if [ ! -x "$PY" ] && [ -z "${GPU_CHECK_WHEELS:-}" ] && command -v "$PYTHON" >/dev/null; then
  if ! { "$PYTHON" -m venv .venv && .venv/bin/python -m pip install --quiet -e '.[dev]'; }; then
    echo "gpu_check: could not set up .venv; using python3 as it is" >&2
    rm -rf .venv
  fi
fi
if [ ! -x "$PY" ]; then
  PY=python3
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
    site="$(mktemp -d)"
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" "$GPU_CHECK_WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$site"
  fi
fi
exec timeout -k 30 "${GPU_CHECK_TIMEOUT:-480}" "$PY" benchmarks/gpu_check.py "$@"
