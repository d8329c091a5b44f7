#!/usr/bin/env bash
# The main demo: set up .venv, then run the toy example of the HIG paper (Figure 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python demos/toy.py "$@"
