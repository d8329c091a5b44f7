#!/usr/bin/env bash
# Builds the documentation into site/ (open site/index.html): sets up .venv (scripts/setup.sh installs the docs
# extra), then runs Sphinx strictly: any warning, an unresolved reference to a phi_hig name, a public name without
# a docstring or a tutorial cell that raises stops the build (exit code 1) and leaves site/ as it was. The
# tutorials execute at full size (about a minute each on a CPU); PHI_HIG_TUTORIAL_SIZE=tiny runs them in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
work=$(mktemp -d -t phi_hig_docs.XXXXXX)   # doctrees and executed notebooks (MyST-NB writes them beside the output)
trap 'rm -rf "$work"' EXIT
python -m sphinx -E -W --keep-going -q -b html -d "$work/doctrees" docs "$work/html" "$@"
rm -rf site
mv "$work/html" site
echo "built site/index.html"
