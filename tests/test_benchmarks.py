"""Every script in benchmarks/ runs, at a tiny size, so that none breaks silently (they are not run otherwise).

A new script fails `test_every_benchmark_script_has_a_smoke_run` until it is given arguments for a smoke run here (or
the test file that runs it).
`distributed.py` runs its SIP path (heat, 1 and 2 processes); its HIG cases are paper-size problems and are not run
here. `step_costs.py` measures the toy at its test preset into a temporary folder (not the package's reference file). The HIG step benchmark (`python -m phi_hig bench`) ships with the package; test_cli.py tests its refusals.
"""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, 'benchmarks')

SMOKE = {  # script -> arguments of a tiny run that writes nothing into benchmarks/results ({tmp}: a temporary folder)
    'fluid_step.py': ['--resolution', '16', '--batch', '2', '--sim-steps', '1', '--reps', '1', '--threads', '1',
                      '--profile', '--cache-dir', '', '--output', '{tmp}/fluid_step.md'],
    'fluid_sip_step.py': ['--resolution', '16', '--batch', '2', '--steps', '2', '--sim-steps', '1', '--cache-dir', ''],
    'fluid_inverse_precision.py': ['--resolution', '16', '--examples', '2', '--steps', '1', '--threads', '1',
                                   '--output', '{tmp}/precision.md'],
    'distributed.py': ['--cases', 'heat', '--reps', '1', '--small', '--output', '{tmp}/distributed.md'],  # the SIP path
    'step_costs.py': ['--experiments', 'toy', '--preset', 'test', '--steps', '2', '--cap', '10',
                      '--output-dir', '{tmp}'],
    'gpu.sh': None,  # needs a GPU: syntax only (bash -n)
    'poisson_pretraining.py': 'tests/test_init_from.py',  # its smoke run checks the phases' results there
    'jax_hig_step.py': 'tests/test_jax_benchmark.py',  # its smoke run checks the update errors there
    'toy_ranking.py': 'tests/test_runner_jax.py',  # its 300-step run checks JAX against torch there
}


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {f for f in os.listdir(BENCHMARKS) if f.endswith(('.py', '.sh')) and f != '__init__.py'}
    assert scripts == set(SMOKE), \
        f"scripts without a smoke run here: {scripts - set(SMOKE)}; gone: {set(SMOKE) - scripts}"


@pytest.fixture
def restored_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('script', [s for s, a in SMOKE.items() if isinstance(a, list) and s != 'distributed.py'])
def test_benchmark_runs_at_a_tiny_size(script, tmp_path, restored_threads, monkeypatch):
    """In this process (the imports are already paid for), as `python -m benchmarks.<script>` would run it."""
    import importlib
    monkeypatch.syspath_prepend(ROOT)
    module = importlib.import_module(f'benchmarks.{script[:-3]}')
    module.main([a.format(tmp=tmp_path) for a in SMOKE[script]])
    assert not [f for f in os.listdir(tmp_path) if not f.endswith(('.md', '.json'))]


def test_distributed_benchmark_runs_at_a_tiny_size(tmp_path):
    """Its own worker processes (1, then 2, over gloo); a failed case exits non-zero."""
    args = [a.format(tmp=tmp_path) for a in SMOKE['distributed.py']]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    done = subprocess.run([sys.executable, '-m', 'benchmarks.distributed'] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '| heat | SIP + DDP | 4 |' in (tmp_path / 'distributed.md').read_text()


def test_gpu_script_parses():
    done = subprocess.run(['bash', '-n', os.path.join(BENCHMARKS, 'gpu.sh')], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
