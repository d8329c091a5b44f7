#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs phi_hig into it, one line per stage; pip's own output goes to a log
# (.venv/setup-logs/) that is printed only when its stage fails.
#
#   1. the virtual environment .venv ($PYTHON, default python3; Python >= 3.10)
#   2. pip, upgraded
#   3. torch, the version pinned in scripts/constraints.txt, of the build PHI_HIG_TORCH names:
#        cpu     (default) the CPU build, from PyTorch's CPU wheel index https://download.pytorch.org/whl/cpu.
#                When that index cannot be reached: torch of that version from pip's configured indexes, but only
#                if pip shows it is a CPU build (no nvidia-* packages); otherwise set-up stops and says so.
#        cuXYZ   a CUDA build, e.g. PHI_HIG_TORCH=cu126, from https://download.pytorch.org/whl/cu126 (a tag PyTorch
#                publishes this torch version for; see pytorch.org/get-started)
#        pypi    whatever pip's configured indexes give for that version (from PyPI on Linux: a CUDA build, GBs)
#        keep    the torch already in .venv, whatever its build
#      A torch already in .venv of the chosen build and version is kept.
#   4. phi_hig itself (editable) with its test, gui, docs and jax extras (gui: the dashboard of
#      `python -m phi_hig gui`; docs: the documentation build, whose tests run in the suite; jax: the CPU build of
#      JAX, jax[cpu], so that the JAX tests run; EXTRAS=,more adds further extras), the other versions pinned by
#      scripts/constraints.txt
#   5. a check: the torch build installed (version, CPU or CUDA), phiflow, phiml, jax
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD=${PHI_HIG_TORCH:-cpu}
TORCH_VERSION=$(sed -n 's/^torch==//p' scripts/constraints.txt)
STAGES=5
STAGE=0
LOGS=.venv/setup-logs
START=$SECONDS

say() { echo "phi_hig setup: $*"; }
stage() { STAGE=$((STAGE + 1)); STAGE_START=$SECONDS; say "[$STAGE/$STAGES] $*"; }
done_stage() { say "      ${1:-done} ($((SECONDS - STAGE_START)) s)"; }
stop() {  # stop with a message (and the log of the failed command, if any)
    echo "phi_hig setup: FAILED at stage $STAGE/$STAGES: $1" >&2
    if [ -n "${2:-}" ] && [ -s "$2" ]; then
        echo "---- last 60 lines of $2 ----" >&2
        tail -n 60 "$2" >&2
        echo "---- end of log ----" >&2
    fi
    exit 1
}
quietly() {  # quietly LOGNAME CMD...: run CMD with its output in $LOGS/LOGNAME.log; 0 or 1 (log kept)
    local log="$LOGS/$1.log"
    shift
    if "$@" >"$log" 2>&1; then return 0; fi
    return 1
}
torch_build() {  # "VERSION cpu" or "VERSION cuda X.Y" of the torch in .venv; nothing when none imports
    python -c "import torch; print(torch.__version__, 'cpu' if torch.version.cuda is None else 'cuda ' + torch.version.cuda)" \
        2>/dev/null || true
}
describe() {  # "torch 2.13.0+cpu (CPU build, no CUDA)" from torch_build's line
    set -- $1
    if [ "$2" = cpu ]; then echo "torch $1 (CPU build, no CUDA)"; else echo "torch $1 (CUDA $3 build)"; fi
}
wanted() {  # whether torch_build's line is the build PHI_HIG_TORCH asks for, of the pinned version
    set -- $1
    [ "${1%%+*}" = "$TORCH_VERSION" ] || return 1
    case "$BUILD" in
        cpu) [ "$2" = cpu ] ;;
        cu*) local digits=${BUILD#cu}; [ "$2" = cuda ] && [ "$3" = "${digits%?}.${digits: -1}" ] ;;
        *) return 0 ;;
    esac
}
reachable() {  # reachable URL: 0 if it answers; else 1 with the reason on stdout
    python - "$1" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=20).close()
except Exception as err:
    print(getattr(err, 'reason', None) or err)
    sys.exit(1)
EOF
}

case "$BUILD" in
    cpu|pypi|keep) ;;
    cu[0-9][0-9]*) ;;
    *) echo "phi_hig setup: PHI_HIG_TORCH must be cpu (default), cuXYZ (e.g. cu126), pypi or keep; got '$BUILD'" >&2
       exit 2 ;;
esac

# --- 1. the virtual environment
stage "Python virtual environment .venv"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv || stop "'$PY -m venv .venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    made="created with $(.venv/bin/python --version)"
else
    made="exists ($(.venv/bin/python --version)); kept"
fi
. .venv/bin/activate
mkdir -p "$LOGS"
done_stage "$made"

# --- 2. pip
stage "pip: upgrading"
if quietly pip python -m pip install --upgrade pip; then
    done_stage "pip $(python -m pip --version | cut -d' ' -f2)"
