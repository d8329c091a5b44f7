"""benchmarks/jax_hig_step.py runs at its tiny size and writes its table (the project's rule: every benchmark script
is run by a test at a tiny size)."""
import json

import pytest

pytest.importorskip('jax')


def test_the_jax_hig_step_benchmark_runs_at_tiny_size(tmp_path):
    from benchmarks import jax_hig_step
    out = jax_hig_step.main(['--tiny', '--cases', 'toy', 'poisson41k', '--reps', '1',
                             '--output', str(tmp_path / 'b.md')])
    text = open(out).read()
    rows = [line for line in text.splitlines() if line.startswith('| toy') or line.startswith('| poisson41k')]
    assert len(rows) == 2
    # the float64 Gram path against the float64 SVD; the toy's τ = 1e-6 keeps σ down to 1e-6·σ_max, where the Gram
    # path's error is ≈ 2e-17·(σ_max/σ)² (phi_hig.hig.spectral)
    toy, poisson = (float(row.split('|')[-3]) for row in rows)
    assert poisson < 1e-6 and toy < 1e-3, (toy, poisson)
    with open(tmp_path / 'b.json') as f:  # the same figures, machine-readable, beside the table
        record = json.load(f)
    assert [r['case'] for r in record['rows']] == ['toy', 'poisson41k'] and len(record['load_before']) == 3
