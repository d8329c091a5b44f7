#!/usr/bin/env bash
# The project's test command: set up .venv (test, gui, docs and jax extras), make sure headless Chromium is there
# for the dashboard's browser test, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "phi_hig tests: setting up .venv (scripts/setup.sh), then the test suite"
bash scripts/setup.sh

# Chromium + chromedriver for tests/test_gui.py: installed from Debian packages when missing and we are root
# with apt-get (as in CI). Failure is tolerated: the browser test then skips, saying why.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver for the dashboard's browser test (apt-get) ..."
        log=$(mktemp -t phi_hig_chromium_apt.XXXXXX)
        if { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                chromium chromium-driver fonts-liberation; } >"$log" 2>&1 < /dev/null; then
            rm -f "$log"
        else
            export PHI_HIG_CHROMIUM_REASON="apt-get install chromium chromium-driver failed (log: $log)"
            echo "warning: $PHI_HIG_CHROMIUM_REASON; the browser test will be skipped" >&2
        fi
    elif [ "$(id -u)" != 0 ]; then
        export PHI_HIG_CHROMIUM_REASON="not root, so scripts/test.sh could not apt-get install chromium chromium-driver"
    else
        export PHI_HIG_CHROMIUM_REASON="no apt-get on this system to install chromium chromium-driver"
    fi
fi

. .venv/bin/activate
# dash registers a pytest plugin (dash.testing) that we do not use; keep it out of the run
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} -p no:dash"
# the JAX tests must run here, not skip: a jax that does not import fails the run (tests/conftest.py)
export PHI_HIG_REQUIRE_JAX=1
echo "phi_hig tests: python -m pytest -q tests $*"
python -m pytest -q tests "$@"