else
    done_stage "could not upgrade (log: $LOGS/pip.log); going on with pip $(python -m pip --version | cut -d' ' -f2)"
fi

# --- 3. torch
have=$(torch_build)
case "$BUILD" in
    cpu) stage "torch $TORCH_VERSION, CPU build (PHI_HIG_TORCH=cpu, the default; cu126 etc. for CUDA)" ;;
    cu*) stage "torch $TORCH_VERSION, CUDA build $BUILD (PHI_HIG_TORCH=$BUILD)" ;;
    pypi) stage "torch $TORCH_VERSION as pip's configured indexes give it (PHI_HIG_TORCH=pypi)" ;;
    keep) stage "torch: keeping the one in .venv (PHI_HIG_TORCH=keep)" ;;
esac
if [ -n "$have" ] && { [ "$BUILD" = keep ] || wanted "$have"; }; then
    done_stage "$(describe "$have") is installed already; kept"
elif [ "$BUILD" = keep ]; then
    stop "PHI_HIG_TORCH=keep, but .venv has no torch"
else
    requirement="torch==$TORCH_VERSION"
    index=()
    if [ "$BUILD" = cpu ] || [ "${BUILD#cu}" != "$BUILD" ]; then
        url="https://download.pytorch.org/whl/$BUILD"
        if why=$(reachable "$url/torch/"); then
            index=(--index-url "$url")
            # the local label picks the build even where another index offers the same version
            [ "$(uname -s)" = Darwin ] || requirement="torch==$TORCH_VERSION+$BUILD"
            say "      from $url"
        elif [ "$BUILD" = cpu ]; then
            say "      PyTorch's CPU wheel index $url cannot be reached ($why);"
            say "      trying torch $TORCH_VERSION from pip's configured indexes, kept only if it is a CPU build"
            report="$LOGS/torch-dry-run.json"
            quietly torch-dry-run python -m pip install --dry-run --ignore-installed --report "$report" \
                -c scripts/constraints.txt "$requirement" \
                || stop "pip cannot find torch $TORCH_VERSION in its configured indexes either" "$LOGS/torch-dry-run.log"
            cuda=$(python -c "
import json, sys
items = [i['metadata'] for i in json.load(open(sys.argv[1]))['install']]
cuda = [i['name'] for i in items if i['name'].lower().startswith('nvidia')]
torch = [i['version'] for i in items if i['name'].lower() == 'torch']
if cuda or any('+cu' in v for v in torch):
    print(f'torch {torch[0] if torch else \"?\"} with {len(cuda)} CUDA packages ({\", \".join(cuda[:3])}, ...)')
" "$report")
            if [ -n "$cuda" ]; then
                stop "pip's configured indexes offer torch $TORCH_VERSION only as a CUDA build: it would install
  $cuda, several GB. Make $url reachable, or choose the build yourself:
  PHI_HIG_TORCH=pypi bash $0 installs that CUDA build; PHI_HIG_TORCH=keep keeps a torch you installed in .venv."
            fi
        else
            stop "PyTorch's wheel index $url cannot be reached ($why); check the tag ($BUILD) and the network"
        fi
    fi
    if [ -n "$have" ]; then
        say "      replacing $(describe "$have")"
        quietly torch-uninstall python -m pip uninstall -y torch || stop "pip uninstall torch failed" "$LOGS/torch-uninstall.log"
    fi
    quietly torch python -m pip install ${index[@]+"${index[@]}"} -c scripts/constraints.txt "$requirement" \
        || stop "pip install $requirement ${index[*]:-} failed" "$LOGS/torch.log"
    have=$(torch_build)
    [ -n "$have" ] || stop "torch was installed but does not import" "$LOGS/torch.log"
    if [ "$BUILD" != pypi ] && ! wanted "$have"; then
        stop "asked for the $BUILD build of torch $TORCH_VERSION, but got $(describe "$have")" "$LOGS/torch.log"
    fi
    done_stage "$(describe "$have") installed"
fi

# --- 4. phi_hig
extras="test,gui,docs,jax${EXTRAS:-}"
stage "phi_hig (editable) with the extras $extras, versions from scripts/constraints.txt"
quietly phi_hig python -m pip install -c scripts/constraints.txt -e ".[$extras]" \
    || stop "pip install -e .[$extras] failed" "$LOGS/phi_hig.log"
done_stage

# --- 5. check
stage "check"
line=$(python -c "
import torch, phi, phiml, jax, phi_hig
print(phi_hig.__version__, phi.__version__, phiml.__version__, jax.__version__)" 2>"$LOGS/check.log") \
    || stop "phi_hig does not import (or jax, its jax extra, does not)" "$LOGS/check.log"
set -- $line
have=$(torch_build)
done_stage "phi_hig $1 with $(describe "$have"), phiflow $2, phiml $3, jax $4 (CPU)"
say "ready in $((SECONDS - START)) s: .venv/bin/python has $(describe "$have")"
