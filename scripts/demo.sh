#!/usr/bin/env bash
# The main demo: set up .venv (scripts/setup.sh: one line per stage, the torch build it installed), then run the
# toy example of the HIG paper (Figure 1). Arguments go to demos/toy.py (e.g. --help, --seconds 5, --gui).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "phi_hig demo: setting up .venv (scripts/setup.sh), then the HIG paper's toy example (demos/toy.py)"
bash scripts/setup.sh
. .venv/bin/activate
echo "phi_hig demo: python demos/toy.py $*"
python demos/toy.py "$@"
