#!/usr/bin/env bash
# The project's test command: set up .venv, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q tests "$@"
