"""Data-parallel HIG and SIP on torch.distributed (gloo on 127.0.0.1, 2 processes) against one process.

The two ranks of `distributed_cases.py` each hold a contiguous slice of the global batch; one process on the whole
batch (computed here, in the test process) is the reference every distributed result must equal.
"""
import os
import subprocess
import sys

import pytest
import torch

import distributed_cases as cases
from helpers import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 150


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    """Run both ranks once for all cases (each with a timeout, ended by the test) and load what they saved."""
    out = tmp_path_factory.mktemp('dist')
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'distributed_cases.py'), str(r), '2', str(port),
                               str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-3000:]}"
    return [torch.load(out / f'rank{r}.pt', weights_only=False) for r in range(2)]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize('case', cases.HIG_CASES)
def test_distributed_hig_step_equals_one_process_on_the_concatenated_batch(ranks, case):
    """float64, τ = 1e-4 (1e-9 for the SVD fallback), 3 steps: relative ≤ 1e-9; weights identical across ranks."""
    flat, losses, paths = cases.run_hig(case, group=False)
    r0, r1 = ranks[0][case], ranks[1][case]
    assert torch.equal(r0['flat'], r1['flat']), "weights differ across ranks"
    assert _rel(r0['flat'], flat) <= 1e-9
    assert r0['losses'] == pytest.approx(losses, rel=1e-8)
    assert r0['paths'] == paths  # the same linear-algebra path as one process (gram, dual, svd fallback)
    assert max(r0['seen'], r1['seen']) < 1e-12, "a rank's simulate received another rank's samples"


def test_cases_take_the_paths_they_are_meant_to(ranks):
    assert ranks[0]['dual']['paths'][0] == 'gram-dual'
    assert ranks[0]['svd_fallback']['paths'][0] == 'svd'
    assert ranks[0]['unfactored']['paths'][0] == 'gram+mixed'
    assert ranks[0]['mlp']['paths'][0] == 'gram+structured'


@pytest.mark.parametrize('kind', ['sip', 'adam'])
def test_ddp_sip_step_and_adam_equal_one_process(ranks, kind):
    flat = cases.run_first_order(kind)
    assert torch.equal(ranks[0][kind]['flat'], ranks[1][kind]['flat'])
    assert _rel(ranks[0][kind]['flat'], flat) <= 1e-9
