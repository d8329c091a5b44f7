#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs phi_hig with its test, gui and jax extras into it
# (gui: the dashboard of `python -m phi_hig gui`; jax: the CPU build of JAX, so that the JAX tests run;
# EXTRAS=,more adds further extras).
# The CPU build of torch is pinned here, where the environment is built, not in the library:
# installing it first means pip never pulls a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || python -m pip install -q -c scripts/constraints.txt torch
python -m pip install -q -c scripts/constraints.txt -e ".[test,gui,jax${EXTRAS:-}]"
